"""The report model: what ``testmon report`` says about one run.

``testmon report`` folds the whole log through
:class:`~testmon_live.plugin.state.RunState` (:func:`~.logs.load_run`), and
:func:`build_report` turns it into a plain dict, the *model* that ``--format json`` prints
as it is (documented in ``docs/report-json.md``): the one place where the content of a
report is decided. Nothing here renders text: :mod:`.sections` does, from that dict.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TypedDict

import msgspec

from testmon_live.plugin import events as ev
from testmon_live.plugin.dburl import display_url
from testmon_live.plugin.probes.stacks import frame_text, user_frame
from testmon_live.plugin.state import (
    CLOCK_SLACK,
    FAILURES_KEPT,
    SLOWEST_KEPT,
    LockStats,
    MigrationGroup,
    MigrationRun,
    RunState,
    SetupRace,
    Tail,
    worker_order,
)

from .logs import LoadedRun
from .values import all_counts, epoch, iso_time, optional_seconds, seconds

REPORT_VERSION = 1
"""``report_version`` of the report model; bumped only when a key changes meaning or goes."""
DEFAULT_TOP = 10
MAX_TOP = SLOWEST_KEPT
"""The fold keeps this many slowest tests; ``--top`` cannot ask for more."""
PYTEST_ORDER = (
    *("failed", "passed", "skipped", "deselected"),
    *("xfailed", "xpassed", "warnings", "error"),
)
"""pytest's order for its summary line (``terminal.py`` KNOWN_TYPES)."""
MIN_SHOWN = 0.005
"""Slowest tests and fixture costs under this many seconds are left out (pytest's own
``--durations-min`` default): a list of sub-millisecond tests says nothing."""


# ---------------------------------------------------------------------- the dict


class RunInfo(TypedDict):
    id: str
    log: str
    status: str
    exit_status: int | None
    exit_name: str | None
    started: float
    started_at: str
    wall: float
    rootdir: str
    args: list[str]
    hostname: str
    python: str
    platform: str
    git_branch: str | None
    git_commit: str | None
    workers_requested: int
    dist: str
    monitor_version: str
    log_schema: int


class Totals(TypedDict):
    tests: int
    failing: int
    counts: dict[str, int]
    summary: str
    test_time: float
    slots: int
    efficiency: float


class WorkerRow(TypedDict):
    id: str
    host: str
    pid: int | None
    tests: int
    failures: int
    busy: float
    busy_share: float
    setup: float
    call: float
    teardown: float
    reports: float
    """Seconds between its tests' phases (in ``busy``, in no phase): pytest making a phase's
    report, a failure's text."""
    state: str


class SlowTest(TypedDict):
    nodeid: str
    worker: str
    outcome: str
    duration: float
    setup: float
    call: float
    teardown: float


class FixtureRow(TypedDict):
    name: str
    scope: str
    baseid: str
    count: int
    workers: list[str]
    setup_total: float
    setup_max: float
    teardown_total: float
    errors: int
    duplicated: bool
    lock_wait_total: float
    work_total: float
    lock: str | None
    ran_once_on: str | None
    once_work: float
    waiters: list[str]
    namesakes: int
    """Other fixtures of the run with the same name (defined elsewhere: ``baseid`` tells
    which is which)."""


class CollectionErrorRow(TypedDict):
    """A collector that failed (a test module that did not import): pytest counts it as an
    ``error`` and runs none of its tests."""

    nodeid: str
    worker: str
    """Where it was seen (``main`` without xdist; ``""`` under xdist, which reports a
    failure several workers share once)."""
    message: str | None


class FailureRow(TypedDict):
    nodeid: str
    worker: str
    outcome: str
    phase: str | None
    message: str | None
    crashed: bool
    reruns: int
    """Attempts pytest-rerunfailures ran again before this last one failed too."""


class RerunRow(TypedDict):
    """A test pytest-rerunfailures ran again: ``passed`` in the end, it is flaky."""

    nodeid: str
    worker: str
    outcome: str
    """Its last attempt's outcome."""
    reruns: int
    phase: str | None
    """Where its first attempt failed."""
    message: str | None
    """Why its first attempt failed."""
    rerun_time: float
    """Seconds its attempts before the last took."""


class CrashRow(TypedDict):
    worker: str
    test: str | None
    exit_code: int | None
    signal: str | None
    error: str
    note: str | None
    at: float
    replaced_by: str | None
    """The worker xdist started in its place."""


class TaskRow(TypedDict):
    name: str
    coro: str
    awaiting: str | None
    where: str | None


class ThreadRow(TypedDict):
    name: str
    verdict: str
    detail: str | None
    where: str | None
    daemon: bool
    tasks: list[TaskRow]


class StallRow(TypedDict):
    worker: str
    reason: str
    test: str | None
    phase: str
    fixture: str | None
    elapsed: float
    location: str | None
    """Where it spent its time (its first sample's place unless a later one held it
    longer)."""
    first_location: str | None
    """Where its first sample found it, when that is not ``location``."""
    at: float
    threads: list[ThreadRow]
    duration: float | None
    samples: int


class UnresponsiveRow(TypedDict):
    worker: str
    silent: float
    test: str | None
    recovered: bool
    at: float


class HolderCount(TypedDict):
    worker: str
    count: int
    kept_waiting: int
    held: float


class HeldRow(TypedDict):
    worker: str
    test: str | None
    since: float


class LockRow(TypedDict):
    kind: str
    key: str
    acquisitions: int
    contended: int
    waits: int
    total_wait: float
    max_wait: float
    longest_hold: float
    failures: int
    timeouts: int
    refused: int
    holders: list[HolderCount]
    held_at_end: list[HeldRow]
    waiting_at_end: list[HeldRow]


class LockWaitRow(TypedDict):
    worker: str
    lock: str
    waited: float
    outcome: str
    holder: str | None
    holder_test: str | None
    holder_fixture: str | None
    test: str | None
    fixture: str | None
    at: float


class ResourceRow(TypedDict):
    kind: str
    name: str


class SetupRaceRow(TypedDict):
    fixture: str
    scope: str
    baseid: str
    workers: list[str]
    spread: float
    overlap: float
    resources: list[ResourceRow]
    succeeded: list[str]
    failed: dict[str, str]
    tests: dict[str, str]
    fix: str


class MigrationRaceRow(TypedDict):
    url: str
    schema: str | None
    """The schema the racing changes named (``None``: the database as a whole)."""
    workers: list[str]
    start: float
    end: float
    """How long the race lasted: from the start of the first migration that overlapped
    another worker's to the end of the last one."""


class Omitted(TypedDict):
    fixtures: int
    quick_fixtures: int
    locks: int
    lock_waits: int
    migrations: int
    migration_steps: int
    migration_errors: int
    db_waits: int


class MigrationRow(TypedDict):
    """A migration, or the same migration repeated (``count``): one worker running one tool
    and operation on one database between the same revisions, as a suite that builds its
    schema per test does (``create_all`` in a function fixture)."""

    worker: str
    tool: str
    op: str
    url: str
    schema: str | None
    """The schema its statements named (a schema per worker in one database never races)."""
    from_rev: str | None
    to_rev: str | None
    start: float
    """When the first of them began."""
    offset: float
    count: int
    """How many times it ran (1: a one-off)."""
    duration: float | None
    """Seconds in all (of those that finished; ``None``: none did)."""
    longest: float | None
    """The longest of them."""
    finished: bool
    """Every one of them finished."""
    unfinished: int
    error: str | None
    """The first error (one that failed a test before one a passing test caught)."""
    errors: int
    """How many failed (errors passing tests caught aside)."""
    caught_errors: int
    test: str | None
    """The first one's test and fixture."""
    fixture: str | None
    concurrent_with: list[str]
    caught: bool
    """It raised, and every error inside a test that passed: caught (expected)."""


class MigrationErrorRow(TypedDict):
    """Migrations of one tool and operation that failed with the same message, on one
    database, during one race or outside any."""

    tool: str
    op: str
    error: str
    count: int
    workers: list[str]
    tests: list[str]
    """The tests they ran in (the first few; ``test_count`` says how many)."""
    test_count: int
    """How many tests they ran in."""
    caught: bool
    """All of them raised inside tests that passed (errors the suite provokes on purpose)."""
    url: str
    """The database (the first one's, where they differ only in paths and numbers)."""
    schema: str | None
    during_race: bool
    """They ran while several workers migrated that database (and schema) at once
    (:data:`Report.migration_races`): likely the race's doing."""


class MigrationStepRow(TypedDict):
    worker: str
    tool: str
    op: str
    step: str
    duration: float
    backwards: bool
    url: str


class ContainerRow(TypedDict):
    cid: str
    image: str
    name: str
    owner: str | None
    state: str
    startup: float | None
    phases: dict[str, float]
    users: list[str]
    image_starts: int
    ports: dict[str, str]
    exit_code: int | None
    health: str | None
    error: str | None
    test: str | None
    fixture: str | None
    wait: str | None
    failed_phase: str | None
    died: bool
    during: dict[str, str]
    leaked: bool
    removed_by: str | None
    stopped_while_used: list[str]
    used_after_end: list[str]
    stopped_by: str | None
    stop_test: str | None
    stop_fixture: str | None
    stop_call: str | None
    user_tests: dict[str, int]
    story: str


class EdgeRow(TypedDict):
    worker: str
    holds: str
    waits_for: str
    test: str | None


class DeadlockRow(TypedDict):
    at: float
    text: str
    cycle: list[EdgeRow]


class DbWaitRow(TypedDict):
    worker: str
    dialect: str
    url: str
    statement: str
    waited: float
    lock: str | None
    blocked_by: str | None
    test: str | None
    error: str | None


class DroppedRow(TypedDict):
    worker: str
    kind: str
    count: int


class SkippedLine(TypedDict):
    line: int
    reason: str


class NoticeRow(TypedDict):
    level: str
    source: str
    message: str
    workers: list[str]
    """The workers that said it (a notice every worker gives is one row)."""


class NextRunRow(TypedDict):
    workers: int
    dist: str
    order: str
    """``collected`` or ``longest-first`` (``--monitor-order=history``)."""
    wall: float
    """Predicted seconds."""
    recorded_wall: float
    accounted: float | None
    """The model's replay of this run as it ran over its wall time (None: no wall)."""
    reliable: bool
    """The model accounts for this run (:func:`~testmon_live.tui.predict.whatif.trusted`):
    only then is the setting a recommendation."""


class Report(TypedDict):
    """The report model: what ``--format json`` prints (see docs/report-json.md)."""

    report_version: int
    run: RunInfo
    totals: Totals
    workers: list[WorkerRow]
    slowest: list[SlowTest]
    fixtures: list[FixtureRow]
    collection_errors: list[CollectionErrorRow]
    failures: list[FailureRow]
    reruns: list[RerunRow]
    crashes: list[CrashRow]
    stalls: list[StallRow]
    unresponsive: list[UnresponsiveRow]
    locks: list[LockRow]
    lock_waits: list[LockWaitRow]
    setup_races: list[SetupRaceRow]
    migrations: list[MigrationRow]
    migration_steps: list[MigrationStepRow]
    migration_races: list[MigrationRaceRow]
    migration_errors: list[MigrationErrorRow]
    """Every failed migration, one row per message: real failures first, then the errors
    caught inside tests that passed; most frequent first."""
    containers: list[ContainerRow]
    deadlocks: list[DeadlockRow]
    db_waits: list[DbWaitRow]
    dropped: list[DroppedRow]
    skipped_lines: list[SkippedLine]
    """The first few lines the reader skipped, with why."""
    skipped_total: int
    """How many lines it skipped in all."""
    notices: list[NoticeRow]
    tail: Tail | None
    """The fold's own :class:`~testmon_live.plugin.state.Tail`, its seconds rounded (JSON
    prints it as an object of its fields)."""
    next_run: NextRunRow | None
    """The settings predicted fastest for the next run (``testmon whatif``)."""
    omitted: Omitted


# ----------------------------------------------------------------------- words


def _count_word(key: str, n: int) -> str:
    if key == "error":
        return "error" if n == 1 else "errors"
    if key == "warnings":
        return "warning" if n == 1 else "warnings"
    return key


def pytest_summary(counts: dict[str, int], order: Sequence[str] = PYTEST_ORDER) -> str:
    """``1 failed, 7 passed, 1 skipped, 1 error``: pytest's own words, in its order."""
    known = [k for k in order if counts.get(k)]
    other = sorted(k for k, n in counts.items() if n and k not in order)
    parts = [f"{counts[k]} {_count_word(k, counts[k])}" for k in (*known, *other)]
    return ", ".join(parts) or "no tests ran"


# -------------------------------------------------------------------- sections


def _run_info(run: LoadedRun) -> RunInfo:
    state = run.state
    header = state.header
    end = state.end
    assert header is not None  # load_run only returns logs that start with a header
    return {
        "id": header.run_id,
        "log": str(run.path.resolve()),
        "status": run.status,
        "exit_status": end.exitstatus if end else None,
        "exit_name": end.status if end else None,
        "started": epoch(header.ts),
        "started_at": iso_time(header.ts),
        "wall": seconds(state.wall()),
        "rootdir": header.rootdir,
        "args": list(header.args),
        "hostname": header.hostname,
        "python": header.python,
        "platform": header.platform,
        "git_branch": header.git_branch,
        "git_commit": header.git_commit,
        "workers_requested": header.workers,
        "dist": header.dist,
        "monitor_version": header.monitor_version,
        "log_schema": header.schema,
    }


def _totals(state: RunState) -> Totals:
    counts = all_counts(dict(state.counts))
    return {
        "tests": state.tests_done,
        "failing": state.outcomes["failed"] + state.outcomes["error"],
        "counts": counts,
        "summary": pytest_summary(counts),
        "test_time": seconds(state.test_time),
        "slots": state.slots(),
        "efficiency": round(state.efficiency(), 4),
    }


def _workers(state: RunState) -> list[WorkerRow]:
    return [
        {
            "id": w.id,
            "host": w.host,
            "pid": w.pid,
            "tests": w.tests,
            "failures": w.failures,
            "busy": seconds(w.busy),
            "busy_share": round(state.busy_share(w), 4),
            "setup": seconds(w.setup_time),
            "call": seconds(w.call_time),
            "teardown": seconds(w.teardown_time),
            "reports": seconds(w.reporting_time),
            "state": w.state,
        }
        for w in state.active_workers()
    ]


def _phase_time(test: ev.TestFinished, when: str) -> float:
    return seconds(sum(p.dur for p in test.phases if p.when == when))


def _slowest(state: RunState, top: int) -> list[SlowTest]:
    return [
        {
            "nodeid": t.nodeid,
            "worker": t.w,
            "outcome": t.outcome,
            "duration": seconds(t.duration),
            "setup": _phase_time(t, "setup"),
            "call": _phase_time(t, "call"),
            "teardown": _phase_time(t, "teardown"),
        }
        for t in state.slowest(top)
        if t.duration >= MIN_SHOWN
    ]


def _fixtures(state: RunState, top: int) -> tuple[list[FixtureRow], int, int]:
    """The ``top`` costliest fixtures, how many more cost as much as :data:`MIN_SHOWN`,
    and how many cost less (never shown)."""
    every = state.fixtures_by_cost()
    shown = [f for f in every if f.setup_total >= MIN_SHOWN or f.errors]
    names = Counter(f.name for f in every)
    rows: list[FixtureRow] = []
    for f in shown[:top]:
        story = state.setup_story((f.name, f.scope, f.baseid), f.setup_total)
        rows.append(
            {
                "name": f.name,
                "scope": f.scope,
                "baseid": f.baseid,
                "count": f.count,
                "workers": sorted(f.workers, key=worker_order),
                "setup_total": seconds(f.setup_total),
                "setup_max": seconds(f.setup_max),
                "teardown_total": seconds(f.teardown_total),
                "errors": f.errors,
                "duplicated": f.duplicated,
                "lock_wait_total": seconds(story.waited),
                "work_total": seconds(story.work),
                "lock": story.lock,
                "ran_once_on": story.ran_once_on,
                "once_work": seconds(story.once_work),
                "waiters": list(story.waiters),
                "namesakes": names[f.name] - 1,
            }
        )
    return rows, len(shown) - len(rows), len(every) - len(shown)


def _failed_phase(test: ev.TestFinished) -> str | None:
    if test.failed_when:
        return test.failed_when
    for phase in test.phases:
        if phase.outcome in ev.FAILING:
            return phase.when
    return None


def _collection_errors(state: RunState) -> list[CollectionErrorRow]:
    return [
        {"nodeid": e.nodeid, "worker": e.w, "message": e.message}
        for e in state.collection_errors[:FAILURES_KEPT]
    ]


def _failures(state: RunState) -> list[FailureRow]:
    """The first :data:`FAILURES_KEPT` failures (the title counts them all)."""
    return [
        {
            "nodeid": t.nodeid,
            "worker": t.w,
            "outcome": t.outcome,
            "phase": _failed_phase(t),
            "message": t.message,
            "crashed": t.crashed,
            "reruns": max(0, t.reruns),
        }
        for t in state.failures[:FAILURES_KEPT]
    ]


def _reruns(state: RunState) -> list[RerunRow]:
    """The first :data:`FAILURES_KEPT` tests that were run again."""
    return [
        {
            "nodeid": t.nodeid,
            "worker": t.w,
            "outcome": t.outcome,
            "reruns": max(0, t.reruns),
            "phase": t.rerun_when,
            "message": t.rerun_message,
            "rerun_time": seconds(t.rerun_time),
        }
        for t in state.rerun[:FAILURES_KEPT]
    ]


def _crashes(state: RunState) -> list[CrashRow]:
    return [
        {
            "worker": c.w,
            "test": c.test,
            "exit_code": c.exitcode,
            "signal": c.signal,
            "error": c.error,
            "note": c.note,
            "at": epoch(c.ts),
            "replaced_by": view.replaced_by if (view := state.workers.get(c.w)) else None,
        }
        for c in state.crashes
    ]


def _where(frames: Sequence[ev.Frame], root: str) -> str | None:
    """The innermost frame of the user's own code, else the innermost frame."""
    frame = user_frame(frames) or (frames[-1] if frames else None)
    return frame_text(frame, root) if frame is not None else None


def _threads(stall: ev.Stall, root: str) -> list[ThreadRow]:
    return [
        {
            "name": t.name,
            "verdict": t.verdict,
            "detail": t.detail,
            "where": _where(t.frames, root),
            "daemon": t.daemon,
            "tasks": [
                {
                    "name": k.name,
                    "coro": k.coro,
                    "awaiting": k.awaiting,
                    "where": _where(k.frames, root),
                }
                for k in t.tasks
            ],
        }
        for t in stall.threads
    ]


def _stall_row(
    s: ev.Stall,
    root: str,
    duration: float | None = None,
    samples: int = 1,
    first_location: str | None = None,
) -> StallRow:
    return {
        "worker": s.w,
        "reason": s.reason,
        "test": s.test,
        "phase": s.phase,
        "fixture": s.fixture,
        "elapsed": seconds(s.elapsed),
        "location": s.location,
        "first_location": first_location,
        "at": epoch(s.ts),
        "threads": _threads(s, root),
        "duration": optional_seconds(duration),
        "samples": samples,
    }


def frame_root(state: RunState) -> str:
    """The run's rootdir: :func:`frame_text` shows frames below it relative to it."""
    return state.header.rootdir if state.header is not None else ""


def _notices(state: RunState) -> list[NoticeRow]:
    """Warnings and errors the monitor logged; one row per message, with every worker that
    gave it (each worker says so of a driver it leaves alone)."""
    rows: dict[tuple[str, str, str], NoticeRow] = {}
    for n in state.notices:
        if n.level == "info":
            continue
        row = rows.get((n.level, n.source, n.msg))
        if row is None:
            row = rows[(n.level, n.source, n.msg)] = {
                "level": n.level, "source": n.source, "message": n.msg, "workers": []
            }  # fmt: skip
        if n.w and n.w not in row["workers"]:
            row["workers"].append(n.w)
    for row in rows.values():
        row["workers"].sort(key=worker_order)
    return list(rows.values())


def _stalls(state: RunState) -> list[StallRow]:
    """Stalls and unresponsive spells (first sample, how long in all), and dumps."""
    root = frame_root(state)
    rows = [
        _stall_row(r.at_place, root, r.duration, r.samples, r.left_from)
        for r in state.stall_records
    ]
    rows += [_stall_row(s, root) for s in state.stalls if s.reason == "dump"]
    rows.sort(key=lambda row: row["at"])
    return rows


def _unresponsive(state: RunState) -> list[UnresponsiveRow]:
    """One row a spell: how long the worker was silent (in all, once it recovered)."""
    return [
        {
            "worker": spell.w,
            "silent": seconds(spell.silent),
            "test": spell.test,
            "recovered": spell.recovered is not None,
            "at": epoch(spell.first.ts),
        }
        for spell in state.spells
    ]


def _held(events: Iterable[ev.LockEvent]) -> list[HeldRow]:
    return [{"worker": e.w, "test": e.test, "since": epoch(e.ts)} for e in events]


def _lock_row(stats: LockStats) -> LockRow:
    return {
        "kind": stats.kind,
        "key": stats.key,
        "acquisitions": stats.acquisitions,
        "contended": stats.contended,
        "waits": stats.waits,
        "total_wait": seconds(stats.total_wait),
        "max_wait": seconds(stats.max_wait),
        "longest_hold": seconds(stats.longest_hold),
        "failures": stats.failures,
        "timeouts": stats.timeouts,
        "refused": stats.refused,
        "holders": _top_holders(stats),
        "held_at_end": _held(stats.held_by.values()),
        "waiting_at_end": _held(stats.waiting.values()),
    }


def _top_holders(stats: LockStats) -> list[HolderCount]:
    """The three holders that kept others waiting most (then: held it longest)."""
    ranked = sorted(
        stats.holders.items(),
        key=lambda wn: (stats.waited_on.get(wn[0], 0), stats.held_for.get(wn[0], 0.0), wn[1]),
        reverse=True,
    )
    return [
        {
            "worker": w,
            "count": n,
            "kept_waiting": stats.waited_on.get(w, 0),
            "held": seconds(stats.held_for.get(w, 0.0)),
        }
        for w, n in ranked[:3]
    ]


def _locks(state: RunState, top: int) -> tuple[list[LockRow], int]:
    """The ``top`` locks waited on longest (then taken most), and how many were left out."""
    ranked = sorted(state.locks.values(), key=lambda s: (s.total_wait, s.acquisitions))[::-1]
    return [_lock_row(s) for s in ranked[:top]], max(0, len(ranked) - top)


def _lock_waits(state: RunState, top: int) -> tuple[list[LockWaitRow], int]:
    """Who kept whom waiting: the ``top`` longest waits, granted or not."""
    waits = state.longest_waits(top)
    rows: list[LockWaitRow] = [
        {
            "worker": w.w,
            "lock": w.lock,
            "waited": seconds(w.waited),
            "outcome": w.outcome,
            "holder": w.holder,
            "holder_test": w.holder_test,
            "holder_fixture": w.holder_fixture,
            "test": w.test,
            "fixture": w.fixture,
            "at": epoch(w.ts),
        }
        for w in waits
    ]
    return rows, state.lock_wait_count - len(rows)


def _setup_race_row(race: SetupRace) -> SetupRaceRow:
    return {
        "fixture": race.fixture,
        "scope": race.scope,
        "baseid": race.baseid,
        "workers": list(race.workers),
        "spread": seconds(race.spread),
        "overlap": seconds(race.overlap),
        "resources": [{"kind": r.kind, "name": r.name} for r in race.resources],
        "succeeded": list(race.succeeded),
        "failed": dict(race.failed),
        "tests": dict(race.tests),
        "fix": "monitor.run_once",
    }


def _migration_races(state: RunState) -> list[MigrationRaceRow]:
    rows: list[MigrationRaceRow] = []
    for place, workers in state.migration_races.items():
        url, schema = state.race_places.get(place, (place, None))
        start, end = state.race_windows.get(place, (0.0, 0.0))
        rows.append(
            {
                "url": display_url(url),
                "schema": schema,
                "workers": sorted(workers, key=worker_order),
                "start": epoch(start),
                "end": epoch(end),
            }
        )
    return rows


def _tail(state: RunState) -> Tail | None:
    tail = state.tail()
    if tail is None:
        return None
    return msgspec.structs.replace(
        tail,
        below=seconds(tail.below),
        alone=seconds(tail.alone),
        test_duration=optional_seconds(tail.test_duration),
        test_began=optional_seconds(tail.test_began),
        idle=seconds(tail.idle),
        wall=seconds(tail.wall),
        estimate=optional_seconds(tail.estimate),
    )


def _concurrent(state: RunState, runs: list[MigrationRun]) -> dict[int, set[str]]:
    """id of a run -> the other workers that migrated its database (and schema) meanwhile,
    for the runs on a raced one (the fold's verdict: a private in-memory database is never
    shared)."""
    stop = state.end.ts if state.end is not None else state.last_ts

    def span(run: MigrationRun) -> tuple[float, float]:
        return run.start, (run.start + run.duration if run.duration is not None else stop)

    by_place: dict[str, list[MigrationRun]] = {}
    for run in runs:
        if run.place in state.migration_races:
            by_place.setdefault(run.place, []).append(run)
    found: dict[int, set[str]] = {}
    for same in by_place.values():
        for run in same:
            begin, end = span(run)
            found[id(run)] = {
                other.w
                for other in same
                if other.w != run.w
                and span(other)[0] + CLOCK_SLACK < end
                and begin + CLOCK_SLACK < span(other)[1]
            }
    return found


def _migration_row(
    state: RunState, group: MigrationGroup, concurrent: dict[int, set[str]]
) -> MigrationRow:
    first = group.first
    errors = [r for r in group.runs if r.error is not None]
    failed = [r for r in errors if not r.caught]
    others = {w for r in group.runs for w in concurrent.get(id(r), ())}
    return {
        "worker": first.w,
        "tool": first.tool,
        "op": first.op,
        "url": display_url(first.url),
        "schema": first.schema,
        "from_rev": first.from_rev,
        "to_rev": first.to_rev,
        "start": epoch(first.start),
        "offset": seconds(first.start - state.started),
        "count": group.count,
        "duration": optional_seconds(group.total),
        "longest": optional_seconds(group.longest),
        "finished": group.unfinished == 0,
        "unfinished": group.unfinished,
        "error": (failed or errors)[0].error if errors else None,
        "errors": len(failed),
        "caught_errors": len(errors) - len(failed),
        "test": first.test,
        "fixture": first.fixture,
        "concurrent_with": sorted(others, key=worker_order),
        "caught": bool(errors) and not failed,
    }


def _migrations(state: RunState, top: int) -> tuple[list[MigrationRow], int]:
    """Migrations, the same one repeated as one row (:meth:`RunState.migration_groups`),
    each marked with the other workers that migrated the same database meanwhile; the
    ``top`` costliest (races and errors first), in the order they began, and how many
    rows were left out."""
    groups = state.migration_groups()
    concurrent = _concurrent(state, [r for g in groups for r in g.runs])
    rows = [_migration_row(state, g, concurrent) for g in groups]
    ranked = sorted(rows, key=_migration_cost, reverse=True)
    shown = sorted(ranked[:top], key=lambda r: r["start"])
    return shown, len(rows) - len(shown)


def _migration_cost(row: MigrationRow) -> tuple[bool, float]:
    """Races and real failures first (an error a passing test caught costs nothing), then
    the slowest."""
    trouble = bool(row["concurrent_with"]) or row["errors"] > 0
    return trouble, row["duration"] or 0.0


ERROR_TESTS_KEPT = 3
"""The tests a grouped migration error names (its count says how many more)."""


_VARYING = re.compile(r"(?:/[^\s'\"():,]+)+|\d+")
"""What differs between two runs of one failing migration: paths (each test's tmp_path) and
numbers (ids, ports, counts)."""


def _migration_errors(state: RunState, top: int) -> tuple[list[MigrationErrorRow], int]:
    """Failed migrations grouped by tool, operation, message and database (paths and
    numbers aside: each test's tmp_path differs), whether they came during a race (its
    likely doing) and whether a passing test caught them: real failures first, then the
    most frequent; the ``top`` first, and how many groups more."""
    groups: dict[tuple[str, str, str, bool, str, bool], MigrationErrorRow] = {}
    tests: dict[tuple[str, str, str, bool, str, bool], set[str]] = {}
    for m in state.migrations:
        if m.error is None:
            continue
        caught = state.caught(m)
        race = state.race_of(m)
        key = (
            m.tool,
            m.op,
            _VARYING.sub("#", m.error),
            caught,
            _VARYING.sub("#", m.place),
            race is not None,
        )
        row = groups.get(key)
        if row is None:
            row = groups[key] = {
                "tool": m.tool, "op": m.op, "error": m.error, "count": 0,
                "workers": [], "tests": [], "test_count": 0, "caught": caught,
                "url": display_url(m.url), "schema": m.schema, "during_race": race is not None,
            }  # fmt: skip
            tests[key] = set()
        row["count"] += 1
        if m.w not in row["workers"]:
            row["workers"].append(m.w)
        if m.test and m.test not in tests[key]:
            tests[key].add(m.test)
            row["test_count"] += 1
            if len(row["tests"]) < ERROR_TESTS_KEPT:
                row["tests"].append(m.test)
    rows = list(groups.values())
    for row in rows:
        row["workers"].sort(key=worker_order)
    rows.sort(key=lambda r: (r["caught"], -r["count"]))
    return rows[:top], max(0, len(rows) - top)


def _migration_steps(state: RunState, top: int) -> tuple[list[MigrationStepRow], int]:
    """The ``top`` slowest migration steps (Alembic revisions, Django migrations) of any
    worker, slowest first, and how many more there were."""
    steps, rest = state.costliest_steps(top)
    rows: list[MigrationStepRow] = [
        {
            "worker": s.w,
            "tool": s.tool,
            "op": s.op,
            "step": s.name,
            "duration": seconds(s.duration),
            "backwards": s.backwards,
            "url": display_url(s.url),
        }
        for s in steps
    ]
    return rows, rest


def _startup(phases: dict[str, float], created: float | None, ready: float | None) -> float | None:
    steps = [phases[a] for a in ("create", "start", "ready") if a in phases]
    if steps:
        return seconds(sum(steps))
    if created is not None and ready is not None:
        return seconds(ready - created)
    return None


def _containers(state: RunState) -> list[ContainerRow]:
    views = sorted(state.containers.values(), key=lambda c: c.created or 0.0)
    per_image = Counter(c.image for c in views if c.image)
    return [
        {
            "cid": c.cid,
            "image": c.image,
            "name": c.name,
            "owner": c.owner,
            "state": c.state,
            "startup": _startup(c.phases, c.created, c.ready),
            "phases": {k: seconds(v) for k, v in c.phases.items()},
            "users": sorted(c.users, key=worker_order),
            "image_starts": per_image.get(c.image, 1) if c.image else 1,
            "ports": dict(c.ports),
            "exit_code": c.exit_code,
            "health": c.health,
            "error": c.error,
            "test": c.test,
            "fixture": c.fixture,
            "wait": c.wait,
            "failed_phase": c.failed_phase,
            "died": c.died is not None,
            "during": dict(c.during),
            "leaked": c.leaked,
            "removed_by": c.removed_by,
            "stopped_while_used": list(c.stopped_while_used),
            "used_after_end": sorted(set(c.used_after_end), key=worker_order),
            "stopped_by": c.stopped_by,
            "stop_test": c.stop_test,
            "stop_fixture": c.stop_fixture,
            "stop_call": c.stop_call,
            "user_tests": {w: len(c.user_tests[w]) for w in sorted(c.user_tests, key=worker_order)},
            "story": c.story(),
        }
        for c in views
    ]


def _deadlocks(state: RunState) -> list[DeadlockRow]:
    return [
        {
            "at": epoch(d.ts),
            "text": d.text,
            "cycle": [
                {"worker": e.w, "holds": e.holds, "waits_for": e.waits_for, "test": e.test}
                for e in d.cycle
            ],
        }
        for d in state.deadlocks
    ]


def _holder_text(holder: ev.Holder | None) -> str | None:
    if holder is None:
        return None
    parts = [p for p in (holder.w, holder.test, holder.fixture, holder.detail) if p]
    if holder.pid is not None:
        parts.append(f"pid {holder.pid}")
    return ", ".join(parts) or None


def _db_waits(state: RunState, top: int) -> tuple[list[DbWaitRow], int]:
    ranked = sorted(state.db_waits, key=lambda d: d.waited, reverse=True)[:top]
    rows: list[DbWaitRow] = [
        {
            "worker": d.w,
            "dialect": d.dialect,
            "url": display_url(d.url),
            "statement": d.statement,
            "waited": seconds(d.waited),
            "lock": d.lock,
            "blocked_by": _holder_text(state.blocked_by(d)),
            "test": d.test,
            "error": d.error,
        }
        for d in ranked
    ]
    return rows, len(state.db_waits) - len(rows)


def _dropped(state: RunState) -> list[DroppedRow]:
    return [
        {"worker": wid, "kind": kind, "count": n}
        for wid, kinds in sorted(state.dropped().items(), key=lambda i: worker_order(i[0]))
        for kind, n in sorted(kinds.items())
        if n
    ]


def _next_run(run: LoadedRun) -> NextRunRow | None:
    """What ``testmon whatif`` finds fastest for the next run: a finished run with tests
    only, from the report's own fold (it keeps every test: :func:`~.logs.load_run`), with
    start-up and exit over the suite's runs in the log's folder as ``whatif`` takes them."""
    state = run.state
    if state.end is None or not state.tests_done:
        return None
    from testmon_live.tui.predict import DISTS
    from testmon_live.tui.predict.overheads import settled
    from testmon_live.tui.predict.profile import build_profile
    from testmon_live.tui.predict.whatif import best_next

    profile = settled(build_profile(state), run.path)
    if not profile.tests:
        return None
    best, checked = best_next(profile, profile.dist if profile.dist in DISTS else "load")
    return {
        "workers": best["workers"],
        "dist": best["dist"],
        "order": best["order"],
        "wall": best["wall"],
        "recorded_wall": seconds(profile.wall),
        "accounted": checked["accounted"],
        "reliable": checked["reliable"],
    }


def build_report(run: LoadedRun, top: int = DEFAULT_TOP) -> Report:
    """The report model of a folded run: the one place the report's content is decided."""
    state = run.state
    top = max(1, min(top, MAX_TOP))
    fixtures, fixtures_left, quick_fixtures = _fixtures(state, top)
    locks, locks_left = _locks(state, top)
    lock_waits, waits_left = _lock_waits(state, top)
    migrations, migrations_left = _migrations(state, top)
    migration_steps, steps_left = _migration_steps(state, top)
    migration_errors, errors_left = _migration_errors(state, top)
    db_waits, db_waits_left = _db_waits(state, top)
    return {
        "report_version": REPORT_VERSION,
        "run": _run_info(run),
        "totals": _totals(state),
        "workers": _workers(state),
        "slowest": _slowest(state, top),
        "fixtures": fixtures,
        "collection_errors": _collection_errors(state),
        "failures": _failures(state),
        "reruns": _reruns(state),
        "crashes": _crashes(state),
        "stalls": _stalls(state),
        "unresponsive": _unresponsive(state),
        "locks": locks,
        "lock_waits": lock_waits,
        "setup_races": [_setup_race_row(r) for r in state.setup_races.values()],
        "migrations": migrations,
        "migration_steps": migration_steps,
        "migration_races": _migration_races(state),
        "migration_errors": migration_errors,
        "containers": _containers(state),
        "deadlocks": _deadlocks(state),
        "db_waits": db_waits,
        "dropped": _dropped(state),
        "skipped_lines": [{"line": n, "reason": r} for n, r in state.problems],
        "skipped_total": len(state.problems),
        "notices": _notices(state),
        "tail": _tail(state),
        "next_run": _next_run(run),
        "omitted": {
            "fixtures": fixtures_left,
            "quick_fixtures": quick_fixtures,
            "locks": locks_left,
            "lock_waits": waits_left,
            "migrations": migrations_left,
            "migration_steps": steps_left,
            "migration_errors": errors_left,
            "db_waits": db_waits_left,
        },
    }
