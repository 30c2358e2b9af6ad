"""The one fold of events into run state.

The hub folds every accepted event (for the terminal summary and crash attribution), the
reports fold a log, the dashboard folds live or replayed streams: all through
:meth:`RunState.apply`. Nothing here imports Textual or pytest.

``RunState(detail=False)`` keeps aggregates only (bounded memory, for the controller);
``detail=True`` also keeps every test and fixture record (for timelines and replays).
"""

from __future__ import annotations

import heapq
import re
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from . import events as ev

SLOWEST_KEPT = 50
FAILURES_KEPT = 2000
NOTICES_KEPT = 500
CLOCK_SLACK = 0.02
"""Seconds two workers' clocks may disagree: back-to-back migrations are not a race."""

# The worker states a viewer shows, in the order of precedence used by WorkerView.state.
WORKER_STATES = (
    "starting",
    "collecting",
    "idle",
    "setup",
    "call",
    "teardown",
    "finishing",
    "waiting on lock",
    "waiting on container",
    "stalled",
    "unresponsive",
    "crashed",
    "done",
)

_FAILING = frozenset({"failed", "error"})
_OUTCOME_RANK = {"failed": 5, "error": 4, "xpassed": 3, "xfailed": 2, "skipped": 1, "passed": 0}


def worst_outcome(categories: Iterable[str]) -> str:
    """The overall outcome of a test from the categories of its phases."""
    best = "passed"
    rank = 0
    for cat in categories:
        r = _OUTCOME_RANK.get(cat, 0)
        if r > rank:
            best, rank = cat, r
    return best


class StallRecord(msgspec.Struct):
    """One stall of one worker: its first sample, every thread as last sampled, its end."""

    w: str
    reason: str
    """``stall`` (the worker's watchdog) or ``unresponsive`` (stacks taken by the hub)."""
    first: ev.Stall
    threads: dict[int, ev.ThreadStack] = msgspec.field(default_factory=dict)
    """ident -> the thread as its latest sample showed it."""
    elapsed: float = 0.0
    """Seconds the phase had run at the latest sample."""
    samples: int = 1
    duration: float | None = None
    """Seconds the stalled phase ran in all, once it ended (None: never ended in the log)."""
    ended: float | None = None

    @property
    def test(self) -> str | None:
        return self.first.test

    @property
    def thread_list(self) -> list[ev.ThreadStack]:
        return list(self.threads.values())

    def merge(self, e: ev.Stall) -> None:
        for thread in e.threads:
            self.threads[thread.ident] = thread
        self.elapsed = max(self.elapsed, e.elapsed)
        self.samples += 1


class WorkerView(msgspec.Struct):
    """What is known of one worker now."""

    id: str
    pid: int | None = None
    host: str = ""
    spec: str = ""
    remote: bool = False
    phase: str = "starting"
    test: str | None = None
    fixture: str | None = None
    since: float = 0.0
    """When the current phase began."""
    test_started: float | None = None
    """When the current test's first phase seen began (None: no test in progress)."""
    call_started: float | None = None
    """When the current test's call began (None: not reached yet)."""
    waiting: str | None = None
    started: float | None = None
    ended: float | None = None
    collected: int | None = None
    tests: int = 0
    failures: int = 0
    busy: float = 0.0
    setup_time: float = 0.0
    call_time: float = 0.0
    teardown_time: float = 0.0
    cpu: float = 0.0
    rss: int = 0
    threads: int = 0
    last_seen: float = 0.0
    last_heartbeat: float | None = None
    dropped: dict[str, int] = msgspec.field(default_factory=dict)
    crash: ev.WorkerCrashed | None = None
    down: bool = False
    stall: ev.Stall | None = None
    unresponsive: bool = False
    last_test: str | None = None
    current_stall: StallRecord | None = None
    """The stall (or unresponsive spell) going on now, for a stuck-threads panel."""
    main_thread: int | None = None
    dump_signal: int | None = None
    dump_file: str | None = None

    @property
    def state(self) -> str:
        """One of :data:`WORKER_STATES`."""
        if self.crash is not None:
            return "crashed"
        if self.down:
            return "done"
        if self.unresponsive:
            return "unresponsive"
        if self.stall is not None:
            return "stalled"
        if self.waiting:
            if self.waiting.startswith("container"):
                return "waiting on container"
            return "waiting on lock"
        return self.phase


DUPLICATE_WORTH = 0.05
"""Seconds of setup in all from which a fixture set up once per worker is worth a warning."""


class FixtureStats(msgspec.Struct):
    name: str
    scope: str
    baseid: str
    count: int = 0
    setup_total: float = 0.0
    setup_max: float = 0.0
    teardown_total: float = 0.0
    errors: int = 0
    workers: set[str] = msgspec.field(default_factory=set)
    first_test: str | None = None

    @property
    def duplicated(self) -> bool:
        """A wide-scoped fixture set up on several workers: the cost was paid per worker."""
        return self.scope in ("session", "package", "module") and len(self.workers) > 1

    @property
    def costly_duplicate(self) -> bool:
        """Duplicated, and at a cost worth a warning (not pytest's own cheap fixtures)."""
        return self.duplicated and self.setup_total >= DUPLICATE_WORTH


class LockStats(msgspec.Struct):
    kind: str
    key: str
    acquisitions: int = 0
    contended: int = 0
    total_wait: float = 0.0
    max_wait: float = 0.0
    longest_hold: float = 0.0
    failures: int = 0
    """Acquisitions that failed: errors, waits that timed out, try-locks refused."""
    timeouts: int = 0
    """Of the failures: waits that gave up (their wait counts in total and max wait)."""
    refused: int = 0
    """Of the failures: try-locks that were not granted (no wait)."""
    holders: Counter[str] = msgspec.field(default_factory=Counter)
    """worker -> acquisitions held."""
    held_by: dict[str, ev.LockEvent] = msgspec.field(default_factory=dict)
    """worker/lock_id -> acquisition, for locks held now."""
    waiting: dict[str, ev.LockEvent] = msgspec.field(default_factory=dict)
    """worker/lock_id -> wait, for waits in progress."""
    waited_on: Counter[str] = msgspec.field(default_factory=Counter)
    """worker -> contended acquisitions that waited for it (it was the holder)."""
    recent: deque[tuple[ev.LockEvent, float]] = msgspec.field(
        default_factory=lambda: deque(maxlen=16)
    )
    """Recently released acquisitions and when they ended: a wait that arrives late (the
    watchdog reports database waits after a moment) still finds who held the lock then."""
    last_contended: dict[str, ev.LockEvent] = msgspec.field(default_factory=dict)
    """worker -> its latest acquisition that had to wait."""


class ContainerView(msgspec.Struct):
    cid: str
    image: str = ""
    name: str = ""
    state: str = "created"
    owner: str | None = None
    test: str | None = None
    fixture: str | None = None
    created: float | None = None
    ready: float | None = None
    ended: float | None = None
    ports: dict[str, str] = msgspec.field(default_factory=dict)
    phases: dict[str, float] = msgspec.field(default_factory=dict)
    """action -> seconds it took (create, start, ready, stop, remove)."""
    users: set[str] = msgspec.field(default_factory=set)
    exit_code: int | None = None
    health: str | None = None
    error: str | None = None
    wait: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    stop_requested: float | None = None
    """When its owner asked it to stop (exits after that are the teardown)."""
    failed_phase: str | None = None
    """For a failed container: engine, create, start, ready or remove."""
    died: float | None = None
    """When the engine saw it exit (or be OOM-killed) without its owner stopping it."""
    during: dict[str, str] = msgspec.field(default_factory=dict)
    """worker -> the test it was running when the container died."""
    leaked: bool = False
    """Still there when the run ended."""
    removed_by: str | None = None
    """``engine``: removed, but not by the worker that started it."""
    stopped_while_used: list[str] = msgspec.field(default_factory=list)
    """Other workers that had used it and were still running when its owner stopped it."""
    used_after_end: list[str] = msgspec.field(default_factory=list)
    """Workers that looked it up after it had stopped or died."""

    @property
    def startup(self) -> float:
        """Seconds from create to ready (the cost a worker paid to have it)."""
        phases = self.phases
        return phases.get("create", 0.0) + phases.get("start", 0.0) + phases.get("ready", 0.0)

    @property
    def shared(self) -> bool:
        """Used by tests on a worker other than the one that started it."""
        return any(user != self.owner for user in self.users)


class ImageStats(msgspec.Struct):
    """How often one image was started over the run, and what that cost."""

    image: str
    starts: int = 0
    workers: set[str] = msgspec.field(default_factory=set)
    startup_total: float = 0.0
    startup_max: float = 0.0
    failures: int = 0

    @property
    def per_worker(self) -> bool:
        """Started on several workers: each paid the startup (the costly surprise)."""
        return len(self.workers) > 1


class RunState:
    """Everything known of one run, folded event by event."""

    def __init__(self, detail: bool = True) -> None:
        self.detail = detail
        self.header: ev.RunStarted | None = None
        self.end: ev.RunFinished | None = None
        self.workers: dict[str, WorkerView] = {}
        self.events = 0
        self.counts: Counter[str] = Counter()
        """pytest's categories, counted the way its terminal summary counts them."""
        self.outcomes: Counter[str] = Counter()
        """Overall outcome per test run."""
        self.tests_done = 0
        self.test_time = 0.0
        self.first_ts: float | None = None
        self.last_ts = 0.0
        self.tests: list[ev.TestFinished] = []
        self._slowest: list[tuple[float, int, ev.TestFinished]] = []
        self.failures: list[ev.TestFinished] = []
        self.fixtures: dict[tuple[str, str, str], FixtureStats] = {}
        self.fixture_events: list[ev.FixtureSetup | ev.FixtureTeardown] = []
        self.crashes: list[ev.WorkerCrashed] = []
        self.notices: list[ev.Notice] = []
        self.stalls: list[ev.Stall] = []
        self.stall_records: list[StallRecord] = []
        """Stalls and unresponsive spells, one record each, in the order they began."""
        self.unresponsive: list[ev.Unresponsive] = []
        self.locks: dict[tuple[str, str], LockStats] = {}
        self.lock_events: list[ev.LockEvent] = []
        self.db_waits: list[ev.DbWait] = []
        self.migrations: list[ev.Migration] = []
        self.deadlocks: list[ev.Deadlock] = []
        self.deadlock_keys: set[tuple[tuple[str, str], ...]] = set()
        """Cycles already reported (a Deadlock event was folded for them)."""
        self.db_backends: dict[tuple[str, int], tuple[str, str]] = {}
        """(dialect, server connection id) -> (worker, redacted URL), from DbConnected."""
        self._migration_spans: dict[str, list[list[Any]]] = {}
        """URL -> [worker, begin, end or None] of its recent migrations."""
        self.migration_races: dict[str, set[str]] = {}
        """URL -> workers that migrated it at overlapping times."""
        self.lock_graph_changed = False
        """Set by lock and wait events; the hub clears it when it looks for deadlocks."""
        self.containers: dict[str, ContainerView] = {}
        self.replies: list[ev.CommandReply] = []
        self.problems: list[tuple[int, str]] = []
        """Lines a reader skipped, if this state was folded from a log."""
        self._handlers: dict[type[ev.Event], Callable[[Any], None]] = {
            ev.RunStarted: self._run_started,
            ev.RunFinished: self._run_finished,
            ev.WorkerStarted: self._worker_started,
            ev.WorkerCollected: self._worker_collected,
            ev.WorkerFinished: self._worker_finished,
            ev.WorkerDown: self._worker_down,
            ev.WorkerCrashed: self._worker_crashed,
            ev.TestFinished: self._test_finished,
            ev.Activity: self._activity,
            ev.Heartbeat: self._heartbeat,
            ev.FixtureSetup: self._fixture_setup,
            ev.FixtureTeardown: self._fixture_teardown,
            ev.Stall: self._stall,
            ev.StallEnded: self._stall_ended,
            ev.Unresponsive: self._unresponsive,
            ev.LockEvent: self._lock,
            ev.DbWait: self._db_wait,
            ev.Migration: self._migration,
            ev.Deadlock: self._deadlock,
            ev.DbConnected: self._db_connected,
            ev.ContainerEvent: self._container,
            ev.Notice: self._notice,
            ev.CommandReply: self._reply,
        }

    # ----------------------------------------------------------------- folding

    def apply(self, event: ev.Event) -> None:
        self.events += 1
        ts = event.ts
        if ts:
            if self.first_ts is None or ts < self.first_ts:
                self.first_ts = ts
            if ts > self.last_ts:
                self.last_ts = ts
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def apply_all(self, events: Iterable[ev.Event]) -> RunState:
        apply = self.apply
        for event in events:
            apply(event)
        return self

    def worker(self, wid: str) -> WorkerView:
        view = self.workers.get(wid)
        if view is None:
            view = self.workers[wid] = WorkerView(id=wid)
        return view

    def _seen(self, event: ev.Event) -> WorkerView:
        view = self.worker(event.w)
        if event.ts > view.last_seen:
            view.last_seen = event.ts
        return view

    def _run_started(self, e: ev.RunStarted) -> None:
        self.header = e

    def _run_finished(self, e: ev.RunFinished) -> None:
        self.end = e
        for wid, kinds in e.dropped.items():
            self.worker(wid).dropped.update(kinds)

    def _worker_started(self, e: ev.WorkerStarted) -> None:
        view = self._seen(e)
        view.pid = e.pid
        view.host = e.host
        view.spec = e.spec
        view.remote = e.remote
        view.main_thread = e.main_thread
        view.dump_signal = e.dump_signal
        view.dump_file = e.dump_file
        view.started = e.ts
        view.phase = "collecting"
        view.since = e.ts

    def _worker_collected(self, e: ev.WorkerCollected) -> None:
        view = self._seen(e)
        view.collected = e.count
        view.phase = "idle"
        view.since = e.ts

    def _worker_finished(self, e: ev.WorkerFinished) -> None:
        view = self._seen(e)
        view.dropped.update(e.dropped)
        view.phase = "finishing"
        _no_test(view)
        view.fixture = None
        view.since = e.ts

    def _worker_down(self, e: ev.WorkerDown) -> None:
        view = self._seen(e)
        view.down = True
        view.ended = e.ts
        _no_test(view)
        view.fixture = None
        view.waiting = None
        view.stall = None
        view.current_stall = None
        view.unresponsive = False

    def _worker_crashed(self, e: ev.WorkerCrashed) -> None:
        view = self._seen(e)
        view.crash = e
        view.ended = e.ts
        self.crashes.append(e)

    def _test_finished(self, e: ev.TestFinished) -> None:
        view = self._seen(e)
        counts = self.counts
        for phase in e.phases:
            cat = phase.outcome
            if phase.when == "call" or cat != "passed":
                counts[cat] += 1
            if phase.when == "setup":
                view.setup_time += phase.dur
            elif phase.when == "call":
                view.call_time += phase.dur
            else:
                view.teardown_time += phase.dur
        if e.crashed:
            counts["failed"] += 1
        if e.fixtures:
            self._function_fixtures(e)
        self.outcomes[e.outcome] += 1
        self.tests_done += 1
        self.test_time += e.duration
        view.tests += 1
        view.busy += e.duration
        if not e.crashed:
            view.last_test = e.nodeid
        if e.outcome in _FAILING:
            view.failures += 1
            if self.detail or len(self.failures) < FAILURES_KEPT:
                self.failures.append(e)
        if view.stall is not None and view.stall.test == e.nodeid:
            view.stall = None  # its StallEnded follows the next test's start by a moment
        if view.test == e.nodeid:
            _no_test(view)
            view.fixture = None
            view.phase = "idle"
            view.since = e.ts
        if self.detail:
            _intern(e)
            self.tests.append(e)
        else:
            item = (e.duration, self.tests_done, e)
            if len(self._slowest) < SLOWEST_KEPT:
                heapq.heappush(self._slowest, item)
            elif e.duration > self._slowest[0][0]:
                heapq.heapreplace(self._slowest, item)

    def _function_fixtures(self, e: ev.TestFinished) -> None:
        fixtures = self.fixtures
        for fx in e.fixtures:
            key = (fx.name, "function", fx.baseid)
            stats = fixtures.get(key)
            if stats is None:
                stats = fixtures[key] = FixtureStats(
                    fx.name, "function", fx.baseid, first_test=e.nodeid
                )
            stats.count += 1
            stats.setup_total += fx.setup_dur
            if fx.setup_dur > stats.setup_max:
                stats.setup_max = fx.setup_dur
            stats.teardown_total += fx.teardown_dur
            stats.workers.add(e.w)
            if fx.error:
                stats.errors += 1

    def _activity(self, e: ev.Activity) -> None:
        view = self._seen(e)
        if view.crash is not None or view.down:
            return
        _test_seen(view, e.test, e.phase, e.since)
        view.test = e.test
        view.phase = e.phase
        view.fixture = e.fixture
        view.since = e.since
        view.waiting = e.waiting

    def _heartbeat(self, e: ev.Heartbeat) -> None:
        view = self._seen(e)
        view.last_heartbeat = e.ts
        view.cpu = e.cpu
        view.rss = e.rss
        view.threads = e.threads
        if view.unresponsive:
            view.unresponsive = False
        if view.crash is None and not view.down:
            _test_seen(view, e.test, e.phase, e.ts - e.elapsed)
            view.test = e.test
            view.phase = e.phase
            view.fixture = e.fixture

    def _fixture_setup(self, e: ev.FixtureSetup) -> None:
        view = self._seen(e)
        key = (e.name, e.scope, e.baseid)
        stats = self.fixtures.get(key)
        if stats is None:
            stats = self.fixtures[key] = FixtureStats(e.name, e.scope, e.baseid, first_test=e.test)
        stats.count += 1
        stats.setup_total += e.dur
        if e.dur > stats.setup_max:
            stats.setup_max = e.dur
        stats.workers.add(view.id)
        if e.error:
            stats.errors += 1
        if self.detail:
            self.fixture_events.append(e)

    def _fixture_teardown(self, e: ev.FixtureTeardown) -> None:
        self._seen(e)
        stats = self.fixtures.get((e.name, e.scope, e.baseid))
        if stats is not None:
            stats.teardown_total += e.dur
            if e.error:
                stats.errors += 1
        if self.detail:
            self.fixture_events.append(e)

    def _stall(self, e: ev.Stall) -> None:
        view = self._seen(e)
        self.stalls.append(e)
        if e.reason == "dump":
            return
        current = view.current_stall
        later = e.reason == "stall" and e.sample > 1
        if later and current is not None and current.reason == "stall":
            current.merge(e)
        else:
            current = view.current_stall = StallRecord(
                w=e.w,
                reason=e.reason,
                first=e,
                threads={t.ident: t for t in e.threads},
                elapsed=e.elapsed,
            )
            self.stall_records.append(current)
        if e.reason == "stall":
            view.stall = e
        elif e.reason == "unresponsive":
            view.unresponsive = True

    def _stall_ended(self, e: ev.StallEnded) -> None:
        view = self._seen(e)
        view.stall = None
        for record in reversed(self.stall_records):
            if record.w == e.w and record.reason == "stall":
                if record.duration is None:
                    record.duration = e.duration
                    record.ended = e.ts
                break
        if view.current_stall is not None and view.current_stall.reason == "stall":
            view.current_stall = None

    def _unresponsive(self, e: ev.Unresponsive) -> None:
        view = self.worker(e.w)
        view.unresponsive = not e.recovered
        self.unresponsive.append(e)
        if not e.recovered:
            return
        current = view.current_stall
        if current is not None and current.reason == "unresponsive":
            current.duration = e.silent
            current.ended = e.ts
            view.current_stall = None

    def _lock(self, e: ev.LockEvent) -> None:
        self._seen(e)
        key = (e.kind, e.key)
        stats = self.locks.get(key)
        if stats is None:
            stats = self.locks[key] = LockStats(e.kind, e.key)
        lid = f"{e.w}/{e.lock_id}"  # lock ids are per worker
        action = e.action
        if action == "wait":
            self._attribute_wait(stats, e)
            stats.waiting[lid] = e
            self.lock_graph_changed = True
        elif action == "acquired":
            wait = stats.waiting.pop(lid, None)
            stats.acquisitions += 1
            waited = e.waited or 0.0
            if waited > 0.0:
                stats.contended += 1
                stats.total_wait += waited
                if waited > stats.max_wait:
                    stats.max_wait = waited
                if e.holder is None and wait is not None:
                    e.holder = wait.holder
                if e.holder is not None and e.holder.w:
                    stats.waited_on[e.holder.w] += 1
                stats.last_contended[e.w] = e
            stats.holders[e.w] += 1
            stats.held_by[lid] = e
            # Waits that arrived before this acquisition did (batches cross): their holder.
            for other in stats.waiting.values():
                if other.w != e.w and (other.holder is None or not other.holder.w):
                    other.holder = _holder_of(e, other.holder)
            self.lock_graph_changed = True
        elif action == "released":
            acquisition = stats.held_by.pop(lid, None)
            if acquisition is not None:
                stats.recent.append((acquisition, e.ts))
            if e.held is not None and e.held > stats.longest_hold:
                stats.longest_hold = e.held
        else:
            stats.waiting.pop(lid, None)
            stats.failures += 1
            if e.reason == "refused":
                stats.refused += 1
            elif e.reason == "timeout":
                stats.timeouts += 1
                waited = e.waited or 0.0
                stats.total_wait += waited
                if waited > stats.max_wait:
                    stats.max_wait = waited
        if self.detail:
            self.lock_events.append(e)

    def _attribute_wait(self, stats: LockStats, e: ev.LockEvent) -> None:
        """Name the holder of a wait: from the server's connection id, else from the
        acquisitions folded so far (the latest one by another worker)."""
        holder = e.holder
        if holder is not None and holder.w:
            return
        if holder is not None and holder.backend is not None:
            mapped = self._backend_worker(holder.backend)
            if mapped is not None:
                holder.w = mapped
                return
        current = [a for a in stats.held_by.values() if a.w != e.w]
        if not current:
            current = [a for a, end in stats.recent if a.w != e.w and a.ts <= e.ts <= end]
        if current:
            e.holder = _holder_of(max(current, key=lambda a: a.ts), holder)

    def _backend_worker(self, backend: int) -> str | None:
        for (_dialect, conn_id), (worker, _url) in self.db_backends.items():
            if conn_id == backend:
                return worker
        return None

    def lock_holders(self, kind: str, key: str) -> list[ev.LockEvent]:
        """Acquisitions of a lock not released yet (for the dashboard's locks panel)."""
        stats = self.locks.get((kind, key))
        return list(stats.held_by.values()) if stats is not None else []

    def lock_queue(self, kind: str, key: str) -> list[ev.LockEvent]:
        """Waits on a lock in progress, oldest first."""
        stats = self.locks.get((kind, key))
        if stats is None:
            return []
        return sorted(stats.waiting.values(), key=lambda w: w.ts)

    def wait_edges(self) -> list[tuple[str, str, str, str | None]]:
        """The wait-for graph now: (waiting worker, lock, holding worker, waiter's test)."""
        edges: list[tuple[str, str, str, str | None]] = []
        gone = {w.id for w in self.workers.values() if w.crash is not None or w.down}
        for stats in self.locks.values():
            if not stats.waiting:
                continue
            label = lock_label(stats.kind, stats.key)
            held = {a.w for a in stats.held_by.values()} - gone
            for wait in stats.waiting.values():
                if wait.w in gone:
                    continue  # a dead worker waits for nothing (its locks stay listed as held)
                holders = held - {wait.w}
                if not holders and wait.holder is not None and wait.holder.w:
                    holders = {wait.holder.w} - {wait.w} - gone
                edges.extend((wait.w, label, h, wait.test) for h in sorted(holders))
        return edges

    def new_deadlocks(self) -> list[ev.Deadlock]:
        """Cycles in the wait-for graph not reported yet (the hub emits them as events)."""
        self.lock_graph_changed = False
        edges = self.wait_edges()
        if len(edges) < 2:
            return []
        out: dict[str, list[tuple[str, str, str | None]]] = {}
        for waiter, label, holder, test in edges:
            out.setdefault(waiter, []).append((label, holder, test))
        found: list[ev.Deadlock] = []
        for start in sorted(out, key=worker_order):
            cycle = _find_cycle(start, out)
            if cycle is None:
                continue
            sig = tuple(sorted((w, lock) for w, lock, _h, _t in cycle))
            if sig in self.deadlock_keys or any(_sig(d) == sig for d in found):
                continue
            found.append(_deadlock_event(cycle))
        return found

    def _db_wait(self, e: ev.DbWait) -> None:
        self._seen(e)
        blocked = e.blocked_by
        if blocked is not None and not blocked.w and blocked.backend is not None:
            blocked.w = self._backend_worker(blocked.backend)
        if (blocked is None or not blocked.w) and e.lock:
            # The worker's acquisition just before names the holder the fold attributed.
            kind, _, key = e.lock.partition(":")
            stats = self.locks.get((kind, key))
            last = stats.last_contended.get(e.w) if stats is not None else None
            if last is not None and last.holder is not None and last.holder.w:
                e.blocked_by = ev.Holder(
                    w=last.holder.w,
                    test=last.holder.test,
                    fixture=last.holder.fixture,
                    backend=blocked.backend if blocked is not None else None,
                    detail=blocked.detail if blocked is not None else None,
                )
        self.db_waits.append(e)

    def _db_connected(self, e: ev.DbConnected) -> None:
        self._seen(e)
        self.db_backends[(e.dialect, e.backend)] = (e.w, e.url)

    def _migration(self, e: ev.Migration) -> None:
        self._seen(e)
        self.migrations.append(e)
        if not e.url:
            return  # no database known (alembic's offline --sql mode): nothing to race on
        # Overlap is judged by the workers' own timestamps, not by arrival order: a short
        # migration's begin and end often arrive in one batch, after another worker's begin.
        spans = self._migration_spans.setdefault(e.url, [])
        if e.action == "begin":
            span: list[Any] = [e.w, e.ts, None]
            spans.append(span)
            if len(spans) > 200:
                del spans[0]
        else:
            start = e.ts - (e.duration or 0.0)
            open_spans = [s for s in spans if s[0] == e.w and s[2] is None]
            if open_spans:
                span = open_spans[-1]
                span[2] = e.ts
            else:
                span = [e.w, start, e.ts]
                spans.append(span)
        inf = float("inf")
        others = {
            other[0]
            for other in spans
            if other[0] != span[0]
            and other[1] + CLOCK_SLACK < (span[2] if span[2] is not None else inf)
            and span[1] + CLOCK_SLACK < (other[2] if other[2] is not None else inf)
        }
        if others:
            racing = self.migration_races.setdefault(e.url, set())
            if not (others | {e.w}) <= racing:
                racing.update(others | {e.w})
                self.lock_graph_changed = True

    def _deadlock(self, e: ev.Deadlock) -> None:
        self.deadlocks.append(e)
        self.deadlock_keys.add(_sig(e))

    def _container(self, e: ev.ContainerEvent) -> None:
        if e.w:
            self._seen(e)
        view = self.containers.get(e.cid)
        if view is None:
            view = self.containers[e.cid] = ContainerView(cid=e.cid, created=e.ts)
        view.image = e.image or view.image
        view.name = e.name or view.name
        if e.ports:
            view.ports = dict(e.ports)
        if e.owner and view.owner is None:
            view.owner = e.owner
        elif e.w and view.owner is None and e.action in ("create", "start"):
            view.owner = e.w
        view.test = view.test or e.test
        view.fixture = view.fixture or e.fixture
        if e.dur is not None:
            view.phases[e.action] = e.dur
        if e.wait:
            view.wait = e.wait
        if e.labels:
            view.labels = dict(e.labels)
        action = e.action
        if action == "use":
            if e.w:
                view.users.add(e.w)
                if view.state in ("stopped", "removed", "exited", "oom-killed"):
                    view.used_after_end.append(e.w)
            return
        if action == "stop":
            if view.stop_requested is None:
                view.stop_requested = e.ts
            workers = self.workers
            view.stopped_while_used = sorted(
                u
                for u in view.users
                if u != view.owner and u in workers and not workers[u].down and not workers[u].crash
            )
        elif action in ("die", "oom"):
            view.died = e.ts
            view.during = dict(e.during)
        elif action == "leak":
            view.leaked = True
        elif action == "fail":
            view.failed_phase = e.phase
        elif action == "remove" and e.by:
            view.removed_by = e.by
        if action == "ready":
            view.ready = e.ts
        if action in ("stop", "remove", "die", "oom"):
            view.ended = e.ts
        if e.exit_code is not None:
            view.exit_code = e.exit_code
        if e.health:
            view.health = e.health
        if e.error:
            view.error = e.error
        if action in ("die", "oom", "remove") and e.by and view.state in ("stopped", "removed"):
            return  # the engine's late word on a container its owner has already torn down
        view.state = {
            "create": "created",
            "start": "running",
            "ready": "ready",
            "stop": "stopped",
            "remove": "removed",
            "die": "exited",
            "oom": "oom-killed",
            "fail": "failed",
            "leak": "leaked",
            "health": view.state,
        }.get(action, view.state)

    def _notice(self, e: ev.Notice) -> None:
        if len(self.notices) < NOTICES_KEPT:
            self.notices.append(e)

    def _reply(self, e: ev.CommandReply) -> None:
        self._seen(e)
        self.replies.append(e)

    # ----------------------------------------------------------------- derived

    @property
    def run_id(self) -> str:
        return self.header.run_id if self.header else ""

    @property
    def started(self) -> float:
        if self.header is not None:
            return self.header.ts
        return self.first_ts or 0.0

    @property
    def status(self) -> str:
        """``running`` (no end yet), ``finished``, ``interrupted`` or ``crashed``."""
        if self.end is None:
            return "running"
        if self.end.status == "interrupted":
            return "interrupted"
        if self.end.status in ("internal_error", "usage_error"):
            return "crashed"
        return "finished"

    def wall(self, now: float | None = None) -> float:
        """Seconds from the header to the end (or to ``now`` / the last event while running)."""
        if self.end is not None:
            return max(0.0, self.end.ts - self.started)
        stop = now if now is not None else self.last_ts
        return max(0.0, stop - self.started)

    def busy_share(self, view: WorkerView, now: float | None = None) -> float:
        """Seconds ``view`` spent in tests / wall time of the run (to ``now`` while it runs),
        0..1. Against the run's wall, not the worker's life: xdist shuts workers down when
        the queue empties, and the time they would have waited on a straggler is idle too."""
        wall = self.wall(now)
        return min(1.0, view.busy / wall) if wall > 0 else 0.0

    def slots(self) -> int:
        """Worker slots the run had: requested workers, at least 1."""
        requested = self.header.workers if self.header else 0
        if requested > 0:
            return requested
        return max(1, len([w for w in self.workers.values() if w.tests or w.pid]))

    def efficiency(self, now: float | None = None) -> float:
        """Sum of test time / (worker slots x wall time), 0..1."""
        wall = self.wall(now)
        if wall <= 0:
            return 0.0
        return min(1.0, self.test_time / (self.slots() * wall))

    def slowest(self, n: int = 10) -> list[ev.TestFinished]:
        if self.detail:
            return sorted(self.tests, key=lambda t: t.duration, reverse=True)[:n]
        return [item[2] for item in sorted(self._slowest, key=lambda i: i[0], reverse=True)[:n]]

    def fixtures_by_cost(self) -> list[FixtureStats]:
        return sorted(self.fixtures.values(), key=lambda f: f.setup_total, reverse=True)

    def active_workers(self) -> list[WorkerView]:
        """Workers that took part: started (have a pid) or ran tests, in id order."""
        return sorted(
            (w for w in self.workers.values() if w.pid or w.tests), key=lambda w: worker_order(w.id)
        )

    def container_images(self) -> list[ImageStats]:
        """Per image: starts, on how many workers, startup cost; costliest first."""
        images: dict[str, ImageStats] = {}
        for view in self.containers.values():
            key = view.image or "(unknown image)"
            stats = images.get(key)
            if stats is None:
                stats = images[key] = ImageStats(key)
            if view.state == "failed":
                stats.failures += 1
            if view.owner is None or "create" not in view.phases:
                continue  # never created, or seen only by the engine watch
            stats.starts += 1
            stats.workers.add(view.owner)
            startup = view.startup
            stats.startup_total += startup
            if startup > stats.startup_max:
                stats.startup_max = startup
        return sorted(images.values(), key=lambda s: s.startup_total, reverse=True)

    def leaked_containers(self) -> list[ContainerView]:
        return [c for c in self.containers.values() if c.leaked]

    def dead_containers(self) -> list[ContainerView]:
        """Containers that exited or were OOM-killed while their owner still needed them."""
        return [c for c in self.containers.values() if c.died is not None]

    def stall_count(self) -> int:
        """Distinct stalls (first samples of watchdog stalls; dumps on demand not counted)."""
        return sum(1 for s in self.stalls if s.reason == "stall" and s.sample == 1)

    def dropped_total(self) -> int:
        return sum(sum(kinds.values()) for kinds in self.dropped().values())

    def dropped(self) -> dict[str, dict[str, int]]:
        return {w.id: dict(w.dropped) for w in self.workers.values() if w.dropped}


TEST_PHASES = frozenset({"setup", "call", "teardown"})


def _test_seen(view: WorkerView, test: str | None, phase: str, since: float) -> None:
    """Keep when the test in progress began, and its call (for a timeline's running bar)."""
    if test is None or phase not in TEST_PHASES:
        _no_test(view)
        return
    if test != view.test or view.test_started is None:
        view.test_started = since
        view.call_started = None
    if phase == "call" and view.call_started is None:
        view.call_started = since


def _no_test(view: WorkerView) -> None:
    view.test = None
    view.test_started = None
    view.call_started = None


def _intern(e: ev.TestFinished) -> None:
    """Kept test records share their few distinct strings (worker, outcome, phase names):
    a decoder makes a new string object for each, about 40% of a record's memory."""
    intern = sys.intern
    e.w = intern(e.w)
    e.outcome = intern(e.outcome)
    for phase in e.phases:
        phase.when = intern(phase.when)
        phase.outcome = intern(phase.outcome)


_NUMBERED = re.compile(r"([^0-9]*)([0-9]+)", re.ASCII)


def worker_order(wid: str) -> tuple[str, int, str]:
    """Sort key: gw2 before gw10; ``main`` and others by name. Any id at all: only ASCII
    digits count as a number (``gw²`` is a name: ``int("²")`` fails)."""
    match = _NUMBERED.fullmatch(wid)
    return (match.group(1), int(match.group(2)), "") if match else (wid, -1, wid)


def lock_label(kind: str, key: str) -> str:
    """How a lock is named in texts: a file lock by its file name, others by their key."""
    if kind == "filelock":
        return key.rsplit("/", 1)[-1]
    return f"{kind}:{key}" if kind not in ("monitor", "run_once") else key


def _holder_of(acquisition: ev.LockEvent, known: ev.Holder | None) -> ev.Holder:
    holder = known if known is not None else ev.Holder()
    holder.w = acquisition.w
    holder.test = acquisition.test
    holder.fixture = acquisition.fixture
    return holder


def _find_cycle(
    start: str, out: dict[str, list[tuple[str, str, str | None]]]
) -> list[tuple[str, str, str, str | None]] | None:
    """A cycle through ``start``: [(worker, lock it waits for, holder, its test)...]."""
    path: list[tuple[str, str, str, str | None]] = []
    seen: set[str] = set()

    def visit(node: str) -> bool:
        if node in seen:
            return False
        seen.add(node)
        for label, holder, test in out.get(node, ()):
            path.append((node, label, holder, test))
            if holder == start or visit(holder):
                return True
            path.pop()
        return False

    return list(path) if visit(start) else None


def _sig(d: ev.Deadlock) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((edge.w, edge.waits_for) for edge in d.cycle))


def _deadlock_event(cycle: list[tuple[str, str, str, str | None]]) -> ev.Deadlock:
    edges: list[ev.WaitEdge] = []
    for i, (worker, waits_for, _holder, test) in enumerate(cycle):
        holds = cycle[i - 1][1]  # the lock the previous worker waits for is held by this one
        edges.append(ev.WaitEdge(w=worker, holds=holds, waits_for=waits_for, test=test))
    text = "; ".join(f"{e.w} holds {e.holds}, waits for {e.waits_for}" for e in edges)
    return ev.Deadlock(cycle=edges, text=text)


def fold(events: Iterable[ev.Event], detail: bool = True) -> RunState:
    return RunState(detail=detail).apply_all(events)
