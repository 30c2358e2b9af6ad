"""Subtests (pytest 9's ``subtests`` fixture, pytest-subtests before it) are counted as pytest
counts them: ``5 subtests passed`` beside the tests, a failed subtest as a failure (pytest 9
also fails the test around it; pytest-subtests does not); never as tests of their own, and
their time is not added twice. The monitor's counts are checked against pytest's own final
line, whichever of the two provides the fixture."""

from __future__ import annotations

import importlib.util

import pytest

from testmon_live.plugin import events as ev

from .conftest import line_counts, only_run

SUITE = """
def test_all_pass(subtests):
    for i in range(3):
        with subtests.test(msg="ok", i=i):
            assert True

def test_one_fails(subtests):
    for i in range(3):
        with subtests.test(msg="f", i=i):
            assert i != 1, "subtest one broke"

def test_plain():
    pass
"""


BUILT_IN = importlib.util.find_spec("_pytest.subtests") is not None
"""pytest 9 and later have the fixture; before, the pytest-subtests plugin gives it."""

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(
        not BUILT_IN and importlib.util.find_spec("pytest_subtests") is None,
        reason="no subtests fixture: pytest < 9 without pytest-subtests",
    ),
]


@pytest.mark.parametrize("xdist", [["-n", "2"], ["-p", "no:xdist"]], ids=["n2", "no-xdist"])
def test_subtests_are_counted_as_pytest_counts_them(
    pytester: pytest.Pytester, xdist: list[str]
) -> None:
    pytester.makepyfile(test_sub=SUITE)
    result = pytester.runpytest_subprocess(*xdist, "--monitor")
    output = result.stdout.str()
    counts = line_counts(output)
    # pytest 9 leaves "N subtests passed" out of its line at the default verbosity
    counts.pop("subtests passed", None)
    assert counts == ({"failed": 2, "passed": 2} if BUILT_IN else {"failed": 1, "passed": 3})

    recorded = only_run(pytester)
    state = recorded.state
    assert state.tests_done == 3
    assert {k: n for k, n in state.counts.items() if n} == {**counts, "subtests passed": 5}
    tests = {t.nodeid.split("::")[-1]: t for t in recorded.of(ev.TestFinished)}
    assert tests["test_one_fails"].outcome == "failed"
    assert tests["test_one_fails"].message is not None
    assert "subtest one broke" in tests["test_one_fails"].message
    assert tests["test_all_pass"].outcome == "passed"
    assert tests["test_all_pass"].subtests == {"passed": 3}
    assert [p.when for p in tests["test_all_pass"].phases] == ["setup", "call", "teardown"]
    # the summary says what pytest says
    said = ", ".join(f"{n} {k}" for k, n in sorted({**counts, "subtests passed": 5}.items()))
    assert f"({said})" in output
