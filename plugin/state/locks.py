"""The fold's locks, database waits, migrations and deadlocks.

:class:`LockFold` is the part of :class:`~.fold.RunState` that folds lock, wait, migration
and deadlock events: who holds and who waits for each lock, the wait-for graph and its
cycles (:meth:`LockFold.new_deadlocks`), and migrations of one database that overlapped.

The fold never changes the events it folds: the holder it works out for a wait, an
acquisition or a database wait is kept here and read through :meth:`LockFold.holder` and
:meth:`LockFold.blocked_by` (the event's own, as its worker recorded it, when the fold
found no better one).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from typing import Any, NamedTuple

import msgspec

from testmon_live.plugin import events as ev
from testmon_live.plugin.dburl import display_url, is_private

from .workers import CLOCK_SLACK, WorkerFold, worker_order


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
    waits: int = 0
    """Every wait that ended: granted (``contended``) or not (timed out, failed)."""
    held_for: dict[str, float] = msgspec.field(default_factory=dict)
    """worker -> seconds it held the lock in all."""


class LockWait(msgspec.Struct, frozen=True):
    """One wait on a lock, granted or not, and who kept the waiter waiting."""

    w: str
    lock: str
    """The lock's label (:func:`lock_label`)."""
    waited: float
    outcome: str
    """``acquired``, ``timeout``, ``deadlock`` (failed by the server to break one) or
    ``failed``."""
    ts: float
    test: str | None = None
    fixture: str | None = None
    holder: str | None = None
    """The worker that held the lock meanwhile, when known."""
    holder_test: str | None = None
    holder_fixture: str | None = None


WAITS_KEPT = 50
"""Longest waits the fold keeps (the report shows at most this many)."""
BROKEN_PATIENCE = 5.0
"""Seconds of log time a deadlock the server broke waits for its other side's events (a
worker's batch may come late) before it is said with what is known."""


def lock_label(kind: str, key: str) -> str:
    """How a lock is named in texts: a file lock by its file name, others by their key."""
    if kind == "filelock":
        return key.rsplit("/", 1)[-1]
    return f"{kind}:{key}" if kind not in ("monitor", "run_once") else key


class Attributions:
    """Holders the fold worked out for events, kept beside them (keyed by the event's
    identity; the event is kept too, so that identity cannot pass to another)."""

    def __init__(self) -> None:
        self._found: dict[int, tuple[ev.LockEvent | ev.DbWait, ev.Holder]] = {}

    def get(self, event: ev.LockEvent | ev.DbWait) -> ev.Holder | None:
        found = self._found.get(id(event))
        return found[1] if found is not None and found[0] is event else None

    def set(self, event: ev.LockEvent | ev.DbWait, holder: ev.Holder) -> None:
        self._found[id(event)] = (event, holder)

    def forget(self, event: ev.LockEvent | None) -> None:
        """Nothing will ask for ``event``'s holder any more (a fold that keeps no events)."""
        if event is not None and self.get(event) is not None:
            del self._found[id(event)]

    def __len__(self) -> int:
        return len(self._found)


class MigrationRun(msgspec.Struct):
    """One migration as it ran: its begin paired with its end. A short migration may log
    its end alone; one still running, or cut short by a crash, has no end yet."""

    w: str
    tool: str
    op: str
    url: str
    schema: str | None
    from_rev: str | None
    to_rev: str | None
    start: float
    """When it began, by its worker's clock."""
    duration: float | None
    """Seconds it took; ``None`` while it has no end (or its end says no duration)."""
    finished: bool
    error: str | None
    test: str | None
    fixture: str | None
    caught: bool
    """It raised inside a test that passed: the test caught the error (expected)."""

    @property
    def place(self) -> str:
        return self.url if self.schema is None else f"{self.url} (schema {self.schema})"


class MigrationGroup(msgspec.Struct):
    """The migrations one worker ran with one tool and operation on one database (and
    schema), between the same revisions: a suite that builds its schema per test
    (``create_all`` in a fixture) repeats one many times; a one-off is a group of one."""

    runs: list[MigrationRun]
    """In the order they began."""

    @property
    def first(self) -> MigrationRun:
        return self.runs[0]

    @property
    def count(self) -> int:
        return len(self.runs)

    @property
    def total(self) -> float | None:
        """Seconds of the finished ones in all (``None``: none finished with a duration)."""
        took = [r.duration for r in self.runs if r.duration is not None]
        return sum(took) if took else None

    @property
    def longest(self) -> float | None:
        return max((r.duration for r in self.runs if r.duration is not None), default=None)

    @property
    def errors(self) -> int:
        """Runs that failed (not the errors passing tests caught)."""
        return sum(1 for r in self.runs if r.error is not None and not r.caught)

    @property
    def caught_errors(self) -> int:
        return sum(1 for r in self.runs if r.error is not None and r.caught)

    @property
    def unfinished(self) -> int:
        return sum(1 for r in self.runs if not r.finished)


class StepRecord(NamedTuple):
    """One migration step a worker ran, with the migration it was part of."""

    w: str
    tool: str
    op: str
    url: str
    name: str
    duration: float
    backwards: bool


class LockFold(WorkerFold):
    """Locks, database waits, migrations and deadlocks: a part of :class:`~.fold.RunState`."""

    def __init__(self, detail: bool = True) -> None:
        super().__init__(detail)
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
        """Place (:attr:`ev.Migration.place`) -> [worker, begin, end or None] of its recent
        migrations."""
        self.migration_races: dict[str, set[str]] = {}
        """Place (a database URL, and its schema where named) -> workers that migrated it at
        overlapping times."""
        self.race_places: dict[str, tuple[str, str | None]] = {}
        """Place of :attr:`migration_races` -> its (URL, schema): what to compare and show."""
        self.race_windows: dict[str, tuple[float, float]] = {}
        """Place of :attr:`migration_races` -> how long the race lasted: from the start of
        the first migration that overlapped another worker's there to the end of the last
        one (workers' clocks)."""
        self._erring_tests: set[tuple[str, str]] = set()
        """(worker, test) of running tests a migration raised in, until the test ends."""
        self.caught_errors: set[tuple[str, str]] = set()
        """(worker, test) of tests that passed though a migration raised in them: the test
        caught the error (``pytest.raises``), an error the suite provokes on purpose."""
        self.lock_graph_changed = False
        """Set by lock and wait events; the hub clears it when it looks for deadlocks."""
        self._holders = Attributions()
        self.lock_waits: list[tuple[float, int, LockWait]] = []
        """The :data:`WAITS_KEPT` longest waits (a heap: (waited, order, wait))."""
        self.lock_wait_count = 0
        """Every wait that ended, on any lock."""
        self._broken: list[tuple[ev.LockEvent, list[str]]] = []
        """Waits the server failed to break a deadlock, not reported as a :class:`Deadlock`
        yet, with the locks their worker held then (labels)."""

    def holder(self, e: ev.LockEvent) -> ev.Holder | None:
        """Who held the lock ``e`` (a wait or a contended acquisition) waited for: as the
        fold worked it out, else as the event says."""
        return self._holders.get(e) or e.holder

    def blocked_by(self, e: ev.DbWait) -> ev.Holder | None:
        """Who the database wait ``e`` waited for: as the fold worked it out, else as the
        event says."""
        return self._holders.get(e) or e.blocked_by

    def longest_waits(self, n: int = WAITS_KEPT) -> list[LockWait]:
        """The ``n`` longest waits, longest first."""
        return [w for _t, _n, w in heapq.nlargest(n, self.lock_waits)]

    def _wait_ended(
        self, stats: LockStats, e: ev.LockEvent, waited: float, holder: ev.Holder | None
    ) -> None:
        stats.waits += 1
        stats.total_wait += waited
        if waited > stats.max_wait:
            stats.max_wait = waited
        self.lock_wait_count += 1
        if e.action == "acquired":
            outcome = "acquired"
        else:
            outcome = e.reason if e.reason in ("timeout", "deadlock") else "failed"
        known = holder is not None and holder.w and holder.w != e.w
        wait = LockWait(
            w=e.w,
            lock=lock_label(e.kind, e.key),
            waited=waited,
            outcome=outcome,
            ts=e.ts,
            test=e.test,
            fixture=e.fixture,
            holder=holder.w if known and holder is not None else None,
            holder_test=holder.test if known and holder is not None else None,
            holder_fixture=holder.fixture if known and holder is not None else None,
        )
        item = (waited, self.lock_wait_count, wait)
        if len(self.lock_waits) < WAITS_KEPT:
            heapq.heappush(self.lock_waits, item)
        elif waited > self.lock_waits[0][0]:
            heapq.heapreplace(self.lock_waits, item)

    def _lock(self, e: ev.LockEvent) -> ev.Holder | None:
        """Fold a lock event; returns who held the lock while ``e``'s wait lasted."""
        self._seen(e)
        key = (e.kind, e.key)
        stats = self.locks.get(key)
        if stats is None:
            stats = self.locks[key] = LockStats(e.kind, e.key)
        lid = f"{e.w}/{e.lock_id}"  # lock ids are per worker
        action = e.action
        held_by: ev.Holder | None = None
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
                holder = self.holder(e)
                if holder is not None and not holder.w and holder.backend is not None:
                    mapped = self._backend_worker(holder.backend)
                    if mapped is not None:
                        holder = msgspec.structs.replace(holder, w=mapped)
                        self._holders.set(e, holder)
                if (holder is None or not holder.w) and wait is not None:
                    named = self.holder(wait)
                    if named is not None:
                        holder = named
                        self._holders.set(e, holder)
                if holder is not None and holder.w:
                    stats.waited_on[holder.w] += 1
                if not self.detail:  # the one it replaces is not asked about any more
                    self._holders.forget(stats.last_contended.get(e.w))
                stats.last_contended[e.w] = e
                self._wait_ended(stats, e, waited, holder)
            held_by = self.holder(e)
            if not self.detail:
                self._holders.forget(wait)
            stats.holders[e.w] += 1
            stats.held_by[lid] = e
            # Waits that arrived before this acquisition did (batches cross): their holder.
            for other in stats.waiting.values():
                known = self.holder(other)
                if other.w != e.w and (known is None or not known.w):
                    self._holders.set(other, _holder_of(e, known))
            self.lock_graph_changed = True
        elif action == "released":
            acquisition = stats.held_by.pop(lid, None)
            if acquisition is not None:
                stats.recent.append((acquisition, e.ts))
            if e.held is not None:
                stats.held_for[e.w] = stats.held_for.get(e.w, 0.0) + e.held
                if e.held > stats.longest_hold:
                    stats.longest_hold = e.held
        else:
            wait = stats.waiting.pop(lid, None)
            stats.failures += 1
            if e.reason == "deadlock":
                self._deadlock_broken(stats, e, wait)
            if e.reason == "refused":
                stats.refused += 1
            else:
                if e.reason == "timeout":
                    stats.timeouts += 1
                waited = e.waited or 0.0
                if waited > 0.0:
                    # Every wait counts, granted or not: a wait that gave up cost its time.
                    held_by = self.holder(wait) if wait is not None else None
                    self._wait_ended(stats, e, waited, held_by)
            if not self.detail:
                self._holders.forget(wait)
        if self.detail:
            self.lock_events.append(e)
        return held_by

    def _attribute_wait(self, stats: LockStats, e: ev.LockEvent) -> None:
        """Name the holder of a wait: from the server's connection id, else from the
        acquisitions folded so far (the latest one by another worker)."""
        holder = e.holder
        if holder is not None and holder.w:
            return
        if holder is not None and holder.backend is not None:
            mapped = self._backend_worker(holder.backend)
            if mapped is not None:
                self._holders.set(e, msgspec.structs.replace(holder, w=mapped))
                return
        current = [a for a in stats.held_by.values() if a.w != e.w]
        if not current:
            current = [a for a, end in stats.recent if a.w != e.w and a.ts <= e.ts <= end]
        if current:
            self._holders.set(e, _holder_of(max(current, key=lambda a: a.ts), holder))

    def _deadlock_broken(
        self, stats: LockStats, e: ev.LockEvent, wait: ev.LockEvent | None
    ) -> None:
        """The server failed ``e``'s wait to break a deadlock: name who held the lock (as
        for a wait), and keep the locks its worker holds now (it may release them in the
        same batch) for :meth:`new_deadlocks`."""
        if wait is not None:
            named = self.holder(wait)
            if named is not None and named.w:
                self._holders.set(e, named)
        if wait is None or self._holders.get(e) is None:
            self._attribute_wait(stats, e)
        holds = [
            lock_label(other.kind, other.key)
            for other in self.locks.values()
            if any(a.w == e.w for a in other.held_by.values())
        ]
        self._broken.append((e, holds))
        self.lock_graph_changed = True

    def _broken_deadlocks(self) -> list[ev.Deadlock]:
        """Deadlocks the server broke: the failed worker waited for a lock another held, and
        that one waited (its wait folded, else: for one of the locks the failed worker
        held; with one held, that one) - a cycle the server saw whole.

        Workers' batches interleave: the other side's acquisition (earlier) may come after
        the failure. A failure whose holder is not known yet stays pending until it is, or
        until every other running worker's events have passed its time (at the end of the
        run: every other worker ended), or ``BROKEN_PATIENCE`` seconds of log time have;
        then it is said with what is known."""
        found: list[ev.Deadlock] = []
        pending: list[tuple[ev.LockEvent, list[str]]] = []
        latest = max((v.last_seen for v in self.workers.values()), default=0.0)
        for e, holds in self._broken:
            label = lock_label(e.kind, e.key)
            holder = self.holder(e)
            blocked = self._waiter_on(e) if holder is None or not holder.w else None
            if blocked is not None:  # the server said e's worker blocked this one's wait
                waiter, wanted, its_test = blocked
                edges = [
                    ev.WaitEdge(
                        w=e.w, holds=" and ".join(holds) or wanted, waits_for=label, test=e.test
                    ),
                    ev.WaitEdge(w=waiter, holds=label, waits_for=wanted, test=its_test),
                ]
                text = "; ".join(f"{d.w} holds {d.holds}, waits for {d.waits_for}" for d in edges)
                deadlock = ev.Deadlock(cycle=edges, text=_broken_text(text, e.w), broken=True)
                if _sig(deadlock) not in self.deadlock_keys and all(
                    _sig(d) != _sig(deadlock) for d in found
                ):
                    found.append(deadlock)
                continue
            if holder is None or not holder.w:
                stats = self.locks.get((e.kind, e.key))
                if stats is not None:
                    self._attribute_wait(stats, e)
                    holder = self.holder(e)
            other = holder.w if holder is not None and holder.w != e.w else None
            if other is None:
                if not self._past(e, latest):
                    pending.append((e, holds))
                    continue
                # no second edge known: said in words, never as a one-edge cycle
                text = f"{e.w} waits for {label} (holder unknown)"
                if e.test:
                    text += f" in {e.test}"
                found.append(ev.Deadlock(cycle=[], text=_broken_text(text, e.w), broken=True))
                continue
            first = ev.WaitEdge(
                w=e.w, holds=" and ".join(holds) or "?", waits_for=label, test=e.test
            )
            waits_for, test = self._waits_of(other, holds, e.ts)
            if waits_for is None:
                waits_for = holds[0] if len(holds) == 1 else "a lock " + e.w + " held"
            edges = [
                first,
                ev.WaitEdge(w=other, holds=label, waits_for=waits_for, test=test),
            ]
            text = "; ".join(f"{d.w} holds {d.holds}, waits for {d.waits_for}" for d in edges)
            deadlock = ev.Deadlock(cycle=edges, text=_broken_text(text, e.w), broken=True)
            if _sig(deadlock) not in self.deadlock_keys and all(
                _sig(d) != _sig(deadlock) for d in found
            ):
                found.append(deadlock)
        self._broken = pending
        if pending:  # to be looked at again with the next batch
            self.lock_graph_changed = True
        return found

    def _waiter_on(self, e: ev.LockEvent) -> tuple[str, str, str | None] | None:
        """Another worker whose wait the server said ``e``'s worker blocked, waiting when
        ``e`` failed (still, or granted after): (worker, lock label, its test)."""
        for stats in self.locks.values():
            label = lock_label(stats.kind, stats.key)
            waits = list(stats.waiting.values()) + [
                a for a in stats.last_contended.values() if a.ts + CLOCK_SLACK >= e.ts
            ]
            for wait in waits:
                if wait.w == e.w:
                    continue
                named = self.holder(wait)
                if named is not None and named.w == e.w:
                    return wait.w, label, wait.test
        return None

    def _past(self, e: ev.LockEvent, latest: float) -> bool:
        """Every other worker that may hold a lock has sent its events past ``e``'s time
        (they come in order per worker: its acquisitions before then are folded), or it
        is long past in log time."""
        if latest >= e.ts + BROKEN_PATIENCE:
            return True
        return all(
            v.last_seen >= e.ts + CLOCK_SLACK
            for v in self.workers.values()
            if v.id != e.w
            and v.started is not None
            and v.ended is None
            and not v.down
            and v.crash is None
        )

    def _waits_of(
        self, worker: str, labels: list[str], since: float
    ) -> tuple[str | None, str | None]:
        """The lock of ``labels`` that ``worker`` waits for now (or waited for around
        ``since``, the wait ended by then), and its test."""
        for stats in self.locks.values():
            label = lock_label(stats.kind, stats.key)
            if label not in labels:
                continue
            for wait in stats.waiting.values():
                if wait.w == worker:
                    return label, wait.test
            last = stats.last_contended.get(worker)
            if last is not None and last.ts + CLOCK_SLACK >= since:
                return label, last.test
        return None, None

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
                named = self.holder(wait)
                if not holders and named is not None and named.w:
                    holders = {named.w} - {wait.w} - gone
                edges.extend((wait.w, label, h, wait.test) for h in sorted(holders))
        return edges

    def new_deadlocks(self) -> list[ev.Deadlock]:
        """Cycles in the wait-for graph not reported yet (the hub emits them as events)."""
        self.lock_graph_changed = False
        broken = self._broken_deadlocks() if self._broken else []
        edges = self.wait_edges()
        if len(edges) < 2:
            return broken
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
        return broken + [d for d in found if all(_sig(d) != _sig(b) for b in broken)]

    def _db_wait(self, e: ev.DbWait) -> None:
        self._seen(e)
        blocked = e.blocked_by
        if blocked is not None and not blocked.w and blocked.backend is not None:
            blocked = msgspec.structs.replace(blocked, w=self._backend_worker(blocked.backend))
            self._holders.set(e, blocked)
        if (blocked is None or not blocked.w) and e.lock:
            # The worker's acquisition just before names the holder the fold attributed.
            kind, _, key = e.lock.partition(":")
            stats = self.locks.get((kind, key))
            last = stats.last_contended.get(e.w) if stats is not None else None
            named = self.holder(last) if last is not None else None
            if named is not None and named.w:
                self._holders.set(
                    e,
                    ev.Holder(
                        w=named.w,
                        test=named.test,
                        fixture=named.fixture,
                        backend=blocked.backend if blocked is not None else None,
                        detail=blocked.detail if blocked is not None else None,
                    ),
                )
        self.db_waits.append(e)

    def _db_connected(self, e: ev.DbConnected) -> None:
        self._seen(e)
        self.db_backends[(e.dialect, e.backend)] = (e.w, e.url)

    def _migration(self, e: ev.Migration) -> None:
        self._seen(e)
        self.migrations.append(e)
        if e.error is not None and e.test is not None:
            self._erring_tests.add((e.w, e.test))
        if not e.url or is_private(e.url):
            return  # no database known, or one no other worker can reach: nothing to race on
        # Overlap is judged by the workers' own timestamps, not by arrival order: a short
        # migration's begin and end often arrive in one batch, after another worker's begin.
        # A named schema is a place of its own: a schema per worker in one database does
        # not race (:attr:`ev.Migration.place`).
        where = e.place
        spans = self._migration_spans.setdefault(where, [])
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
        overlapping = [
            other
            for other in spans
            if other[0] != span[0]
            and other[1] + CLOCK_SLACK < (span[2] if span[2] is not None else inf)
            and span[1] + CLOCK_SLACK < (other[2] if other[2] is not None else inf)
        ]
        if overlapping:
            others = {other[0] for other in overlapping}
            self.race_places[where] = (e.url, e.schema)
            both = [span, *overlapping]  # an open one lasts until now, as far as is known
            begin = min(s[1] for s in both)
            end = max(s[2] if s[2] is not None else e.ts for s in both)
            window = self.race_windows.get(where)
            if window is not None:
                begin, end = min(begin, window[0]), max(end, window[1])
            self.race_windows[where] = (begin, end)
            racing = self.migration_races.setdefault(where, set())
            if not (others | {e.w}) <= racing:
                racing.update(others | {e.w})
                self.lock_graph_changed = True

    def _migrating_test_ended(self, e: ev.TestFinished) -> None:
        """A test a migration raised in ended: passed, the error was caught (expected)."""
        key = (e.w, e.nodeid)
        if key in self._erring_tests:
            self._erring_tests.discard(key)
            # only a pass says the test expected it: a skip, an xfail (a test marked xfail
            # because the migration fails), a failed subtest do not
            if e.outcome == "passed" and not e.crashed and not e.subtests.get("failed"):
                self.caught_errors.add(key)

    def race_where(self, place: str) -> str:
        """A place of :attr:`migration_races` in words: the URL as shown (decoded, password
        redacted), and its schema where named."""
        url, schema = self.race_places.get(place, (place, None))
        where = display_url(url) or "one database"
        return where if schema is None else f"{where} (schema {schema})"

    def race_of(self, m: ev.Migration) -> str | None:
        """The place of the migration race ``m`` came during: its database (and schema) is
        one of :attr:`migration_races` and it ran while that race lasted
        (:attr:`race_windows`). ``None`` for any other migration: on another database (a
        private in-memory one never races), or before or after the race. The one answer to
        "is this migration part of that race" (its errors are the race's likely doing)."""
        place = m.place
        window = self.race_windows.get(place)
        if window is None:
            return None
        begin = m.ts - (m.duration or 0.0) if m.action == "end" else m.ts
        if begin <= window[1] + CLOCK_SLACK and window[0] - CLOCK_SLACK <= m.ts:
            return place
        return None

    def migration_runs(self) -> list[MigrationRun]:
        """Every migration, its begin paired with its end (per worker, tool, operation and
        place), in the order of their first event."""
        runs: list[MigrationRun] = []
        open_runs: dict[tuple[str, str, str, str], list[int]] = {}
        for m in self.migrations:
            key = (m.w, m.tool, m.span_op, m.place)
            pending = open_runs.setdefault(key, [])
            if m.action == "end" and pending:
                at = pending.pop(0)
                run = runs[at]
                runs[at] = msgspec.structs.replace(
                    run,
                    op=m.op,  # what it did (a reuse that had to create the database)
                    duration=m.duration if m.duration is not None else m.ts - run.start,
                    finished=True,
                    error=m.error,
                    caught=self.caught(m),
                    to_rev=m.to_rev or run.to_rev,
                )
                continue
            if m.action == "begin":
                pending.append(len(runs))
            runs.append(
                MigrationRun(
                    w=m.w,
                    tool=m.tool,
                    op=m.op,
                    url=m.url,
                    schema=m.schema,
                    from_rev=m.from_rev,
                    to_rev=m.to_rev,
                    start=m.ts if m.action == "begin" else m.ts - (m.duration or 0.0),
                    duration=m.duration if m.action == "end" else None,
                    finished=m.action == "end",
                    error=m.error,
                    test=m.test,
                    fixture=m.fixture,
                    caught=self.caught(m),
                )
            )
        return runs

    def migration_groups(self) -> list[MigrationGroup]:
        """:meth:`migration_runs` grouped (:class:`MigrationGroup`): per-test schema setup
        is one group with a count, one-off migrations a group each; in the order they
        began."""
        groups: dict[tuple[str, str, str, str, str | None, str | None], MigrationGroup] = {}
        for run in sorted(self.migration_runs(), key=lambda r: r.start):
            key = (run.w, run.tool, run.op, run.place, run.from_rev, run.to_rev)
            group = groups.get(key)
            if group is None:
                groups[key] = MigrationGroup([run])
            else:
                group.runs.append(run)
        return list(groups.values())

    def caught(self, m: ev.Migration) -> bool:
        """Whether ``m`` raised inside a test that then passed (the test caught it)."""
        return m.error is not None and m.test is not None and (m.w, m.test) in self.caught_errors

    def costliest_steps(self, top: int) -> tuple[list[StepRecord], int]:
        """The ``top`` slowest migration steps of the run (an Alembic revision, a Django
        app's migration), on any worker, slowest first, and how many more there were. A
        hand-written runner's statements (tool ``ddl``) are no migration steps."""
        steps = [
            StepRecord(m.w, m.tool, m.op, m.url, s.name, s.duration, s.backwards)
            for m in self.migrations
            if m.action == "end" and m.steps and m.tool != "ddl"
            for s in m.steps
        ]
        steps.sort(key=lambda s: -s.duration)
        return steps[:top], max(0, len(steps) - top)

    def _deadlock(self, e: ev.Deadlock) -> None:
        self.deadlocks.append(e)
        self.deadlock_keys.add(_sig(e))


def _holder_of(acquisition: ev.LockEvent, known: ev.Holder | None) -> ev.Holder:
    """The holder ``known`` (what the waiter's worker could tell: a pid, a detail), named
    after ``acquisition``; a new record, ``known`` stays as it was."""
    holder = known if known is not None else ev.Holder()
    return msgspec.structs.replace(
        holder, w=acquisition.w, test=acquisition.test, fixture=acquisition.fixture
    )


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


def _broken_text(text: str, victim: str) -> str:
    return f"{text} (the server broke it: {victim}'s wait failed)"


def _sig(d: ev.Deadlock) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((edge.w, edge.waits_for) for edge in d.cycle))


def _deadlock_event(cycle: list[tuple[str, str, str, str | None]]) -> ev.Deadlock:
    edges: list[ev.WaitEdge] = []
    for i, (worker, waits_for, _holder, test) in enumerate(cycle):
        holds = cycle[i - 1][1]  # the lock the previous worker waits for is held by this one
        edges.append(ev.WaitEdge(w=worker, holds=holds, waits_for=waits_for, test=test))
    text = "; ".join(f"{e.w} holds {e.holds}, waits for {e.waits_for}" for e in edges)
    return ev.Deadlock(cycle=edges, text=text)
