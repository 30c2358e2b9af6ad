"""The fold's shared setup: what each worker's setup of a wide fixture did, and races.

A session (or package) fixture is set up once per worker. :class:`SetupFold` keeps each
of those setups (:class:`SetupRecord`): when it ran, whether it failed, how long of it was
spent waiting on a lock (and whose), and what it touched that other workers can reach too
(a SQLite file, a database URL, a lock), learned from the lock, migration and database-wait
events the probes attribute to the fixture. From them it tells apart

- a setup guarded by a lock: one worker did the work while the others waited for it
  (:meth:`SetupFold.setup_story`): the waits are no set-up work;
- a race (:class:`SetupRace`): several workers set the fixture up at overlapping times,
  outside any lock that would have put them in a queue, and some of them failed — the
  classic "dirty database version", "database is locked", "table already exists".
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from testmon_live.plugin import events as ev
from testmon_live.plugin.dburl import is_private, sqlite_file

from .workers import CLOCK_SLACK, WorkerFold, worker_order

RACE_SCOPES = frozenset({"session", "package"})
"""Scopes set up once per worker: the same fixture on several workers is the same setup."""
GUARD_KINDS = frozenset({"filelock", "monitor", "run_once", "pg_advisory", "mysql_get_lock"})
"""Locks that people take to put setups in a queue: time before getting one is no work."""
RESOURCES_KEPT = 8
"""What one setup touched, at most (a fixture of any scope may open a file per test)."""
RECORDS_KEPT = 64
"""Setups kept per fixture (a fixture is set up once per worker; replacements add a few)."""
ONCE_SHARE = 0.1
"""A setup doing at most this share of the longest one's work (or 50 ms) did not redo it."""
_RACE_WORDS = (
    r"(?i)already exists|database is locked|database schema is locked|dirty|duplicate|"
    r"unique constraint|could not obtain lock|deadlock|being accessed by other users|"
    r"lock wait timeout|no such table|does not exist"
)
"""Errors that say another worker's setup got in the way."""


class Resource(msgspec.Struct, frozen=True, array_like=True):
    """Something several workers can reach: ``sqlite`` (a file), ``database`` (a URL,
    password redacted), ``lock`` (its label)."""

    kind: str
    name: str

    @property
    def kind_words(self) -> str:
        return {"sqlite": "SQLite file", "database": "database", "lock": "lock"}.get(
            self.kind, self.kind
        )

    @property
    def text(self) -> str:
        return f"{self.kind_words} {self.name}"

    def names(self, url: str) -> bool:
        """Is ``url`` (of a migration) this database?"""
        if self.kind == "sqlite":
            return sqlite_file(url) == self.name
        return self.kind == "database" and self.name == url


class SetupRecord(msgspec.Struct):
    """One worker's setup of one wide-scoped fixture."""

    w: str
    start: float
    dur: float
    test: str | None = None
    error: str | None = None
    waited: float = 0.0
    """Seconds of it spent waiting on locks (granted or not)."""
    nested: float = 0.0
    """Seconds of it spent setting up fixtures it requested from its body (theirs)."""
    lock: str | None = None
    """The lock it waited on longest."""
    holder: str | None = None
    """The worker that held that lock meanwhile, when known."""
    guard_at: float | None = None
    """When it got a guard lock it had waited for: its own work began then."""
    guard_failed: bool = False
    """It waited on a guard lock and never got it (timed out): it did no work."""
    resources: list[Resource] = msgspec.field(default_factory=list)

    @property
    def end(self) -> float:
        return self.start + self.dur

    @property
    def work(self) -> float:
        return max(0.0, self.dur - self.nested - self.waited)

    @property
    def work_start(self) -> float:
        return self.start if self.guard_at is None else max(self.start, self.guard_at)

    @property
    def raced(self) -> bool:
        """Its failure can be another worker's doing (not a lock it never got)."""
        return self.error is not None and not self.guard_failed


class SetupRace(msgspec.Struct):
    """Workers that set one fixture up at overlapping times, some of them failing."""

    fixture: str
    scope: str
    baseid: str
    workers: list[str]
    spread: float
    """Seconds between the first and the last of their setups' starts."""
    overlap: float
    """Seconds during which at least two of them were setting it up at once."""
    resources: list[Resource]
    """What they shared, where known (seen by two of them or more; else by any of them)."""
    succeeded: list[str]
    failed: dict[str, str]
    """worker -> the first line of its error."""
    tests: dict[str, str]
    """worker -> the test whose setup triggered it."""
    at: float = 0.0


class SetupStory(msgspec.Struct, frozen=True):
    """Where a wide fixture's setup time went: work, or waiting on a lock."""

    work: float
    """Seconds of set-up work in all (setup time less the lock waits inside it)."""
    waited: float
    """Seconds its setups spent waiting on locks."""
    lock: str | None
    """The lock they waited on most."""
    ran_once_on: str | None = None
    """The one worker that did the work while the others waited for it (None: each did)."""
    once_work: float = 0.0
    """That worker's work, seconds."""
    waiters: list[str] = msgspec.field(default_factory=list)
    """The workers that waited (for it, with ``ran_once_on``)."""


class _Pending(msgspec.Struct):
    waited: float = 0.0
    waits: dict[str, float] = msgspec.field(default_factory=dict)
    holders: dict[str, str] = msgspec.field(default_factory=dict)
    guard_at: float | None = None
    guard_failed: bool = False
    resources: list[Resource] = msgspec.field(default_factory=list)


def lock_resource(kind: str, key: str, label: str) -> Resource | None:
    if kind == "sqlite":
        return None if is_private(f"sqlite:///{key}") else Resource("sqlite", key)
    return Resource("lock", label)


class SetupFold(WorkerFold):
    """Setups of wide fixtures, their lock waits and races: a part of the fold."""

    def __init__(self, detail: bool = True) -> None:
        super().__init__(detail)
        self._pending: dict[tuple[str, str], _Pending] = {}
        """(worker, fixture) -> what its setup in progress did so far."""
        self.setups: dict[tuple[str, str, str], list[SetupRecord]] = {}
        """(name, scope, baseid) of a session or package fixture -> its setups."""
        self.setup_waited: dict[tuple[str, str, str], float] = {}
        """(name, scope, baseid) of any wide fixture -> seconds its setups waited on locks."""
        self.setup_races: dict[tuple[str, str, str], SetupRace] = {}

    def setup_story(self, key: tuple[str, str, str], setup_total: float) -> SetupStory:
        """Work and waits of a wide fixture's setups ((name, scope, baseid) and its total
        setup time): did one worker do the work while the others waited?"""
        records = self.setups.get(key, [])
        waited = self.setup_waited.get(key, 0.0)
        locks: dict[str, float] = {}
        for record in records:
            if record.lock is not None:
                locks[record.lock] = locks.get(record.lock, 0.0) + record.waited
        lock = max(locks, key=locks.__getitem__) if locks else None
        work = max(0.0, setup_total - waited)
        waiters = _unique(r.w for r in sorted(records, key=lambda r: worker_order(r.w)) if r.waited)
        if len({r.w for r in records}) < 2 or not waiters:
            return SetupStory(work, waited, lock, waiters=waiters)
        doer = max(records, key=lambda r: r.work)
        small = max(0.05, ONCE_SHARE * doer.work)
        others = [r for r in records if r is not doer]
        if (
            not any(r.error for r in records)
            and all(r.work <= small for r in others)
            and any(r.waited > 0 for r in others)
        ):
            return SetupStory(
                work,
                waited,
                lock,
                ran_once_on=doer.w,
                once_work=doer.work,
                waiters=[w for w in waiters if w != doer.w],
            )
        return SetupStory(work, waited, lock, waiters=waiters)

    def _pending_of(self, w: str, fixture: str) -> _Pending:
        key = (w, fixture)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        return pending

    def _setup_lock(self, e: ev.LockEvent, label: str, holder: ev.Holder | None) -> None:
        """A lock event inside a fixture's setup: a wait and what it touched."""
        assert e.fixture is not None
        pending = self._pending_of(e.w, e.fixture)
        resource = lock_resource(e.kind, e.key, label)
        if resource is not None:
            _note(pending, resource)
        waited = e.waited or 0.0
        if e.action not in ("acquired", "failed") or waited <= 0.0:
            return
        pending.waited += waited
        pending.waits[label] = pending.waits.get(label, 0.0) + waited
        if holder is not None and holder.w and holder.w != e.w:
            pending.holders[label] = holder.w
        if e.kind in GUARD_KINDS:
            if e.action == "acquired":
                pending.guard_at = e.ts
            elif e.reason != "refused":
                pending.guard_failed = True

    def _setup_database(self, w: str, fixture: str, url: str) -> None:
        if not url or url == "?" or is_private(url):
            return
        pending = self._pending_of(w, fixture)
        path = sqlite_file(url)  # a file: the same one the lock probe names
        _note(pending, Resource("sqlite", path) if path else Resource("database", url))

    def _setup_done(self, e: ev.FixtureSetup, own: float) -> SetupRecord | None:
        """A wide fixture's setup ended (``own``: seconds of it that were its own, not the
        setups of fixtures it requested from its body): its record, and whether it raced
        others."""
        pending = self._pending.pop((e.w, e.name), None)
        key = (e.name, e.scope, e.baseid)
        if pending is not None and pending.waited:
            self.setup_waited[key] = self.setup_waited.get(key, 0.0) + pending.waited
        if e.scope not in RACE_SCOPES:
            return None
        record = SetupRecord(w=e.w, start=e.start, dur=e.dur, test=e.test, error=e.error)
        record.nested = max(0.0, e.dur - own)
        if pending is not None:
            record.waited = min(pending.waited, own)
            record.guard_at = pending.guard_at
            record.guard_failed = pending.guard_failed
            record.resources = pending.resources
            if pending.waits:
                record.lock = max(pending.waits, key=pending.waits.__getitem__)
                record.holder = pending.holders.get(record.lock)
        records = self.setups.setdefault(key, [])
        records.append(record)
        if len(records) > RECORDS_KEPT:
            del records[0]
        self._check_race(key, records, record)
        return record

    def _check_race(
        self, key: tuple[str, str, str], records: list[SetupRecord], new: SetupRecord
    ) -> None:
        if not any(r.raced for r in records):
            return  # no failure, no race (the common case: nothing to compare)
        group = _overlapping(records, new)
        if len(group) < 2 or not any(r.raced for r in group):
            return
        failed = [r for r in group if r.raced]
        if len({r.w for r in group}) < 2:
            return
        if len(failed) == len(group) and not any(
            re.search(_RACE_WORDS, r.error or "") for r in failed
        ):
            return  # every one failed, and not the way racing setups fail: a plain error
        self.setup_races[key] = _race(key, group)


def _note(pending: _Pending, resource: Resource) -> None:
    if len(pending.resources) < RESOURCES_KEPT and resource not in pending.resources:
        pending.resources.append(resource)


def _overlapping(records: list[SetupRecord], new: SetupRecord) -> list[SetupRecord]:
    """The setups whose work overlapped ``new``'s, directly or through each other."""
    spans: list[tuple[SetupRecord, float, float]] = [
        (r, r.work_start, r.end) for r in records if not r.guard_failed
    ]
    group = [new] if not new.guard_failed else []
    if not group:
        return []
    changed = True
    while changed:
        changed = False
        for record, begin, end in spans:
            if any(record is g for g in group):
                continue
            if any(begin + CLOCK_SLACK < g.end and g.work_start + CLOCK_SLACK < end for g in group):
                group.append(record)
                changed = True
    return group


def _race(key: tuple[str, str, str], group: list[SetupRecord]) -> SetupRace:
    name, scope, baseid = key
    starts = [r.work_start for r in group]
    counts: dict[Resource, set[str]] = {}
    for record in group:
        for resource in record.resources:
            counts.setdefault(resource, set()).add(record.w)
    shared = [res for res, seen in counts.items() if len(seen) > 1] or list(counts)
    ordered = sorted(group, key=lambda r: (worker_order(r.w), r.start))
    return SetupRace(
        fixture=name,
        scope=scope,
        baseid=baseid,
        workers=_unique(r.w for r in ordered),
        spread=max(starts) - min(starts),
        overlap=_overlap_time(group),
        resources=shared,
        succeeded=_unique(r.w for r in ordered if r.error is None),
        failed={r.w: _first_line(r.error) for r in ordered if r.raced},
        tests={r.w: r.test for r in ordered if r.test},
        at=max(r.end for r in group),
    )


def _overlap_time(group: list[SetupRecord]) -> float:
    """Seconds during which two or more of the setups' work ran at once."""
    edges: list[tuple[float, int]] = []
    for record in group:
        edges += [(record.work_start, 1), (record.end, -1)]
    edges.sort()
    total, running, since = 0.0, 0, 0.0
    for t, step in edges:
        if running >= 2:
            total += t - since
        running += step
        since = t
    return total


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""
