"""The controller's live voice in pytest's own output, and in CI.

:class:`LiveNotices` is a plugin object of the controller (never of a worker). A thread
looks at the hub's fold twice a second (:class:`~.notices.Watch`: lengths compared while
nothing happens; no per-test work anywhere) and writes what it found:

- a line per stall, deadlock, crash, unresponsive worker, racing migration, dead container
  and slow test, a few a minute at most (:class:`~.notices.Limiter`);
- after ``--monitor-quiet`` seconds in which no test finished, a status block (each
  worker, its test, phase and for how long), again after twice as long while it lasts;
- under GitHub Actions, annotations for stalls, deadlocks, crashes and races, and at the
  end for failures that look like shared state; and the markdown report in the job's
  step summary (:mod:`.ci`).

Lines go through pytest's terminal writer on its line discipline (:mod:`.terminal`):
under xdist the controller's main thread writes them between xdist's events; without
xdist the main thread runs the tests, so they go out beside pytest's capture.

SIGINT and SIGTERM (a CI runner's timeout): before the signal takes its course, the
controller prints what every worker is doing and the stacks of the stuck ones, and notes
the signal in the log. A SIGTERM that would end the process (no handler but the default)
first completes the log with its end record (status ``interrupted``) and, on GitHub,
the step summary; then the default action runs, as it would have without the monitor. A
handler installed before ours (pytest's KeyboardInterrupt for SIGINT, anyone's for
SIGTERM) is called after ours, so pytest's own handling and exit codes stay as they were.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from .clock import now
from .guard import REAL
from .notices import (
    ANNOTATED,
    ERROR,
    PREFIX,
    WARNING,
    Alert,
    Limiter,
    Watch,
    failure_where,
    level_for,
    looks_polluted,
    printable,
    status_lines,
)
from .summary import _dur as duration
from .summary import _rel, summary_lines
from .terminal import Lines, MainThread, TerminalOut

if TYPE_CHECKING:
    from .controller import ControllerRecorder
    from .hub import Hub
    from .settings import Settings

TICK = 0.5
"""Seconds between two looks at the fold."""
SUMMARY_DEADLINE = 60.0
"""Seconds the step summary's report may take at the end of a run."""
MAX_ANNOTATIONS = 10
"""GitHub shows 10 warning annotations a step; more are counted in one more line."""
SIGNAL_SUMMARY_DEADLINE = 5.0
"""Seconds the step summary may take when a SIGTERM is about to end the process."""

MARKUP = {ERROR: {"red": True, "bold": True}, WARNING: {"yellow": True, "bold": True}}
_INFO_MARKUP = {"yellow": True}

# Without xdist the tests run in this process and may patch the standard library: the
# thread and the signal handler reach it only through the names bound at start-up.
_main_thread = REAL.main_thread
_current_thread = REAL.current_thread
_getpid = REAL.getpid
_kill = REAL.kill
_set_handler = REAL.signal
_get_handler = REAL.getsignal


class LiveNotices:
    def __init__(
        self, hub: Hub, controller: ControllerRecorder, config: pytest.Config, settings: Settings
    ) -> None:
        self.hub = hub
        self.controller = controller
        self.config = config
        verbosity = int(config.get_verbosity())
        self.out = TerminalOut(config)
        self.main = MainThread(self.out)
        self.lines_on = settings.notices and self.out.usable
        self.min_level = level_for(verbosity)
        self.quiet = settings.quiet if self.lines_on and verbosity >= -1 else 0.0
        self.annotations = settings.annotations and self.out.usable
        self.ci_summary = settings.ci_summary
        self.rootdir = hub.header.rootdir
        self.watch = Watch(
            settings.slow if self.lines_on else 0.0, rootdir=self.rootdir, locate=self.annotations
        )
        self.limiter = Limiter()
        self._annotated: set[str] = set()
        self._annotations_left = MAX_ANNOTATIONS
        self._annotations_over = 0
        self._last_progress = hub.header.ts
        self._quiet_after = self.quiet
        self._tests_done = 0
        self._stop = REAL.Event()
        self._thread: Any = None  # a REAL.Thread
        self._previous: dict[int, Any] = {}
        self._signalled = False
        self._summary_done = False
        self._broken_noted = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.lines_on or self.annotations:
            self._thread = REAL.Thread(target=self._run, name="testmon-live-notices", daemon=True)
            self._thread.start()
        self._install_signals()

    @contextlib.contextmanager
    def _safely(self, what: str) -> Iterator[None]:
        """Whatever breaks in here is noted in the log, never raised into pytest."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - the run must not fail for a notice
            with contextlib.suppress(Exception):
                self.hub.note("error", f"live notices, {what}: {type(exc).__name__}: {exc}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        with self._safely("session start"):
            dsession = self.config.pluginmanager.get_plugin("dsession")
            if dsession is not None:
                self.main.attach(dsession)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # After xdist took its workers down, before the controller closes the log: what
        # happened since the last look (a crash in the last test, say) is still told.
        with self._safely("session finish"):
            self._halt()
            self.main.detach()
            self.main.drain()
            self.tick(now(), final=True)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        with self._safely("terminal summary"):
            if self.annotations:
                self._annotate_failures()
            problem = self._write_step_summary(SUMMARY_DEADLINE)
            if problem is not None and self.out.usable:
                self.out.write([(f"{PREFIX} step summary: {problem}", {"yellow": True})])

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # After the controller's own: its log is closed by then.
        with self._safely("unconfigure"):
            self._halt()
            self._restore_signals()
            self._write_step_summary(SUMMARY_DEADLINE)  # no terminal summary (-p no:terminal)
        self.out.close()

    def _halt(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not _current_thread():
            thread.join(2.0)
        self._thread = None

    # ------------------------------------------------------------ the watch

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.tick(now())
            # The notices must outlive anything a look can hit: say what broke, stop.
            except Exception as exc:  # noqa: BLE001, PERF203 - twice a second, not a hot loop
                self.hub.note("error", f"live notices stopped: {type(exc).__name__}: {exc}")
                return

    def tick(self, t: float, *, final: bool = False) -> None:
        """One look at the fold; writes what it found (``final``: on the main thread, at the
        end of the session, without waiting for anything more)."""
        hub = self.hub
        status: list[str] = []
        with hub.lock:
            if hub.closed:
                return
            state = hub.state
            alerts = self.watch.scan(state, t, final=final)
            done = self.watch.tests_done
            if done != self._tests_done:
                self._tests_done = done
                self._last_progress = t
                self._quiet_after = self.quiet
            elif (
                self.quiet
                and not final
                and not self._signalled
                and t - self._last_progress >= self._quiet_after
            ):
                silent = t - self._last_progress
                self._quiet_after *= 2
                status = status_lines(
                    state,
                    t,
                    f"no test finished for {duration(silent)} "
                    f"({state.tests_done} done so far); each worker now:",
                )
        lines: Lines = []
        quiet = self._signalled  # the run is being stopped: its status block said it all
        for alert in alerts:
            if self.annotations and alert.kind in ANNOTATED:
                lines.extend(self._annotate(alert))
            if (
                not quiet
                and self.lines_on
                and alert.level >= self.min_level
                and self.limiter.admit(alert, t)
            ):
                lines.append((alert.line, MARKUP.get(alert.level, _INFO_MARKUP)))
        if self.lines_on and not quiet:
            held = self.limiter.held_line(t, force=final)
            if held is not None:
                lines.append((held, {}))
        if status:
            lines.append((status[0], {"bold": True}))
            lines.extend((line, {}) for line in status[1:])
        if final:
            self.out.write(lines)
        else:
            self._deliver(lines)
        self._note_broken()

    def _deliver(self, lines: Lines) -> None:
        if not lines:
            return
        if self.main.attached:
            self.main.post(lines)
        else:
            self.out.write_aside(lines)

    def _note_broken(self) -> None:
        broken = self.out.broken
        if broken is not None and not self._broken_noted:
            self._broken_noted = True
            self.hub.note("warning", f"live notices off: pytest's output failed: {broken}")

    # ------------------------------------------------------------ annotations

    def _annotate(self, alert: Alert) -> Lines:
        if alert.key in self._annotated:
            return []
        self._annotated.add(alert.key)
        return self._annotation_line(
            "error" if alert.level >= ERROR else "warning",
            alert.text,
            alert.where,
            f"testmon-live: {alert.kind.lower()}",
        )

    def _annotation_line(self, level: str, text: str, where: Any, title: str) -> Lines:
        if self._annotations_left <= 0:
            self._annotations_over += 1
            return []
        self._annotations_left -= 1
        from .ci import annotation  # only where annotations are on

        line = annotation(level, printable(text), where=where, title=title, rootdir=self.rootdir)
        return [(line, {})]

    def _annotate_failures(self) -> None:
        with self.hub.lock:
            state = self.hub.state
            failures = [t for t in state.failures if looks_polluted(t)]
            run_id = state.run_id
        lines: Lines = []
        for test in failures:
            first = (test.message or "").splitlines()[0:1] or ["failed"]
            text = (
                f"{test.nodeid} failed with {first[0]!r} on {test.w}: state left by another "
                f"test? `testmon suspects {run_id} {test.nodeid}` lists the tests that ran "
                "before it there, `testmon bisect` finds the one"
            )
            lines.extend(
                self._annotation_line(
                    "warning",
                    text,
                    failure_where(test, self.rootdir),
                    "testmon-live: looks polluted",
                )
            )
        if self._annotations_over:
            from .ci import annotation

            lines.append(
                (
                    annotation(
                        "notice",
                        f"{self._annotations_over} more findings of testmon-live were not "
                        "annotated (see the step summary or `testmon report`)",
                        title="testmon-live",
                    ),
                    {},
                )
            )
            self._annotations_over = 0
        self.out.write(lines)

    # ------------------------------------------------------------ step summary

    def _write_step_summary(self, deadline: float) -> str | None:
        if not self.ci_summary or self._summary_done or not self.hub.closed:
            return None
        from .ci import SUMMARY_ENV, append_step_summary  # only where the summary is on

        target = os.environ.get(SUMMARY_ENV)
        self._summary_done = True
        if not target:
            return f"${SUMMARY_ENV} is not set: no step summary written"
        fallback = summary_lines(self.hub.state, self.hub.log_path, self.hub.problems)
        return append_step_summary(
            target, self.hub.log_path, self.hub.mdir.root, fallback, deadline=deadline
        )

    # ------------------------------------------------------------ signals

    def _install_signals(self) -> None:
        if _current_thread() is not _main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous = _get_handler(signum)
                if previous is None or previous == signal.SIG_IGN:
                    continue  # set outside Python, or ignored: the signal changes nothing
                _set_handler(signum, self._on_signal)
            except (OSError, ValueError):
                continue
            self._previous[signum] = previous

    def _restore_signals(self) -> None:
        if _current_thread() is not _main_thread():
            return
        for signum, previous in self._previous.items():
            with contextlib.suppress(OSError, ValueError):
                if _get_handler(signum) == self._on_signal:
                    _set_handler(signum, previous)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # pytest names the innermost frame not hidden as where the KeyboardInterrupt came
        # from: the code this signal interrupted, as without the monitor, not this handler.
        __tracebackhide__ = True
        previous = self._previous.get(signum, signal.SIG_DFL)
        ends = not callable(previous)
        try:
            self._stopped(signum, ends=ends)
        # Whatever happened here, the signal must take its course below.
        except Exception as exc:  # noqa: BLE001
            with contextlib.suppress(Exception):
                self.hub.note("error", f"on signal {signum}: {type(exc).__name__}: {exc}")
        if callable(previous):
            previous(signum, frame)  # pytest's KeyboardInterrupt for SIGINT
            return
        # The default action, as without the monitor: for SIGTERM, the process ends.
        _set_handler(signum, signal.SIG_DFL)
        _kill(_getpid(), signum)

    def _stopped(self, signum: int, *, ends: bool) -> None:
        name = signal.Signals(signum).name
        first = not self._signalled
        self._signalled = True
        t = now()
        hub = self.hub
        lines: list[str] = []
        with hub.lock:
            if hub.closed:
                return
            if first:
                lines = status_lines(
                    hub.state,
                    t,
                    f"{name}: the run stops after {duration(hub.state.wall(t))}; "
                    "each worker at this moment:",
                    stacks=True,
                )
        hub.note("warning", f"the controller received {name}")
        out: Lines = []
        if self.out.usable:
            out = [(line, {"bold": True} if i == 0 else {}) for i, line in enumerate(lines)]
        if self.annotations and first and lines:
            out += self._annotation_line(
                "error", "\n".join(lines[1:]), None, f"testmon-live: run stopped by {name}"
            )
        if ends:
            self.controller.finish(int(pytest.ExitCode.INTERRUPTED))
            out.append((f"{PREFIX} log complete up to this moment: {_rel(hub.log_path)}", {}))
        self._write_now(out)
        if ends:
            problem = self._write_step_summary(SIGNAL_SUMMARY_DEADLINE)
            if problem is not None:
                self._write_now([(f"{PREFIX} step summary: {problem}", {})])

    def _write_now(self, lines: Lines) -> None:
        """From a signal handler (the main thread, interrupted anywhere)."""
        if self.main.attached:
            self.main.drain()  # what was posted comes first
            self.out.write(lines)
        else:
            self.out.write_aside(lines)
