"""Lines into pytest's own output, without tearing its progress line.

pytest writes its progress as it goes: a letter a test on a line that ends with ``[ 41%]``
(or, with ``-v``, one line a test). A line written in the middle of that would land after
the letters, so :class:`TerminalOut` keeps pytest's line discipline:

- **in band** (:meth:`TerminalOut.write`, from the main thread, which writes pytest's
  progress): a line pytest left open is completed the way pytest completes it (its
  percentage, or a newline), then the lines go through pytest's own terminal writer, whose
  idea of the current line stays right. Under xdist the controller's main thread sits in
  xdist's event loop; :class:`MainThread` hands it the writing through that loop's queue.
- **out of band** (:meth:`TerminalOut.write_aside`, from any thread, while the main thread
  may be inside a test whose output pytest captures at file-descriptor level): the lines go
  to a duplicate of the terminal's descriptor taken before any capture, after a newline if
  pytest's line was open, and that line is then continued with as many spaces as it held,
  so the letters that follow land in the column pytest thinks they do (in a terminal; in
  a file or pipe, pytest's writer is told that its line starts afresh).

A closed or broken output never reaches the run: the first failure turns the writer off and
is kept in :attr:`TerminalOut.broken` for the log.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from .guard import REAL

Markup = dict[str, bool]

_PROGRESS_END = re.compile(r" \[ *\d+(?:%|/\d+)\] *$")
"""How pytest ends a progress line: `` [ 41%]``, or `` [12/30]`` with ``console_output_style =
count``."""
Lines = list[tuple[str, Markup]]

WAKE_EVENT = "testmon_live_notices"
"""Name of the item put into xdist's event queue; xdist calls ``worker_<name>``."""

# Writes happen while tests run (and may patch os): through the names bound at start-up.
_write = REAL.write
_close = REAL.close


class TerminalOut:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
        self.broken: str | None = None
        """Why the output was given up (closed, broken pipe), once it was."""
        self.problems: list[str] = []
        self._fd: int | None = None
        self._encoding = "utf-8"
        self._tty = False
        self._left_at: int | None = None
        """The width an out-of-band write left pytest's open line at (with spaces)."""
        stream = sys.stdout
        try:
            # At pytest_configure, before any test could patch os or capture the output.
            self._fd = os.dup(stream.fileno())
            self._encoding = getattr(stream, "encoding", None) or "utf-8"
            self._tty = os.isatty(self._fd)
        except (AttributeError, OSError, ValueError):
            self._fd = None  # no descriptor (an in-process pytester run): write in band only

    @property
    def usable(self) -> bool:
        return self.reporter is not None and self.broken is None

    def _writer(self) -> Any:
        return self.config.get_terminal_writer()

    def write(self, lines: Lines) -> None:
        """In band: call from the thread that writes pytest's progress (the main thread)."""
        if not lines or not self.usable:
            return
        try:
            tw = self._writer()
            self._left_at = None
            self._close_line(tw)
            for text, markup in lines:
                tw.line(text, **markup)
            tw.flush()
        except RuntimeError:
            # A signal handler that interrupted a write of the same buffered stream
            # ("reentrant call"): the bytes go out beside it instead.
            self.write_aside(lines)
        # Closed, broken, or pytest's writer not what it was: the run goes on without us.
        except Exception as exc:  # noqa: BLE001 - kept in `broken`, noted in the log
            self._give_up(exc)

    def _close_line(self, tw: Any) -> None:
        reporter = self.reporter
        if reporter.currentfspath:
            reporter.ensure_newline()  # pytest's own: a path prefix or a -v line is open
            return
        if not tw.width_of_current_line:
            return
        # Letters of the progress line (xdist at the default verbosity): end the line with
        # its percentage, as pytest ends it at the right edge, else with a newline. After
        # the last test pytest has ended it with its percentage already and left it open:
        # a newline then.
        if _PROGRESS_END.search(str(getattr(tw, "_current_line", ""))):
            tw.line()
            return
        fill: Callable[[], None] | None = getattr(
            reporter, "_write_progress_information_filling_space", None
        )
        if (
            fill is not None
            and getattr(reporter, "_show_progress_info", False)
            and getattr(reporter, "_session", None) is not None
            and self.config.get_verbosity() <= 0
        ):
            try:
                fill()
            except Exception as exc:  # noqa: BLE001 - pytest's private helper changed: a newline will do
                self._problem(f"progress fill: {exc!r}")
        tw.line()

    def write_aside(self, lines: Lines) -> None:
        """Out of band: from any thread, past pytest's capture of the test's output."""
        if not lines or not self.usable:
            return
        if self._fd is None:
            self.write(lines)
            return
        try:
            tw = self._writer()
            open_width = int(tw.width_of_current_line)
            parts = []
            if open_width:
                # Right after our own last lines the open line holds only our spaces, which
                # a terminal writes over.
                parts.append("\r" if open_width == self._left_at else "\n")
            for text, markup in lines:
                parts.append((tw.markup(text, **markup) if markup else text) + "\n")
            self._left_at = None
            if open_width:
                if self._tty or not isinstance(getattr(tw, "_current_line", None), str):
                    parts.append(" " * open_width)
                    self._left_at = open_width
                else:
                    # A file or pipe (a CI log): pytest's writer starts a fresh line.
                    tw._current_line = ""
            data = "".join(parts).encode(self._encoding, "replace")
            view = memoryview(data)
            while view:
                view = view[_write(self._fd, view) :]
        except Exception as exc:  # noqa: BLE001 - as in write(): kept, noted, never raised
            self._give_up(exc)

    def _give_up(self, exc: BaseException) -> None:
        if self.broken is None:
            self.broken = f"{type(exc).__name__}: {exc}"

    def _problem(self, text: str) -> None:
        if len(self.problems) < 10:
            self.problems.append(text)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                _close(fd)


class MainThread:
    """Runs writes on the controller's main thread, through xdist's event loop.

    xdist's controller loop takes ``(name, kwargs)`` items from ``DSession.queue`` and calls
    ``DSession.worker_<name>(**kwargs)``. One item of our own, with our method under that
    name on the session object, makes the loop run :meth:`drain` between its events: the
    lines are then written by the thread that writes pytest's progress. Without such a
    loop (no xdist, another version) :meth:`attach` says so and lines go out of band.
    """

    def __init__(self, out: TerminalOut) -> None:
        self.out = out
        self._pending: deque[Lines] = deque()
        self._queue: Any = None
        self._woken = REAL.Event()

    def attach(self, dsession: Any) -> bool:
        queue = getattr(dsession, "queue", None)
        if queue is None or not callable(getattr(queue, "put", None)):
            return False
        if not callable(getattr(dsession, "loop_once", None)):
            return False
        setattr(dsession, "worker_" + WAKE_EVENT, self.drain)
        self._queue = queue
        return True

    @property
    def attached(self) -> bool:
        return self._queue is not None

    def post(self, lines: Lines) -> None:
        """From any thread: the main thread writes these soon."""
        if not lines:
            return
        self._pending.append(lines)
        if not self._woken.is_set():
            self._woken.set()
            self._queue.put((WAKE_EVENT, {}))

    def drain(self) -> None:
        """On the main thread (xdist's loop, or the end of the session). Never raises:
        :meth:`TerminalOut.write` keeps what went wrong."""
        self._woken.clear()
        while self._pending:
            self.out.write(self._pending.popleft())

    def detach(self) -> None:
        """The loop is over: nothing more is posted to it."""
        self._queue = None
