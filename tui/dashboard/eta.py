"""The ETA of a live run, from earlier runs of the same tests.

Dividing the time the tests still need by the number of workers says ~3 s while one
straggler has 10 s to go: a test is not shared among workers. So the estimate replays the
rest of the run the way xdist hands tests out: each worker is free once its current test
has run as long as it took last time; the tests not started yet, in the order they started
last time, go one by one to the worker free first, each after the gap the workers left
between two tests last time; the run ends when the last worker is free, plus the time the
last run took from its last test to its end.

Earlier runs are read once per run shown (:func:`read_history`); the estimate is a few
operations a remaining test.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import RUNS_DIR, RunLogError, iter_log
from testmon_live.plugin.state import RunState

from ..suite import older_logs, read_header

HISTORY_RUNS = 3
"""Newest earlier runs of the same suite read for the ETA (besides its fullest one)."""
SCANNED = 20
"""Earlier logs looked at, newest first (only their header, unless of the same suite)."""
HISTORY_MAX_BYTES = 64 * 1024 * 1024
"""Logs larger than this are not read for the ETA (it would delay the first screen)."""
HISTORY_BYTES = 2 * HISTORY_MAX_BYTES
"""Bytes of earlier logs read at most for the ETA (the first screen waits for them)."""


@dataclass
class History:
    durations: dict[str, float] = field(default_factory=dict)
    """Node id -> its span in the newest earlier run that ran it (:func:`ev.test_span`: its
    phases and the time between them, as long as it held its worker)."""
    order: list[str] = field(default_factory=list)
    """Node ids in the order they started in the newest earlier run (then older ones)."""
    typical: float | None = None
    """Mean span of a test in the fullest earlier run: what a test not in any takes
    (None: the mean of :attr:`durations`)."""
    gap: float = 0.0
    """Mean seconds a worker spent between two of its tests in the fullest complete run."""
    tail: float = 0.0
    """Seconds from that run's last test to its end."""

    def __bool__(self) -> bool:
        return bool(self.durations)


@dataclass
class _Run:
    tests: list[ev.TestFinished]
    """In the order they started."""
    end: ev.RunFinished | None
    distinct: int


def read_history(path: Path) -> History:
    """What earlier runs of the same suite as the run logged at ``path`` say.

    Of the same suite: the same rootdir (:mod:`testmon_live.tui.suite`); a run of a subset
    (one file, ``-k``) still says what its tests took, a run of another project nothing.
    Read: the :data:`HISTORY_RUNS` newest such runs among the :data:`SCANNED` newest logs,
    and the largest such log if it is not among them, so that three quick runs of one file
    do not hide the full run before them. The fullest run read (most distinct tests) gives
    the order, the typical duration of a test none ran, and the gaps and tail.
    """
    history = History()
    if path.parent.name != RUNS_DIR:
        return history
    own = read_header(path)
    if own is None:
        return history
    same: list[tuple[Path, int]] = []  # newest first
    for log in older_logs(path, SCANNED):
        try:
            size = log.stat().st_size
        except OSError:
            continue
        if size > HISTORY_MAX_BYTES:
            continue
        header = read_header(log)
        if header is not None and header.rootdir == own.rootdir:
            same.append((log, size))
    if not same:
        return history
    largest = max(same, key=lambda found: found[1])  # of equals, the newest
    chosen = [largest] + [found for found in same[:HISTORY_RUNS] if found != largest]
    runs: dict[int, _Run] = {}  # by position in `same`: 0 is the newest
    budget = HISTORY_BYTES
    for log, size in chosen:  # the largest first: the budget must not leave it out
        if size > budget:
            continue
        budget -= size
        run = _read_run(log)
        if run is not None:
            runs[same.index((log, size))] = run
    newest_first = [runs[i] for i in sorted(runs)]
    if not newest_first:
        return history
    fullest = max(newest_first, key=lambda run: run.distinct)  # of equals, the newest
    span = ev.test_span
    for run in newest_first:
        for test in run.tests:
            if test.nodeid not in history.durations:
                history.durations[test.nodeid] = span(test)
                # the newest run's order first: a run of a subset again (-k, one file) is
                # to run its own tests next, not the fullest run's first ones
                history.order.append(test.nodeid)
    if fullest.tests:
        history.typical = sum(span(t) for t in fullest.tests) / len(fullest.tests)
    timed = [run for run in [fullest, *newest_first] if run.end is not None and run.tests]
    if timed:
        run = timed[0]
        assert run.end is not None
        history.gap, history.tail = _overheads(run.tests, run.end)
    return history


def _read_run(log: Path) -> _Run | None:
    try:
        tests: list[ev.TestFinished] = []
        end: ev.RunFinished | None = None
        for event in iter_log(log):
            if type(event) is ev.TestFinished:
                tests.append(event)
            elif type(event) is ev.RunFinished:
                end = event
    except (RunLogError, OSError):
        return None
    tests.sort(key=_start)
    return _Run(tests, end, len({test.nodeid for test in tests}))


def _start(test: ev.TestFinished) -> float:
    return test.phases[0].start if test.phases else test.ts - test.duration


def _overheads(tests: list[ev.TestFinished], end: ev.RunFinished) -> tuple[float, float]:
    """(mean gap between two tests of a worker, seconds from the last test to the end)."""
    last: dict[str, float] = {}
    gaps: list[float] = []
    finish = 0.0
    for test in tests:
        start = _start(test)
        stop = start + ev.test_span(test)  # (the time between its phases is the test's)
        before = last.get(test.w)
        if before is not None:
            gaps.append(max(0.0, start - before))
        last[test.w] = stop
        finish = max(finish, stop)
    gap = sum(gaps) / len(gaps) if gaps else 0.0
    return gap, max(0.0, end.ts - finish)


def estimate(history: History, state: RunState, done: set[str], now: float) -> float | None:
    """Seconds left in the run, or None when nothing is known to go by."""
    if not history:
        return None
    known = history.durations
    typical = history.typical if history.typical is not None else sum(known.values()) / len(known)
    free: list[float] = []
    running: set[str] = set()
    for view in state.workers.values():
        if view.crash is not None or view.down or not view.started:
            continue
        if view.test is not None and view.test_started is not None:
            took = known.get(view.test, typical)
            free.append(max(0.0, took - (now - view.test_started)))
            running.add(view.test)
        elif view.phase != "finishing":
            free.append(0.0)
    if not state.workers:  # none has started yet
        free = [0.0] * state.slots()
    pending = [n for n in history.order if n not in done and n not in running]
    collected = max((v.collected or 0 for v in state.workers.values()), default=0)
    if collected:
        # this run's own count: tests new since then take a typical time, tests gone
        # since then none
        left = max(0, collected - len(done) - len(running))
        durations = [known[n] for n in pending[:left]] + [typical] * (left - len(pending))
    else:
        durations = [known[n] for n in pending]
    if not free:
        return history.tail if not durations else None
    heapq.heapify(free)
    for took in durations:
        heapq.heappush(free, heapq.heappop(free) + history.gap + took)
    return max(free) + history.tail
