"""RunState: the one fold of a run's events, and the part it folds itself.

The run's header and end, its tests and their outcomes, fixtures, stalls, notices and
command replies are folded here; :class:`RunState` inherits the workers
(:class:`~.workers.WorkerFold`), the locks (:class:`~.locks.LockFold`) and the containers
(:class:`~.containers.ContainerFold`) from its parts. See the package's docstring.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import SkippedLines

from .containers import ContainerFold
from .locks import LockFold, lock_label
from .nesting import Span, own_times
from .setups import SetupFold
from .workers import CLOCK_SLACK, PHASES, Spell, StallRecord, WorkerView, worker_order

SLOWEST_KEPT = 50
FAILURES_KEPT = 2000
NOTICES_KEPT = 500
RECENT_SETUPS_KEPT = 64
"""Setups of one worker kept until its next test record (see ``RunState._recent``)."""

DUPLICATE_WORTH = 0.05
"""Seconds of setup in all from which a fixture set up once per worker is worth a warning."""
PER_WORKER_BY_DESIGN = frozenset(
    {
        "django_db_setup",
        "django_db_modify_db_settings",
        "django_db_modify_db_settings_parallel_suffix",
        "django_db_modify_db_settings_tox_suffix",
        "django_db_modify_db_settings_xdist_suffix",
        "django_db_createdb",
        "django_db_keepdb",
        "django_db_use_migrations",
        "django_db_blocker",
        "django_test_environment",
        "live_server",
    }
)
"""pytest-django's session fixtures that each worker must set up for itself: its own test
databases (``test_<name>_gwN``), its settings and connections, a live server on its own
database. Set up on every worker, they are no duplicate to remove (the summary's test
databases line says what makes them cheaper)."""


class FixtureStats(msgspec.Struct):
    name: str
    scope: str
    baseid: str
    count: int = 0
    setup_total: float = 0.0
    """Seconds of its own setup in all: less the setups of the fixtures it requested from
    its body (``request.getfixturevalue``), which are theirs (:mod:`.nesting`)."""
    setup_max: float = 0.0
    """Its longest own setup."""
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
        """Duplicated, and at a cost worth a warning (not pytest's own cheap fixtures, not
        one every worker must set up for itself)."""
        return (
            self.duplicated
            and self.setup_total >= DUPLICATE_WORTH
            and self.name not in PER_WORKER_BY_DESIGN
        )


TAIL_WORTH = 1.0
"""Seconds one worker must have run alone at the end for the tail to be worth a word."""
TAIL_SHARE = 0.15
"""... and the share of the workers' time (workers x wall) idled meanwhile."""


class Tail(msgspec.Struct, frozen=True):
    """The end of a run that ran below full width: see :meth:`RunState.tail`."""

    below: float
    """Seconds from the first worker running out of tests to the last test's end."""
    alone: float
    """Seconds the last worker ran alone at the end."""
    worker: str
    test: str | None
    """The test it ran alone (None: several short ones)."""
    test_duration: float | None
    """Its span: from its first phase's start to its last one's end."""
    test_began: float | None
    """Seconds after the run's start that test began."""
    idle: float
    """Worker-seconds the other workers idled from their last test to the end."""
    idle_workers: list[str]
    wall: float
    estimate: float | None
    """The wall time had that test started first (an estimate: the other tests spread
    over the workers meanwhile, max(its duration, test time / workers), plus the run's
    time outside tests); None when it would not have been shorter."""


def _with_crashed_attempts(e: ev.TestFinished, crashed: int) -> ev.TestFinished:
    """A test's record with ``crashed`` more attempts run again: those its workers died in
    (and the ones before them there), which no record of it carries."""
    return msgspec.structs.replace(
        e,
        reruns=max(0, e.reruns) + crashed,
        rerun_when=e.rerun_when or "call",
        rerun_message=e.rerun_message or "the worker running it crashed",
    )


class RunState(LockFold, SetupFold, ContainerFold):
    """Everything known of one run, folded event by event."""

    def __init__(self, detail: bool = True) -> None:
        super().__init__(detail)
        self.header: ev.RunStarted | None = None
        self.end: ev.RunFinished | None = None
        self.events = 0
        self.counts: Counter[str] = Counter()
        """pytest's categories, counted the way its terminal summary counts them."""
        self.outcomes: Counter[str] = Counter()
        """Overall outcome per test run."""
        self.tests_done = 0
        self.test_time = 0.0
        """Seconds in tests, summed over workers: each test's span (see
        :attr:`WorkerView.busy`)."""
        self.first_ts: float | None = None
        self.last_ts = 0.0
        self.tests: list[ev.TestFinished] = []
        self._slowest: list[tuple[float, int, ev.TestFinished]] = []
        self.failures: list[ev.TestFinished] = []
        self.collection_errors: list[ev.CollectionReport] = []
        """Collectors that failed (a test module that did not import), in the order pytest
        reported them; each counted as an ``error``, as pytest counts it."""
        self.rerun: list[ev.TestFinished] = []
        """Tests that pytest-rerunfailures ran again (:attr:`ev.TestFinished.reruns`), in the
        order they finished, whatever their last attempt's outcome: the flaky ones passed."""
        self.fixtures: dict[tuple[str, str, str], FixtureStats] = {}
        self.fixture_events: list[ev.FixtureSetup | ev.FixtureTeardown] = []
        self.fixture_detail = 0.0
        """Seconds under which workers counted fixture executions instead of recording each
        (the largest any worker used; 0: every execution is in a test's record or an event)."""
        self._recent: dict[str, list[Span]] = {}
        """worker -> the fixture setups it sent as events since its latest test record: one
        set up from another's body is sent first (at the end of its own setup), so the
        outer one, sent later in an event or its test's record, finds it here."""
        self.crashes: list[ev.WorkerCrashed] = []
        self._crash_reruns: dict[str, int] = {}
        """nodeid -> attempts that died with a worker and that pytest-rerunfailures runs
        again (:attr:`ev.WorkerCrashed.reruns`), counted already, for its next record."""
        self.replacements: list[ev.WorkerReplaced] = []
        self.notices: list[ev.Notice] = []
        self.stalls: list[ev.Stall] = []
        self.stall_records: list[StallRecord] = []
        """Stalls and unresponsive spells, one record each, in the order they began."""
        self.unresponsive: list[ev.Unresponsive] = []
        self.spells: list[Spell] = []
        """Unresponsive spells, one each from its first silence to its recovery."""
        self.replies: list[ev.CommandReply] = []
        self.problems = SkippedLines()
        """Lines a reader skipped, if this state was folded from a log."""
        self._handlers: dict[type[ev.Event], Callable[[Any], None]] = {
            ev.RunStarted: self._run_started,
            ev.RunFinished: self._run_finished,
            ev.WorkerStarted: self._worker_started,
            ev.WorkerCollected: self._worker_collected,
            ev.CollectionReport: self._collection_report,
            ev.WorkerFinished: self._worker_finished,
            ev.WorkerDown: self._worker_down,
            ev.WorkerCrashed: self._worker_crashed,
            ev.WorkerReplaced: self._worker_replaced,
            ev.TestFinished: self._test_finished,
            ev.Activity: self._activity,
            ev.Heartbeat: self._heartbeat,
            ev.FixtureSetup: self._fixture_setup,
            ev.FixtureTeardown: self._fixture_teardown,
            ev.FixtureTotals: self._fixture_totals,
            ev.Stall: self._stall,
            ev.StallEnded: self._stall_ended,
            ev.Unresponsive: self._unresponsive,
            ev.LockEvent: self._lock_event,
            ev.DbWait: self._db_wait_event,
            ev.Migration: self._migration_event,
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
        if e.fixture_detail > self.fixture_detail:
            self.fixture_detail = e.fixture_detail

    def _worker_collected(self, e: ev.WorkerCollected) -> None:
        view = self._seen(e)
        view.collected = e.count
        view.phase = "idle"
        view.since = e.ts

    def _collection_report(self, e: ev.CollectionReport) -> None:
        if e.outcome == "error":
            self.counts["error"] += 1
            if self.detail or len(self.collection_errors) < FAILURES_KEPT:
                self.collection_errors.append(e)
        elif e.outcome == "skipped":
            self.counts["skipped"] += 1

    def _worker_finished(self, e: ev.WorkerFinished) -> None:
        view = self._seen(e)
        view.dropped.update(e.dropped)
        if e.reached:
            self._ports_reached(e.w, e.reached)
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
        if e.reruns > 0 and e.test is not None:  # counted now, carried to its next record
            self.counts["rerun"] += e.reruns
            self._crash_reruns[e.test] = self._crash_reruns.get(e.test, 0) + e.reruns

    def _worker_replaced(self, e: ev.WorkerReplaced) -> None:
        view = self.worker(e.w)
        view.replaces = e.replaces
        self.worker(e.replaces).replaced_by = e.w
        self.replacements.append(e)

    def _test_finished(self, e: ev.TestFinished) -> None:
        view = self._seen(e)
        counts = self.counts
        for phase in e.phases:
            cat = phase.outcome
            if phase.when == "call" or cat != "passed":  # ev.counted, inline
                counts[cat] += 1
            if phase.when == "setup":
                view.setup_time += phase.dur
            elif phase.when == "call":
                view.call_time += phase.dur
            else:
                view.teardown_time += phase.dur
        if e.crashed:
            counts["failed"] += 1
        if e.subtests:
            for cat, n in e.subtests.items():
                counted = ev.SUBTEST_CATEGORIES.get(cat)
                if counted is not None and n > 0:
                    counts[counted] += n
        recent = self._recent.pop(e.w, None)
        if e.fixtures:
            self._function_fixtures(e, recent)
        self.outcomes[e.outcome] += 1
        self.tests_done += 1
        # The worker was busy its whole span: its phases and the gaps between them, where
        # pytest makes a phase's report (a failure's text). Worked out once, here.
        span = busy = ev.test_span(e)
        if span > e.duration:
            view.reporting_time += span - e.duration if e.duration > 0.0 else span
        if e.reruns > 0:  # attempts run again: pytest counts each as a rerun, not as a test
            counts["rerun"] += e.rerun_reports if e.rerun_reports > 0 else e.reruns
            if e.rerun_counts:  # and what of them did not fail (a call before its teardown)
                for cat, n in e.rerun_counts.items():
                    if n > 0 and cat in ev.OUTCOME_RANK:
                        counts[cat] += n
        crashed = self._crash_reruns.pop(e.nodeid, 0) if self._crash_reruns else 0
        if e.reruns > 0 or crashed:
            if e.rerun_time > 0:
                busy += e.rerun_time
            if self.detail or len(self.rerun) < FAILURES_KEPT:
                # attempts that died with their workers (counted at the crash) are this
                # test's too: its entry says so (a copy: the event stays as it was read)
                self.rerun.append(e if not crashed else _with_crashed_attempts(e, crashed))
        self.test_time += busy
        view.tests += 1
        view.busy += busy
        if not e.crashed:
            view.last_test = e.nodeid
        # For the tail (a few comparisons: this runs for every test in the controller).
        ts = e.ts
        if ts >= view.last_test_end:
            view.last_test_end = ts
            view.last_test_duration = span
        if span > view.longest_duration:
            view.longest_duration = span
            view.longest_test = e.nodeid
            view.longest_end = ts
        if not view.first_test_start:
            view.first_test_start = ts - span
        if self._erring_tests:
            self._migrating_test_ended(e)
        if e.outcome in ev.FAILING:
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

    def _function_fixtures(self, e: ev.TestFinished, recent: list[Span] | None) -> None:
        fixtures = self.fixtures
        runs = e.fixtures
        owns: list[float] | None = None
        if recent or len(runs) > 1:  # one might have run inside another
            before = recent or []
            owns = own_times([*before, *((fx.setup_start, fx.setup_dur) for fx in runs)])
            del owns[: len(before)]
        for i, fx in enumerate(runs):
            key = (fx.name, "function", fx.baseid)
            stats = fixtures.get(key)
            if stats is None:
                stats = fixtures[key] = FixtureStats(
                    fx.name, "function", fx.baseid, first_test=e.nodeid
                )
            own = fx.setup_dur if owns is None else owns[i]
            stats.count += 1
            stats.setup_total += own
            if own > stats.setup_max:
                stats.setup_max = own
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
        span = (e.start, e.dur)
        recent = self._recent.get(e.w)
        if recent is None:
            own = e.dur
            self._recent[e.w] = [span]
        else:
            own = own_times([*recent, span])[-1]
            recent.append(span)
            if len(recent) > RECENT_SETUPS_KEPT:
                del recent[0]
        stats.count += 1
        stats.setup_total += own
        if own > stats.setup_max:
            stats.setup_max = own
        stats.workers.add(view.id)
        if e.error:
            stats.errors += 1
        self._setup_done(e, own)
        if self.detail:
            self.fixture_events.append(e)

    def _fixture_totals(self, e: ev.FixtureTotals) -> None:
        """Quick executions a worker counted: into the same statistics as recorded ones."""
        self._seen(e)
        fixtures = self.fixtures
        for row in e.fixtures:
            if row.count <= 0:
                continue
            key = (row.name, row.scope, row.baseid)
            stats = fixtures.get(key)
            if stats is None:
                stats = fixtures[key] = FixtureStats(row.name, row.scope, row.baseid)
            stats.count += row.count
            stats.setup_total += row.setup_total
            if row.setup_max > stats.setup_max:
                stats.setup_max = row.setup_max
            stats.teardown_total += row.teardown_total
            stats.workers.add(e.w)

    def _lock_event(self, e: ev.LockEvent) -> None:
        holder = self._lock(e)
        if e.fixture:
            self._setup_lock(e, lock_label(e.kind, e.key), holder)

    def _db_wait_event(self, e: ev.DbWait) -> None:
        self._db_wait(e)
        if e.fixture:
            self._setup_database(e.w, e.fixture, e.url)

    def _migration_event(self, e: ev.Migration) -> None:
        self._migration(e)
        if e.fixture:
            self._setup_database(e.w, e.fixture, e.url)

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
        if later and current is not None and (current.reason == "stall" or current.watched):
            current.merge(e)
        elif e.reason == "stall" and (silent := self._silence_of(e)) is not None:
            # The worker's watchdog, free again after native code held the GIL, finds the
            # phase the hub took its stacks in still running: one episode, one record.
            silent.merge(e)
            silent.watched = True
            view.current_stall = silent
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
            _silent_in(view, e.test, e.phase, e.ts - e.elapsed if e.elapsed else None)

    def _silence_of(self, e: ev.Stall) -> StallRecord | None:
        """The worker's latest record, if it is an unresponsive spell in the same phase of
        the same test (begun at the same moment, where both know it) that no watchdog
        stall joined yet."""
        for record in reversed(self.stall_records):
            if record.w != e.w:
                continue
            first = record.first
            if record.reason != "unresponsive" or record.watched or first.test != e.test:
                return None
            if first.phase != e.phase:
                return None
            if first.elapsed and abs((first.ts - first.elapsed) - (e.ts - e.elapsed)) > 1.0:
                return None
            return record
        return None

    def _stall_ended(self, e: ev.StallEnded) -> None:
        view = self._seen(e)
        view.stall = None
        for record in reversed(self.stall_records):
            if record.w == e.w and (record.reason == "stall" or record.watched):
                if record.duration is None or record.watched:
                    record.duration = e.duration  # the phase, as long as it ran in all
                    record.ended = e.ts
                break
        current = view.current_stall
        if current is not None and (current.reason == "stall" or current.watched):
            view.current_stall = None

    def _unresponsive(self, e: ev.Unresponsive) -> None:
        view = self.worker(e.w)
        view.unresponsive = not e.recovered
        self.unresponsive.append(e)
        if not e.recovered:
            self.spells.append(Spell(w=e.w, first=e, silent=e.silent))
            _silent_in(view, e.test, e.phase, e.since)
            return
        for spell in reversed(self.spells):
            if spell.w == e.w:
                if not spell.recovered:
                    spell.silent = e.silent
                    spell.recovered = e.ts
                break
        # The stacks taken during the spell: it lasted as long as the silence. (Looked up
        # by worker, not as its current stall: its end is often heard after the worker's.)
        for record in reversed(self.stall_records):
            if record.w == e.w and record.reason == "unresponsive":
                if record.duration is None:
                    record.duration = e.silent
                    record.ended = e.ts
                break
        current = view.current_stall
        if current is not None and current.reason == "unresponsive":
            view.current_stall = None

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
        return min(1.0, view.busy_at(now if self.end is None else None) / wall) if wall > 0 else 0.0

    def slots(self) -> int:
        """Worker slots the run had: requested workers, at least 1."""
        requested = self.header.workers if self.header else 0
        if requested > 0:
            return requested
        return max(1, len([w for w in self.workers.values() if w.tests or w.pid]))

    def efficiency(self, now: float | None = None) -> float:
        """Sum of test time / (worker slots x wall time), 0..1; with ``now``, while the run
        goes on, the tests in progress count up to now."""
        wall = self.wall(now)
        if wall <= 0:
            return 0.0
        return min(1.0, self.test_time_at(now) / (self.slots() * wall))

    def test_time_at(self, now: float | None = None) -> float:
        """Seconds in tests, summed over workers: with ``now`` while the run goes on, the
        tests in progress so far too."""
        if now is None or self.end is not None:
            return self.test_time
        return self.test_time + sum(
            w.busy_at(now) - w.busy for w in self.workers.values() if w.test_started is not None
        )

    def tail(self) -> Tail | None:
        """How the finished run ended: below full width while the last workers finished,
        one worker alone at the end (and the test it ran), the idle worker-seconds, and
        an estimate of the wall time had that test started first. None while the run
        goes on, with fewer than two workers, or when the end was not worth a word."""
        if self.end is None:
            return None
        views = sorted(
            (w for w in self.workers.values() if w.last_test_end),
            key=lambda w: (w.last_test_end, worker_order(w.id)),
        )
        if len(views) < 2:
            return None
        last = views[-1]
        end = last.last_test_end
        below = end - views[0].last_test_end
        alone = end - views[-2].last_test_end
        idle = sum(end - v.last_test_end for v in views)
        wall = self.wall()
        if alone < TAIL_WORTH or idle < TAIL_SHARE * len(views) * wall:
            return None
        # The test that held the end: the last worker's longest, if it ran below full width
        # (a straggler followed by a few short tests), else its last if that spans the end.
        test: str | None = None
        duration = 0.0
        if last.longest_test is not None and last.longest_end > end - below + CLOCK_SLACK:
            test, duration = last.longest_test, last.longest_duration
            began = last.longest_end - duration
        else:
            test, duration = last.last_test, last.last_test_duration
            began = end - duration
            if began > end - alone + CLOCK_SLACK:
                test = None  # several short tests, none of them the cause
        estimate = None
        if test is not None:
            first = min(v.first_test_start for v in views)
            overhead = max(0.0, wall - (end - first))
            spread = max(duration, self.test_time / len(views))
            if overhead + spread < wall * 0.9:
                estimate = overhead + spread
        return Tail(
            below=below,
            alone=alone,
            worker=last.id,
            test=test,
            test_duration=duration if test is not None else None,
            test_began=began - self.started if test is not None else None,
            idle=idle,
            idle_workers=sorted((v.id for v in views[:-1]), key=worker_order),
            wall=wall,
            estimate=estimate,
        )

    def races_said_as_setup(self) -> set[str]:
        """Places of migration races whose database a racing setup already names (said
        there)."""
        return {
            place
            for place in self.migration_races
            for race in self.setup_races.values()
            if any(r.names(self.race_places.get(place, (place, None))[0]) for r in race.resources)
        }

    def slowest(self, n: int = 10) -> list[ev.TestFinished]:
        if self.detail:
            return sorted(self.tests, key=lambda t: t.duration, reverse=True)[:n]
        return [item[2] for item in sorted(self._slowest, key=lambda i: i[0], reverse=True)[:n]]

    def fixtures_by_cost(self) -> list[FixtureStats]:
        return sorted(self.fixtures.values(), key=lambda f: f.setup_total, reverse=True)

    def active_workers(self) -> list[WorkerView]:
        """Workers that took part: started (have a pid) or ran tests, in :func:`worker_order`.
        A worker that crashed before it started is not one (its crash is in ``crashes``).
        The one definition: the hub's end record, the summary, the dashboard and the
        report all count workers through it."""
        return sorted(
            (w for w in self.workers.values() if w.pid or w.tests), key=lambda w: worker_order(w.id)
        )

    def stall_count(self) -> int:
        """Distinct stalls of the workers' watchdogs (not unresponsive spells, even those a
        watchdog sampled once the worker came back; not dumps on demand): the one count of
        the end record, the summary, the report and the runs list."""
        return sum(1 for r in self.stall_records if r.reason == "stall")

    def tests_on(self, worker: str) -> list[ev.TestFinished]:
        """Every test the worker process ran, in the order it ran them (``detail`` only)."""
        return sorted((t for t in self.tests if t.w == worker), key=ev.test_started)

    def dropped_total(self) -> int:
        return sum(sum(kinds.values()) for kinds in self.dropped().values())

    def dropped(self) -> dict[str, dict[str, int]]:
        return {w.id: dict(w.dropped) for w in self.workers.values() if w.dropped}


TEST_PHASES = PHASES


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


def _silent_in(view: WorkerView, test: str | None, phase: str | None, since: float | None) -> None:
    """A worker went silent in ``test``: the hub knows it from xdist, before the worker's
    own record of it (queued behind the silence) arrives; a live view names it now."""
    if test is None or view.crash is not None or view.down or view.test == test:
        return
    phase = phase if phase in TEST_PHASES else "call"
    start = since if since is not None else view.since
    _test_seen(view, test, phase, start)
    view.test = test
    view.phase = phase
    view.fixture = None
    view.since = start


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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The garbage collector paused while a large run is folded or taken apart: a few
    hundred thousand objects that live to the end, which it would otherwise traverse again
    and again for nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def fold(events: Iterable[ev.Event], detail: bool = True) -> RunState:
    """A whole stream (a log) folded at once, the garbage collector paused meanwhile
    (:func:`gc_paused`)."""
    with gc_paused():
        return RunState(detail=detail).apply_all(events)
