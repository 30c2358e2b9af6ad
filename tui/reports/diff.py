"""Compare two recorded runs: time, outcomes, what moved, and each test's history.

``testmon diff A B`` answers "what changed": wall time and parallel efficiency, tests whose
outcome changed (new failures, fixed) with what ran before them on their worker in each
run, the tests and fixtures whose durations moved most, lock and container costs. The
history of every recorded run names tests that both passed and failed as flaky.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir, RunLogError, SkippedLines, iter_log
from testmon_live.plugin.state import RunState

MOVED_MIN = 0.05
"""Seconds a duration must move by to be listed."""
BEFORE_SHOWN = 10


def load_detail(path: Path) -> RunState:
    problems = SkippedLines()
    state = RunState(detail=True).apply_all(iter_log(path, problems))
    state.problems = problems
    return state


def passed_or_failed(outcome: str) -> str | None:
    if outcome in ev.FAILING:
        return "F"
    if outcome in ("passed", "xpassed"):
        return "P"
    return None


# ------------------------------------------------------------------- history


@dataclass
class History:
    """Each test's pass (P) / fail (F) record over the recorded runs, oldest first."""

    runs: list[str]
    marks: dict[str, list[str]]

    def of(self, nodeid: str) -> str:
        return "".join(self.marks.get(nodeid, []))

    def flaky(self) -> list[tuple[str, int, int]]:
        """(nodeid, passes, failures) of tests that did both."""
        found = []
        for nodeid, marks in self.marks.items():
            passes, fails = marks.count("P"), marks.count("F")
            if passes and fails:
                found.append((nodeid, passes, fails))
        return sorted(found, key=lambda item: (-item[2], item[0]))


def history(mdir: MonitorDir, states: Iterable[RunState] = ()) -> History:
    """Outcomes of every recorded run in ``mdir`` (already loaded states are reused)."""
    known = {s.run_id: s for s in states}
    runs: list[tuple[float, str, dict[str, str]]] = []
    for path in mdir.logs():
        run_id = path.name.removesuffix(".jsonl")
        state = known.get(run_id)
        outcomes: dict[str, str] = {}
        started = 0.0
        if state is not None:
            started = state.started
            outcomes = {t.nodeid: t.outcome for t in state.tests}
        else:
            try:
                for event in iter_log(path):
                    if isinstance(event, ev.RunStarted):
                        started = event.ts
                    elif isinstance(event, ev.TestFinished):
                        outcomes[event.nodeid] = event.outcome
            except RunLogError:
                continue
        runs.append((started, run_id, outcomes))
    runs.sort()
    marks: dict[str, list[str]] = defaultdict(list)
    for _, _, outcomes in runs:
        for nodeid, outcome in outcomes.items():
            mark = passed_or_failed(outcome)
            if mark:
                marks[nodeid].append(mark)
    return History([r[1] for r in runs], dict(marks))


# --------------------------------------------------------------------- model


class RunBrief(TypedDict):
    run: str
    wall: float
    efficiency: float
    workers: int
    tests: int
    counts: dict[str, int]
    lock_wait: float
    container_startup: float
    containers: int


class Before(TypedDict):
    worker_a: str
    worker_b: str
    only_in_a: list[str]
    only_in_b: list[str]
    more_only_in_a: int
    more_only_in_b: int


class ChangedTest(TypedDict):
    nodeid: str
    change: str
    """new failure, fixed, or 'a -> b' for other changes."""
    a: str
    b: str
    history: str
    flaky: bool
    before: Before


class Moved(TypedDict):
    nodeid: str
    a: float
    b: float
    delta: float


class FixtureMoved(TypedDict):
    name: str
    scope: str
    a_total: float
    b_total: float
    a_count: int
    b_count: int
    delta: float


class LockMoved(TypedDict):
    kind: str
    key: str
    a_wait: float
    b_wait: float
    delta: float


class FlakyTest(TypedDict):
    nodeid: str
    passes: int
    failures: int
    history: str


class DiffModel(TypedDict):
    diff_version: int
    a: RunBrief
    b: RunBrief
    changed: list[ChangedTest]
    only_in_a: list[str]
    only_in_b: list[str]
    slower: list[Moved]
    faster: list[Moved]
    fixtures: list[FixtureMoved]
    locks: list[LockMoved]
    flaky: list[FlakyTest]
    history_runs: int


_PYTEST_TMP = re.compile(r"([/\\]pytest-of-[^/\\]+[/\\]pytest-)\d+(?=[/\\])")
"""pytest's numbered temp folder (``/tmp/pytest-of-USER/pytest-61/``): new in every run."""


def stable_lock_key(key: str) -> str:
    """A lock's key as it stays from run to run: the file lock recipe of pytest-xdist puts
    its lock in the run's temp folder, whose number changes every run."""
    return _PYTEST_TMP.sub(r"\1N", key)


def _lock_waits(state: RunState) -> dict[tuple[str, str], float]:
    waits: dict[tuple[str, str], float] = {}
    for (kind, key), stats in state.locks.items():
        stable = (kind, stable_lock_key(key))
        waits[stable] = waits.get(stable, 0.0) + stats.total_wait
    return waits


def _startup(state: RunState) -> tuple[float, int]:
    total = 0.0
    for view in state.containers.values():
        total += sum(view.phases.get(p, 0.0) for p in ("create", "start", "ready"))
    return total, len(state.containers)


def brief(state: RunState) -> RunBrief:
    startup, count = _startup(state)
    return {
        "run": state.run_id,
        "wall": state.wall(),
        "efficiency": state.efficiency(),
        "workers": state.slots(),
        "tests": state.tests_done,
        "counts": dict(state.counts),
        "lock_wait": sum(_lock_waits(state).values()),
        "container_startup": startup,
        "containers": count,
    }


def _by_id(state: RunState) -> dict[str, list[ev.TestFinished]]:
    found: dict[str, list[ev.TestFinished]] = defaultdict(list)
    for test in state.tests:
        found[test.nodeid].append(test)
    return found


def _overall(runs: list[ev.TestFinished]) -> str:
    failing = [t.outcome for t in runs if t.outcome in ev.FAILING]
    return failing[0] if failing else runs[0].outcome


def _before(state: RunState, test: ev.TestFinished) -> list[str]:
    order = state.tests_on(test.w)
    return [t.nodeid for t in order[: next(i for i, t in enumerate(order) if t is test)]]


def _what_ran_before(a: RunState, ta: ev.TestFinished, b: RunState, tb: ev.TestFinished) -> Before:
    before_a, before_b = _before(a, ta), _before(b, tb)
    set_a, set_b = set(before_a), set(before_b)
    only_a = [n for n in before_a if n not in set_b]
    only_b = [n for n in before_b if n not in set_a]
    return {
        "worker_a": ta.w,
        "worker_b": tb.w,
        "only_in_a": only_a[-BEFORE_SHOWN:],
        "only_in_b": only_b[-BEFORE_SHOWN:],
        "more_only_in_a": max(0, len(only_a) - BEFORE_SHOWN),
        "more_only_in_b": max(0, len(only_b) - BEFORE_SHOWN),
    }


def _change_word(a: str, b: str) -> str:
    if b in ev.FAILING and a not in ev.FAILING:
        return "new failure"
    if a in ev.FAILING and b not in ev.FAILING:
        return "fixed"
    return f"{a} -> {b}"


def _mean(runs: list[ev.TestFinished]) -> float:
    return sum(t.duration for t in runs) / len(runs)


def build_diff(a: RunState, b: RunState, hist: History, top: int = 10) -> DiffModel:
    tests_a, tests_b = _by_id(a), _by_id(b)
    common = sorted(set(tests_a) & set(tests_b))
    changed: list[ChangedTest] = []
    moved: list[Moved] = []
    flaky_ids = {nodeid for nodeid, _, _ in hist.flaky()}
    for nodeid in common:
        runs_a, runs_b = tests_a[nodeid], tests_b[nodeid]
        out_a, out_b = _overall(runs_a), _overall(runs_b)
        if out_a != out_b:
            pick_a = next((t for t in runs_a if t.outcome == out_a), runs_a[0])
            pick_b = next((t for t in runs_b if t.outcome == out_b), runs_b[0])
            changed.append(
                {
                    "nodeid": nodeid,
                    "change": _change_word(out_a, out_b),
                    "a": out_a,
                    "b": out_b,
                    "history": hist.of(nodeid),
                    "flaky": nodeid in flaky_ids,
                    "before": _what_ran_before(a, pick_a, b, pick_b),
                }
            )
        da, db = _mean(runs_a), _mean(runs_b)
        if abs(db - da) >= MOVED_MIN:
            moved.append({"nodeid": nodeid, "a": da, "b": db, "delta": db - da})
    changed.sort(key=lambda c: (c["change"] != "new failure", c["change"] != "fixed", c["nodeid"]))
    fixtures: list[FixtureMoved] = []
    for key in set(a.fixtures) | set(b.fixtures):
        fa, fb = a.fixtures.get(key), b.fixtures.get(key)
        ta = fa.setup_total if fa else 0.0
        tb = fb.setup_total if fb else 0.0
        if abs(tb - ta) >= MOVED_MIN:
            fixtures.append(
                {
                    "name": key[0],
                    "scope": key[1],
                    "a_total": ta,
                    "b_total": tb,
                    "a_count": fa.count if fa else 0,
                    "b_count": fb.count if fb else 0,
                    "delta": tb - ta,
                }
            )
    waits_a, waits_b = _lock_waits(a), _lock_waits(b)
    locks: list[LockMoved] = [
        {
            "kind": key[0],
            "key": key[1],
            "a_wait": waits_a.get(key, 0.0),
            "b_wait": waits_b.get(key, 0.0),
            "delta": waits_b.get(key, 0.0) - waits_a.get(key, 0.0),
        }
        for key in sorted(set(waits_a) | set(waits_b))
        if abs(waits_b.get(key, 0.0) - waits_a.get(key, 0.0)) >= MOVED_MIN
    ]
    by_delta = sorted(moved, key=lambda m: m["delta"], reverse=True)
    return {
        "diff_version": 1,
        "a": brief(a),
        "b": brief(b),
        "changed": changed,
        "only_in_a": sorted(set(tests_a) - set(tests_b)),
        "only_in_b": sorted(set(tests_b) - set(tests_a)),
        "slower": [m for m in by_delta if m["delta"] > 0][:top],
        "faster": [m for m in reversed(by_delta) if m["delta"] < 0][:top],
        "fixtures": sorted(fixtures, key=lambda f: abs(f["delta"]), reverse=True)[:top],
        "locks": sorted(locks, key=lambda lk: abs(lk["delta"]), reverse=True)[:top],
        "flaky": [
            {"nodeid": n, "passes": p, "failures": f, "history": hist.of(n)}
            for n, p, f in hist.flaky()[:top]
        ],
        "history_runs": len(hist.runs),
    }
