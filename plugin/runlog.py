"""Run logs on disk: where they live, how they are written, how they are read back.

Layout under the monitor directory (``<rootdir>/.testmon`` unless ``--monitor-dir``)::

    .testmon/.gitignore          "*" - nothing here belongs in version control
    .testmon/runs/<run-id>.jsonl one log per run: header line, then one event a line
    .testmon/live/<run-id>.json  while a run lives: where its hub listens

Every folder is 0700 and every file 0600: logs hold failure texts, SQL and arguments
(redacted, see :mod:`.redact`, but a pattern never knows every secret).

Writing is crash-safe by construction: the hub appends whole lines with ``os.write`` on an
``O_APPEND`` descriptor, so a killed controller leaves at most one torn line at the end.
Reading is tolerant: a torn last line and any garbage line are skipped and reported with
their line number and the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import events as ev
from .guard import REAL

RUNS_DIR = "runs"
LIVE_DIR = "live"
LOG_SUFFIX = ".jsonl"
GITIGNORE_TEXT = "# Created by testmon-live: run logs stay out of version control.\n*\n"
DEFAULT_DIRNAME = ".testmon"
DEFAULT_KEEP = 20
READ_CHUNK = 4 * 1024 * 1024
SKIPPED_KEPT = 20
"""Skipped lines kept as examples (with their reason); the rest are only counted."""
REASON_LIMIT = 300
"""Characters of a skipped line's reason kept."""


class RunLogError(Exception):
    """A run log that cannot be used at all (missing, not a log, newer schema)."""


class SchemaTooNew(RunLogError):
    pass


def new_run_id(when: float | None = None) -> str:
    """Sortable by start time to the millisecond: ``20261121-203215-4827f``.

    The last part is the milliseconds and one random byte, so two runs started within
    the same second still sort in the order they started (``latest`` relies on it). The
    time is local to the zone pytest started in, bound then (:data:`.guard.REAL`): a time
    zone the code under test sets (Django's ``TIME_ZONE``) does not move it.
    """
    when = REAL.time() if when is None else when
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when + REAL.local_offset))
    millis = int(when % 1 * 1000)
    return f"{stamp}-{millis:03d}{os.urandom(1).hex()}"


@dataclass(frozen=True)
class MonitorDir:
    """The monitor directory of a project."""

    root: Path

    @property
    def runs(self) -> Path:
        return self.root / RUNS_DIR

    @property
    def live(self) -> Path:
        return self.root / LIVE_DIR

    def ensure(self) -> None:
        """The folders, private (0700): logs hold failure texts, SQL, the run's arguments.
        A ``--monitor-dir`` the user named keeps its mode (it may be any folder, ``/tmp``
        even); a ``.testmon`` is ours, and so are the folders inside."""
        private_folder(self.root, tighten=self.root.name == DEFAULT_DIRNAME)
        private_folder(self.runs)
        private_folder(self.live)
        gitignore = self.root / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text(GITIGNORE_TEXT)

    def log_path(self, run_id: str) -> Path:
        return self.runs / f"{run_id}{LOG_SUFFIX}"

    def live_path(self, run_id: str) -> Path:
        return self.live / f"{run_id}.json"

    def logs(self) -> list[Path]:
        """Every run log, oldest first."""
        if not self.runs.is_dir():
            return []
        return sorted(p for p in self.runs.iterdir() if p.name.endswith(LOG_SUFFIX))

    def resolve(self, spec: str) -> Path:
        """A run given as id, unique id prefix, path, or ``latest``."""
        path = Path(spec)
        if spec.endswith(LOG_SUFFIX) or os.sep in spec:
            if path.is_file():
                return path
            if path.is_dir():
                raise RunLogError(f"{spec} is a folder, not a run log")
            if path.exists():
                raise RunLogError(f"{spec} is not a regular file: not a run log")
            raise RunLogError(f"no run log at {spec}")
        logs = self.logs()
        if not logs:
            raise RunLogError(f"no recorded runs under {self.runs}")
        if spec == "latest":
            return logs[-1]
        exact = [p for p in logs if p.name == spec + LOG_SUFFIX]
        if exact:
            return exact[0]
        matches = [p for p in logs if p.name.startswith(spec)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            if path.is_file():
                return path
            raise RunLogError(f"no run matches {spec!r} in {self.runs} (try `testmon runs`)")
        names = ", ".join(p.name[: -len(LOG_SUFFIX)] for p in matches[:5])
        raise RunLogError(f"{spec!r} matches {len(matches)} runs ({names}...): give more of the id")

    def prune(self, keep: int, protect: frozenset[str] = frozenset()) -> list[Path]:
        """Delete the oldest logs beyond ``keep``; never a live run's. Returns what went."""
        if keep <= 0:
            return []
        live = {run.run_id for run in live_runs(self)}  # stale live files do not count
        logs = self.logs()
        removed: list[Path] = []
        # ids sort by the second, so a protected run may sort before older ones of the same
        # second: skip it and delete the next oldest instead of deleting nothing
        spare = [p for p in logs if p.name[: -len(LOG_SUFFIX)] not in live | protect]
        for path in spare[: max(0, len(logs) - keep)]:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
        return removed


def private_folder(path: Path, tighten: bool = True) -> None:
    """``path`` and missing parents created; ``path`` itself 0700 (only its owner enters
    it): made so, or with ``tighten`` also made so if it exists (an older version left it
    0755)."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        tighten = True
    if tighten and path.stat().st_mode & 0o077:
        path.chmod(0o700)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file of the same name may have been readable
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def find_monitor_dir(start: Path | None = None) -> MonitorDir:
    """The ``.testmon`` of the project around ``start`` (cwd): env TESTMON_DIR, else search up."""
    env = os.environ.get("TESTMON_DIR")
    if env:
        return MonitorDir(Path(env))
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / DEFAULT_DIRNAME
        if candidate.is_dir():
            return MonitorDir(candidate)
    return MonitorDir(here / DEFAULT_DIRNAME)


# ------------------------------------------------------------------------ writing


class LogWriter:
    """Appends whole lines to a run log; every write reaches the kernel at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # read-write: viewers read their backlog through it, even once the file is deleted
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd: int | None = os.open(path, flags, 0o600)
        self.offset = os.fstat(self._fd).st_size
        self.failed: str | None = None

    def write(self, data: bytes) -> bool:
        """Append ``data`` (complete lines). False once the disk refused (then stays off)."""
        fd = self._fd
        if fd is None or self.failed is not None:
            return False
        if not data:
            return True
        view = memoryview(data)
        try:
            while view:
                written = REAL.write(fd, view)  # a test may have patched os.write
                view = view[written:]
        except OSError as exc:
            self.failed = f"writing {self.path}: {exc}"
            return False
        self.offset += len(data)
        return True

    def finish(self, data: bytes) -> bool:
        """Append the last line, even after a write failed: what that write left of a line
        is cut (freeing its space), then one more try. True if ``data`` is in the log."""
        if self.failed is None:
            return self.write(data)
        fd = self._fd
        if fd is None:
            return False
        view = memoryview(data)
        try:
            REAL.ftruncate(fd, self.offset)
            while view:
                view = view[REAL.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                REAL.ftruncate(fd, self.offset)  # no torn end record either
            return False
        self.offset += len(data)
        return True

    def reader(self) -> int:
        """A descriptor of the log for reading (``pread``) that stays valid after this writer
        closes and after the file is deleted; the caller closes it."""
        if self._fd is None:
            raise OSError(f"{self.path} is closed")
        return REAL.dup(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                REAL.close(self._fd)
            self._fd = None


def write_live_file(path: Path, info: dict[str, object], *, hold: bool = False) -> int | None:
    """Publish where a live hub listens; 0600 because it holds the viewer token.

    With ``hold`` the file is locked (``flock``) before it appears, and the open descriptor
    returned: the lock lasts as long as the hub's process, whatever ends it (SIGKILL
    included), so a reader that can take the lock knows the run is gone (:func:`live_runs`)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        data = json.dumps(info).encode()
        view = memoryview(data)
        while view:
            view = view[REAL.write(fd, view) :]
        if hold:
            REAL.flock(fd, fcntl_flag("LOCK_EX") | fcntl_flag("LOCK_NB"))
        os.replace(tmp, path)
    except OSError:
        REAL.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hold:
        return fd
    REAL.close(fd)
    return None


def fcntl_flag(name: str) -> int:
    """``fcntl.LOCK_EX`` and the like (0 where there is no fcntl: flock says so itself)."""
    try:
        import fcntl
    except ImportError:
        return 0
    return int(getattr(fcntl, name))


def held(path: Path) -> bool:
    """Does a living process hold the lock of ``path`` (a live file written with ``hold``)?"""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        REAL.flock(fd, fcntl_flag("LOCK_SH") | fcntl_flag("LOCK_NB"))
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        REAL.close(fd)  # closing releases a lock we took
    return False


@dataclass
class LiveRun:
    run_id: str
    path: Path
    pid: int
    token: str
    address: dict[str, object]
    log: str
    locked: bool = False
    """Its hub holds a lock on the live file while it lives (the lock tells, not the pid)."""

    def alive(self) -> bool:
        if self.locked:
            return held(self.path)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_live_file(path: Path) -> LiveRun:
    try:
        data = json.loads(path.read_text())
        return LiveRun(
            run_id=str(data["run_id"]),
            path=path,
            pid=int(data["pid"]),
            token=str(data["token"]),
            address=dict(data["address"]),
            log=str(data.get("log", "")),
            locked=data.get("locked") is True,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunLogError(f"unreadable live file {path}: {exc}") from None


def live_runs(mdir: MonitorDir) -> list[LiveRun]:
    """Runs whose hub is still up, newest first. What a hub killed with SIGKILL left (its
    live file, its socket and the socket's folder) is removed on the way."""
    if not mdir.live.is_dir():
        return []
    found: list[LiveRun] = []
    for path in sorted(mdir.live.glob("*.json"), reverse=True):
        try:
            run = read_live_file(path)
        except RunLogError:
            continue
        if run.alive():
            found.append(run)
        elif run.locked:  # certainly gone (a pid alone may have been reused: left alone)
            remove_stale(run)
    return found


def remove_stale(run: LiveRun) -> None:
    """The live file of a dead hub, and its unix socket with its private folder."""
    with contextlib.suppress(OSError):
        run.path.unlink()
    unix = run.address.get("unix")
    if isinstance(unix, str):
        sock = Path(unix)
        # only what a hub makes: <tmp>/testmon-live-<hex>/hub.sock
        if sock.name == "hub.sock" and sock.parent.name.startswith("testmon-live-"):
            with contextlib.suppress(OSError):
                sock.unlink()
            with contextlib.suppress(OSError):
                sock.parent.rmdir()


# ------------------------------------------------------------------------ reading


@dataclass
class SkippedLines:
    """Lines a tolerant read skipped: how many, and the first :data:`SKIPPED_KEPT` with the
    reason (a log of millions of garbage lines costs a counter, not a list of millions).

    Iterates over the examples; ``len()`` is the count of all skipped lines."""

    total: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, reason: str, keep: bool = False) -> None:
        """Count a skipped line; keep it as an example while there is room (or if ``keep``)."""
        self.total += 1
        if keep or len(self.examples) < SKIPPED_KEPT:
            self.examples.append((line, reason[:REASON_LIMIT]))

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[tuple[int, str]]:
        return iter(self.examples)


def open_log(path: Path) -> BinaryIO:
    """A log opened for reading, if it is a regular file: a FIFO named ``*.jsonl`` would hang
    the reader and a device (a link to /dev/zero) never end."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise RunLogError(f"{path} is not a regular file: not a run log")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise RunLogError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
            raise RunLogError(f"{path} is not a regular file: not a run log")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


@dataclass
class ReadResult:
    """What a tolerant read found."""

    path: Path
    header: ev.RunStarted | None = None
    events: list[ev.Event] = field(default_factory=list)
    problems: SkippedLines = field(default_factory=SkippedLines)
    """The lines skipped, with the reason for the first few."""
    torn_tail: bool = False


def check_header(header: ev.Event, where: str) -> ev.RunStarted:
    if not isinstance(header, ev.RunStarted):
        raise RunLogError(f"{where} does not start with a run header (found {ev.kind(header)!r})")
    if header.schema > ev.SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{where} has log schema {header.schema}; this build of testmon-live reads schema "
            f"{ev.SCHEMA_VERSION} and older - upgrade testmon-live to read it"
        )
    return header


def _refuse_newer(line: bytes, where: str) -> None:
    """A header that does not decode may still be a newer schema's: say that, not 'garbage'."""
    try:
        loose = json.loads(line)
    except ValueError:
        return
    if not isinstance(loose, dict) or loose.get("t") != "run":
        return
    schema = loose.get("schema")
    if isinstance(schema, int) and schema > ev.SCHEMA_VERSION:
        check_header(ev.RunStarted(schema=schema, run_id="", rootdir=""), where)


def iter_log(
    path: Path, problems: SkippedLines | None = None, kinds: frozenset[str] | None = None
) -> Generator[ev.Event, None, None]:
    """Events of a log, header first, skipping (and counting into ``problems``) bad lines.

    ``kinds``: only events of these tags (``"test"``, ``"lock"``...) after the header; the
    others are left undecoded (a line is taken by its start, ``{"t":"<tag>"``, as this
    build writes it; a hand-made line in another key order is left out with them).

    Raises :class:`RunLogError` when the file is missing, no regular file, empty, not a run
    log, or newer than this build reads.
    """
    if problems is None:
        problems = SkippedLines()
    wanted = None if kinds is None else tuple(f'{{"t":"{kind}"'.encode() for kind in kinds)
    with open_log(path) as handle:
        lineno = 0
        rest = b""
        header_seen = False
        while True:
            chunk = handle.read(READ_CHUNK)
            if not chunk:
                break
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            block = data[: cut + 1]
            if not header_seen:
                first_end = block.index(b"\n")
                first = block[:first_end]
                lineno += 1
                try:
                    header = ev.decode_event(first)
                except ev.DecodeError as exc:
                    raise RunLogError(
                        f"{path} is not a testmon-live run log (line 1: {exc})"
                    ) from None
                yield check_header(header, str(path))
                header_seen = True
                block = block[first_end + 1 :]
            if wanted is not None:
                lines = block.split(b"\n")
                yield from _wanted(lines, wanted, lineno + 1, problems)
                lineno += len(lines) - 1
                continue
            try:
                decoded = ev.decode_events(block)
            except ev.DecodeError:
                decoded = _tolerant(block, lineno, problems)
            lineno += block.count(b"\n")
            yield from decoded
        if rest.strip():
            lineno += 1
            try:
                last = ev.decode_event(rest)
            except ev.DecodeError as exc:
                reason = f"torn last line (the run was killed or is still writing): {exc}"
                problems.add(lineno, reason, keep=True)
            else:
                if not header_seen:
                    yield check_header(last, str(path))
                    header_seen = True
                else:
                    yield last
        if not header_seen:
            raise RunLogError(f"{path} is empty: not a testmon-live run log")


def _wanted(
    lines: list[bytes], wanted: tuple[bytes, ...], before: int, problems: SkippedLines
) -> list[ev.Event]:
    """The events of the wanted kinds among ``lines`` (the rest is not decoded)."""
    block = b"\n".join([line for line in lines if line.startswith(wanted)])
    if not block:
        return []
    try:
        return ev.decode_events(block)
    except ev.DecodeError:
        good: list[ev.Event] = []
        for number, line in enumerate(lines, start=before):
            if line.startswith(wanted):
                try:
                    good.append(ev.decode_event(line))
                except ev.DecodeError as exc:
                    problems.add(number, str(exc))
        return good


def _tolerant(block: bytes, before: int, problems: SkippedLines) -> list[ev.Event]:
    """The good events of a block that does not decode at once, line by line."""
    good: list[ev.Event] = []
    for number, line in enumerate(block.split(b"\n"), start=before + 1):
        if not line.strip():
            continue
        try:
            good.append(ev.decode_event(line))
        except ev.DecodeError as exc:
            problems.add(number, str(exc))
    return good


def read_log(path: Path) -> ReadResult:
    """Read a whole log into memory (for reports and replays)."""
    result = ReadResult(path=path)
    stream = iter_log(path, result.problems)
    first = next(stream)
    assert isinstance(first, ev.RunStarted)
    result.header = first
    result.events = [first, *stream]
    result.torn_tail = any(reason.startswith("torn last line") for _, reason in result.problems)
    return result
