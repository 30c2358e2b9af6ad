"""Workers that fell silent: native code holds the GIL, so their watchdog cannot run.

Worker side, :func:`arm_dump_signal` registers ``faulthandler`` on a signal nobody else
handles (SIGUSR2, else SIGUSR1): on that signal the interpreter writes every thread's
stack to a private file, in C, without needing the GIL. It uses ``faulthandler.register``
only - not ``enable`` nor ``dump_traceback_later``, which pytest's ``faulthandler_timeout``
and pytest-timeout use - so a user's settings stay as they were. A signal that already
has a Python-level handler is left alone; with none free, the worker is not armed.

The signal stays ours only as long as nobody else sets its handler. A test may install
its own (``signal.signal``, ``faulthandler.register``/``unregister``) and then freeze in C
code: signalled, it would run the test's handler or, with the default restored, die. So the
worker *disarms* before any such call goes through: under an exclusive ``flock`` on the dump
file it removes the file, and only then the call proceeds (the worker wraps those three
functions while armed; the watchdog also notices a handler set by a path around them within
a tick). The hub signals only while holding a shared ``flock`` on a dump file that still
exists, and only a process that catches the signal (``SigCgt`` in ``/proc``): whether the
handler is still the monitor's is decided at signal time, and the hub never kills.

Hub side, :class:`SilenceWatcher` looks at every worker's last heartbeat a few times a
second. A worker silent for ``after`` seconds is recorded as
:class:`~testmon_live.plugin.events.Unresponsive`; if it is a local process that armed a
signal, the hub sends the signal, reads what faulthandler wrote and records it as a
:class:`~testmon_live.plugin.events.Stall` with ``reason="unresponsive"``. Remote workers
are reported without stacks. When heartbeats come back, ``Unresponsive(recovered=True)``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fcntl
import functools
import os
import signal
import tempfile
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from .. import events as ev
from ..clock import now
from ..guard import REAL, repr_of

if TYPE_CHECKING:
    import threading

    from ..state import RunState, WorkerView

__tracebackhide__ = True
"""pytest leaves this module's frames out of the traceback of a failure: its wrappers sit
between the user's code and the library it called, and a failure reads as without the
monitor."""

Running = Callable[[str], "tuple[str, str, float] | None"]
"""worker -> (test, phase, since) as the controller last heard from xdist."""
CHECK_EVERY = 0.25
DUMP_WAIT = 1.0
"""Seconds the hub waits for faulthandler's text after sending the signal."""
MIN_CPU_WINDOW = 0.2
"""Seconds over which the process's CPU use tells a busy native call from a blocked one."""
_CANDIDATES = ("SIGUSR2", "SIGUSR1")


def silence_after(stall: float) -> float:
    """Seconds without a heartbeat before a worker counts as unresponsive."""
    return max(2.0, min(stall, 5.0))


class DumpSignal:
    """A faulthandler armed in this worker process, as long as the signal stays ours."""

    def __init__(self, signum: int, handle: IO[bytes], path: str) -> None:
        self.signum = signum
        self.handle = handle
        self.path = path
        self.armed = True
        self.on_disarm: Callable[[str], None] | None = None
        """Told why, once, when the signal stops being the monitor's."""
        self._patched: list[tuple[Any, str, Any]] = []

    def close(self) -> None:
        """Remove the file (the handler keeps its descriptor: a late signal still lands)."""
        self._unwatch()
        with contextlib.suppress(OSError):
            REAL.unlink(self.path)

    def disarm(self, why: str) -> None:
        """The signal is about to get another handler: withdraw the dump file first, under
        an exclusive lock, so that the hub (which signals only under a shared lock on a
        file that exists) cannot signal from now on."""
        if not self.armed:
            return
        self.armed = False
        fd = self.handle.fileno()
        with contextlib.suppress(OSError):
            REAL.flock(fd, fcntl.LOCK_EX)
        try:
            with contextlib.suppress(OSError):
                REAL.unlink(self.path)
        finally:
            with contextlib.suppress(OSError):
                REAL.flock(fd, fcntl.LOCK_UN)
        if self.on_disarm is not None:
            self.on_disarm(why)

    def check(self, _t: float = 0.0) -> None:
        """Watchdog tick: a handler set by a way around the wrappers (``from signal import
        signal`` bound before the worker armed) is noticed here."""
        if self.armed and REAL.getsignal(self.signum) not in (signal.SIG_DFL, None):
            self.disarm(f"{_name(self.signum)} got a Python handler")

    def watch(self) -> None:
        """Wrap ``signal.signal``, ``faulthandler.register`` and ``faulthandler.unregister``:
        a call about this signal disarms before it goes through."""
        signum = self.signum

        def ours(value: object) -> bool:
            return isinstance(value, int) and value == signum

        def wrap(owner: Any, name: str, real: Callable[..., Any]) -> None:
            def watched(*args: Any, **kwargs: Any) -> Any:
                # Only the main thread may set handlers; elsewhere the call fails by itself.
                # (Any arguments at all: a wrong call fails in the real function, as before.)
                if self.armed and args and ours(args[0]) and REAL.get_ident() == _MAIN:
                    self.disarm(f"{owner.__name__}.{name}({_name(signum)}) was called")
                return real(*args, **kwargs)

            functools.update_wrapper(watched, real)
            self._patched.append((owner, name, real))
            setattr(owner, name, watched)

        wrap(signal, "signal", REAL.signal)
        wrap(faulthandler, "register", REAL.faulthandler_register)
        wrap(faulthandler, "unregister", REAL.faulthandler_unregister)

    def _unwatch(self) -> None:
        while self._patched:
            owner, name, real = self._patched.pop()
            if getattr(getattr(owner, name, None), "__wrapped__", None) is real:
                setattr(owner, name, real)


_MAIN = REAL.main_thread().ident


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def arm_dump_signal() -> DumpSignal | str:
    """Arm faulthandler on a free signal; a reason text if that cannot be done."""
    if not hasattr(faulthandler, "register"):
        return "faulthandler.register is not available on this platform"
    for name in _CANDIDATES:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            current = REAL.getsignal(signum)
        except ValueError:
            continue
        if current not in (signal.SIG_DFL, None):
            continue  # the user's (or another plugin's) handler: never clobber it
        fd, path = tempfile.mkstemp(prefix="testmon-live-stacks-", suffix=".txt")
        handle = os.fdopen(fd, "wb", buffering=0)
        try:
            REAL.faulthandler_register(signum, file=handle, all_threads=True, chain=False)
        except (OSError, RuntimeError, ValueError) as exc:
            handle.close()
            os.unlink(path)
            return f"faulthandler.register({name}) failed: {exc}"
        return DumpSignal(int(signum), handle, path)
    return "SIGUSR1 and SIGUSR2 both have handlers: stacks of a frozen worker cannot be taken"


def frozen_check(pid: int, window: float = MIN_CPU_WINDOW) -> tuple[str | None, bool]:
    """(why signalling ``pid`` is not safe now or None, whether it burns CPU).

    faulthandler walks the interpreter's thread list without a lock. That is safe while
    one thread holds the GIL in native code (no other thread can start, end or run
    Python), and was seen to crash a process whose Python threads were running and
    being created (SIGSEGV). So: never signal a stopped process, nor one in which more
    than one thread used CPU over ``window`` seconds.
    """
    from .stacks import process_state, task_cpu

    state = process_state(pid)
    if state is None:
        return "the process is gone", False
    if state in ("T", "t"):
        return "the process is stopped (SIGSTOP, a debugger)", False
    before = task_cpu(pid)
    REAL.sleep(window)
    after = task_cpu(pid)
    if before is None or after is None:
        return None, False  # no /proc: the silence alone says the GIL is held
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    running = [tid for tid, cpu in used.items() if cpu >= 0.2 * window]
    if len(running) > 1:
        return f"{len(running)} threads are running Python (not frozen: overloaded?)", True
    return None, bool(running)


class NotSignalled(Exception):
    """Why the hub did not signal a worker (the signal is no longer the monitor's)."""


def read_dump(pid: int, signum: int, path: str, wait: float = DUMP_WAIT) -> str | None:
    """Signal a local worker and return the stacks faulthandler appended to ``path``.

    Raises :class:`NotSignalled` when the signal is not the monitor's any more: the worker
    withdrew the file (a test set its own handler), is withdrawing it now, or the process
    does not catch the signal at all (the default action would kill it)."""
    try:
        fd = REAL.os_open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotSignalled(
            f"its {_name(signum)} handler is no longer the monitor's (a test set its own)"
        ) from None
    except OSError:
        return None
    try:
        try:
            REAL.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise NotSignalled(f"its {_name(signum)} handler is being changed") from None
        try:
            info = REAL.fstat(fd)
            if info.st_nlink == 0:
                raise NotSignalled(
                    f"its {_name(signum)} handler is no longer the monitor's (a test set its own)"
                )
            if catches(pid, signum) is False:
                raise NotSignalled(f"it does not catch {_name(signum)} (it would be killed)")
            start = info.st_size
            REAL.kill(pid, signum)
        except ProcessLookupError:
            return None
        finally:
            with contextlib.suppress(OSError):
                REAL.flock(fd, fcntl.LOCK_UN)
        deadline = REAL.monotonic() + wait
        size = start
        still = 0
        while REAL.monotonic() < deadline:
            REAL.sleep(0.05)
            grown = REAL.fstat(fd).st_size
            if grown > start and grown == size:
                still += 1
                if still >= 2:
                    break  # it grew and stopped growing for 0.1 s: the dump is complete
            else:
                # (a worker descheduled for 50 ms in the middle of its dump, on a loaded
                # machine, once left a dump without a single whole thread)
                still = 0
            size = grown
        text = REAL.pread(fd, 1 << 20, start)
        return text.decode("utf-8", "replace") or None
    except OSError:
        return None
    finally:
        REAL.close(fd)


def catches(pid: int, signum: int) -> bool | None:
    """Whether process ``pid`` has a handler for ``signum`` (``SigCgt`` of
    ``/proc/PID/status``); None where that cannot be read."""
    try:
        with REAL.open(f"/proc/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


class SilenceWatcher:
    """Hub thread: notices workers whose heartbeats stopped and takes their stacks."""

    def __init__(
        self,
        state: RunState,
        lock: threading.RLock,
        emit: Callable[[ev.Event], None],
        after: float,
        *,
        root: str | None = None,
        running: Running | None = None,
    ) -> None:
        self._running = running
        self._state = state
        self._lock = lock
        self._emit = emit
        self.after = after
        self._root = root
        self._silent: dict[str, tuple[float, str | None, str | None, float | None]] = {}
        """worker -> (when, on this clock, its last heartbeat before the silence arrived;
        the test and phase it went silent in, since when): its recovery and a dump asked
        for meanwhile name the same test."""
        self._beats: dict[str, tuple[tuple[object, ...], float]] = {}
        """worker -> (its latest heartbeat's stamp, when this hub first saw it)."""
        self._stop = REAL.Event()
        self._host = REAL.uname().nodename
        self._thread = REAL.Thread(target=self._run, name="testmon-live-silence", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; a worker that came back since its last tick is noted."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not REAL.current_thread():
            self._thread.join(DUMP_WAIT + 1.0)
        if self._silent:
            self.check(now(), final=True)

    def _run(self) -> None:
        while not self._stop.wait(CHECK_EVERY):
            try:
                self.check(now())
            # The watcher must outlive anything a check can hit; say what broke, go on.
            except Exception as exc:  # noqa: BLE001, PERF203 - 4 times a second
                msg = f"silence watcher: {repr_of(exc)}"
                self._emit(ev.Notice(level="error", source="hub", msg=msg))

    def check(self, t: float, *, final: bool = False) -> None:
        """One look at every worker; ``final`` only notes those that came back."""
        with self._lock:
            views = [
                (v.id, _marker(v), v.test, v.phase, v.fixture, v.since, _target(v), _gone(v))
                for v in self._state.workers.values()
                if v.started is not None or v.last_heartbeat is not None
            ]
        for wid, marker, test, phase, fixture, since, target, gone in views:
            # Silence is measured on this clock, from when the worker was last heard of
            # (a heartbeat, a finished test, its start): a remote clock may be off.
            seen = self._beats.get(wid)
            if seen is None or seen[0] != marker:
                seen = self._beats[wid] = (marker, t)
            arrived = seen[1]
            flagged = self._silent.get(wid)
            if flagged is not None:
                if arrived > flagged[0]:
                    del self._silent[wid]
                    back = ev.Unresponsive(
                        w=wid,
                        ts=t,
                        silent=arrived - flagged[0],
                        test=flagged[1],
                        phase=flagged[2],
                        recovered=True,
                    )
                    self._emit(back)
                continue
            if final or gone or phase == "finishing" or t - arrived < self.after:
                continue
            known = self._running(wid) if self._running is not None else None
            if known is not None and known[0] != test:
                # The worker's last Activity predates the test it went silent in.
                test, phase, since, fixture = known[0], known[1], known[2], None
            known_test = test is not None
            self._silent[wid] = (
                arrived,
                test,
                phase if known_test else None,
                (since or None) if known_test else None,
            )
            self._emit(
                ev.Unresponsive(
                    w=wid,
                    ts=t,
                    silent=t - arrived,
                    test=test,
                    phase=phase if known_test else None,
                    since=(since or None) if known_test else None,
                )
            )
            if target is not None:
                self._take_stacks(wid, target, test, phase, fixture, since)

    def _heard_from(self, wid: str) -> bool:
        with self._lock:
            view = self._state.workers.get(wid)
            marker = _marker(view) if view is not None else None
        seen = self._beats.get(wid)
        return seen is not None and marker != seen[0]

    def dump_silent(self, command: ev.Command) -> bool:
        """Answer a ``dump`` for a worker that is silent now, from outside; False if it
        is not silent (it answers itself) or cannot be reached that way."""
        wid = command.worker
        if wid not in self._silent:
            return False
        with self._lock:
            view = self._state.workers.get(wid)
            if view is None:
                return False
            target = _target(view)
            args = (view.test, view.phase, view.fixture, view.since)
        if target is None:
            return False
        spell = self._silent.get(wid)
        if spell is not None and spell[1] is not None and spell[1] != args[0]:
            # the worker's own record of its test is queued behind the silence
            args = (spell[1], spell[2] or "call", None, spell[3] or args[3])
        REAL.Thread(
            target=self._take_stacks,
            args=(wid, target, *args),
            kwargs={"request": command.id, "reason": "dump"},
            name="testmon-live-dump",
            daemon=True,
        ).start()
        return True

    def _take_stacks(
        self,
        wid: str,
        target: tuple[int, int, str, int | None],
        test: str | None,
        phase: str,
        fixture: str | None,
        since: float,
        *,
        request: int | None = None,
        reason: str = "unresponsive",
    ) -> None:
        from .stacks import location, parse_faulthandler

        pid, signum, path, main = target
        unsafe, busy = frozen_check(pid)
        if unsafe is not None:
            self._emit(
                ev.Notice(
                    ts=now(),
                    level="info",
                    source="hub",
                    msg=f"{wid}: no stacks taken from outside: {unsafe}",
                )
            )
            return
        if reason == "unresponsive" and self._heard_from(wid):
            return  # a heartbeat came in meanwhile (a busy hub, not a frozen worker)
        try:
            text = read_dump(pid, signum, path)
        except NotSignalled as why:
            self._emit(
                ev.Notice(
                    ts=now(),
                    level="info",
                    source="hub",
                    msg=f"{wid}: no stacks taken from outside: {why}",
                )
            )
            return
        if text is None:
            return
        threads = parse_faulthandler(text, main_ident=main, busy=busy)
        t = now()
        self._emit(
            ev.Stall(
                w=wid,
                ts=t,
                reason=reason,
                request=request,
                test=test,
                phase=phase,
                fixture=fixture,
                elapsed=max(0.0, t - since) if since else 0.0,
                location=location(threads, self._root),
                threads=threads,
            )
        )


def local_dump_file(view: WorkerView) -> str | None:
    """The dump file of a worker on this machine (a remote worker's path means nothing here)."""
    target = _target(view)
    return target[2] if target is not None else None


def _marker(view: WorkerView) -> tuple[object, ...]:
    """Changes whenever the worker shows it runs Python: a heartbeat, a test, its end."""
    return (view.last_heartbeat, view.started, view.tests, view.phase == "finishing", _gone(view))


def _gone(view: WorkerView) -> bool:
    return view.down or view.crash is not None


def _target(view: WorkerView) -> tuple[int, int, str, int | None] | None:
    """(pid, signal, file, main thread) of a local worker that armed a dump signal."""
    if (
        view.remote
        or view.pid is None
        or view.pid == REAL.getpid()
        or view.dump_signal is None
        or not view.dump_file
    ):
        return None
    if view.host and view.host != REAL.uname().nodename:
        return None
    return view.pid, view.dump_signal, view.dump_file, view.main_thread
