"""Test phases and fixtures: the hooks on the hot path of every test.

Per test: ``logstart`` and three ``logreport`` calls update the worker's live activity
(plain attribute stores) and collect the phases; at the end of teardown one
:class:`~testmon_live.plugin.events.TestFinished` carries all phases and the test's
function-scoped fixtures. Phase durations are pytest's own (perf_counter based). A test
that pytest-rerunfailures runs again (reports of outcome ``rerun``) is still one record, its
last attempt's, with the attempts before it counted in (:class:`TestAssembler`); that costs
a test that is not rerun nothing but two ``is None`` checks.

Per fixture execution: pytest's own implementation of ``pytest_fixture_setup`` is swapped
for a timed one in its place in the hook (no hook wrapper: pluggy's wrapper machinery alone
cost ~1 µs a fixture; a hook wrapper remains the fallback when another plugin's own setup
could answer instead). A function-scoped fixture that registered no teardown code during its
setup (no ``yield``, no ``request.addfinalizer``) has nothing to tear down: it goes into its
test's record at once with teardown 0, and costs no finalizer at all. One with a single
teardown finalizer (a yield fixture) gets one finalizer of ours in its place that brackets
it; otherwise two finalizers bracket its teardown. A function fixture's definition keeps
one statistics object (:class:`_FixtureStats`, per tally period) that counts its quick
executions and is that finalizer of ours: nothing is allocated per execution.
Function-scoped fixtures ride in their test's record; wider scopes (rare, and the costly
ones) get events of their own at once, so a worker that dies still leaves its session
setups in the log.

Quick executions (setup and teardown each under ``fixture_detail``, 1 ms by default, and no
error) of function fixtures are counted per fixture instead (count, total,
longest) and sent as one :class:`~testmon_live.plugin.events.FixtureTotals` at most once a
second: pytest-django alone adds nine such fixtures to every test, and recording each one
cost more than the rest of a test's record. A class fixture set up for a test outside a class
(pytest then makes the test itself its class) lives within that test like a function fixture:
its setup is held back until its teardown says whether it was quick. A class fixture of a
real class keeps its events, sent at once (``testmon whatif`` reads where classes begin).
A worker that dies loses at most its last second of counts.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest
from _pytest import fixtures as _pytest_fixtures
from _pytest.python import Class as _Class
from _pytest.python import get_direct_param_fixture_func

from .. import events as ev
from ..activity import WorkerActivity
from ..clock import _MONO0, _WALL0
from ..guard import REAL, exc_text, text_of

Emit = Callable[[ev.Event], None]

_RANK = ev.OUTCOME_RANK  # bound once: read for every phase of every test
TALLY_EVERY = 1.0
"""Seconds between a worker's tallies of quick fixtures (sent after a test, never within)."""


def phase_category(when: str, outcome: str, xfail: bool) -> str:
    """pytest's own category for one phase report (as its terminal summary counts it)."""
    if xfail:
        if outcome == "skipped":
            return "xfailed"
        if outcome == "passed":
            return "xpassed"
    if when != "call" and outcome == "failed":
        return "error"
    return outcome


def short_text(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    """One line that says why a phase (or a collector) did not pass."""
    wasxfail = report.__dict__.get("wasxfail")
    longrepr = report.longrepr
    if report.outcome == "skipped" and isinstance(longrepr, tuple) and len(longrepr) == 3:
        return text_of(longrepr[2])
    if wasxfail is not None and report.outcome != "failed":
        return f"xfail: {wasxfail}" if wasxfail else "xfail"
    if longrepr is None:
        return None
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        message = text_of(getattr(crash, "message", ""))
        return message or None
    text = text_of(longrepr).strip().splitlines()
    return text[-1] if text else None


RERUN = "rerun"
"""The outcome pytest-rerunfailures gives the report of a failed phase of an attempt that
it runs again (its summary counts it as ``rerun``)."""


CLOCK_SLACK = 2.0
"""Seconds by which a phase's end by pytest's wall-clock times may differ from this
process's monotonic clock when its report reaches the monitor (the report is made in
between: a long failure text takes a while) before the wall clock is taken to have moved."""


class _Reruns:
    """A test's attempts that pytest-rerunfailures ran again, carried to its last attempt's
    record. Made only when a test is rerun: a test that is not costs nothing of this."""

    __slots__ = (
        "attempt",
        "count",
        "counted",
        "fixtures",
        "message",
        "nodeid",
        "reports",
        "time",
        "when",
    )

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.count = 0
        self.reports = 0
        """Their reports of outcome ``rerun`` (pytest's count: one per failed phase)."""
        self.counted: dict[str, int] = {}
        """What pytest counted of the attempts closed so far besides those reports (a call
        that passed before its teardown failed: ``passed``)."""
        self.when: str | None = None
        self.message: str | None = None
        self.time = 0.0
        """Seconds of the attempts closed so far."""
        self.attempt: list[ev.Phase] | None = None
        """The phases of the latest attempt that is run again (the assembler's list while
        that attempt goes on); its time is added when the next attempt ends."""
        self.fixtures: list[ev.FixtureRun] = []
        """What those attempts recorded of their fixtures (those whose teardown was
        reported: pytest-rerunfailures before 15 reports no teardown of a rerun attempt)."""

    def close(self) -> None:
        """The latest rerun attempt has ended: its time is counted."""
        attempt = self.attempt
        if attempt is not None:
            counted = self.counted
            for p in attempt:
                self.time += p.dur
                if p.outcome != RERUN and ev.counted(p.when, p.outcome):
                    counted[p.outcome] = counted.get(p.outcome, 0) + 1
            self.attempt = None


class TestAssembler:
    """Builds one :class:`TestFinished` from a test's phase reports as they come in.

    A test that pytest-rerunfailures runs again is one record, its last attempt's: the
    attempts before it (their reports say ``rerun``, and their teardown may never be
    reported) are counted into it (:class:`_Reruns`), never recorded as tests of their own.
    """

    __test__ = False  # not a pytest test class
    __slots__ = ("fail_call", "fixtures", "note", "outside_class", "phases", "reruns", "subtests")

    def __init__(self) -> None:
        self.phases: list[ev.Phase] = []
        self.fixtures: list[ev.FixtureRun | _FixtureSpan | _FixtureStats] = []
        """Function-scoped fixtures in setup order: a run as it stands for one without teardown
        code, a span or its definition's statistics (its teardown still to come) for one with.
        One list for the probe's life, emptied in place (the timed setup holds it)."""
        self.note: tuple[str, str | None, str | None] | None = None
        """(when, short text, failure text) of the first phase that did not pass."""
        self.subtests: dict[str, int] | None = None
        self.fail_call = False
        """A subtest failed and pytest (9 and later) fails the call around it for that."""
        self.outside_class: bool | None = None
        """The test is its class fixtures' scope (a function outside any class), asked once a
        test (:meth:`LifecycleProbe._outside_class`; None: not asked yet)."""
        self.reruns: _Reruns | None = None
        """The earlier attempts of the test in progress that pytest-rerunfailures ran again;
        :meth:`reset` keeps them (a new attempt starts with ``logstart``), :meth:`finish`
        takes them."""

    def reset(self) -> None:
        self.phases = []
        fixtures = self.fixtures
        if fixtures:
            for f in fixtures:  # a test that never finished: its executions are forgotten
                if isinstance(f, _FixtureStats):
                    f.ready = True
                    f.own = None
            fixtures.clear()
        self.outside_class = None
        self.note = None
        self.subtests = None
        self.fail_call = False

    def add(self, report: pytest.TestReport, start: float) -> None:
        """One phase report; ``start`` is when the phase began (this process's clock)."""
        when = report.when
        outcome = report.outcome
        if "context" in report.__dict__ and self._subtest(report, outcome):
            return
        if outcome == "passed" and "wasxfail" not in report.__dict__:
            self.phases.append(ev.Phase(when, start, report.duration, "passed"))
            return
        if outcome == RERUN:
            self._rerun(report, start)
            return
        category = phase_category(when, outcome, "wasxfail" in report.__dict__)
        if self.note is None:
            failure = report.longreprtext if outcome == "failed" else None
            self.note = (when, short_text(report), failure)
        self.phases.append(ev.Phase(when, start, report.duration, category))

    def _rerun(self, report: pytest.TestReport, start: float) -> None:
        """A failed phase of an attempt that pytest-rerunfailures runs again: the attempt
        is counted once (a later phase of it may fail too), its first failure kept."""
        phases = self.phases
        reruns = self.reruns
        if reruns is None or reruns.nodeid != report.nodeid:
            reruns = self.reruns = _Reruns(report.nodeid)
        reruns.reports += 1
        if reruns.attempt is not phases:
            reruns.close()
            reruns.attempt = phases
            reruns.count += 1
            if reruns.message is None:
                reruns.when = report.when
                reruns.message = ev.clip(short_text(report), 2000)
        phases.append(ev.Phase(report.when, start, report.duration, RERUN))

    def _subtest(self, report: pytest.TestReport, outcome: str) -> bool:
        """A subtest's report (pytest's ``SubtestReport``, or pytest-subtests'): counted, not
        a phase (its time is inside the call's). In pytest 9 a failed one fails the call
        around it (pytest decides so in its ``pytest_report_teststatus``); pytest-subtests
        leaves the call as it was. False: not a subtest's report after all."""
        kind: type = type(report)
        if kind is pytest.TestReport:
            return False
        category = phase_category("call", outcome, "wasxfail" in report.__dict__)
        counts = self.subtests
        if counts is None:
            counts = self.subtests = {}
        counts[category] = counts.get(category, 0) + 1
        if outcome == "failed":
            if kind.__module__ == "_pytest.subtests":
                self.fail_call = True
            if self.note is None:
                self.note = ("call", short_text(report), report.longreprtext)
        return True

    def finish(self, nodeid: str, ts: float) -> ev.TestFinished | None:
        """The test's record, at the end of its teardown; None when this attempt is one
        that pytest-rerunfailures runs again (its record is the last attempt's)."""
        phases = self.phases
        worst = "passed"
        rank = 0
        total = 0.0
        for phase in phases:
            total += phase.dur
            if phase.outcome != "passed":
                r = _RANK.get(phase.outcome, 0)
                if r > rank:
                    worst, rank = phase.outcome, r
        subtests = self.subtests
        if self.fail_call:
            phases = [
                ev.Phase(p.when, p.start, p.dur, "failed")
                if p.when == "call" and p.outcome == "passed"
                else p
                for p in phases
            ]
            if rank < _RANK["failed"]:
                worst = "failed"
        elif subtests is not None and subtests.get("failed") and rank < _RANK["failed"]:
            worst = "failed"  # pytest-subtests: the test's own report passed; the run failed
        record = ev.TestFinished(ts=ts, nodeid=nodeid, outcome=worst, phases=phases, duration=total)
        if subtests is not None:
            record.subtests = subtests
        if self.fixtures:
            runs: list[ev.FixtureRun] = []
            keep = worst in ev.FAILING  # a failing test keeps its fixtures with teardown code
            for f in self.fixtures:
                if isinstance(f, _Execution):
                    # An execution once its teardown ran: counted when quick, else recorded.
                    if isinstance(f, _FixtureStats):
                        f.ready = True
                    if (
                        keep
                        or f.failed
                        or f.error is not None
                        or f.setup_dur >= f.detail
                        or f.teardown_dur >= f.detail
                    ):
                        runs.append(f.as_run())
                    else:
                        f.count_quick()
                else:
                    runs.append(f)
            if runs:
                record.fixtures = runs
            self.fixtures.clear()  # settled: nothing for reset() to forget
        note = self.note
        if note is not None:
            when, message, longrepr = note
            if worst in ev.FAILING:
                record.failed_when = when
            record.message = ev.clip(message)
            record.longrepr = ev.clip(longrepr)
        reruns = self.reruns
        if reruns is not None:
            return self._after_reruns(record, reruns)
        self.reset()
        return record

    def _after_reruns(self, record: ev.TestFinished, reruns: _Reruns) -> ev.TestFinished | None:
        """The end of an attempt of a test that pytest-rerunfailures ran again: nothing yet
        if this attempt runs again, else the last attempt's record with the others in it."""
        if reruns.attempt is self.phases:  # (the list reset() replaces, attempt by attempt)
            reruns.fixtures.extend(record.fixtures)
            self.reset()
            return None
        self.reruns = None
        self.reset()
        if reruns.nodeid != record.nodeid:  # an attempt that never ended; another test
            return record
        reruns.close()
        record.reruns = reruns.count
        record.rerun_when = reruns.when
        record.rerun_message = reruns.message
        record.rerun_time = reruns.time
        if reruns.reports != reruns.count:
            record.rerun_reports = reruns.reports
        if reruns.counted:
            record.rerun_counts = reruns.counted
        if reruns.fixtures:
            record.fixtures = [*reruns.fixtures, *record.fixtures]
        return record


class _Tally:
    """Quick executions of one fixture since the worker's last :class:`ev.FixtureTotals`."""

    __slots__ = ("baseid", "count", "name", "scope", "setup_max", "setup_total", "teardown_total")

    def __init__(self, name: str, scope: str, baseid: str) -> None:
        self.name = name
        self.scope = scope
        self.baseid = baseid
        self.count = 0
        self.setup_total = 0.0
        self.setup_max = 0.0
        self.teardown_total = 0.0


def _row(tally: _Tally | _FixtureStats) -> ev.FixtureTally:
    """One fixture's line of a :class:`ev.FixtureTotals`."""
    return ev.FixtureTally(
        tally.name,
        tally.scope,
        tally.baseid,
        tally.count,
        tally.setup_total,
        tally.setup_max,
        tally.teardown_total,
    )


class _Execution:
    """One fixture execution whose teardown is timed, kept as ``perf_counter`` readings and
    turned into wall-clock time only for an event or a record: a quick execution, only
    counted, never needs them (this runs for every yield fixture of every test)."""

    __slots__ = (
        "activity",
        "baseid",
        "detail",
        "error",
        "failed",
        "name",
        "own",
        "probe",
        "scope",
        "setup_dur",
        "setup_start",
        "setup_test",
        "teardown_dur",
        "teardown_start",
    )

    def __init__(self, probe: LifecycleProbe, name: str, scope: str, baseid: str) -> None:
        self.probe = probe
        self.activity = probe.activity
        self.detail = probe.detail
        self.name = name
        self.scope = scope
        self.baseid = baseid
        self.setup_start = 0.0
        self.setup_dur = 0.0
        self.teardown_start = 0.0
        self.teardown_dur = 0.0
        self.error: str | None = None
        self.failed = False
        """Its own teardown raised: never counted as quick, its record shows where it broke."""
        self.own: Callable[[], object] | None = None
        """The fixture's one teardown finalizer, while ours stands in its place."""
        self.setup_test: str | None = None
        """The test whose setup triggered it (for a wider scope's setup event)."""

    def count_quick(self) -> None:
        """Count this execution as a quick one."""
        raise NotImplementedError

    def setup_event(self) -> ev.FixtureSetup:
        start = _WALL0 + (self.setup_start - _MONO0)
        return ev.FixtureSetup(
            ts=start + self.setup_dur,
            name=self.name,
            scope=self.scope,
            test=self.setup_test,
            start=start,
            dur=self.setup_dur,
            baseid=self.baseid,
            error=self.error,
        )

    def teardown_event(self, t: float) -> ev.FixtureTeardown:
        """Its teardown, ended at perf_counter reading ``t`` in the current test."""
        return ev.FixtureTeardown(
            ts=_WALL0 + (t - _MONO0),
            name=self.name,
            scope=self.scope,
            test=self.activity.test,
            start=_WALL0 + (self.teardown_start - _MONO0),
            dur=self.teardown_dur,
            baseid=self.baseid,
        )

    def as_run(self) -> ev.FixtureRun:
        teardown = self.teardown_start
        return ev.FixtureRun(
            self.name,
            _WALL0 + (self.setup_start - _MONO0),
            self.setup_dur,
            _WALL0 + (teardown - _MONO0) if teardown else 0.0,
            self.teardown_dur,
            self.baseid,
            self.error,
        )


class _FixtureStats(_Execution):
    """One function-scoped fixture definition as the timed setup sees it: its quick
    executions since the worker's last tally (as a :class:`_Tally` counts them), and its
    execution in flight when that has a single teardown finalizer (a yield fixture's), which
    :attr:`teardown` stands in for. Made once per definition and tally period, not once per
    execution: nothing is allocated for a fixture run of a test. A test runs each function
    fixture once, so a definition has one execution in flight at most (not :attr:`ready`;
    one set up again before the first is settled takes the general path, a span of its
    own)."""

    __slots__ = (
        "busy",
        "count",
        "ready",
        "setup_max",
        "setup_total",
        "teardown",
        "teardown_total",
    )

    def __init__(self, probe: LifecycleProbe, name: str, scope: str, baseid: str) -> None:
        super().__init__(probe, name, scope, baseid)
        # scope: "function", or "class" for a class fixture taken here only while a test
        # outside a class is its scope (pytest-django's ``_django_setup_unittest`` in every
        # such test): settled at its teardown, counted when quick, else both its events.
        self.count = 0
        self.setup_total = 0.0
        self.setup_max = 0.0
        self.teardown_total = 0.0
        self.busy = False
        """A class fixture's execution is in flight."""
        self.ready = scope == "function"
        """A function fixture's next execution takes the fast path: none is in flight."""
        self.teardown: Callable[[], object] = self._teardown
        """Bound once: what stands in for the execution's own teardown finalizer."""

    def count_quick(self) -> None:
        self.count += 1
        setup = self.setup_dur
        self.setup_total += setup
        if setup > self.setup_max:
            self.setup_max = setup
        self.teardown_total += self.teardown_dur

    def _teardown(self) -> object:
        """The fixture's own teardown, timed; what it raises goes on to pytest as if it had
        been called directly."""
        __tracebackhide__ = True
        activity = self.activity
        name = self.name
        activity.fixture = name
        start = self.teardown_start = REAL.perf_counter()
        try:
            return self.own()  # type: ignore[misc]
        except BaseException:
            self.failed = True
            raise
        finally:
            t = REAL.perf_counter()
            self.teardown_dur = t - start
            self.own = None  # nothing of the test kept alive past its teardown
            if activity.fixture == name:
                activity.fixture = None
            if self.scope != "function":
                self._settle_class(t)

    def _settle_class(self, t: float) -> None:
        """A class fixture within its test, torn down (perf_counter reading ``t``): counted
        when quick, else its setup and teardown events (as a class fixture of a real class
        has them)."""
        self.busy = False
        if self.teardown_dur < self.detail and not self.failed:
            self.count_quick()
            return
        emit = self.probe.emit
        emit(self.setup_event())
        emit(self.teardown_event(t))


class _Untimed(_FixtureStats):
    """A fixture definition the timed setup keeps no statistics for (never ready)."""

    __slots__ = ()

    def __init__(self) -> None:  # (no super().__init__: nothing of a definition to hold)
        self.ready = False
        self.busy = False
        self.scope = ""
        self.count = 0


_PARAM = _Untimed()
"""An ``@parametrize`` argument: left alone."""
_GENERAL = _Untimed()
"""A fixture of a wider scope (or a pytest without ``FixtureDef._finalizers``): timed by
the general path, a span for each execution."""


class _FixtureSpan(_Execution):
    """A fixture execution timed by the general path: a wider-scoped one (its teardown is an
    event of its own), or one that registered teardown code of its own during its setup
    (a ``yield`` fixture, ``request.addfinalizer``). Two finalizers bracket that teardown,
    or one stands in for its single teardown finalizer (:meth:`teardown`)."""

    __slots__ = ("held", "key")

    def __init__(
        self,
        probe: LifecycleProbe,
        key: object,
        name: str,
        scope: str,
        baseid: str,
        start: float,
        dur: float,
        error: str | None,
    ) -> None:
        super().__init__(probe, name, scope, baseid)
        self.key = key
        """The fixture's definition (its tally's key)."""
        self.setup_start = start
        self.setup_dur = dur
        self.error = error
        self.held = False
        """A quick class fixture's setup within one test, not sent yet: its teardown decides
        (counted, or both events then)."""

    def count_quick(self) -> None:
        self.probe.tally(
            self.key, self.name, self.scope, self.baseid, self.setup_dur, self.teardown_dur
        )

    def teardown(self) -> object:
        """The fixture's own teardown between :meth:`begin` and :meth:`end`; what it raises
        goes on to pytest as if it had been called directly."""
        __tracebackhide__ = True
        activity = self.activity
        activity.fixture = self.name
        self.teardown_start = REAL.perf_counter()
        try:
            return self.own()  # type: ignore[misc]
        except BaseException:
            self.failed = True
            raise
        finally:
            if self.scope == "function":  # the common case: its test's record settles it
                self.teardown_dur = REAL.perf_counter() - self.teardown_start
                if activity.fixture == self.name:
                    activity.fixture = None
            else:
                self.end()

    def begin(self) -> None:
        self.teardown_start = REAL.perf_counter()
        self.activity.fixture = self.name

    def end(self) -> None:
        t = REAL.perf_counter()
        start = self.teardown_start or t  # no begin(): no teardown code of its own ran
        self.teardown_dur = t - start
        activity = self.activity
        if activity.fixture == self.name:
            activity.fixture = None
        if self.scope != "function":
            self.teardown_start = start  # its teardown event says when
            probe = self.probe
            if self.held:
                if self.teardown_dur < self.detail and not self.failed:
                    self.count_quick()
                    return
                probe.emit(self.setup_event())
            probe.emit(self.teardown_event(t))


_PYTEST_FIXTURE_SETUP: Callable[..., object] | None = getattr(
    _pytest_fixtures, "pytest_fixture_setup", None
)
"""pytest's own implementation of the hook: it calls the fixture function."""


def _no_setup(fixturedef: object, request: object) -> object:
    raise NotImplementedError


_NOT_ERRORS = (pytest.skip.Exception, pytest.xfail.Exception)
"""A fixture that skips or xfails its tests has not failed (the test's outcome says it)."""


class LifecycleProbe:
    """pytest hooks that record test phases and fixture executions of this process."""

    def __init__(self, emit: Emit, activity: WorkerActivity, fixture_detail: float = 0.0) -> None:
        self.emit = emit
        self.activity = activity
        self.detail = fixture_detail
        """Seconds under which a fixture execution is counted, not recorded (0: none is)."""
        self._tallies: dict[object, _Tally] = {}
        """Fixture definition -> its quick executions since the last tally sent (general
        path)."""
        self._stats: dict[object, _FixtureStats] = {}
        """Fixture definition -> how the timed setup takes it: a function-scoped one's
        :class:`_FixtureStats`, or :data:`_PARAM` / :data:`_GENERAL`. Emptied with each tally
        sent (a suite that makes fixture definitions per test stays bounded)."""
        self._tallied_at = 0.0
        self._test = TestAssembler()
        self.positions: dict[str, int] = {}
        """Each collected test's position in this process's collection (``TestFinished.index``)."""
        self._offset = 0.0
        """This process's clock minus time.time(), taken as each test starts: pytest's
        reports carry time.time() stamps, the log carries monotonic-corrected ones."""
        self._config: pytest.Config | None = None
        self._swapped: Any = None
        """pytest's own hook implementation of ``pytest_fixture_setup`` (pluggy's
        ``HookImpl``) while :attr:`_timed` stands in its place."""
        self._wrapper: _FixtureWrapper | None = None
        self._parents: dict[int, tuple[object, bool]] = {}
        """id of a test's parent node -> (that node, no class holds it): :meth:`_outside_class`."""
        self._timed = self._timed_setup()
        self.reports_tell_phases = True
        """A setup or call report marks the next phase; not in a run that may rerun, whose
        reports come after their attempt (:class:`RerunPhases` marks them instead)."""

    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        activity = self.activity
        activity.test = nodeid
        activity.phase = "setup"
        activity.fixture = None
        # time.time() read between two perf_counter readings; a process preempted in
        # between would skew every phase of the test by the pause, so read again then.
        perf, wall = REAL.perf_counter, REAL.time
        for _ in range(3):
            before = perf()
            w = wall()
            after = perf()
            if after - before < 2e-5:
                break
        activity.since = _WALL0 + (after - _MONO0)
        self._offset = _WALL0 + ((before + after) / 2 - _MONO0) - w
        self._test.reset()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        stop = report.stop
        if stop:
            end = stop + self._offset
            # pytest's start and stop are time.time(): a wall clock moved since logstart (a
            # suite's time-machine or freezegun travel, a clock step) would put the phase
            # years away. This hook runs as the phase's report is made: this process's
            # monotonic clock must agree within CLOCK_SLACK, else it is the phase's end. The
            # start is the end less pytest's duration (perf_counter, never moved): the same
            # as stop less start, unless the clock moved within the phase.
            mono = _WALL0 + (REAL.perf_counter() - _MONO0)
            if not -CLOCK_SLACK < mono - end < CLOCK_SLACK:
                end = mono
            start = end - report.duration
        else:  # a report made by hand, without times
            end = _WALL0 + (REAL.perf_counter() - _MONO0)
            start = end - report.duration
        self._test.add(report, start)
        activity = self.activity
        when = report.when
        if when == "teardown":
            record = self._test.finish(report.nodeid, end)
            if record is not None:  # None: an attempt pytest-rerunfailures runs again
                record.index = self.positions.get(report.nodeid)
                self.emit(record)
            if end - self._tallied_at >= TALLY_EVERY:
                self.send_tallies(end)
            activity.test = None
            activity.phase = "idle"
            activity.fixture = None
        elif self.reports_tell_phases:
            if when == "setup" and report.outcome == "passed":
                activity.phase = "call"
            else:
                activity.phase = "teardown"
        else:  # (told as they end: RerunPhases; these reports may come after the attempt)
            return
        activity.since = end

    # ------------------------------------------------------------------ fixtures

    def tally(
        self, key: object, name: str, scope: str, baseid: str, setup: float, teardown: float
    ) -> None:
        """Count one quick execution of a fixture."""
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally(name, scope, baseid)
        tally.count += 1
        tally.setup_total += setup
        if setup > tally.setup_max:
            tally.setup_max = setup
        tally.teardown_total += teardown

    def send_tallies(self, ts: float) -> None:
        """Send what was counted since the last tally (nothing when nothing was), and start
        counting again."""
        self._tallied_at = ts
        rows = [_row(tally) for tally in self._tallies.values()]
        rows.extend(_row(stats) for stats in self._stats.values() if stats.count)
        # afresh: a suite that makes fixture definitions per test stays bounded (called
        # between tests: no execution is in flight; the timed setup holds this dict)
        self._tallies = {}
        self._stats.clear()
        if rows:
            self.emit(ev.FixtureTotals(ts=ts, fixtures=rows))

    def time_fixtures(self, config: pytest.Config) -> None:
        """Start timing fixture setups, the cheapest way this run allows (see
        :meth:`_timed_setup`); called once, after this probe is registered."""
        self._config = config
        self._fixture_timing_check()

    def untime_fixtures(self) -> None:
        """Give pytest's own fixture setup back (the run is over)."""
        self._parents.clear()
        impl = self._swapped
        if impl is not None:
            impl.function = _PYTEST_FIXTURE_SETUP
            self._swapped = None
        wrapper = self._wrapper
        if wrapper is not None and self._config is not None:
            self._config.pluginmanager.unregister(wrapper)
            self._wrapper = None
        self._config = None

    def pytest_plugin_registered(self, plugin: object) -> None:
        # A conftest or plugin registered later may bring a setup of its own.
        if self._swapped is not None and hasattr(plugin, "pytest_fixture_setup"):
            self._fixture_timing_check()

    def _fixture_timing_check(self) -> None:
        """Swap a timed setup in for pytest's own implementation of ``pytest_fixture_setup``
        when no other plain implementation could answer in its place, or else fall back to a
        hook wrapper (once in the wrapper, stay there)."""
        config = self._config
        if config is None or self._wrapper is not None:
            return
        pytests = None
        for impl in config.pluginmanager.hook.pytest_fixture_setup.get_hookimpls():
            if impl.wrapper or impl.hookwrapper:
                continue
            function = impl.function
            if function is _PYTEST_FIXTURE_SETUP or function is self._timed:
                if impl.argnames == ("fixturedef", "request"):
                    pytests = impl
                    continue
            elif (
                getattr(function, "__module__", None) == "_pytest.setupplan"
                and not config.option.setupplan
            ):
                continue  # answers only under --setup-plan
            pytests = None
            break
        swapped = self._swapped
        if pytests is not None:
            if swapped is None:
                pytests.function = self._timed  # type: ignore[misc]
                self._swapped = pytests
            return
        if swapped is not None:
            swapped.function = _PYTEST_FIXTURE_SETUP
            self._swapped = None
        self._wrapper = _FixtureWrapper(self)
        config.pluginmanager.register(self._wrapper, "testmon-live-fixtures")

    def _timed_setup(self) -> Callable[[pytest.FixtureDef[Any], pytest.FixtureRequest], object]:
        """pytest's own ``pytest_fixture_setup``, timed: it takes that implementation's place
        in the hook (no hook wrapper: a wrapper costs pluggy a generator and its stop per
        fixture). A fixture that registered no teardown code while it was set up (no
        ``yield``, no ``request.addfinalizer``) has nothing to tear down: a function-scoped
        one goes into its test's record as it stands, with no finalizer of ours at all.

        Function-scoped fixtures (pytest-django alone adds nine to every test) take a path
        of their own, inline: their definition's :class:`_FixtureStats` counts a quick one
        and stands in for a yield fixture's teardown, so that no object is made for them."""
        # (a pytest without it: never swapped in, the wrapper times)
        setup: Callable[..., object] = _PYTEST_FIXTURE_SETUP or _no_setup
        activity = self.activity
        perf = REAL.perf_counter
        done = self._done
        settle = self._settle
        stats_of = self._stats
        classify = self._classify
        outside_class = self._outside_class
        assembler = self._test
        fixtures = assembler.fixtures

        def general_setup(
            fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
        ) -> object:
            __tracebackhide__ = True
            finalizers = getattr(fixturedef, "_finalizers", None)
            count = -1 if finalizers is None else len(finalizers)
            previous = activity.fixture
            activity.fixture = fixturedef.argname
            error = None
            start = perf()
            try:
                return setup(fixturedef, request)
            except BaseException as exc:
                if not isinstance(exc, _NOT_ERRORS):
                    error = ev.clip(exc_text(exc), 2000)
                raise
            finally:
                t = perf()
                activity.fixture = previous
                done(fixturedef, request, finalizers, count, start, t, error)

        def timed_fixture_setup(
            fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
        ) -> object:
            __tracebackhide__ = True  # out of the traceback of a fixture that raises
            stats = stats_of.get(fixturedef)
            if stats is None:
                stats = classify(fixturedef)
            if not stats.ready:  # one attribute: this runs for nearly every fixture
                if stats is _PARAM:
                    # @parametrize arguments are fixtures inside pytest, not to its users
                    return setup(fixturedef, request)
                if stats.scope != "class" or stats.busy:
                    return general_setup(fixturedef, request)
                own = assembler.outside_class
                if own is None:
                    own = activity.test is not None and outside_class(request)
                    assembler.outside_class = own
                if not own:  # a real class's fixture: the general path, events of its own
                    return general_setup(fixturedef, request)
            finalizers: list[Any] = fixturedef._finalizers  # checked by classify
            count = len(finalizers)
            previous = activity.fixture
            activity.fixture = stats.name
            error = None
            start = perf()
            try:
                return setup(fixturedef, request)
            except BaseException as exc:
                if not isinstance(exc, _NOT_ERRORS):
                    error = ev.clip(exc_text(exc), 2000)
                raise
            finally:
                t = perf()
                activity.fixture = previous
                dur = t - start
                added = len(finalizers) - count
                if stats.scope != "function":
                    if added == 1 and error is None and dur < stats.detail:
                        stats.busy = True  # its teardown settles it (_settle_class)
                        stats.setup_start = start
                        stats.setup_dur = dur
                        stats.error = None
                        stats.failed = False
                        stats.setup_test = activity.test
                        stats.own = finalizers[count]
                        finalizers[count] = stats.teardown
                    else:
                        settle(fixturedef, request, finalizers, start, t, error, count)
                elif added == 0:
                    if error is None and dur < stats.detail:
                        stats.count += 1  # quick, nothing to tear down: counted
                        stats.setup_total += dur
                        if dur > stats.setup_max:
                            stats.setup_max = dur
                    else:
                        fixtures.append(
                            ev.FixtureRun(
                                stats.name,
                                _WALL0 + (start - _MONO0),
                                dur,
                                0.0,
                                0.0,
                                stats.baseid,
                                error,
                            )
                        )
                elif added == 1:
                    # A yield fixture's one teardown: its statistics stand in for it; its
                    # test's record settles it (TestAssembler.finish).
                    stats.ready = False
                    stats.setup_start = start
                    stats.setup_dur = dur
                    stats.error = error
                    stats.failed = False
                    stats.teardown_start = 0.0
                    stats.teardown_dur = 0.0
                    stats.own = finalizers[count]
                    finalizers[count] = stats.teardown
                    fixtures.append(stats)
                else:
                    settle(fixturedef, request, finalizers, start, t, error, count)

        return timed_fixture_setup

    def _outside_class(self, request: pytest.FixtureRequest) -> bool:
        """The test that requested a class fixture is in no class, so that pytest makes the
        test itself the fixture's scope (``SubRequest.node``: the nearest ``Class``, else the
        test). Asked of the test's parent, once per parent (a module's tests share it):
        ``request.node`` walks the test's ancestors on every call (~3 µs a test)."""
        try:
            parent = request._pyfuncitem.parent
            known = self._parents.get(id(parent))
            if known is not None and known[0] is parent:
                return known[1]
            outside = parent is None or parent.getparent(_Class) is None
            self._parents[id(parent)] = (parent, outside)
            return outside
        except Exception:  # noqa: BLE001  (ours: never the user's problem; not held then)
            return False

    def _classify(self, fixturedef: pytest.FixtureDef[Any]) -> _FixtureStats:
        """How the timed setup takes a fixture definition (once per tally period)."""
        kind: _FixtureStats
        if fixturedef.func is get_direct_param_fixture_func:
            kind = _PARAM
        elif fixturedef.scope in ("function", "class") and isinstance(
            getattr(fixturedef, "_finalizers", None), list
        ):
            kind = _FixtureStats(
                self, fixturedef.argname, fixturedef.scope, fixturedef.baseid or ""
            )
        else:
            kind = _GENERAL
        self._stats[fixturedef] = kind
        return kind

    def _done(
        self,
        fixturedef: pytest.FixtureDef[Any],
        request: pytest.FixtureRequest,
        finalizers: list[Any] | None,
        count: int,
        start: float,
        t: float,
        error: str | None,
    ) -> None:
        """A fixture's setup ended (perf_counter readings ``start`` and ``t``). ``finalizers``:
        its list of teardown finalizers, ``count`` of them before the setup (-1: not known).
        A function fixture that registered no teardown code is settled here: counted when
        quick, else recorded in its test's record."""
        if count < 0 or fixturedef.scope != "function":
            self._settle(fixturedef, request, finalizers, start, t, error, count)
            return
        added = len(finalizers) - count  # type: ignore[arg-type]
        if added == 1:
            # A yield fixture's one teardown: the span stands in for it (see _settle).
            span = _FixtureSpan(
                self,
                fixturedef,
                fixturedef.argname,
                "function",
                fixturedef.baseid or "",
                start,
                t - start,
                error,
            )
            span.own = finalizers[count]  # type: ignore[index]
            finalizers[count] = span.teardown  # type: ignore[index]
            self._test.fixtures.append(span)
        elif added == 0:
            dur = t - start
            if error is None and dur < self.detail:
                # tally(), inlined: this runs for nearly every fixture of every test
                tally = self._tallies.get(fixturedef)
                if tally is None:
                    tally = self._tallies[fixturedef] = _Tally(
                        fixturedef.argname, "function", fixturedef.baseid or ""
                    )
                tally.count += 1
                tally.setup_total += dur
                if dur > tally.setup_max:
                    tally.setup_max = dur
            else:
                self._test.fixtures.append(
                    ev.FixtureRun(
                        fixturedef.argname,
                        _WALL0 + (start - _MONO0),
                        dur,
                        0.0,
                        0.0,
                        fixturedef.baseid or "",
                        error,
                    )
                )
        else:
            self._settle(fixturedef, request, finalizers, start, t, error, count)

    def _settle(
        self,
        fixturedef: pytest.FixtureDef[Any],
        request: pytest.FixtureRequest,
        finalizers: list[Any] | None,
        start: float,
        t: float,
        error: str | None,
        count: int,
    ) -> None:
        """A fixture set up (perf_counter readings ``start`` and ``t``) that has teardown code
        of its own, or a wider scope: a span whose finalizers bracket its teardown.
        ``finalizers``: the fixture's list of them (None: not known); ``count``: how many it
        had before its setup (-1: not known).
        Finalizers run last-in first-out: ``end`` goes in under the fixture's own teardown
        code, ``begin`` on top of it."""
        scope = fixturedef.scope
        span = _FixtureSpan(
            self,
            fixturedef,
            fixturedef.argname,
            scope,
            fixturedef.baseid or "",
            start,
            t - start,
            error,
        )
        if finalizers is None or count < 0:
            fixturedef.addfinalizer(span.end)  # a pytest without the list: end of all
            fixturedef.addfinalizer(span.begin)
        elif len(finalizers) == count + 1:
            # The usual case, one teardown (a yield fixture's): one finalizer in its place
            # that brackets it, instead of one on either side of it.
            span.own = finalizers[count]
            finalizers[count] = span.teardown
        elif len(finalizers) > count:
            finalizers.insert(count, span.end)
            fixturedef.addfinalizer(span.begin)
        else:  # nothing to tear down but the record of it
            fixturedef.addfinalizer(span.end)
        if scope == "function":
            self._test.fixtures.append(span)
            return
        span.setup_test = test = self.activity.test
        if (
            scope == "class"
            and error is None
            and span.setup_dur < self.detail
            and span.own is not None  # its teardown's failure would be seen
            and test is not None
            and self._outside_class(request)
        ):
            span.held = True  # within its test: its teardown decides, counted or both events
        else:
            self.emit(span.setup_event())


class RerunPhases:
    """The phases of a test that pytest-rerunfailures runs, told as they end.

    With ``--reruns`` (or a ``flaky`` mark) pytest-rerunfailures runs each attempt whole
    (``runtestprotocol(log=False)``) and reports its three phases only after its teardown,
    then sleeps ``--reruns-delay`` before the next attempt: from reports alone the whole
    attempt reads as ``setup`` (a hanging call was a stall "in setup") and the delay as a
    stall. pytest makes each phase's report right after the phase ran, whoever holds it
    back: that marks the next phase here (and ``idle`` after the teardown, through the
    delay). Registered only in a run that may rerun (:func:`may_rerun`): three dispatches a
    test, paid by no other run."""

    def __init__(self, activity: WorkerActivity) -> None:
        self.activity = activity

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> None:
        activity = self.activity
        when = call.when
        if when == "setup" and call.excinfo is None:
            activity.phase = "call"
        elif when == "teardown":
            activity.phase = "idle"
            activity.fixture = None
        else:
            activity.phase = "teardown"
        activity.since = _WALL0 + (REAL.perf_counter() - _MONO0)


def may_rerun(session: pytest.Session) -> bool:
    """pytest-rerunfailures is active and may run a test again: ``--reruns``, or a collected
    test marked ``flaky``."""
    config = session.config
    if not config.pluginmanager.has_plugin("rerunfailures"):
        return False
    if getattr(config.option, "reruns", None):
        return True
    return any(item.get_closest_marker("flaky") is not None for item in session.items)


class _FixtureWrapper:
    """The fallback when pytest's own fixture setup cannot be swapped for a timed one: a
    hook wrapper, around whatever implementation answers."""

    def __init__(self, probe: LifecycleProbe) -> None:
        self.probe = probe

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        __tracebackhide__ = True
        if fixturedef.func is get_direct_param_fixture_func:
            return (yield)
        probe = self.probe
        activity = probe.activity
        finalizers = getattr(fixturedef, "_finalizers", None)
        count = -1 if finalizers is None else len(finalizers)
        previous = activity.fixture
        activity.fixture = fixturedef.argname
        error = None
        start = REAL.perf_counter()
        try:
            return (yield)
        except BaseException as exc:
            if not isinstance(exc, _NOT_ERRORS):
                error = ev.clip(exc_text(exc), 2000)
            raise
        finally:
            t = REAL.perf_counter()
            activity.fixture = previous
            probe._done(fixturedef, request, finalizers, count, start, t, error)
