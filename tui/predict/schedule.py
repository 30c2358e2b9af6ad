"""A model of pytest-xdist's scheduling, replayed over a :class:`~.profile.Profile`.

The controller's side follows xdist's schedulers (``xdist/scheduler/load.py``,
``loadscope.py``, ``worksteal.py``, 3.x):

- ``load``: a first chunk of ``max(2, tests / workers // 4)`` consecutive tests to each
  worker (round-robin, one at a time, when there are fewer than two per worker); whenever
  a worker reports a test and has fewer than ``max(2, pending / workers // 4)`` left, it is
  topped up to ``max(2, pending / workers // 2)`` - unless that test took 0.1 s or more and
  it still has two (a worker on long tests is left alone);
- ``loadscope`` / ``loadfile``: whole modules (classes) or files, in collection order, one
  at a time to a worker that has two tests or fewer left; workers beyond the number of
  units are shut down;
- ``worksteal``: the tests split evenly in consecutive runs; a worker with fewer than two
  left steals the later half of the fullest worker's queue.

A worker runs a test only once it holds the next one (pytest tears down by ``nextitem``)
or has been told to shut down. Time runs in events (a heap of test ends); locks serialise
across workers, wide fixtures are paid by each worker that needs them (the first pays
more under ``run_once``, the others wait for it), and every test costs the gap measured
between tests on top of its own seconds. Workers finishing together report in no fixed
order (:data:`TIES`): the prediction is the median of a few replays with the order drawn.
Start-up is the measured boot slowed by the workers sharing the CPUs; each worker exits
after its last test, sharing the CPUs only with those exiting at the same time
(:mod:`.exits`).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field

from . import DISTS
from .exits import exits_end
from .overheads import contention
from .profile import (
    PER_WORKER_SCOPES,
    Fixture,
    Hold,
    Profile,
    class_of,
    module_of,
)

LONG_TEST = 0.1
"""xdist's ``load``: seconds from which a test counts as long (leave that worker alone)."""
MIN_PENDING = 2
"""xdist's ``worksteal``: a worker with fewer tests left than this is idle."""


@dataclass
class Schedule:
    """The outcome of one replay."""

    wall: float
    startup: float
    makespan: float
    """From the first test to the last one's end."""
    busy: dict[int, float]
    """Worker -> seconds in tests (with fixtures and lock waits)."""
    ends: dict[int, float]
    """Worker -> when its last test ended (from the first test)."""
    last: dict[int, int]
    """Worker -> index of its last test."""
    lock_wait: float = 0.0
    fixture_time: dict[str, float] = field(default_factory=dict)
    """Fixture label -> worker-seconds spent setting it up."""
    setups: dict[str, int] = field(default_factory=dict)
    """Fixture label -> how many times it was set up."""
    units: int = 0
    """Tests (load, worksteal) or scopes (loadscope, loadfile) handed out."""

    @property
    def tail(self) -> float:
        """Seconds from the first worker running out of tests to the last one's end."""
        if not self.ends:
            return 0.0
        return max(self.ends.values()) - min(self.ends.values())


class _Controller:
    """xdist's controller: which tests go to which worker, and when."""

    def __init__(self, tests: int, workers: int) -> None:
        self.workers = workers
        self.queues: list[deque[int]] = [deque() for _ in range(workers)]
        self.running: list[int | None] = [None] * workers
        self.shutdown = [False] * workers
        self.touched: set[int] = set()
        """Workers given tests or told to shut down since the replay last looked."""

    def pending_of(self, w: int) -> int:
        return len(self.queues[w]) + (self.running[w] is not None)

    def start(self) -> None:
        raise NotImplementedError

    def completed(self, w: int, index: int, duration: float) -> None:
        raise NotImplementedError


class _Load(_Controller):
    def __init__(self, tests: int, workers: int) -> None:
        super().__init__(tests, workers)
        self.pending: deque[int] = deque(range(tests))
        self.total = tests

    def send(self, w: int, n: int) -> None:
        queue = self.queues[w]
        pending = self.pending
        for _ in range(min(n, len(pending))):
            queue.append(pending.popleft())
        self.touched.add(w)

    def start(self) -> None:
        if not self.pending:
            return
        if len(self.pending) < 2 * self.workers:
            w = 0
            while self.pending:
                self.send(w, 1)
                w = (w + 1) % self.workers
        else:
            chunk = max(2, self.total // self.workers // 4)
            for w in range(self.workers):
                self.send(w, chunk)
        if not self.pending:
            self.shutdown[:] = [True] * self.workers

    def completed(self, w: int, index: int, duration: float) -> None:
        if self.shutdown[w]:
            return
        if not self.pending:
            self.shutdown[w] = True
            self.touched.add(w)
            return
        left = len(self.pending)
        low = max(2, left // self.workers // 4)
        high = max(2, left // self.workers // 2)
        mine = self.pending_of(w)
        if mine < low:
            if duration >= LONG_TEST and mine >= 2:
                return
            self.send(w, high - mine)


class _Scope(_Controller):
    def __init__(self, scopes: list[str], workers: int) -> None:
        super().__init__(len(scopes), workers)
        units: dict[str, list[int]] = {}
        for i, scope in enumerate(scopes):
            units.setdefault(scope, []).append(i)
        self.units: deque[list[int]] = deque(units.values())
        self.left = [0] * workers
        """Tests assigned to a worker and not completed."""

    def assign(self, w: int) -> None:
        unit = self.units.popleft()
        self.queues[w].extend(unit)
        self.left[w] += len(unit)
        self.touched.add(w)

    def reschedule(self, w: int) -> None:
        if self.shutdown[w]:
            return
        if not self.units:
            self.shutdown[w] = True
            self.touched.add(w)
            return
        if self.left[w] > 2:
            return
        self.assign(w)

    def start(self) -> None:
        extra = self.workers - len(self.units)
        for w in range(self.workers - max(0, extra), self.workers):
            self.shutdown[w] = True  # xdist shuts the workers without a unit down
        for w in range(self.workers):
            if not self.shutdown[w] and self.units:
                self.assign(w)
        for w in range(self.workers):
            self.reschedule(w)

    def completed(self, w: int, index: int, duration: float) -> None:
        self.left[w] -= 1
        self.reschedule(w)


class _Steal(_Controller):
    def __init__(self, tests: int, workers: int) -> None:
        super().__init__(tests, workers)
        self.pending: deque[int] = deque(range(tests))

    def check(self) -> None:
        idle = [w for w in range(self.workers) if not self.shutdown[w]]
        idle = [w for w in idle if self.pending_of(w) < MIN_PENDING]
        if not idle:
            return
        if self.pending:
            for i, w in enumerate(idle):
                n = len(self.pending) // (len(idle) - i)
                for _ in range(n):
                    self.queues[w].append(self.pending.popleft())
                self.touched.add(w)
            idle = [w for w in idle if self.pending_of(w) < MIN_PENDING]
            if not idle:
                return
        up = [w for w in range(self.workers) if not self.shutdown[w]]
        victim = max(up, key=self.pending_of, default=None)
        steal = 0
        if victim is not None:
            have = self.pending_of(victim)
            steal = min(have // 2, max(0, have - MIN_PENDING), len(self.queues[victim]))
        if steal == 0 or victim is None:
            for w in idle:
                self.shutdown[w] = True
            self.touched.update(idle)
            return
        queue = self.queues[victim]
        stolen = [queue.pop() for _ in range(steal)]
        self.pending.extend(reversed(stolen))
        self.check()

    def start(self) -> None:
        self.check()

    def completed(self, w: int, index: int, duration: float) -> None:
        self.check()


class _Resources:
    """Locks and wide fixtures shared across workers while a replay runs."""

    def __init__(self, profile: Profile) -> None:
        self.free_at: dict[str, float] = {}
        self.held: set[int] = set()
        """ids of holds whose first holder has come (the others pay ``rest``)."""
        self.first_done: dict[int, float] = {}
        """id of a shared fixture -> when its first setup ended."""
        self.lock_wait = 0.0
        self.fixture_time: dict[str, float] = {}
        self.setups: dict[str, int] = {}
        """Fixture label -> how many times it was set up."""

    def hold(self, hold: Hold, t: float) -> float:
        start = max(t, self.free_at.get(hold.lock, 0.0))
        self.lock_wait += start - t
        key = id(hold)
        held = hold.rest if key in self.held else hold.first
        self.held.add(key)
        end = start + held
        self.free_at[hold.lock] = end
        return end

    def set_up(self, fixture: Fixture, t: float) -> float:
        begin = t
        key = id(fixture)
        first = key not in self.first_done
        for hold in fixture.holds:
            t = self.hold(hold, t)
        if first:
            t += fixture.first
            self.first_done[key] = t
        else:
            if fixture.shared:
                t = max(t, self.first_done[key])
            t += fixture.rest
        self.fixture_time[fixture.label] = self.fixture_time.get(fixture.label, 0.0) + t - begin
        self.setups[fixture.label] = self.setups.get(fixture.label, 0) + 1
        return t


MAX_UNITS = 6000
"""Above this many tests, runs of short consecutive tests of one module are replayed as
one unit each (xdist's chunk sizes are shares of what is pending, so they scale alike);
a test longer than a few average ones always stays on its own."""


@dataclass(slots=True)
class Unit:
    cost: float
    scope: str
    holds: list[Hold]
    last: int
    """Position in ``profile.tests`` of its last test."""
    needs: tuple[Fixture, ...] = ()
    count: int = 1


def units_of(profile: Profile, order: list[int], limit: int = MAX_UNITS) -> list[Unit]:
    tests = profile.tests
    units: list[Unit] = []
    if len(order) <= limit:
        for i in order:
            t = tests[i]
            units.append(Unit(t.cost, t.scope, t.holds, i, t.needs))
        return units
    size = -(-len(order) // limit)
    short = 4 * sum(t.cost for t in tests) / max(1, len(tests))
    current: Unit | None = None
    for i in order:
        t = tests[i]
        if (
            current is not None
            and current.count < size
            and not t.holds
            and not t.needs
            and not current.needs
            and t.cost <= short
            and t.scope == current.scope
        ):
            current.cost += t.cost
            current.count += 1
            current.last = i
            continue
        current = Unit(t.cost, t.scope, t.holds, i, t.needs)
        units.append(current)
        if t.holds or t.cost > short:
            current = None
    return units


TIES = 0.002
"""Seconds within which workers' reports reach xdist's controller in no fixed order (its
threads and the OS decide): which of two workers finishing together is topped up first,
and so which gets the next chunk, is luck."""
DRAWS = 5
"""Replays with reports in random order within :data:`TIES`; the prediction is the median
one (a suite of equal tests has a few lucky and unlucky schedules; a real run takes the
common one more often than not)."""
DRAW_UNITS = 2000
"""Above this many units, one replay without drawing: luck evens out over many chunks."""


def replay(
    profile: Profile,
    workers: int,
    dist: str = "load",
    order: list[int] | None = None,
    units: list[Unit] | None = None,
) -> Schedule:
    """Replay the profile's tests on ``workers`` xdist workers; ``order``: the collection
    order as positions in ``profile.tests`` (default: as collected); ``units``: what
    :func:`units_of` made of that order, if the caller kept it. The median of
    :data:`DRAWS` replays (see :data:`TIES`), the same on every call."""
    if dist not in DISTS:
        raise ValueError(f"unknown --dist {dist!r}")
    workers = max(1, workers)
    if units is None:
        tests = profile.tests
        units = units_of(profile, list(range(len(tests))) if order is None else order)
    if workers == 1 or len(units) > DRAW_UNITS:
        return _replay(profile, workers, dist, units, None)
    drawn = sorted(
        (_replay(profile, workers, dist, units, random.Random(seed)) for seed in range(DRAWS)),
        key=_wall,
    )
    return drawn[len(drawn) // 2]


def _wall(schedule: Schedule) -> float:
    return schedule.wall


def _replay(
    profile: Profile,
    workers: int,
    dist: str,
    units: list[Unit],
    draw: random.Random | None,
) -> Schedule:
    """One replay; ``draw``: reports that come within :data:`TIES` in random order."""
    tests = profile.tests
    cpu = contention(workers, profile.cpus)
    startup = profile.boot * cpu
    # the gap (xdist's report and dispatch) is CPU work too: scaled from the recording's
    # contention to this one's
    gap = profile.gap * cpu / contention(max(1, profile.workers), profile.cpus)
    if dist in ("load", "worksteal"):
        ctl: _Controller = (_Load if dist == "load" else _Steal)(len(units), workers)
    else:
        split = module_of if dist == "loadfile" else class_of
        ctl = _Scope([split(tests[u.last].nodeid) for u in units], workers)
    res = _Resources(profile)

    per_worker = profile.worker_fixtures()
    per_scope = profile.module_fixtures()
    # which wide fixtures a test needs, by its module (class): computed once per scope
    needs_cache: dict[str, tuple[list[Fixture], list[Fixture]]] = {}

    def needs(scope: str) -> tuple[list[Fixture], list[Fixture]]:
        found = needs_cache.get(scope)
        if found is None:
            module = module_of(scope)
            session = [
                f
                for f in per_worker
                if f.needers is None and (f.scopes is None or module in f.scopes)
            ]
            local = [
                f
                for f in per_scope
                if f.needers is None
                and f.scopes is not None
                and (module in f.scopes if f.scope != "class" else scope in f.scopes)
            ]
            found = needs_cache[scope] = (session, local)
        return found

    have: list[set[int]] = [set() for _ in range(workers)]
    """Per worker: ids of the per-worker fixtures it has set up."""
    here: list[str | None] = [None] * workers
    """Per worker: the scope (module or class) its scoped fixtures are set up for."""
    local_have: list[set[int]] = [set() for _ in range(workers)]
    """Per worker: ids of the scoped fixtures set up for that scope."""
    busy = [0.0] * workers
    ends: dict[int, float] = {}
    last: dict[int, int] = {}
    heap: list[tuple[float, int, float, int]] = []
    """(when the controller hears of it, tie-breaker, when the test ended, worker)."""
    seq = 0
    running = ctl.running
    queues = ctl.queues
    shutdown = ctl.shutdown
    push = heapq.heappush

    def run(w: int, pos: int, t: float) -> None:
        nonlocal seq
        unit = units[pos]
        begin = t
        scope = unit.scope
        if here[w] != scope:
            session, local = needs(scope)
            done = have[w]
            for fixture in session:
                if id(fixture) not in done:
                    done.add(id(fixture))
                    t = res.set_up(fixture, t)
            here[w] = scope
            local_have[w] = set()
            for fixture in local:
                t = res.set_up(fixture, t)
        for fixture in unit.needs:
            if fixture.scope in PER_WORKER_SCOPES:
                if id(fixture) not in have[w]:
                    have[w].add(id(fixture))
                    t = res.set_up(fixture, t)
            elif id(fixture) not in local_have[w]:
                local_have[w].add(id(fixture))
                t = res.set_up(fixture, t)
        for hold in unit.holds:
            t = res.hold(hold, t)
        t += unit.cost + gap * unit.count
        busy[w] += t - begin
        running[w] = pos
        push(heap, (t + draw.random() * TIES if draw else t, seq, t, w))
        seq += 1

    def try_start(w: int, t: float) -> bool:
        if running[w] is not None:
            return False
        queue = queues[w]
        if queue and (len(queue) >= 2 or shutdown[w]):
            run(w, queue.popleft(), t)
            return True
        return False

    ctl.start()
    for w in range(workers):
        try_start(w, 0.0)
    ctl.touched.clear()
    started_at = [0.0] * workers
    pop = heapq.heappop
    touched = ctl.touched
    while True:
        if not heap:
            # A model can strand a worker holding one test nobody tells it to run (xdist
            # would shut it down once the queue empties): run what is left, never drop it.
            stranded = [w for w in range(workers) if queues[w] and running[w] is None]
            if not stranded:
                break
            t = max(ends.values(), default=0.0)
            for w in stranded:
                shutdown[w] = True
                if try_start(w, t):
                    started_at[w] = t
            continue
        _heard, _s, t, w = pop(heap)
        pos = running[w]
        assert pos is not None
        running[w] = None
        ends[w] = t
        last[w] = units[pos].last
        duration = t - started_at[w]
        if try_start(w, t):  # the worker goes on before the controller hears of it
            started_at[w] = t
        ctl.completed(w, pos, duration)
        while touched:
            other = touched.pop()
            if try_start(other, t):
                started_at[other] = t
    makespan = max(ends.values(), default=0.0)
    # each worker exits once its last test ends (a worker without tests, at once)
    done = exits_end([ends.get(w, 0.0) for w in range(workers)], profile.finish, profile.cpus)
    count = (
        len(tests)
        if dist in ("load", "worksteal")
        else len({(module_of if dist == "loadfile" else class_of)(t.nodeid) for t in tests})
    )
    return Schedule(
        wall=startup + max(makespan, done),
        startup=startup,
        makespan=makespan,
        busy=dict(enumerate(busy)),
        ends=ends,
        last=last,
        lock_wait=res.lock_wait,
        fixture_time=res.fixture_time,
        setups=res.setups,
        units=count,
    )
