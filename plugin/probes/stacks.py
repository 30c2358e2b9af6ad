"""Thread stacks and what they say: frames, the user's own frame, a verdict per thread.

Used by the stall detector (stacks sampled inside the worker), by on-demand dumps, and by
the hub for stacks a frozen worker's faulthandler wrote (:func:`parse_faulthandler`).

A verdict comes from, in this order: the thread being one of the monitor's own, or one
with no user frame whose innermost frame outside the standard library is execnet's,
xdist's or pytest-timeout's (``idle``: a channel's reader, the test runner waiting for its
next test; a thread in pytest's own code is not idle, it collects or runs hooks;
pytest-timeout's timer thread waits in the standard library's ``Timer`` alone and reads as
an ``event`` wait); a database driver anywhere below the user's code
(``database``); a file-lock package below it (``lock``: filelock polls, sleeping between
attempts); the outermost known blocking call below the user's code (``Condition.wait`` ->
``condition``, ``Queue.get`` -> ``queue``...); the thread's CPU time rising between samples
(``busy``); the system call the thread sits in (Linux ``/proc``: futex -> ``lock``,
nanosleep -> ``sleep``, poll/recv -> ``socket``, wait4 -> ``subprocess``); its stack moving
(``busy``); else ``unknown``.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from types import CodeType, FrameType
from typing import Any

from .. import events as ev
from ..guard import REAL, abspath, repr_of

MAX_FRAMES = 80
"""Innermost frames kept per thread (pytest's own stack alone is ~40 deep)."""
MAX_TASKS = 20
"""Pending asyncio tasks listed per event loop."""
SOURCE_LIMIT = 1 << 20
"""Bytes of a source file read at most to show the line a thread is at."""
BUSY_CPU_SHARE = 0.3
"""A thread that used this share of one CPU between two samples is busy."""

_PACKAGE_DIR = os.path.dirname(os.path.dirname(abspath(__file__)))
_STDLIB_DIRS = tuple(
    {
        os.path.normcase(abspath(p)) + os.sep
        for p in (
            sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})[
                key
            ]
            for key in ("stdlib", "platstdlib")
        )
    }
)
_THIRD_PARTY = ("site-packages", "dist-packages")
_INFRA = re.compile(r"[/\\](execnet|xdist)[/\\]|[/\\](pytest_timeout)\.py$")
"""The test runner's machinery: a thread that waits in it waits for the runner's work."""
_PYTEST = re.compile(r"[/\\]_pytest[/\\]")
"""pytest's own code: a thread with a frame of it is the test-runner thread."""
_DATABASE = re.compile(
    r"[/\\](psycopg2?|pymysql|MySQLdb|mysql[/\\]connector|asyncpg|aiomysql|aiosqlite|sqlite3"
    r"|sqlalchemy|pyodbc|oracledb|cx_Oracle|pymssql|redis|pymongo|motor)[/\\]"
)
_FILE_LOCKS = re.compile(r"[/\\](filelock|portalocker|fasteners)[/\\]")
"""Packages that wait on a file lock by polling it (their thread sits in sleep)."""

# (stdlib file relative to the stdlib folder, qualified or bare function name) -> verdict.
# Bare names serve faulthandler dumps, which carry no class names.
_CALLS: dict[tuple[str, str], str] = {}
for _file, _verdict, _names in (
    ("threading.py", "event", ("Event.wait",)),
    ("threading.py", "condition", ("Condition.wait", "Condition.wait_for", "Barrier.wait")),
    ("threading.py", "condition", ("wait", "wait_for")),
    ("threading.py", "lock", ("Semaphore.acquire", "BoundedSemaphore.acquire", "acquire")),
    ("threading.py", "lock", ("Thread.join", "Thread._wait_for_tstate_lock", "join")),
    ("threading.py", "lock", ("_wait_for_tstate_lock",)),
    ("queue.py", "queue", ("Queue.get", "Queue.put", "Queue.join", "get", "put", "join")),
    ("multiprocessing/queues.py", "queue", ("Queue.get", "Queue.put", "get", "put")),
    ("concurrent/futures/_base.py", "future", ("Future.result", "Future.exception")),
    ("concurrent/futures/_base.py", "future", ("result", "exception", "wait", "as_completed")),
    ("concurrent/futures/thread.py", "future", ("ThreadPoolExecutor.shutdown", "shutdown")),
    ("subprocess.py", "subprocess", ("Popen.wait", "Popen.communicate", "Popen._wait")),
    ("subprocess.py", "subprocess", ("run", "call", "check_call", "check_output", "wait")),
    ("subprocess.py", "subprocess", ("communicate", "_communicate", "_wait")),
    ("socket.py", "socket", ("*",)),
    ("selectors.py", "socket", ("*",)),
    ("ssl.py", "socket", ("*",)),
    ("http/client.py", "socket", ("*",)),
    ("urllib/request.py", "socket", ("*",)),
    ("socketserver.py", "socket", ("*",)),
    ("multiprocessing/connection.py", "socket", ("*",)),
    ("time.py", "sleep", ("sleep",)),
):
    for _name in _names:
        _CALLS[(_file, _name)] = _verdict

# Linux system call numbers -> verdict (x86_64, aarch64).
_SYSCALLS: dict[str, dict[int, str]] = {
    "x86_64": {
        202: "lock",  # futex
        35: "sleep",  # nanosleep
        230: "sleep",  # clock_nanosleep
        7: "socket",  # poll
        23: "socket",  # select
        232: "socket",  # epoll_wait
        270: "socket",  # pselect6
        271: "socket",  # ppoll
        281: "socket",  # epoll_pwait
        441: "socket",  # epoll_pwait2
        42: "socket",  # connect
        43: "socket",  # accept
        288: "socket",  # accept4
        45: "socket",  # recvfrom
        47: "socket",  # recvmsg
        61: "subprocess",  # wait4
        247: "subprocess",  # waitid
    },
    "aarch64": {
        98: "lock",
        101: "sleep",
        115: "sleep",
        72: "socket",
        73: "socket",
        22: "socket",
        441: "socket",
        202: "socket",
        203: "socket",
        242: "socket",
        207: "socket",
        212: "socket",
        260: "subprocess",
        95: "subprocess",
    },
}
_SELECTS: dict[str, frozenset[int]] = {"x86_64": frozenset({23, 270}), "aarch64": frozenset({72})}
"""select / pselect6: with no descriptors (its first argument 0) it is a sleep, which is
how ``time.sleep`` sleeps before Python 3.11."""
# Imported when something first stalls, maybe under a test's patches: REAL, not os.
_MACHINE = REAL.uname().machine if hasattr(os, "uname") else ""
_CLK_TCK = REAL.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# ---------------------------------------------------------------------- frames


@lru_cache(maxsize=4096)
def is_user_file(filename: str) -> bool:
    """The project's own code: not the standard library, not installed packages, not us."""
    if not filename or filename.startswith("<"):
        return False
    path = os.path.normcase(abspath(filename))
    if any(part in path for part in _THIRD_PARTY):
        return False
    if path.startswith(_STDLIB_DIRS):
        return False
    return not path.startswith(_PACKAGE_DIR + os.sep)


@lru_cache(maxsize=4096)
def _stdlib_name(filename: str) -> str | None:
    """``threading.py``, ``concurrent/futures/_base.py`` for stdlib files, else None."""
    path = os.path.normcase(abspath(filename))
    for base in _STDLIB_DIRS:
        if path.startswith(base) and not any(part in path for part in _THIRD_PARTY):
            return path[len(base) :].replace(os.sep, "/")
    return None


def _qualname(code: CodeType, frame: FrameType | None = None) -> str:
    """``Class.method`` of a frame's code; before Python 3.11 (no ``co_qualname``) found
    from the frame's ``self``: the class in its MRO that defines this very code."""
    qualname = getattr(code, "co_qualname", None)
    if qualname is not None:
        return str(qualname)
    if frame is not None and code.co_argcount and code.co_varnames[0] == "self":
        this = frame.f_locals.get("self")
        for klass in type(this).__mro__:
            method = klass.__dict__.get(code.co_name)
            if getattr(method, "__code__", None) is code:
                return f"{klass.__name__}.{code.co_name}"
    return code.co_name


def frames_of(frame: FrameType | None, limit: int = MAX_FRAMES) -> list[ev.Frame]:
    """A thread's frames, outermost first, at most ``limit`` innermost ones."""
    out: list[ev.Frame] = []
    while frame is not None and len(out) < limit:
        code = frame.f_code
        name = code.co_filename
        out.append(ev.Frame(name, frame.f_lineno or 0, _qualname(code, frame), is_user_file(name)))
        frame = frame.f_back
    out.reverse()
    return out


_INSTALLED = re.compile(r"^.*?[/\\](?:site|dist)-packages[/\\]")
"""Up to an installed package: ``/venv/lib/python3.11/site-packages/``."""
_STDLIB_PATH = re.compile(r"^.*?[/\\](?:lib[/\\]python\d+(?:\.\d+)?t?|Lib)[/\\]")
"""Up to the interpreter's standard library: ``/usr/lib/python3.11/``, ``C:\\Python311\\Lib\\``
(read from the path alone: the log may come from another machine's interpreter)."""
STDLIB = "<stdlib>/"
"""What a frame's file in the standard library is shown from."""
_FRAMEWORK = re.compile(
    r"[/\\](?:site|dist)-packages[/\\](?:pluggy|_pytest|pytest|xdist|execnet|pytest_timeout"
    r"|pytest_asyncio|anyio[/\\]pytest_plugin)[/\\.]"
    r"|[/\\](?:lib[/\\]python\d+(?:\.\d+)?t?|Lib)[/\\](?:threading|runpy|selectors)\.py$"
    r"|[/\\](?:testmon_live[/\\])?plugin[/\\](?:probes[/\\])?\w+\.py$"
    r"|^<(?:string|frozen [\w.]+)>$"
)
"""Frames of the machinery every stack runs through: pytest, pluggy, xdist, execnet, the
standard library's threading internals, the monitor itself (installed or from its source
tree: a log only has the path), and code without a file (execnet's bootstrap is run from a
``<string>``, the interpreter's start-up from ``<frozen runpy>``)."""


def short_file(file: str, root: str | None = None) -> str:
    """A frame's file as read: relative to ``root`` below it, from ``site-packages/`` for
    an installed package, from :data:`STDLIB` for the standard library, else whole."""
    if root and file.startswith(root.rstrip(os.sep) + os.sep):
        return file[len(root.rstrip(os.sep)) + 1 :]
    installed = _INSTALLED.match(file)
    if installed is not None:
        return "site-packages/" + file[installed.end() :].replace("\\", "/")
    stdlib = _STDLIB_PATH.match(file)
    if stdlib is not None:
        return STDLIB + file[stdlib.end() :].replace("\\", "/")
    return file


def framework_frame(frame: ev.Frame) -> bool:
    """A frame of pytest, pluggy, xdist, execnet, the standard library's threading, or the
    monitor's own: views fold them by default (they are in every stack and say nothing of
    why this one is stuck). The user's own code never is."""
    return not frame.user and _FRAMEWORK.search(frame.file) is not None


def frame_text(frame: ev.Frame, root: str | None = None) -> str:
    """``file:line in func``, the file as :func:`short_file` shows it (relative to ``root``
    when it lies below it, ``root`` with or without its trailing separator). The one text
    of a frame: stall locations, reports, the dashboard and ``testmon dump`` all show
    frames through it."""
    return f"{short_file(frame.file, root)}:{frame.line} in {frame.func}"


def user_frame(frames: Sequence[ev.Frame]) -> ev.Frame | None:
    """The innermost frame of the user's own code."""
    for frame in reversed(frames):
        if frame.user:
            return frame
    return None


def source_line(frame: ev.Frame) -> str:
    lines = _source_lines(frame.file)
    return lines[frame.line - 1].strip() if 0 < frame.line <= len(lines) else ""


@lru_cache(maxsize=256)
def _source_lines(file: str) -> tuple[str, ...]:
    """A source file's lines, read through :data:`REAL` (``linecache`` opens files by the
    name ``open``, which a test may have patched)."""
    if not file or file.startswith("<"):
        return ()
    try:
        with REAL.open(file, "rb") as handle:
            data = handle.read(SOURCE_LIMIT)
    except (OSError, ValueError):
        return ()
    return tuple(data.decode("utf-8", "replace").splitlines())


# --------------------------------------------------------------------- verdicts


def _call_verdict(frame: ev.Frame) -> str | None:
    name = _stdlib_name(frame.file)
    if name is None:
        return None
    return _CALLS.get((name, frame.func)) or _CALLS.get((name, "*"))


def _line_verdict(text: str) -> str | None:
    """Guess from the source line when the blocking call is C code (no Python frame)."""
    if "sleep(" in text:
        return "sleep"
    if ".acquire(" in text or (text.startswith("with ") and "lock" in text.lower()):
        return "lock"
    if any(call in text for call in (".recv(", ".accept(", ".connect(", "select(", ".poll(")):
        return "socket"
    return None


def classify(
    frames: Sequence[ev.Frame],
    *,
    syscall: str | None = None,
    busy: bool = False,
    moved: bool | None = None,
) -> tuple[str, str | None]:
    """(verdict, detail) of one thread: see the module docstring for the order of rules."""
    if not frames:
        return "unknown", None
    users = [i for i, f in enumerate(frames) if f.user]
    below = list(frames[users[-1] + 1 :]) if users else list(frames)
    if not users:
        infra = _waits_in_infra(frames)
        if infra is not None:
            runner = any(_PYTEST.search(f.file) for f in frames)
            return "idle", f"{frames[-1].func} ({'test-runner' if runner else infra} thread)"
    if not users and any(f.file.startswith(_PACKAGE_DIR + os.sep) for f in frames):
        return "idle", "testmon-live thread"
    for frame in below:
        if _DATABASE.search(frame.file):
            return "database", f"{_module_of(frame.file)}: {frame.func}"
    for frame in below:
        match = _FILE_LOCKS.search(frame.file)
        if match:
            return "lock", f"{match.group(1)}: {frame.func}"
    for frame in below:
        verdict = _call_verdict(frame)
        if verdict is not None:
            return verdict, _call_text(frame)
    innermost = frames[-1]
    line = source_line(innermost) if innermost.user else ""
    if busy:
        return "busy", line or innermost.func
    if syscall is not None:
        return syscall, line or innermost.func
    guessed = _line_verdict(line) if line else None
    if guessed is not None:
        return guessed, line
    if moved:
        return "busy", line or innermost.func
    return "unknown", line or innermost.func


def _waits_in_infra(frames: Sequence[ev.Frame]) -> str | None:
    """execnet, xdist or pytest_timeout when the thread's innermost frame outside the
    standard library is theirs (a channel's reader, the runner waiting for its next test),
    else None: a thread in pytest's own code (collecting, running hooks) is not idle."""
    for frame in reversed(frames):
        if _stdlib_name(frame.file) is None:
            match = _INFRA.search(frame.file)
            return (match.group(1) or match.group(2)).replace("_", "-") if match else None
    return None


def _module_of(file: str) -> str:
    match = _DATABASE.search(file)
    return match.group(1).replace("\\", "/").replace("/", ".") if match else file


def _call_text(frame: ev.Frame) -> str:
    name = _stdlib_name(frame.file) or frame.file
    module = name.removesuffix(".py").replace("/", ".")
    return f"{module}.{frame.func}"


# ------------------------------------------------------------------ /proc reads


def thread_syscall(native_id: int | None) -> str | None:
    """The verdict for the system call a thread of this process sits in (Linux), or None."""
    table = _SYSCALLS.get(_MACHINE)
    if native_id is None or table is None:
        return None
    try:
        with REAL.open(f"/proc/self/task/{native_id}/syscall", "rb") as handle:
            fields = handle.read(64).split(None, 2)
        first = fields[0]
    except (OSError, IndexError):
        return None
    if first == b"running":
        return "busy"
    try:
        number = int(first)
        if number in _SELECTS.get(_MACHINE, ()) and len(fields) > 1 and int(fields[1], 16) == 0:
            return "sleep"
    except ValueError:
        return None
    return table.get(number)


def thread_cpu(native_id: int | None, pid: str = "self") -> float | None:
    """CPU seconds a thread used so far (Linux), or None."""
    if native_id is None:
        return None
    try:
        with REAL.open(f"/proc/{pid}/task/{native_id}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def task_cpu(pid: int) -> dict[str, float] | None:
    """CPU seconds of every thread (task) of another process (Linux), or None."""
    try:
        tasks = REAL.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    out: dict[str, float] = {}
    for tid in tasks:
        cpu = thread_cpu(int(tid), str(pid))
        if cpu is not None:
            out[tid] = cpu
    return out


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, D, T...), or None."""
    try:
        with REAL.open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


# --------------------------------------------------------------------- asyncio


def _running_loop(frame: FrameType | None) -> Any:
    """The asyncio event loop a thread runs, found as ``self`` of its ``run_forever`` frame."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "run_forever" and code.co_filename.endswith(
            os.path.join("asyncio", "base_events.py")
        ):
            return frame.f_locals.get("self")
        frame = frame.f_back
    return None


def _coro_frames(coro: Any) -> tuple[list[ev.Frame], str | None]:
    """A suspended coroutine's frames down its ``await`` chain, and what the last awaits."""
    out: list[ev.Frame] = []
    awaiting: str | None = None
    seen = 0
    while coro is not None and seen < MAX_FRAMES:
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            awaiting = _short_repr(coro)
            break
        code = frame.f_code
        name = code.co_filename
        out.append(ev.Frame(name, frame.f_lineno or 0, _qualname(code, frame), is_user_file(name)))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out, awaiting


def _short_repr(obj: Any) -> str:
    return repr_of(obj, 200)


def loop_tasks(frame: FrameType | None) -> list[ev.TaskStack] | None:
    """Pending tasks of the event loop this thread runs; None if it runs none."""
    loop = _running_loop(frame)
    if loop is None:
        return None
    import asyncio

    try:
        tasks = list(asyncio.all_tasks(loop))  # retries itself while the set changes
    except RuntimeError:
        return []
    out: list[ev.TaskStack] = []
    for task in tasks[:MAX_TASKS]:
        coro = task.get_coro()
        frames, awaiting = _coro_frames(coro)
        waiter = getattr(task, "_fut_waiter", None)
        out.append(
            ev.TaskStack(
                name=task.get_name(),
                coro=_qualname(coro.cr_code) if hasattr(coro, "cr_code") else _short_repr(coro),
                frames=frames,
                awaiting=_short_repr(waiter) if waiter is not None else awaiting,
            )
        )
    return out


# ------------------------------------------------------------------- sampling


class Sample:
    """One look at every thread of this process: frames, CPU, system call."""

    __slots__ = ("cpu", "frames", "raw", "threads", "wall")

    def __init__(self, wall: float, skip: Iterable[int] = ()) -> None:
        self.wall = wall
        skipped = set(skip)
        self.raw: dict[int, FrameType] = {
            ident: f for ident, f in REAL.current_frames().items() if ident not in skipped
        }
        self.threads: dict[int, threading.Thread] = {
            t.ident: t for t in REAL.enumerate_threads() if t.ident is not None
        }
        self.frames: dict[int, list[ev.Frame]] = {
            ident: frames_of(frame) for ident, frame in self.raw.items()
        }
        self.cpu: dict[int, float | None] = {
            ident: thread_cpu(self._native(ident)) for ident in self.raw
        }

    def _native(self, ident: int) -> int | None:
        thread = self.threads.get(ident)
        return getattr(thread, "native_id", None) if thread is not None else None

    def stacks(self, previous: Sample | None = None) -> list[ev.ThreadStack]:
        """Every sampled thread with its verdict; ``previous`` tells moving from still."""
        out: list[ev.ThreadStack] = []
        main = REAL.main_thread().ident
        for ident, frames in self.frames.items():
            thread = self.threads.get(ident)
            moved: bool | None = None
            busy = False
            if previous is not None and ident in previous.frames:
                moved = _signature(previous.frames[ident]) != _signature(frames)
                before, after = previous.cpu.get(ident), self.cpu.get(ident)
                span = self.wall - previous.wall
                if before is not None and after is not None and span > 0:
                    busy = (after - before) >= BUSY_CPU_SHARE * span
            verdict, detail = classify(
                frames, syscall=thread_syscall(self._native(ident)), busy=busy, moved=moved
            )
            tasks = loop_tasks(self.raw[ident]) if verdict in ("socket", "busy") else None
            if tasks is not None:
                verdict, detail = _loop_verdict(verdict, detail, tasks)
            name = thread.name if thread is not None else ("MainThread" if ident == main else "")
            out.append(
                ev.ThreadStack(
                    name=name or f"thread {ident:#x}",
                    ident=ident,
                    daemon=bool(thread.daemon) if thread is not None else False,
                    verdict=verdict,
                    detail=detail,
                    frames=frames,
                    tasks=tasks or [],
                    moved=moved,
                )
            )
        out.sort(key=lambda t: (t.ident != main, t.verdict == "idle", t.name))
        return out


def _loop_verdict(
    verdict: str, detail: str | None, tasks: list[ev.TaskStack]
) -> tuple[str, str | None]:
    if verdict != "socket":  # the loop is running a callback, not waiting
        return verdict, detail
    if not tasks:
        return "idle", "asyncio event loop with no pending task"
    return "future", f"asyncio event loop waiting: {len(tasks)} pending task(s)"


def _signature(frames: list[ev.Frame]) -> tuple[tuple[str, int, str], ...]:
    return tuple((f.file, f.line, f.func) for f in frames)


_JOINS = frozenset(
    {("threading.py", name) for name in ("Thread.join", "join", "_wait_for_tstate_lock")}
    | {
        ("concurrent/futures/_base.py", name)
        for name in ("Future.result", "result", "wait", "as_completed")
    }
    | {
        ("concurrent/futures/thread.py", name)
        for name in ("ThreadPoolExecutor.shutdown", "shutdown")
    }
)
"""Calls by which a thread waits for other threads: a stall there is in one of those."""


def waits_on_threads(frames: Sequence[ev.Frame]) -> bool:
    """The thread's own code called a join (of a thread, a future, a pool) and waits in it."""
    for i in range(len(frames) - 1, 0, -1):
        if frames[i - 1].user and not frames[i].user:
            called = frames[i]
            name = _stdlib_name(called.file)
            return name is not None and (name, called.func) in _JOINS
    return False


def location(threads: Sequence[ev.ThreadStack], root: str | None = None) -> str | None:
    """Where the stall is, as :func:`frame_text` shows :func:`location_frame`."""
    frame = location_frame(threads)
    return frame_text(frame, root) if frame is not None else None


def location_frame(threads: Sequence[ev.ThreadStack]) -> ev.Frame | None:
    """The frame the stall is at: the innermost user frame of the main thread (of its
    pending asyncio tasks when it runs an idle loop), else of the first thread that has
    one. A thread that only joins others (``t.join()``, ``future.result()``) is passed over
    for one it waits for that is stuck in the user's code (the consumer waiting on its
    condition): that is where the stall is."""
    ordered = sorted(threads, key=lambda t: t.name != "MainThread")
    stuck = [t for t in ordered if t.verdict != "idle" and not waits_on_threads(t.frames)]
    for thread in stuck + ordered:
        for task in thread.tasks:
            frame = user_frame(task.frames)
            if frame is not None:
                return frame
        frame = user_frame(thread.frames)
        if frame is not None:
            return frame
    return None


# ------------------------------------------------------------ faulthandler dumps

_THREAD_LINE = re.compile(r"^(Current thread|Thread) (0x[0-9a-fA-F]+)")
_FILE_LINE = re.compile(r'^\s+File "(.*)", line (\d+) in (.*)$')


def parse_faulthandler(
    text: str, *, main_ident: int | None = None, busy: bool = False
) -> list[ev.ThreadStack]:
    """Threads from a ``faulthandler.dump_traceback(all_threads=True)`` text.

    Faulthandler lists the most recent call first and names no threads: the main thread
    is known by ``main_ident``, the others go by their ident. ``busy`` (the process was
    burning CPU) marks threads blocked on nothing known as busy in native code.
    """
    out: list[ev.ThreadStack] = []
    current: tuple[int, list[ev.Frame]] | None = None

    def close() -> None:
        if current is None:
            return
        ident, frames = current
        frames.reverse()
        verdict, detail = classify(frames, busy=False)
        if verdict == "unknown" and busy:
            mine = user_frame(frames)
            what = (source_line(mine) if mine is not None else "") or detail or "?"
            verdict, detail = "busy", f"native code holding the GIL: {what}"
        out.append(
            ev.ThreadStack(
                name="MainThread" if ident == main_ident else f"thread {ident:#x}",
                ident=ident,
                verdict=verdict,
                detail=detail,
                frames=frames,
            )
        )

    for line in text.splitlines():
        head = _THREAD_LINE.match(line)
        if head is not None:
            close()
            current = (int(head.group(2), 16), [])
            continue
        match = _FILE_LINE.match(line)
        if match is not None and current is not None:
            file = match.group(1)
            frame = ev.Frame(file, int(match.group(2)), match.group(3), is_user_file(file))
            current[1].append(frame)
    close()
    out.sort(key=lambda t: (t.name != "MainThread", t.verdict == "idle", t.name))
    return out
