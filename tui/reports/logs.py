"""The runs on disk: which exist, which one a user means, and reading one.

A log's header line (:func:`read_header`), its last line read from the end
(:func:`read_last_event`), the run a user means (:func:`resolve_run`, :func:`newest_log`),
and the whole log folded through :class:`~testmon_live.plugin.state.RunState`
(:func:`load_run`) with the status that makes of it (:data:`STATUSES`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import (
    LOG_SUFFIX,
    RUNS_DIR,
    MonitorDir,
    RunLogError,
    SkippedLines,
    check_header,
    iter_log,
    live_runs,
    open_log,
)
from testmon_live.plugin.state import RunState, fold

HEADER_LIMIT = 16 * 1024 * 1024
"""Longest header line read (it carries the environment, so it can be long)."""
TAIL_CHUNK = 64 * 1024
TAIL_LIMIT = 4 * 1024 * 1024
"""Longest last line looked for before giving up and folding the whole log."""

RUNNING = "running"
FINISHED = "finished"
INTERRUPTED = "interrupted"
CRASHED = "crashed"
INCOMPLETE = "incomplete"
STATUSES = (RUNNING, FINISHED, INTERRUPTED, CRASHED, INCOMPLETE)
STATUS_HELP = {
    RUNNING: "its pytest is still running (a live hub is listening)",
    FINISHED: "the run ended normally (whatever its tests did)",
    INTERRUPTED: "the run was interrupted (Ctrl-C, -x, a session-level failure)",
    CRASHED: "pytest stopped with an internal or usage error",
    INCOMPLETE: "the log has no end record and its pytest is gone: killed or crashed",
}


def record_hint(mdir: MonitorDir) -> str:
    """Where we looked, and how to get something to look at."""
    if not mdir.root.is_dir():
        where = f"no monitor folder at {mdir.root}"
        if not os.environ.get("TESTMON_DIR"):
            where = f"no .testmon folder from {Path.cwd()} upwards"
        return f"{where}: record a run with `pytest --monitor`, or point --dir at a .testmon folder"
    return f"no recorded runs in {mdir.runs}: record one with `pytest --monitor`"


# ----------------------------------------------------------------- reading lines


class _HeaderPeek(msgspec.Struct):
    """Just enough of a first line to tell a newer schema from garbage."""

    t: str = ""
    schema: int = 0
    run_id: str = ""


def read_header(path: Path) -> ev.RunStarted:
    """The header of a log, with a clear :class:`RunLogError` for anything else.

    A header of a newer schema is recognised even when its fields changed so much that
    this build cannot decode it (it then says "upgrade", not "not a run log").
    """
    try:
        with open_log(path) as handle:
            first = handle.readline(HEADER_LIMIT)
    except OSError as exc:
        raise RunLogError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not first.strip():
        raise RunLogError(f"{path} is empty: not a testmon-live run log")
    try:
        header = ev.decode_event(first)
    except ev.DecodeError as exc:
        try:
            peek = msgspec.json.decode(first, type=_HeaderPeek)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            peek = _HeaderPeek()
        if peek.t == "run" and peek.schema > ev.SCHEMA_VERSION:
            check_header(
                ev.RunStarted(schema=peek.schema, run_id=peek.run_id, rootdir=""), str(path)
            )
        raise RunLogError(f"{path} is not a testmon-live run log (line 1: {exc})") from None
    return check_header(header, str(path))


def read_last_event(path: Path) -> ev.Event | None:
    """The event on the last complete line, read from the end; None if there is none."""
    with open_log(path) as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return None
        handle.seek(size - 1)
        if handle.read(1) != b"\n":
            return None  # torn last line: the run was killed or is still writing
        end = size - 1
        tail = b""
        while end > 0 and len(tail) < TAIL_LIMIT:
            start = max(0, end - TAIL_CHUNK)
            handle.seek(start)
            tail = handle.read(end - start) + tail
            end = start
            cut = tail.rfind(b"\n")
            if cut >= 0:
                tail = tail[cut + 1 :]
                break
        else:
            if end > 0:
                return None
    try:
        return ev.decode_event(tail)
    except ev.DecodeError:
        return None


# -------------------------------------------------------------------- resolving


def live_ids(mdir: MonitorDir) -> set[str]:
    """Ids of the runs whose hub is up now."""
    return {run.run_id for run in live_runs(mdir)}


def monitor_dir_of(path: Path, fallback: MonitorDir) -> MonitorDir:
    """The monitor folder a log lives in (``<dir>/runs/<id>.jsonl``), else ``fallback``."""
    if path.parent.name == RUNS_DIR:
        return MonitorDir(path.parent.parent)
    return fallback


def newest_log(mdir: MonitorDir) -> Path:
    """The log of the run that started last, by its header (ids sort only to the second)."""
    logs = mdir.logs()
    if not logs:
        raise RunLogError(record_hint(mdir))
    best: tuple[float, str] | None = None
    newest = logs[-1]
    for path in logs:
        try:
            started = read_header(path).ts
        except RunLogError:
            continue
        key = (started, path.name)
        if best is None or key > best:
            best, newest = key, path
    return newest


def resolve_run(mdir: MonitorDir, spec: str) -> Path:
    """A run given as id, unique id prefix, ``latest``, or path of a log file."""
    if spec == "latest":
        return newest_log(mdir)
    looks_like_path = spec.endswith(LOG_SUFFIX) or "/" in spec or os.sep in spec
    if not looks_like_path and not mdir.logs():
        if Path(spec).is_file():
            return Path(spec)
        raise RunLogError(record_hint(mdir))
    return mdir.resolve(spec)


# ----------------------------------------------------------------------- status


def status_of(state: RunState, live: bool) -> str:
    """One of :data:`STATUSES`; a log without an end record is running only if its hub is."""
    if state.end is None:
        return RUNNING if live else INCOMPLETE
    return state.status


# ---------------------------------------------------------------------- loading


@dataclass
class LoadedRun:
    """A whole log folded, for a report."""

    path: Path
    state: RunState
    status: str


def load_run(path: Path, mdir: MonitorDir) -> LoadedRun:
    """Fold a log, read once; the reader's skipped lines land in ``state.problems``. The
    fold keeps every test (``detail``): the next-run prediction is made from it too."""
    header = read_header(path)
    problems = SkippedLines()
    state = fold(iter_log(path, problems))
    state.problems = problems
    live = header.run_id in live_ids(monitor_dir_of(path, mdir))
    return LoadedRun(path=path, state=state, status=status_of(state, live))
