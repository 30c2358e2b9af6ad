"""``testmon runs``: what each run on disk says, as the runs model.

``testmon runs`` must stay fast on many logs: a finished log ends with a
:class:`~testmon_live.plugin.events.RunFinished` record that already carries the counts,
so a summary reads the header line and the last line (seeking from the end) and folds
the whole log only when there is no end record (a live, killed or crashed run).

:func:`build_runs` is the one place where the content of the list of runs is decided: a
plain dict, the *model* that ``--format json`` prints as it is (documented in
``docs/report-json.md``). Nothing here renders text: :mod:`.sections` does, from that dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import (
    LOG_SUFFIX,
    MonitorDir,
    RunLogError,
    iter_log,
)
from testmon_live.plugin.state import RunState

from .logs import live_ids, read_header, read_last_event, status_of
from .model import pytest_summary
from .values import all_counts, epoch, iso_time, seconds

RUNS_VERSION = 1
PROBLEMS_FIRST = ("failed", "error", "xpassed", "passed", "skipped", "xfailed", "deselected")
"""Order for a summary that may be cut short (the runs list): what went wrong first."""


@dataclass(frozen=True)
class RunSummary:
    """One line of ``testmon runs``."""

    run_id: str
    path: Path
    started: float
    wall: float
    workers: int
    tests: int
    counts: dict[str, int]
    crashes: int
    stalls: int
    status: str
    exit_status: int | None
    exit_name: str | None
    folded: bool
    """True when the whole log was read (it had no end record)."""


@dataclass(frozen=True)
class Unlisted:
    """A file in the runs folder that is not a readable log (and why)."""

    path: Path
    error: str


@dataclass
class RunListing:
    mdir: MonitorDir
    runs: list[RunSummary] = field(default_factory=list)
    """Newest first."""
    unlisted: list[Unlisted] = field(default_factory=list)


def _from_end(path: Path, header: ev.RunStarted, end: ev.RunFinished) -> RunSummary:
    state = RunState(detail=False)
    state.apply(header)
    state.apply(end)
    return RunSummary(
        run_id=header.run_id,
        path=path,
        started=header.ts,
        wall=state.wall(),
        workers=len(end.workers),
        tests=end.tests,
        counts=dict(end.counts),
        crashes=end.crashes,
        stalls=end.stalls,
        status=state.status,
        exit_status=end.exitstatus,
        exit_name=end.status,
        folded=False,
    )


def _from_fold(path: Path, state: RunState, live: bool) -> RunSummary:
    end = state.end
    return RunSummary(
        run_id=state.run_id or path.name.removesuffix(LOG_SUFFIX),
        path=path,
        started=state.started,
        wall=state.wall(),
        workers=len(state.active_workers()),
        tests=state.tests_done,
        counts=dict(state.counts),
        crashes=len(state.crashes),
        stalls=state.stall_count(),
        status=status_of(state, live),
        exit_status=end.exitstatus if end else None,
        exit_name=end.status if end else None,
        folded=True,
    )


def summarize(path: Path, live: set[str]) -> RunSummary:
    """Header + last line when the run finished; the whole log folded otherwise."""
    header = read_header(path)
    try:
        last = read_last_event(path)
    except OSError as exc:
        raise RunLogError(f"cannot read {path}: {exc.strerror or exc}") from None
    if isinstance(last, ev.RunFinished):
        return _from_end(path, header, last)
    state = RunState(detail=False).apply_all(iter_log(path))
    return _from_fold(path, state, header.run_id in live)


def _summary_or_why(path: Path, live: set[str]) -> RunSummary | Unlisted:
    try:
        return summarize(path, live)
    except (RunLogError, OSError) as exc:
        return Unlisted(path, str(exc))


def list_runs(mdir: MonitorDir) -> RunListing:
    """Every log of ``mdir``, newest first; files that are not logs are set aside with why."""
    listing = RunListing(mdir)
    live = live_ids(mdir)
    for path in mdir.logs():
        found = _summary_or_why(path, live)
        if isinstance(found, RunSummary):
            listing.runs.append(found)
        else:
            listing.unlisted.append(found)
    listing.runs.sort(key=lambda r: (r.started, r.run_id), reverse=True)
    return listing


# ------------------------------------------------------------------- the model


class RunRow(TypedDict):
    id: str
    log: str
    status: str
    exit_status: int | None
    exit_name: str | None
    started: float
    started_at: str
    wall: float
    workers: int
    tests: int
    counts: dict[str, int]
    summary: str
    crashes: int
    stalls: int


class UnlistedRow(TypedDict):
    log: str
    error: str


class RunsModel(TypedDict):
    """What ``testmon runs --format json`` prints."""

    runs_version: int
    dir: str
    runs: list[RunRow]
    unlisted: list[UnlistedRow]


def _run_row(run: RunSummary) -> RunRow:
    counts = all_counts(run.counts)
    return {
        "id": run.run_id,
        "log": str(run.path.resolve()),
        "status": run.status,
        "exit_status": run.exit_status,
        "exit_name": run.exit_name,
        "started": epoch(run.started),
        "started_at": iso_time(run.started),
        "wall": seconds(run.wall),
        "workers": run.workers,
        "tests": run.tests,
        "counts": counts,
        "summary": pytest_summary(counts),
        "crashes": run.crashes,
        "stalls": run.stalls,
    }


def build_runs(listing: RunListing, limit: int | None = None) -> RunsModel:
    runs = listing.runs[:limit] if limit else listing.runs
    return {
        "runs_version": RUNS_VERSION,
        "dir": str(listing.mdir.root.resolve()),
        "runs": [_run_row(r) for r in runs],
        "unlisted": [{"log": str(u.path), "error": u.error} for u in listing.unlisted],
    }
