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

HISTORY_RUNS = 3
"""Earlier recorded runs read for the ETA."""
HISTORY_MAX_BYTES = 64 * 1024 * 1024
"""Logs larger than this are not read for the ETA (it would delay the first screen)."""


@dataclass
class History:
    durations: dict[str, float] = field(default_factory=dict)
    """Node id -> duration in the newest earlier run that ran it."""
    order: list[str] = field(default_factory=list)
    """Node ids in the order they started in the newest earlier run (then older ones)."""
    gap: float = 0.0
    """Mean seconds a worker spent between two of its tests in the newest complete run."""
    tail: float = 0.0
    """Seconds from that run's last test to its end."""

    def __bool__(self) -> bool:
        return bool(self.durations)


def read_history(path: Path) -> History:
    """What up to :data:`HISTORY_RUNS` runs recorded before ``path`` say."""
    history = History()
    if path.parent.name != RUNS_DIR:
        return history
    earlier = sorted(p for p in path.parent.glob("*.jsonl") if p.name < path.name)
    timed = False
    for log in reversed(earlier[-HISTORY_RUNS:]):
        try:
            if log.stat().st_size > HISTORY_MAX_BYTES:
                continue
            tests: list[ev.TestFinished] = []
            end: ev.RunFinished | None = None
            for event in iter_log(log):
                if type(event) is ev.TestFinished:
                    tests.append(event)
                elif type(event) is ev.RunFinished:
                    end = event
        except (RunLogError, OSError):
            continue
        tests.sort(key=_start)
        for test in tests:
            if test.nodeid not in history.durations:
                history.durations[test.nodeid] = test.duration
                history.order.append(test.nodeid)
        if not timed and end is not None and tests:
            history.gap, history.tail = _overheads(tests, end)
            timed = True
    return history


def _start(test: ev.TestFinished) -> float:
    return test.phases[0].start if test.phases else test.ts - test.duration


def _overheads(tests: list[ev.TestFinished], end: ev.RunFinished) -> tuple[float, float]:
    """(mean gap between two tests of a worker, seconds from the last test to the end)."""
    last: dict[str, float] = {}
    gaps: list[float] = []
    finish = 0.0
    for test in tests:
        start = _start(test)
        stop = start + test.duration
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
    typical = sum(known.values()) / len(known)
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
