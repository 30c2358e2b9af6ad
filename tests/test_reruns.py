"""Tests that pytest-rerunfailures runs again (``--reruns``, ``@pytest.mark.flaky``) are
recorded as pytest counts them: one test each, its attempts before the last counted as
``rerun`` (never as tests or failures of their own), and the record says it was rerun, how
often and why the first attempt failed, so that the report lists the tests that passed on a
rerun. Real runs, with and without xdist, checked against pytest's own final line."""

from __future__ import annotations

import importlib.util
import json
from typing import Literal

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.probes.lifecycle import RERUN, TestAssembler
from testmon_live.plugin.summary import PASSED_ON_RERUN
from testmon_live.tui import cli

from .conftest import line_counts, only_run

FIRST_TIME = """
def first_time(name):
    mark = pathlib.Path(__file__).parent / f".{name}-ran"
    if mark.exists():
        return False
    mark.write_text("")
    return True
"""
"""Inner suites' helper: True the first time a test asks for ``name`` (a file marks it)."""


SUITE = """
import pathlib

import pytest

{FIRST_TIME}

@pytest.fixture
def database():
    if first_time("setup"):
        raise RuntimeError("database not ready yet")
    yield


def test_fails_once():
    assert not first_time("call"), "first attempt broke"


def test_always_fails():
    assert False, "broken every time"


def test_setup_fails_once(database):
    pass


def test_plain():
    pass
""".replace("{FIRST_TIME}", FIRST_TIME)

PYTEST_COUNTS = {"failed": 1, "passed": 3, "rerun": 4}
"""pytest's own line for SUITE at ``--reruns 2``: ``1 failed, 3 passed, 4 rerun``."""

pytestmark = pytest.mark.compat

needs_rerunfailures = pytest.mark.skipif(
    importlib.util.find_spec("pytest_rerunfailures") is None,
    reason="pytest-rerunfailures is not installed",
)


@needs_rerunfailures
@pytest.mark.parametrize("xdist", [["-n", "2"], ["-p", "no:xdist"]], ids=["n2", "no-xdist"])
def test_reruns_are_counted_as_pytest_counts_them(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], xdist: list[str]
) -> None:
    pytester.makepyfile(test_flaky=SUITE)
    result = pytester.runpytest_subprocess(
        *xdist, "-p", "rerunfailures", "--reruns", "2", "--monitor"
    )
    output = result.stdout.str()
    assert line_counts(output) == PYTEST_COUNTS

    # the monitor's summary line says what pytest says, of 4 tests
    assert "run " in output
    summary = next(line for line in output.splitlines() if line.startswith("run "))
    assert " 4 tests on " in summary
    assert "(1 failed, 3 passed, 4 rerun)" in summary
    flaky = next(line for line in output.splitlines() if line.startswith(PASSED_ON_RERUN))
    assert "test_fails_once" in flaky
    assert "test_setup_fails_once" in flaky
    assert "test_always_fails" not in flaky

    recorded = only_run(pytester)
    tests = recorded.tests_by_id()
    assert {nodeid.split("::")[-1]: len(runs) for nodeid, runs in tests.items()} == {
        "test_fails_once": 1,
        "test_always_fails": 1,
        "test_setup_fails_once": 1,
        "test_plain": 1,
    }
    by_name = {nodeid.split("::")[-1]: runs[0] for nodeid, runs in tests.items()}
    once = by_name["test_fails_once"]
    assert once.outcome == "passed"
    assert (once.reruns, once.rerun_when) == (1, "call")
    assert once.rerun_message is not None
    assert "first attempt broke" in once.rerun_message
    assert once.message is None
    assert once.failed_when is None
    assert once.rerun_time > 0
    always = by_name["test_always_fails"]
    assert (always.outcome, always.failed_when, always.reruns) == ("failed", "call", 2)
    assert always.message is not None
    assert "broken every time" in always.message
    setup = by_name["test_setup_fails_once"]
    assert (setup.outcome, setup.reruns, setup.rerun_when) == ("passed", 1, "setup")
    assert setup.rerun_message is not None
    assert "database not ready yet" in setup.rerun_message
    assert [p.when for p in setup.phases] == ["setup", "call", "teardown"]
    assert by_name["test_plain"].reruns == 0
    # no attempt is a phase of its own: each record is its last attempt's
    assert all(p.outcome != "rerun" for t in by_name.values() for p in t.phases)

    state = recorded.state
    assert state.tests_done == 4
    assert {k: n for k, n in state.counts.items() if n} == PYTEST_COUNTS
    assert {k: n for k, n in state.outcomes.items() if n} == {"passed": 3, "failed": 1}
    assert [t.nodeid.split("::")[-1] for t in state.failures] == ["test_always_fails"]
    assert sorted(t.nodeid.split("::")[-1] for t in state.rerun) == [
        "test_always_fails",
        "test_fails_once",
        "test_setup_fails_once",
    ]
    assert recorded.of(ev.RunFinished)[0].tests == 4
    assert recorded.of(ev.RunFinished)[0].counts == PYTEST_COUNTS

    # the report: pytest's counts, one failure, the tests that passed on a rerun
    capsys.readouterr()  # (what pytester echoed of the run)
    assert cli.main(["report", str(recorded.path), "--format", "json"]) == 0
    model = json.loads(capsys.readouterr().out)
    totals = model["totals"]
    assert (totals["tests"], totals["failing"]) == (4, 1)
    assert totals["summary"] == "1 failed, 3 passed, 4 rerun"
    assert [(f["nodeid"].split("::")[-1], f["reruns"]) for f in model["failures"]] == [
        ("test_always_fails", 2)
    ]
    reruns = {r["nodeid"].split("::")[-1]: r for r in model["reruns"]}
    assert {name: (r["outcome"], r["reruns"], r["phase"]) for name, r in reruns.items()} == {
        "test_fails_once": ("passed", 1, "call"),
        "test_always_fails": ("failed", 2, "call"),
        "test_setup_fails_once": ("passed", 1, "setup"),
    }
    assert "database not ready yet" in reruns["test_setup_fails_once"]["message"]
    assert cli.main(["report", str(recorded.path)]) == 0
    text = capsys.readouterr().out
    assert "4 tests: 1 failed, 3 passed, 4 rerun" in text
    assert "Rerun (3: 2 passed on a rerun)" in text
    assert "PASSED on rerun" in text


def test_an_old_log_of_rerun_attempts_still_reads(pytester: pytest.Pytester) -> None:
    """A log written before reruns were folded (each attempt a record of its own, its failed
    phase ``rerun``) reads as it was written: counts from its phases, no field missing."""
    line = (
        '{"t":"test","w":"main","ts":2.0,"nodeid":"t.py::test_a","outcome":"passed",'
        '"phases":[["setup",1.0,0.1,"passed"],["call",1.1,0.1,"rerun"]],"duration":0.2}'
    )
    old = ev.decode_event(line)
    assert isinstance(old, ev.TestFinished)
    assert (old.reruns, old.rerun_when, old.rerun_message, old.rerun_time) == (0, None, None, 0.0)
    assert b"rerun_time" not in ev.encode(old)  # defaults stay out of the line


When = Literal["setup", "call", "teardown"]
PHASES: tuple[When, ...] = ("setup", "call", "teardown")


def report(
    when: When,
    outcome: str,
    attempt: int,
    start: float,
    name: str = "test_a",
) -> pytest.TestReport:
    """A phase report as pytest-rerunfailures logs it (``rerun``: its attempt's number)."""
    passed = outcome == "passed"
    rep = pytest.TestReport(
        f"t.py::{name}",
        ("t.py", 0, name),
        {},
        "passed" if passed else "failed",
        None if passed else "E   RuntimeError: flaked",
        when,
        duration=0.5,
        start=start,
        stop=start + 0.5,
        rerun=attempt,
    )
    rep.outcome = outcome  # type: ignore[assignment]  # as pytest-rerunfailures does
    return rep


@pytest.mark.parametrize("teardown_reported", [True, False], ids=["16.x", "before-15"])
def test_attempts_fold_into_the_last_attempts_record(teardown_reported: bool) -> None:
    """Attempt by attempt, as the probe (a ``logstart``, a ``reset``, before each) and the
    controller's recovery of a dead worker's tests feed them; pytest-rerunfailures before 15
    reports no teardown of an attempt it runs again."""
    assembler = TestAssembler()
    t = 100.0
    for attempt in (0, 1):
        assembler.reset()
        assembler.add(report("setup", "passed", attempt, t), t)
        assembler.add(report("call", RERUN, attempt, t + 1), t + 1)
        if teardown_reported:
            assembler.add(report("teardown", "passed", attempt, t + 2), t + 2)
            assert assembler.finish("t.py::test_a", t + 2.5) is None  # it runs again
        t += 10
    assembler.reset()
    for when in PHASES:
        assembler.add(report(when, "passed", 2, t), t)
        t += 1
    record = assembler.finish("t.py::test_a", t)
    assert record is not None
    assert (record.outcome, record.reruns, record.rerun_when) == ("passed", 2, "call")
    assert record.rerun_message == "E   RuntimeError: flaked"
    assert record.message is None
    assert [p.outcome for p in record.phases] == ["passed"] * 3
    assert record.duration == pytest.approx(1.5)
    assert record.rerun_time == pytest.approx(3.0 if teardown_reported else 2.0)
    assert record.rerun_counts is None  # its attempts' calls failed: each a rerun alone
    # the next test starts clean
    assembler.reset()
    for when in PHASES:
        assembler.add(report(when, "passed", 0, t, "test_b"), t)
    nxt = assembler.finish("t.py::test_b", t)
    assert nxt is not None
    assert nxt.reruns == 0


def test_an_attempt_whose_teardown_failed_carries_its_passed_call() -> None:
    """pytest counts the call of an attempt run again for its teardown as ``passed``: the
    last attempt's record says so."""
    assembler = TestAssembler()
    assembler.reset()
    assembler.add(report("setup", "passed", 0, 1.0), 1.0)
    assembler.add(report("call", "passed", 0, 2.0), 2.0)
    assembler.add(report("teardown", RERUN, 0, 3.0), 3.0)
    assert assembler.finish("t.py::test_a", 3.5) is None
    assembler.reset()
    for t, when in enumerate(PHASES, start=10):
        assembler.add(report(when, "passed", 1, t), t)
    record = assembler.finish("t.py::test_a", 13.0)
    assert record is not None
    assert (record.reruns, record.rerun_when, record.rerun_counts) == (1, "teardown", {"passed": 1})


def test_a_last_attempt_that_never_ended_leaves_nothing_behind() -> None:
    """An attempt to be run again whose test never came back (the worker died, the run was
    interrupted) is no part of the next test's record."""
    assembler = TestAssembler()
    assembler.reset()
    assembler.add(report("setup", RERUN, 0, 1.0), 1.0)
    assembler.reset()  # the next logstart: another test
    for when in PHASES:
        assembler.add(report(when, "passed", 0, 2.0, "test_b"), 2.0)
    record = assembler.finish("t.py::test_b", 3.0)
    assert record is not None
    assert (record.nodeid, record.reruns, record.rerun_message) == ("t.py::test_b", 0, None)


CRASHES = """
import os
import pathlib

import pytest

{FIRST_TIME}

@pytest.fixture
def breaks_on_teardown():
    yield
    if first_time("teardown"):
        raise RuntimeError("teardown broke")


def test_call_and_teardown_fail_once(breaks_on_teardown):
    assert not first_time("call")


def test_worker_dies_once():
    if first_time("crash"):
        os._exit(3)


def test_fails_then_worker_dies():
    if first_time("fail"):
        assert False, "first attempt failed"
    if first_time("die"):
        os._exit(3)


def test_plain():
    pass
""".replace("{FIRST_TIME}", FIRST_TIME)


@needs_rerunfailures
def test_crashed_attempts_and_failed_phases_are_counted_as_pytest_counts_them(
    pytester: pytest.Pytester,
) -> None:
    """An attempt whose call and teardown both fail is two reruns to pytest (15 and later);
    a worker that dies in a test pytest-rerunfailures runs again is a rerun, not a failure,
    and the attempts it ran before dying count too."""
    pytester.makepyfile(test_crashes=CRASHES)
    result = pytester.runpytest_subprocess(
        "-n", "2", "-p", "rerunfailures", "--reruns", "2", "--monitor"
    )
    expected = line_counts(result.stdout.str())
    assert expected["passed"] == 4
    assert "failed" not in expected

    recorded = only_run(pytester)
    state = recorded.state
    assert {k: n for k, n in state.counts.items() if n} == expected
    assert state.failures == []
    assert state.tests_done == 4
    rerun = {t.nodeid.split("::")[-1]: t.reruns for t in state.rerun}
    assert rerun["test_worker_dies_once"] == 1
    assert rerun["test_fails_then_worker_dies"] == 2
    assert sorted(c.reruns for c in state.crashes) == [1, 2]


PASSES_IN_ATTEMPTS = """
import pathlib

import pytest

{FIRST_TIME}

@pytest.fixture
def breaks_on_teardown():
    yield
    if first_time("teardown"):
        raise RuntimeError("teardown broke")


@pytest.fixture
def breaks_on_skip_teardown():
    yield
    if first_time("skip-teardown"):
        raise RuntimeError("teardown broke after a skip")


def test_teardown_fails_once(breaks_on_teardown):
    pass


def test_call_fails_once():
    assert not first_time("call")


def test_skips_teardown_fails_once(breaks_on_skip_teardown):
    pytest.skip("not here")


def test_plain():
    pass
""".replace("{FIRST_TIME}", FIRST_TIME)


@needs_rerunfailures
@pytest.mark.parametrize("xdist", [["-n", "2"], ["-p", "no:xdist"]], ids=["n2", "no-xdist"])
def test_what_pytest_counts_of_an_attempt_run_again_is_counted(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], xdist: list[str]
) -> None:
    """An attempt whose call passed (or skipped) and whose teardown failed is run again:
    pytest counts its call as ``passed`` (``skipped``) as well as its teardown as a rerun,
    so ``4 passed, 2 skipped, 3 rerun`` for 4 tests; the monitor's counts say the same."""
    pytester.makepyfile(test_attempts=PASSES_IN_ATTEMPTS)
    result = pytester.runpytest_subprocess(
        *xdist, "-p", "rerunfailures", "--reruns", "1", "--monitor"
    )
    output = result.stdout.str()
    expected = line_counts(output)
    assert expected == {"passed": 4, "skipped": 2, "rerun": 3}

    recorded = only_run(pytester)
    state = recorded.state
    assert state.tests_done == 4
    assert {k: n for k, n in state.counts.items() if n} == expected
    assert recorded.of(ev.RunFinished)[0].counts == expected
    summary = next(line for line in output.splitlines() if line.startswith("run "))
    assert "(4 passed, 3 rerun, 2 skipped)" in summary
    by_name = {t.nodeid.split("::")[-1]: t for t in recorded.of(ev.TestFinished)}
    teardown = by_name["test_teardown_fails_once"]
    assert (teardown.outcome, teardown.reruns, teardown.rerun_when) == ("passed", 1, "teardown")
    assert teardown.rerun_counts == {"passed": 1}
    assert by_name["test_skips_teardown_fails_once"].rerun_counts == {"skipped": 1}
    assert by_name["test_call_fails_once"].rerun_counts is None  # its call failed: a rerun alone
    assert b"rerun_counts" not in ev.encode(by_name["test_plain"])

    capsys.readouterr()  # (what pytester echoed of the run)
    assert cli.main(["report", str(recorded.path), "--format", "json"]) == 0
    totals = json.loads(capsys.readouterr().out)["totals"]
    assert {k: n for k, n in totals["counts"].items() if n} == expected
    assert totals["summary"] == "4 passed, 2 skipped, 3 rerun"


def test_what_an_attempt_counted_is_read_only_as_pytest_categories() -> None:
    """A log's ``rerun_counts`` is counted for pytest's categories and positive numbers only
    (the fold never trusts a log); a record without reruns counts none of it."""
    from testmon_live.plugin.state import RunState

    state = RunState()
    state.apply(
        ev.TestFinished(
            w="gw0", ts=2.0, nodeid="t.py::test_a", outcome="passed", reruns=1,
            phases=[ev.Phase("call", 1.0, 0.1, "passed")],
            rerun_counts={"passed": 1, "skipped": -4, "everything": 7},
        )
    )  # fmt: skip
    state.apply(
        ev.TestFinished(
            w="gw0", ts=3.0, nodeid="t.py::test_b", outcome="passed",
            phases=[ev.Phase("call", 2.0, 0.1, "passed")], rerun_counts={"passed": 5},
        )
    )  # fmt: skip
    assert {k: n for k, n in state.counts.items() if n} == {"passed": 3, "rerun": 1}


HANGS = """
import pathlib
import time

{FIRST_TIME}

def test_waits_out_the_delay():
    assert not first_time("delay")


def test_hangs_in_its_call():
    time.sleep(3)
""".replace("{FIRST_TIME}", FIRST_TIME)


@needs_rerunfailures
def test_a_rerun_run_tells_the_phase_a_test_hangs_in_and_no_stall_of_the_delay(
    pytester: pytest.Pytester,
) -> None:
    """pytest-rerunfailures reports an attempt's phases only after its teardown and then
    sleeps ``--reruns-delay``: the hang in a call is still said to be in the call (it was
    "setup" for the whole attempt), and the delay is no stall."""
    pytester.makepyfile(test_hangs=HANGS)
    result = pytester.runpytest_subprocess(
        "-p", "no:xdist", "-p", "rerunfailures", "--reruns", "1", "--reruns-delay", "3",
        "--monitor", "--monitor-stall", "1",
    )  # fmt: skip
    assert line_counts(result.stdout.str()) == {"passed": 2, "rerun": 1}
    stalls = [e for e in only_run(pytester).events if isinstance(e, ev.Stall)]
    assert [(e.test.split("::")[-1] if e.test else None, e.phase) for e in stalls] == [
        ("test_hangs_in_its_call", "call")
    ]
