"""What a recorded run cost, in the parts a prediction recombines.

A test's recorded duration mixes what is its own (its call, its function fixtures) with
what another schedule would pay differently: the session and module fixtures it happened
to set up first on its worker, the time it waited on a lock another worker held. The
:class:`Profile` takes those apart, from the one fold (:class:`RunState`, ``detail``):

- each test's own seconds, in collection order (``TestFinished.index``; a log without it
  falls back to the order the tests started in);
- each wide fixture (session, package, module, class scope): what one worker pays to set
  it up outside lock waits, the first worker and the others apart (``monitor.run_once`` and
  shared containers make the first pay and the others wait), and which tests need it;
- each lock held inside a fixture or a test: seconds held by the first holder and by the
  others (a migration lock held 2 s is held 2 s whatever ``-n``);
- xdist's own costs, measured: worker start-up (header to the first test, per worker, with
  the CPUs it shared), the gap between a worker's tests, the end after the last test.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import iter_log
from testmon_live.plugin.state import RunState, fold, gc_paused, lock_label, own_times

from .overheads import costs_of

WIDE_SCOPES = frozenset({"session", "package", "module", "class"})
PER_WORKER_SCOPES = frozenset({"session", "package"})
"""Set up once per worker (the others: once per module or class a worker enters)."""
ONCE_KINDS = frozenset({"run_once"})
SHARED_RATIO = 0.5
"""A fixture whose later setups cost less than this share of the first's is shared work:
the others wait for the first (a shared container, a cache the first fills)."""
GAP_CAP = 1.0
"""Gaps between a worker's tests longer than this are waits for work, not overhead."""


@dataclass
class Hold:
    """A lock held while setting up a fixture or running a test."""

    lock: str
    first: float
    """Seconds the first holder held it (under run_once: the one that did the work)."""
    rest: float
    """Seconds each later holder held it."""
    count: int = 1
    """Acquisitions recorded."""


@dataclass
class Fixture:
    """A wide-scoped fixture: paid once per worker (session) or per module a worker enters."""

    name: str
    scope: str
    baseid: str
    first: float
    """Seconds the first worker's setup took, outside lock holds and waits."""
    rest: float
    """... and each later worker's."""
    holds: list[Hold] = field(default_factory=list)
    scopes: frozenset[str] | None = None
    """The modules (or classes) of the tests that need it; None: every test."""
    needers: frozenset[str] | None = None
    """Of those, the tests that need it (None: all of them). A test that ran on a worker
    that never set the fixture up, or before that worker set it up, does not need it."""
    workers: int = 0
    """Workers that set it up in the recording."""
    once: bool = False
    """Guarded by ``monitor.run_once``: its work is done once in all."""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.scope})"

    @property
    def shared(self) -> bool:
        """The later workers wait for the first's setup, then pay ``rest``."""
        return self.once or (self.workers > 1 and self.rest < SHARED_RATIO * self.first)

    def per_worker(self) -> float:
        """Seconds one worker pays when it sets it up on its own."""
        return self.first + sum(h.first for h in self.holds)


@dataclass(slots=True)
class Test:
    __test__ = False  # not a pytest test class
    nodeid: str
    cost: float
    """Its own seconds: its span (:func:`~testmon_live.plugin.events.test_span`: its phases
    and the time between them, where pytest makes their reports) less wide fixtures, lock
    waits and holds."""
    holds: list[Hold] = field(default_factory=list)
    scope: str = ""
    """Its module (or class, for class-scoped fixtures); see :func:`scope_of`."""
    duration: float = 0.0
    """pytest's, as recorded (what ``--monitor-order=history`` orders by)."""
    needs: tuple[Fixture, ...] = ()
    """The wide fixtures with :attr:`Fixture.needers` it is one of."""


@dataclass
class Profile:
    run_id: str
    tests: list[Test]
    """In collection order."""
    fixtures: list[Fixture]
    workers: int
    """Workers of the recorded run (0: without xdist)."""
    dist: str
    order: str
    cpus: int
    boot: float
    """Seconds from the header to a worker's first test, for one worker with a CPU of its
    own (the recorded start-up divided by the CPU share its workers had)."""
    gap: float
    """Seconds between two tests of a worker (xdist's report and dispatch)."""
    finish: float
    """Seconds a worker takes to exit after its last test, with a CPU of its own (the
    recorded time from the last test's end to the run's end, less what the workers exiting
    together took from each other)."""
    wall: float
    """The recorded run's wall time."""
    indexed: bool
    """Collection order as recorded (False: reconstructed from start times)."""
    cpus_recorded: bool = True
    """False: the log does not say its machine's CPUs; :attr:`cpus` is this machine's."""
    cost_runs: int = 1
    """Runs :attr:`boot` and :attr:`finish` are the median of: this one alone, or it and
    older runs of the same suite (:func:`~.overheads.settled`)."""
    own_costs: tuple[float, float] | None = None
    """This run's own :attr:`boot` and :attr:`finish` when those are the median over
    several runs (None: they are its own): what replaying the run as it was takes."""

    def as_recorded(self) -> Profile:
        """The profile with this run's own start-up and exit (see :attr:`own_costs`)."""
        if self.own_costs is None:
            return self
        boot, finish = self.own_costs
        return dataclasses.replace(self, boot=boot, finish=finish, cost_runs=1, own_costs=None)

    def module_fixtures(self) -> list[Fixture]:
        return [f for f in self.fixtures if f.scope not in PER_WORKER_SCOPES]

    def worker_fixtures(self) -> list[Fixture]:
        return [f for f in self.fixtures if f.scope in PER_WORKER_SCOPES]


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def class_of(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[0]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


@dataclass
class _Span:
    """A wide fixture's setup on one worker, with the locks inside it."""

    key: tuple[str, str, str]
    start: float
    dur: float
    test: str | None
    waited: float = 0.0
    nested: float = 0.0
    """Seconds of it spent setting up wide fixtures it requested from its body (theirs)."""
    inner: list[tuple[float, float]] = field(default_factory=list)
    """(start, end) of those setups, merged: a lock it held across them is not its own work
    for that while either."""
    holds: list[tuple[str, float, float, str]] = field(default_factory=list)
    """(lock label, acquired at, held, kind)."""


def _within(outer: _Span, spans: list[_Span]) -> list[tuple[float, float]]:
    """The setups of one worker inside ``outer``'s (``spans`` in start order), merged."""
    end = outer.start + outer.dur
    merged: list[tuple[float, float]] = []
    for span in spans:
        if span is outer or span.start < outer.start or span.start + span.dur > end + 1e-5:
            continue
        if span.start > end:
            break
        if merged and span.start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], span.start + span.dur))
        else:
            merged.append((span.start, span.start + span.dur))
    return merged


def _own_hold(span: _Span, hold: tuple[str, float, float, str]) -> float:
    """Seconds a lock was held within ``span``'s setup outside the setups nested in it
    (those are theirs: their own time already counts them)."""
    _label, began, held, _kind = hold
    ended = began + held
    inside = sum(max(0.0, min(ended, b) - max(began, a)) for a, b in span.inner)
    return max(0.0, held - inside)


def build_profile(state: RunState) -> Profile:
    """The profile of a folded run (``RunState(detail=True)``)."""
    header = state.header
    workers = header.workers if header else 0
    started = state.started

    # ---- wide fixture setups, per worker, in time order
    spans: dict[str, list[_Span]] = defaultdict(list)
    teardowns: dict[tuple[str, str], float] = defaultdict(float)
    """(worker, test) -> seconds of wide fixture teardown inside that test's teardown."""
    for fx in state.fixture_events:
        if fx.scope not in WIDE_SCOPES:
            continue
        if isinstance(fx, ev.FixtureSetup):
            spans[fx.w].append(_Span((fx.name, fx.scope, fx.baseid), fx.start, fx.dur, fx.test))
        elif fx.test is not None:
            teardowns[(fx.w, fx.test)] += max(0.0, fx.dur)
    for worker_spans in spans.values():
        worker_spans.sort(key=lambda span: span.start)
        owns = own_times([(s.start, s.dur) for s in worker_spans])
        for setup, own in zip(worker_spans, owns, strict=True):
            setup.nested = max(0.0, setup.dur - own)
            if setup.nested:
                setup.inner = _within(setup, worker_spans)

    def span_at(worker: str, ts: float) -> _Span | None:
        found = None
        for span in spans.get(worker, ()):
            if span.start - 1e-3 <= ts <= span.start + span.dur + 1e-3:
                found = span  # innermost: the latest that began
        return found

    # ---- locks: waits and holds, inside a wide fixture's setup or a test
    test_waits: dict[tuple[str, str], float] = defaultdict(float)
    test_holds: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    acquired_at: dict[tuple[str, str], float] = {}
    for lock in state.lock_events:
        label = lock_label(lock.kind, lock.key)
        if lock.action == "acquired":
            acquired_at[(lock.w, lock.lock_id)] = lock.ts
            waited = max(0.0, lock.waited or 0.0)
            span = span_at(lock.w, lock.ts)
            if span is not None:
                span.waited += waited
            elif lock.test is not None:
                test_waits[(lock.w, lock.test)] += waited
        elif lock.action == "released" and lock.held is not None:
            held = max(0.0, lock.held)
            began = acquired_at.pop((lock.w, lock.lock_id), lock.ts - held)
            span = span_at(lock.w, began)
            if span is not None:
                span.holds.append((label, began, held, lock.kind))
            elif lock.test is not None:
                test_holds[(lock.w, lock.test)].append((label, held))

    # ---- wide fixtures: first worker and the others, holds, who needs them
    by_key: dict[tuple[str, str, str], list[tuple[str, _Span]]] = defaultdict(list)
    for worker, worker_spans in spans.items():
        for span in worker_spans:
            by_key[span.key].append((worker, span))
    setup_in: dict[tuple[str, str], float] = defaultdict(float)
    """(worker, test) -> seconds of wide fixture setup inside that test's setup."""
    fixtures: list[Fixture] = []
    for key, rows in by_key.items():
        rows.sort(key=lambda r: r[1].start)
        free = [
            max(0.0, s.dur - s.nested - s.waited - sum(_own_hold(s, h) for h in s.holds))
            for _w, s in rows
        ]
        for worker, span in rows:
            if span.test is not None:  # an inner setup counts once, as its own
                setup_in[(worker, span.test)] += max(0.0, span.dur - span.nested)
        holds = _fixture_holds([s for _w, s in rows])
        name, scope, baseid = key
        triggers = {s.test for _w, s in rows if s.test is not None}
        fixtures.append(
            Fixture(
                name=name,
                scope=scope,
                baseid=baseid,
                first=free[0],
                rest=_median(free[1:]) if len(free) > 1 else free[0],
                holds=holds,
                scopes=_needed_by(scope, triggers),
                workers=len({w for w, _s in rows}),
                once=any(h[3] in ONCE_KINDS for _w, s in rows for h in s.holds),
            )
        )
    fixtures.sort(key=lambda f: (f.scope, f.name, f.baseid))

    # ---- tests, in collection order
    started_of = ev.test_started
    span_of = ev.test_span
    runs = [(started_of(t), t) for t in state.tests]
    runs.sort(key=_first)
    indexed = bool(runs) and all(t.index is not None for _s, t in runs)
    if indexed:
        runs.sort(key=_index)
    class_scoped = any(f.scope == "class" for f in fixtures)
    split = class_of if class_scoped else module_of
    seen: dict[str, int] = {}
    tests: list[Test] = []
    scopes: dict[str, str] = {}
    no_holds: list[Hold] = []
    for _start, run in runs:
        nodeid = run.nodeid
        where = (run.w, nodeid)
        own = span_of(run)  # the time between its phases is its own too (its reports)
        if run.rerun_time > 0.0:  # attempts pytest-rerunfailures ran again: its time too
            own += run.rerun_time
        if where in setup_in:
            own -= setup_in[where]
        if where in teardowns:
            own -= teardowns[where]
        if where in test_waits:
            own -= test_waits[where]
        in_test = test_holds.get(where)
        test_holds_here = no_holds
        if in_test:
            own -= sum(h for _l, h in in_test)
            test_holds_here = [Hold(label, h, h) for label, h in in_test]
        prefix = nodeid.split("::", 1)[0] if not class_scoped else split(nodeid)
        test_scope = scopes.get(prefix)
        if test_scope is None:
            test_scope = scopes[prefix] = prefix
        test = Test(nodeid, own if own > 0.0 else 0.0, test_holds_here, test_scope, run.duration)
        if nodeid in seen:  # ran again (reruns, --dist each): one test, its last run
            tests[seen[nodeid]] = test
        else:
            seen[nodeid] = len(tests)
            tests.append(test)

    per_worker = _by_worker(runs)
    _find_needers(fixtures, by_key, per_worker, tests, seen)

    # ---- xdist's own costs
    cpus = header.cpus if header else 0
    cpus_recorded = cpus > 0
    if not cpus_recorded:
        cpus = os.cpu_count() or 1  # an older log: assume it ran on a machine like this one
    first_starts = [rows[0][0] for rows in per_worker.values()]
    costs = costs_of(
        started,
        workers,
        cpus,
        min(first_starts) if first_starts else None,
        [max(t.ts for _s, t in rows) for rows in per_worker.values()],
        state.end.ts if state.end is not None else state.last_ts,
    )
    return Profile(
        run_id=state.run_id,
        tests=tests,
        fixtures=fixtures,
        workers=workers,
        dist=header.dist if header else "",
        order=header.order if header else "",
        cpus=cpus,
        boot=costs.boot,
        gap=_gap(per_worker),
        finish=costs.finish,
        wall=state.wall(),
        indexed=indexed,
        cpus_recorded=cpus_recorded,
    )


def _first(run: tuple[float, ev.TestFinished]) -> float:
    return run[0]


def _index(run: tuple[float, ev.TestFinished]) -> tuple[int, float]:
    return (run[1].index or 0, run[0])


def _by_worker(
    runs: list[tuple[float, ev.TestFinished]],
) -> dict[str, list[tuple[float, ev.TestFinished]]]:
    """Each worker's tests in the order they started (``runs`` sorted by start or index)."""
    out: dict[str, list[tuple[float, ev.TestFinished]]] = defaultdict(list)
    for run in runs:
        out[run[1].w].append(run)
    for rows in out.values():
        rows.sort(key=_first)
    return out


def _gap(per_worker: dict[str, list[tuple[float, ev.TestFinished]]]) -> float:
    """Median seconds from a test's end to the next test's start on the same worker."""
    gaps: list[float] = []
    for rows in per_worker.values():
        for (_s, before), (start, _a) in itertools.pairwise(rows):
            gap = start - before.ts
            if 0.0 <= gap <= GAP_CAP:
                gaps.append(gap)
    return _median(gaps)


def _find_needers(
    fixtures: list[Fixture],
    by_key: dict[tuple[str, str, str], list[tuple[str, _Span]]],
    per_worker: dict[str, list[tuple[float, ev.TestFinished]]],
    tests: list[Test],
    seen: dict[str, int],
) -> None:
    """Which tests need each wide fixture (see :attr:`Fixture.needers`)."""
    if not fixtures:
        return
    # each worker's tests by module and by class, so a module's fixture looks at its own
    by_scope: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
    classes = any(f.scope == "class" for f in fixtures)
    for worker, worker_runs in per_worker.items():
        for start, run in worker_runs:
            by_scope[(worker, module_of(run.nodeid))].append((start, run.nodeid))
            if classes:
                by_scope[(worker, "class:" + class_of(run.nodeid))].append((start, run.nodeid))
    for fixture in fixtures:
        rows = by_key[(fixture.name, fixture.scope, fixture.baseid)]
        first_setup: dict[str, float] = {}
        for worker, span in rows:
            first_setup.setdefault(worker, span.start)
        needers: set[str] = set()
        spared = False
        for worker, worker_runs in per_worker.items():
            setup = first_setup.get(worker)
            if fixture.scopes is None:
                candidates = [(start, run.nodeid) for start, run in worker_runs]
            else:
                prefix = "class:" if fixture.scope == "class" else ""
                candidates = []
                for scope in fixture.scopes:
                    candidates += by_scope.get((worker, prefix + scope), [])
            for start, nodeid in candidates:
                if setup is not None and start + 1e-3 >= setup:
                    needers.add(nodeid)
                else:
                    spared = True
        if spared:
            fixture.needers = frozenset(needers)
            for nodeid in needers:
                position = seen.get(nodeid)
                if position is not None:
                    tests[position].needs += (fixture,)


def _fixture_holds(spans: list[_Span]) -> list[Hold]:
    """Per lock: what the first holder held, and the median of the others."""
    by_lock: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for span in spans:
        for label, began, held, _kind in span.holds:
            by_lock[label].append((began, held))
    holds: list[Hold] = []
    for label, rows in sorted(by_lock.items()):
        rows.sort()
        first = rows[0][1]
        rest = _median([h for _b, h in rows[1:]]) if len(rows) > 1 else first
        holds.append(Hold(label, first, rest, len(rows)))
    return holds


def _needed_by(scope: str, triggers: set[str]) -> frozenset[str] | None:
    """The modules (classes) whose tests need a fixture, from the tests that set it up.

    A session fixture set up by tests of one module is taken to serve that module; set up
    from two modules or more, every test (the common autouse or conftest case)."""
    if scope == "class":
        return frozenset(class_of(t) for t in triggers)
    modules = frozenset(module_of(t) for t in triggers)
    if scope in PER_WORKER_SCOPES and len(modules) != 1:
        return None
    return modules


PROFILE_KINDS = frozenset(
    {"test", "fixture_setup", "fixture_teardown", "lock", "end", "worker_up", "collected"}
)
"""The events a profile is made of (heartbeats and activity are not decoded at all)."""


def load_profile(path: Path) -> Profile:
    """The profile of a log, folded through :class:`RunState` from the events it needs;
    the garbage collector stays paused while the profile is built too (100,000 tests: a
    sixth of the time otherwise)."""
    with gc_paused():
        return build_profile(fold(iter_log(path, kinds=PROFILE_KINDS)))
