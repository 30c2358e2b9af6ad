"""Test phases and fixtures: the hooks on the hot path of every test.

Per test: ``logstart`` and three ``logreport`` calls update the worker's live activity
(plain attribute stores) and collect the phases; at the end of teardown one
:class:`~testmon_live.plugin.events.TestFinished` carries all phases and the test's
function-scoped fixtures. Phase durations are pytest's own (perf_counter based).

Per fixture execution: a wrapper around ``pytest_fixture_setup`` times the setup and
registers two finalizers that bracket the fixture's teardown. Function-scoped fixtures
ride in their test's record; wider scopes (rare, and the costly ones) get events of their
own at once, so a worker that dies still leaves its session setups in the log.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest
from _pytest.python import get_direct_param_fixture_func

from .. import events as ev
from ..activity import WorkerActivity
from ..clock import _MONO0, _WALL0, now
from ..guard import REAL, exc_text, text_of

Emit = Callable[[ev.Event], None]

_RANK = ev.OUTCOME_RANK  # bound once: read for every phase of every test


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


def short_text(report: pytest.TestReport) -> str | None:
    """One line that says why a phase did not pass."""
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


class TestAssembler:
    """Builds one :class:`TestFinished` from a test's phase reports as they come in."""

    __test__ = False  # not a pytest test class
    __slots__ = ("fixtures", "note", "phases")

    def __init__(self) -> None:
        self.phases: list[ev.Phase] = []
        self.fixtures: list[_FixtureSpan] = []
        self.note: tuple[str, str | None, str | None] | None = None
        """(when, short text, failure text) of the first phase that did not pass."""

    def reset(self) -> None:
        self.phases = []
        self.fixtures = []
        self.note = None

    def add(self, report: pytest.TestReport, start: float) -> None:
        """One phase report; ``start`` is when the phase began (this process's clock)."""
        when = report.when
        outcome = report.outcome
        if outcome == "passed" and "wasxfail" not in report.__dict__:
            self.phases.append(ev.Phase(when, start, report.duration, "passed"))
            return
        category = phase_category(when, outcome, "wasxfail" in report.__dict__)
        if self.note is None:
            failure = report.longreprtext if outcome == "failed" else None
            self.note = (when, short_text(report), failure)
        self.phases.append(ev.Phase(when, start, report.duration, category))

    def finish(self, nodeid: str, ts: float) -> ev.TestFinished:
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
        record = ev.TestFinished(ts=ts, nodeid=nodeid, outcome=worst, phases=phases, duration=total)
        if self.fixtures:
            record.fixtures = [span.as_run() for span in self.fixtures]
        note = self.note
        if note is not None:
            when, message, longrepr = note
            if worst in ev.FAILING:
                record.failed_when = when
            record.message = ev.clip(message)
            record.longrepr = ev.clip(longrepr)
        self.reset()
        return record


class _FixtureSpan:
    """One fixture execution: its setup, and two finalizers bracketing its teardown."""

    __slots__ = (
        "activity",
        "baseid",
        "emit",
        "error",
        "name",
        "scope",
        "setup_dur",
        "setup_start",
        "teardown_dur",
        "teardown_start",
    )

    def __init__(self, name: str, scope: str, baseid: str, activity: WorkerActivity, emit: Emit):
        self.name = name
        self.scope = scope
        self.baseid = baseid
        self.activity = activity
        self.emit = emit
        self.setup_start = 0.0
        self.setup_dur = 0.0
        self.teardown_start = 0.0
        self.teardown_dur = 0.0
        self.error: str | None = None

    def begin(self) -> None:
        self.teardown_start = now()
        self.activity.fixture = self.name

    def end(self) -> None:
        t = now()
        start = self.teardown_start or t
        self.teardown_dur = t - start
        activity = self.activity
        if activity.fixture == self.name:
            activity.fixture = None
        if self.scope != "function":
            self.emit(
                ev.FixtureTeardown(
                    ts=t,
                    name=self.name,
                    scope=self.scope,
                    test=activity.test,
                    start=start,
                    dur=self.teardown_dur,
                    baseid=self.baseid,
                )
            )

    def as_run(self) -> ev.FixtureRun:
        return ev.FixtureRun(
            self.name,
            self.setup_start,
            self.setup_dur,
            self.teardown_start,
            self.teardown_dur,
            self.baseid,
            self.error,
        )


_NOT_ERRORS = (pytest.skip.Exception, pytest.xfail.Exception)
"""A fixture that skips or xfails its tests has not failed (the test's outcome says it)."""


class LifecycleProbe:
    """pytest hooks that record test phases and fixture executions of this process."""

    def __init__(self, emit: Emit, activity: WorkerActivity) -> None:
        self.emit = emit
        self.activity = activity
        self._test = TestAssembler()
        self._offset = 0.0
        """This process's clock minus time.time(), taken as each test starts: pytest's
        reports carry time.time() stamps, the log carries monotonic-corrected ones."""

    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        activity = self.activity
        activity.test = nodeid
        activity.phase = "setup"
        activity.fixture = None
        activity.since = t = _WALL0 + (REAL.perf_counter() - _MONO0)
        self._offset = t - REAL.time()
        self._test.reset()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        stop = report.stop
        if stop:
            end = stop + self._offset
            start = report.start + self._offset
        else:  # a report made by hand, without times
            end = _WALL0 + (REAL.perf_counter() - _MONO0)
            start = end - report.duration
        self._test.add(report, start)
        activity = self.activity
        when = report.when
        if when == "teardown":
            self.emit(self._test.finish(report.nodeid, end))
            activity.test = None
            activity.phase = "idle"
            activity.fixture = None
        elif when == "setup" and report.outcome == "passed":
            activity.phase = "call"
        else:
            activity.phase = "teardown"
        activity.since = end

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        __tracebackhide__ = True  # out of the traceback of a fixture that raises
        if fixturedef.func is get_direct_param_fixture_func:
            # @parametrize arguments are fixtures inside pytest, not to its users
            return (yield)
        activity = self.activity
        span = _FixtureSpan(
            fixturedef.argname, fixturedef.scope, fixturedef.baseid or "", activity, self.emit
        )
        # Finalizers run last-in first-out: this one runs after the fixture's own teardown.
        fixturedef.addfinalizer(span.end)
        previous = activity.fixture
        activity.fixture = span.name
        span.setup_start = start = _WALL0 + (REAL.perf_counter() - _MONO0)
        try:
            return (yield)
        except BaseException as exc:
            if not isinstance(exc, _NOT_ERRORS):
                span.error = ev.clip(exc_text(exc), 2000)
            raise
        finally:
            t = _WALL0 + (REAL.perf_counter() - _MONO0)
            span.setup_dur = t - start
            activity.fixture = previous
            # ...and this one before it: the teardown starts here.
            fixturedef.addfinalizer(span.begin)
            if span.scope == "function":
                self._test.fixtures.append(span)
            else:
                self.emit(
                    ev.FixtureSetup(
                        ts=t,
                        name=span.name,
                        scope=span.scope,
                        test=activity.test,
                        start=start,
                        dur=span.setup_dur,
                        baseid=span.baseid,
                        error=span.error,
                    )
                )
