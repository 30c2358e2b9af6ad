"""What a recorded run's log holds, through real pytest sessions with and without xdist."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import GITIGNORE_TEXT, new_run_id
from testmon_live.plugin.session import LOCAL_WORKER
from testmon_live.plugin.settings import HELP_MONITOR
from testmon_live.plugin.summary import COLLECTION_ERROR
from testmon_live.tui import cli

from .conftest import line_counts, only_run, read_recorded, run_logs

XDIST = pytest.param(["-n", "2"], id="xdist")
SINGLE = pytest.param(["-p", "no:xdist"], id="single")

SUITE = {
    "conftest.py": """
import time
import pytest

@pytest.fixture(scope="session")
def warehouse():
    time.sleep(0.05)
    yield "w"
    time.sleep(0.02)

@pytest.fixture(scope="module")
def shelf(warehouse):
    yield "s"

@pytest.fixture
def box(shelf):
    return "b"

@pytest.fixture
def lid():
    yield "l"
    time.sleep(0.01)
""",
    "test_one.py": """
import pytest

def test_a(box, lid): pass
def test_b(warehouse): pass
@pytest.mark.parametrize("n", range(6))
def test_param(n, box): pass
""",
    "test_two.py": """
import pytest

class TestThings:
    @pytest.fixture(scope="class")
    def crate(self):
        return 1

    def test_c(self, crate, box): pass
    def test_d(self, crate): pass

def test_e(): pass
""",
}


def worker_of_each_test(stdout: str, xdist: bool) -> dict[str, str]:
    """pytest's own -v output says which worker ran each test."""
    found: dict[str, str] = {}
    if xdist:
        for match in re.finditer(r"\[(gw\d+)\] \[\s*\d+%\] \w+ (\S+)", stdout):
            found[match.group(2)] = match.group(1)
    else:
        for match in re.finditer(r"^(\S+::\S+) \w+", stdout, re.M):
            found[match.group(1)] = LOCAL_WORKER
    return found


@pytest.mark.compat
@pytest.mark.parametrize("mode", [XDIST, SINGLE])
def test_every_test_recorded_once_with_its_phases_on_its_worker(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    pytester.makepyfile(**SUITE)
    result = pytester.runpytest_subprocess("--monitor", "-v", "-p", "no:randomly", *mode)
    result.assert_outcomes(passed=11)
    ran_on = worker_of_each_test(result.stdout.str(), xdist=mode[0] == "-n")
    assert len(ran_on) == 11

    run = only_run(pytester)
    assert not run.problems, list(run.problems)
    tests = run.tests_by_id()
    assert set(tests) == set(ran_on)
    for nodeid, records in tests.items():
        assert len(records) == 1, nodeid
        (record,) = records
        assert [p.when for p in record.phases] == ["setup", "call", "teardown"]
        assert record.w == ran_on[nodeid]
        assert record.outcome == "passed"
        # phases are ordered in time and add up to the test's duration
        starts = [p.start for p in record.phases]
        assert starts == sorted(starts)
        assert record.duration == pytest.approx(sum(p.dur for p in record.phases))

    # each source's sequence numbers are gapless and increasing
    by_worker: dict[str, list[int]] = {}
    for event in run.events[1:]:
        if not isinstance(event, (ev.WorkerDown, ev.WorkerCrashed, ev.RunFinished, ev.Notice)):
            by_worker.setdefault(event.w, []).append(event.seq)
    for worker, seqs in by_worker.items():
        assert seqs == list(range(1, len(seqs) + 1)), worker

    workers = set(ran_on.values())
    assert {e.w for e in run.of(ev.WorkerStarted)} >= workers
    assert {e.w for e in run.of(ev.WorkerCollected)} >= workers
    assert all(c.count == 11 for c in run.of(ev.WorkerCollected))
    assert {e.w for e in run.of(ev.WorkerDown)} >= workers
    end = run.events[-1]
    assert isinstance(end, ev.RunFinished)
    assert end.exitstatus == 0
    assert end.status == "ok"
    assert end.tests == 11
    assert end.counts == {"passed": 11}


@pytest.mark.compat
@pytest.mark.parametrize("mode", [XDIST, SINGLE])
def test_fixtures_recorded_with_scope_trigger_and_teardown(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    pytester.makepyfile(**SUITE)
    # every execution recorded one by one (quick ones are counted by default: see below)
    result = pytester.runpytest_subprocess("--monitor", "--monitor-fixture-detail=0", *mode)
    result.assert_outcomes(passed=11)
    run = only_run(pytester)
    setups = run.of(ev.FixtureSetup)
    teardowns = run.of(ev.FixtureTeardown)
    # wider scopes have events of their own...
    scopes = {s.name: s.scope for s in setups}
    assert scopes == {"warehouse": "session", "shelf": "module", "crate": "class"}
    tests = {t.nodeid: t for t in run.of(ev.TestFinished)}
    workers = {t.w for t in tests.values()}
    warehouse = [s for s in setups if s.name == "warehouse"]
    # a session fixture runs once per worker that needs it
    assert sorted(s.w for s in warehouse) == sorted({s.w for s in warehouse})
    assert {s.w for s in warehouse} <= workers
    for s in warehouse:
        assert s.dur >= 0.04
        assert s.test is not None
        # set up during the setup phase of the test that triggered it, on that worker
        trigger = tests[s.test]
        assert trigger.w == s.w
        setup_phase = trigger.phases[0]
        assert setup_phase.when == "setup"
        assert setup_phase.start <= s.start
        assert s.start + s.dur <= setup_phase.start + setup_phase.dur + 1e-3
    # every execution is torn down once, after it was set up, on the same worker
    assert sorted((s.name, s.w) for s in setups) == sorted((t.name, t.w) for t in teardowns)
    for t in teardowns:
        if t.name == "warehouse":
            assert t.dur >= 0.015
            setup = next(s for s in warehouse if s.w == t.w)
            assert t.start >= setup.start + setup.dur

    # ...function-scoped fixtures ride in their test's record, within its phases
    boxes = {n: t.fixtures for n, t in tests.items() if any(f.name == "box" for f in t.fixtures)}
    assert len(boxes) == 8
    for nodeid, fixtures in boxes.items():
        (box,) = [f for f in fixtures if f.name == "box"]
        setup_phase, _call, teardown_phase = tests[nodeid].phases
        # the clocks agree within a scheduler's pause (see the teardown check below)
        assert (
            setup_phase.start - 1e-3
            <= box.setup_start
            <= setup_phase.start + setup_phase.dur + 1e-3
        )
        # no teardown code of its own: nothing to time at teardown (no finalizer of ours)
        assert (box.teardown_start, box.teardown_dur) == (0.0, 0.0)
        assert box.baseid == ""
    # one with teardown code has its teardown timed, within the teardown phase
    (lid,) = [f for f in tests["test_one.py::test_a"].fixtures if f.name == "lid"]
    setup_phase, _call, teardown_phase = tests["test_one.py::test_a"].phases
    assert teardown_phase.start <= lid.teardown_start
    # pytest times phases with time.time(), the monitor with perf_counter: they agree
    # to the offset taken as the test starts, within a scheduler's pause
    assert lid.teardown_start + lid.teardown_dur <= teardown_phase.start + teardown_phase.dur + 1e-3
    assert lid.teardown_dur >= 0.009
    assert all(f.name != "n" for t in tests.values() for f in t.fixtures)  # parametrize args

    state = run.state
    stats = next(f for f in state.fixtures.values() if f.name == "warehouse")
    assert stats.count == len(warehouse)
    assert stats.duplicated == (len(warehouse) > 1)
    box_stats = next(f for f in state.fixtures.values() if f.name == "box")
    assert (box_stats.scope, box_stats.count) == ("function", 8)
    assert box_stats.workers == {t.w for n, t in tests.items() if n in boxes}


@pytest.mark.parametrize("mode", [XDIST, SINGLE])
def test_function_fixture_teardowns_each_get_their_own_time(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    # Timed without finalizers of their own: one ends where pytest says the one before it
    # was done. Distinct sleeps: times given to the wrong fixture fail the lower bounds.
    pytester.makepyfile(
        test_x="""
import time
import pytest

@pytest.fixture
def outer():
    yield
    time.sleep(0.06)

@pytest.fixture
def middle(outer):
    return 1

@pytest.fixture
def inner(middle):
    yield
    time.sleep(0.02)

def test_nested(inner): pass

def test_dynamic(outer, request):
    request.getfixturevalue("inner")

@pytest.fixture
def fails_to_tear_down():
    yield
    time.sleep(0.03)
    raise RuntimeError("teardown broke")

def test_teardown_error(outer, fails_to_tear_down): pass
"""
    )
    result = pytester.runpytest_subprocess(
        "--monitor", "--monitor-fixture-detail=0", "-p", "no:randomly", *mode
    )
    result.assert_outcomes(passed=3, errors=1)
    tests = {t.nodeid.split("::")[-1]: t for t in only_run(pytester).of(ev.TestFinished)}
    for name in ("test_nested", "test_dynamic", "test_teardown_error"):
        runs = {f.name: f for f in tests[name].fixtures}
        teardown_phase = tests[name].phases[-1]
        assert teardown_phase.when == "teardown"
        slept = {"outer": 0.06, "inner": 0.02, "fails_to_tear_down": 0.03}
        if "middle" in runs:  # no teardown code: nothing timed at teardown
            assert (runs["middle"].teardown_start, runs["middle"].teardown_dur) == (0.0, 0.0)
            del runs["middle"]
        for fixture, run in runs.items():
            assert run.teardown_dur >= slept[fixture], (name, fixture)
            assert teardown_phase.start <= run.teardown_start
            end = run.teardown_start + run.teardown_dur
            assert end <= teardown_phase.start + teardown_phase.dur + 1e-3
        # torn down in reverse order of setup, one after the other
        ordered = sorted(runs.values(), key=lambda r: r.setup_start, reverse=True)
        for later, earlier in itertools.pairwise(ordered):
            assert later.teardown_start + later.teardown_dur <= earlier.teardown_start + 1e-6
    assert {"outer", "middle", "inner"} <= {f.name for f in tests["test_dynamic"].fixtures}


FIXTURE_PATHS = """
import time
import pytest

@pytest.fixture
def quick():
    return 1

@pytest.fixture
def slow():
    time.sleep(0.03)
    return 2

@pytest.fixture
def two_finalizers(request):
    request.addfinalizer(lambda: time.sleep(0.01))
    request.addfinalizer(lambda: time.sleep(0.01))
    return 3

@pytest.fixture
def breaks_down():
    yield
    raise RuntimeError("teardown broke")

@pytest.mark.parametrize("n", range(30))
def test_quick(n, quick): pass

def test_slow(slow, quick): pass

def test_two(two_finalizers): pass

def test_breaks(breaks_down): pass
"""

A_PLAIN_SETUP = """
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    if fixturedef.argname == "quick":  # answers for pytest: no fixture function called
        fixturedef.cached_result = (7, fixturedef.cache_key(request), None)
        return 7
    return None
"""


@pytest.mark.parametrize("mode", [XDIST, SINGLE])
@pytest.mark.parametrize("plain_setup", [False, True], ids=["swapped", "wrapper"])
def test_fixtures_without_teardown_code_are_counted_and_timed(
    pytester: pytest.Pytester, mode: list[str], plain_setup: bool
) -> None:
    # pytest's own setup is timed in its place; a conftest with a setup of its own that
    # could answer instead makes the monitor fall back to a hook wrapper around them all.
    # Either way: a fixture without teardown code is in every test's record, with its
    # setup time and no teardown; one with teardown code has its teardown timed.
    pytester.makepyfile(test_x=FIXTURE_PATHS)
    if plain_setup:
        pytester.makeconftest(A_PLAIN_SETUP)
    result = pytester.runpytest_subprocess(
        "--monitor", "--monitor-fixture-detail=0", "-p", "no:randomly", *mode
    )
    result.assert_outcomes(passed=33, errors=1)
    assert "lifecycle.py" not in result.stdout.str()  # our frames hidden in tracebacks
    run = only_run(pytester)
    tests = {t.nodeid.split("::")[-1]: t for t in run.of(ev.TestFinished)}
    quick = [f for t in tests.values() for f in t.fixtures if f.name == "quick"]
    assert len(quick) == 31
    assert all((f.teardown_start, f.teardown_dur) == (0.0, 0.0) for f in quick)
    stats = {f.name: f for f in run.state.fixtures.values()}
    assert (stats["quick"].scope, stats["quick"].count) == ("function", 31)
    (slow,) = tests["test_slow"].fixtures[:1]
    assert slow.name == "slow"
    assert slow.setup_dur >= 0.025
    assert (slow.teardown_start, slow.teardown_dur) == (0.0, 0.0)
    assert stats["slow"].setup_max >= 0.025
    (two,) = tests["test_two"].fixtures
    teardown_phase = tests["test_two"].phases[-1]
    assert two.teardown_dur >= 0.019
    assert teardown_phase.start <= two.teardown_start
    assert two.teardown_start + two.teardown_dur <= teardown_phase.start + teardown_phase.dur + 1e-3
    (broken,) = tests["test_breaks"].fixtures
    assert broken.teardown_start > 0.0
    assert tests["test_breaks"].outcome == "error"
    assert "teardown broke" in (tests["test_breaks"].message or "")


QUICK_AND_SLOW = """
import time
import pytest

@pytest.fixture
def quick():
    return 1

@pytest.fixture
def quick_yield():
    yield 4

@pytest.fixture
def slow():
    time.sleep(0.6)
    return 2

@pytest.fixture
def slow_teardown():
    yield
    time.sleep(0.6)

@pytest.fixture(scope="class")
def per_test():
    yield 7

def test_outside_a_class(per_test): pass

@pytest.fixture(scope="class")
def per_test_slow():
    yield 8
    time.sleep(0.6)

def test_outside_slow(per_test_slow): pass

@pytest.fixture
def breaks_down():
    yield
    raise RuntimeError("teardown broke")

@pytest.mark.parametrize("n", range(30))
def test_quick(n, quick, quick_yield): pass

def test_slow(slow, quick): pass

def test_breaks(breaks_down): pass

def test_fails(quick_yield, quick):
    assert False

class TestQuickClass:
    @pytest.fixture(scope="class")
    def crate(self):
        yield 5

    def test_c(self, crate, slow_teardown): pass
    def test_d(self, crate): pass

class TestSlowClass:
    @pytest.fixture(scope="class")
    def barrel(self):
        yield 6
        time.sleep(0.6)

    def test_e(self, barrel): pass
"""


@pytest.mark.parametrize("mode", [XDIST, SINGLE])
@pytest.mark.parametrize("plain_setup", [False, True], ids=["swapped", "wrapper"])
def test_quick_fixtures_are_counted_not_listed(
    pytester: pytest.Pytester, mode: list[str], plain_setup: bool
) -> None:
    # An execution of a function fixture (or a class fixture of a test outside a class)
    # quicker than --monitor-fixture-detail
    # (setup and teardown) that did not fail is counted per worker instead of recorded one
    # by one: the run's statistics stay exact, slow and failing executions keep their
    # records. (0.5 s here, so that a loaded machine cannot make a quick one slow.)
    pytester.makepyfile(test_x=QUICK_AND_SLOW)
    if plain_setup:
        pytester.makeconftest(A_PLAIN_SETUP)
    result = pytester.runpytest_subprocess(
        "--monitor",
        "--monitor-fixture-detail=0.5",
        "-p",
        "no:randomly",
        *mode,
        *(["--dist", "loadscope"] if mode[0] == "-n" else []),
    )
    result.assert_outcomes(passed=37, failed=1, errors=1)
    run = only_run(pytester)
    assert not run.problems, list(run.problems)
    assert {w.fixture_detail for w in run.of(ev.WorkerStarted)} == {0.5}
    assert run.state.fixture_detail == 0.5
    tests = {t.nodeid.split("::")[-1]: t for t in run.of(ev.TestFinished)}
    listed = {name: [f.name for f in t.fixtures] for name, t in tests.items()}
    # quick ones are not listed in a passing test; slow ones and broken ones are
    assert all(listed[f"test_quick[{n}]"] == [] for n in range(30))
    assert listed["test_slow"] == ["slow"]
    assert listed["test_breaks"] == ["breaks_down"]
    assert listed["test_c"] == ["slow_teardown"]
    assert listed["test_d"] == listed["test_e"] == listed["test_outside_a_class"] == []
    # a failing test keeps its quick fixtures that have teardown code (those without are
    # counted at setup, before anyone knows the test will fail)
    assert listed["test_fails"] == ["quick_yield"]
    # the counts: every execution exactly once, recorded or counted
    stats = {f.name: f for f in run.state.fixtures.values()}
    assert (stats["quick"].scope, stats["quick"].count) == ("function", 32)
    assert stats["quick_yield"].count == 31
    assert stats["slow"].count == stats["slow_teardown"].count == 1
    assert stats["slow"].setup_max >= 0.5
    assert stats["slow_teardown"].teardown_total >= 0.5
    tallied = [row for e in run.of(ev.FixtureTotals) for row in e.fixtures]
    assert sum(r.count for r in tallied if r.name == "quick") == 32
    assert sum(r.count for r in tallied if r.name == "quick_yield") == 30
    assert all(0.0 <= r.setup_max < 0.5 for r in tallied)
    assert all(r.setup_total <= r.count * r.setup_max + 1e-12 for r in tallied)
    assert {e.w for e in run.of(ev.FixtureTotals)} <= {t.w for t in tests.values()}
    # a class fixture set up for a test outside a class lives within that test: counted
    # when quick, no events; one of a real class has its events, quick or slow (where
    # classes begin is what `testmon whatif` reads), sent as they happen
    setups = {e.name: e for e in run.of(ev.FixtureSetup)}
    teardowns = {e.name: e for e in run.of(ev.FixtureTeardown)}
    assert (stats["per_test"].scope, stats["per_test"].count) == ("class", 1)
    assert "per_test" not in setups
    assert "per_test" not in teardowns
    assert [r.count for r in tallied if r.name == "per_test"] == [1]
    # ... and when slow, both its events, in its test
    setup, teardown = setups["per_test_slow"], teardowns["per_test_slow"]
    slow_test = tests["test_outside_slow"]
    assert (setup.scope, setup.test, teardown.test) == ("class", slow_test.nodeid, slow_test.nodeid)
    assert setup.start + setup.dur <= teardown.start
    assert teardown.dur >= 0.5
    assert (stats["per_test_slow"].count, listed["test_outside_slow"]) == (1, [])
    assert not [r for r in tallied if r.name == "per_test_slow"]
    assert tests["test_c"].w == tests["test_d"].w
    assert (stats["crate"].scope, stats["crate"].count) == ("class", 1)
    assert not [r for r in tallied if r.name == "crate"]
    setup, teardown = setups["barrel"], teardowns["barrel"]
    assert (setup.scope, setup.test, setup.w) == ("class", tests["test_e"].nodeid, teardown.w)
    assert setup.start + setup.dur <= teardown.start
    assert teardown.dur >= 0.5
    assert stats["barrel"].count == 1
    assert stats["barrel"].teardown_total >= 0.5
    # sent as they happen: a class's setup before its first test's record, its teardown
    # (in its last test's teardown) after it (loadscope: the class runs on one worker)
    (crate_setup,) = [e for e in run.of(ev.FixtureSetup) if e.name == "crate"]
    order = [e for e in run.events if e.w == crate_setup.w]
    first = next(t for t in order if isinstance(t, ev.TestFinished) and t.nodeid.endswith("test_c"))
    assert order.index(crate_setup) < order.index(first) < order.index(teardowns["crate"])


def test_a_class_fixture_of_a_class_whose_node_ids_were_rewritten_keeps_its_events(
    pytester: pytest.Pytester,
) -> None:
    # Whether pytest made the test itself a class fixture's scope is asked of pytest, not
    # read from the node id: a plugin that rewrites ids (one "::" left) must not turn a real
    # class's fixture into one held within its test.
    pytester.makeconftest(
        """
def pytest_collection_modifyitems(items):
    for item in items:
        item._nodeid = item.nodeid.replace("::TestK::", "::TestK.")
"""
    )
    pytester.makepyfile(
        test_a="""
import pytest

class TestK:
    @pytest.fixture(scope="class")
    def crate(self):
        yield 1

    def test_1(self, crate): pass
    def test_2(self, crate): pass
"""
    )
    result = pytester.runpytest_subprocess("--monitor", "-p", "no:xdist")
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    (setup,) = [e for e in run.of(ev.FixtureSetup) if e.name == "crate"]
    assert (setup.scope, setup.test) == ("class", "test_a.py::TestK.test_1")
    assert [e.name for e in run.of(ev.FixtureTeardown)] == ["crate"]
    (stats,) = [f for f in run.state.fixtures.values() if f.name == "crate"]
    assert stats.count == 1


def test_quick_fixture_threshold_default_and_bad_values(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_a(monkeypatch): pass\n")
    result = pytester.runpytest_subprocess("--monitor", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    (started,) = only_run(pytester).of(ev.WorkerStarted)
    assert started.fixture_detail == 0.001
    result = pytester.runpytest_subprocess("--monitor", "--monitor-fixture-detail=soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--monitor-fixture-detail: 'soon' is not a number of seconds*"])


def test_a_fixture_that_skips_is_not_an_error_one_that_raises_is(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_x="""
import pytest

@pytest.fixture(scope="session")
def engine():
    pytest.skip("no container engine")

@pytest.fixture(scope="session")
def broken():
    raise RuntimeError("cannot connect")

def test_a(engine): pass
def test_b(broken): pass
def test_c(broken): pass
"""
    )
    result = pytester.runpytest_subprocess("--monitor", "-n", "2")
    result.assert_outcomes(skipped=1, errors=2)
    result.stdout.fnmatch_lines(["run *: 3 tests on 2 workers in * (2 errors, 1 skipped)*"])
    errors = {s.name: s.error for s in only_run(pytester).of(ev.FixtureSetup)}
    assert errors == {"engine": None, "broken": "RuntimeError: cannot connect"}


@pytest.mark.compat
@pytest.mark.parametrize("mode", [XDIST, SINGLE])
def test_heartbeats_name_the_running_test(pytester: pytest.Pytester, mode: list[str]) -> None:
    pytester.makepyfile(
        test_slow="""
import time
def test_slow():
    time.sleep(2.6)
def test_quick(): pass
"""
    )
    result = pytester.runpytest_subprocess("--monitor", *mode)
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    slow = run.tests_by_id()["test_slow.py::test_slow"][0]
    beats = [h for h in run.of(ev.Heartbeat) if h.w == slow.w and h.test == slow.nodeid]
    assert len(beats) >= 2
    for beat in beats:
        assert beat.phase == "call"
        assert beat.rss > 10_000_000
        assert beat.cpu > 0
        assert beat.threads >= 3  # main, sender, watchdog
        assert 0 <= beat.elapsed <= 2.7
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(beats)]
    assert all(0.8 < g < 1.5 for g in gaps), gaps
    # the live activity named the test and its phase while it ran
    assert any(
        a.test == slow.nodeid and a.phase == "call" for a in run.of(ev.Activity) if a.w == slow.w
    )


def test_header_says_where_what_and_how(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    subprocess.run(["git", "init", "-q", str(pytester.path)], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(pytester.path),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    commit = subprocess.run(
        ["git", "-C", str(pytester.path), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "--dist", "loadfile")
    result.assert_outcomes(passed=1)
    run = only_run(pytester)
    header = run.header
    assert header.schema == ev.SCHEMA_VERSION
    assert run.path.name == f"{header.run_id}.jsonl"
    assert header.rootdir == str(pytester.path)
    assert header.workers == 2
    assert header.dist == "loadfile"
    assert header.tx == ["popen", "popen"]
    assert header.git_commit == commit
    assert "pytest" in header.plugins
    assert "pytest-xdist" in header.plugins
    assert header.python == ".".join(map(str, sys.version_info[:3]))
    assert "--monitor" in header.args
    assert header.stall_after == 30.0
    started = {e.w: e for e in run.of(ev.WorkerStarted)}
    assert set(started) == {"gw0", "gw1"}
    assert all(s.spec == "popen" and not s.remote and s.pid > 0 for s in started.values())


def test_summary_names_the_run_and_how_to_open_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass\ndef test_y(): assert 0")
    result = pytester.runpytest_subprocess("--monitor", "-n", "2")
    run = only_run(pytester)
    result.stdout.fnmatch_lines(
        [
            "*- testmon-live -*",
            f"run {run.header.run_id}: 2 tests on 2 workers in *",
            f"log: *{run.path.name}",
            f"open: testmon tui {run.header.run_id}",
        ]
    )
    assert result.ret == 1


BROKEN_MODULES = {
    "test_ok": "def test_a(): pass\ndef test_b(): pass\n",
    "test_broken": "import no_such_module_of_testmon\n\ndef test_c(): pass\n",
    "test_raises": 'raise RuntimeError("this module cannot load")\n',
    "test_skipped": 'import pytest\npytest.skip("not here", allow_module_level=True)\n',
}
"""Modules that fail to collect: an import error (xdist reports its text, the same on every
worker, once), another exception (its report, an object, once per worker) and one that
skips itself; pytest counts each as an error or a skip, and no test of theirs runs."""


def summary_counts_said(summary: str, counts: dict[str, int]) -> bool:
    """Does the monitor's summary line say each of pytest's counts (``3 errors``)?"""
    words = {"error": "errors"}
    return all(
        f"{n} {words.get(category, category) if n != 1 else category}" in summary
        for category, n in counts.items()
    )


def pytest_errors(output: str) -> Counter[str]:
    """The collectors pytest's short summary lists as errors (``ERROR test_x.py - ...``),
    each as often as it counts it."""
    return Counter(
        line.split()[1] for line in output.splitlines() if re.match(r"ERROR \S+\.py\b", line)
    )


@pytest.mark.compat
@pytest.mark.parametrize("mode", [XDIST, SINGLE])
def test_collection_errors_are_counted_as_pytest_counts_them(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], mode: list[str]
) -> None:
    """A module that fails to collect is one of pytest's errors (under xdist as often as
    xdist reports it), one that skips itself a skip: the summary, the end record and the
    report count them as pytest's final line does and name the modules. Without xdist
    pytest stops after collecting ("Interrupted: 2 errors during collection")."""
    pytester.makepyfile(**BROKEN_MODULES)
    result = pytester.runpytest_subprocess("--monitor", "-ra", *mode)
    output = result.stdout.str()
    expected = line_counts(output)
    assert expected["error"] >= 2
    assert expected["skipped"] == 1
    if mode == SINGLE.values[0]:
        assert "Interrupted: 2 errors during collection" in output
        assert "passed" not in expected
    else:
        assert expected["passed"] == 2

    run = only_run(pytester)
    state = run.state
    assert {k: n for k, n in state.counts.items() if n} == expected
    end = run.events[-1]
    assert isinstance(end, ev.RunFinished)
    assert end.counts == expected
    # the modules pytest names, each as often
    assert Counter(e.nodeid for e in state.collection_errors) == pytest_errors(output)
    said = {e.nodeid: e.message for e in state.collection_errors}
    assert said == {
        "test_broken.py": "ModuleNotFoundError: No module named 'no_such_module_of_testmon'",
        "test_raises.py": "RuntimeError: this module cannot load",
    }

    lines = output.splitlines()
    summary = next(line for line in lines if line.startswith("run "))
    assert summary_counts_said(summary, expected), summary
    assert (
        f"{COLLECTION_ERROR}: test_broken.py: ModuleNotFoundError: "
        "No module named 'no_such_module_of_testmon'"
    ) in lines
    assert f"{COLLECTION_ERROR}: test_raises.py: RuntimeError: this module cannot load" in lines

    capsys.readouterr()  # (what pytester echoed of the run)
    assert cli.main(["report", str(run.path), "--format", "json"]) == 0
    model = json.loads(capsys.readouterr().out)
    assert {k: n for k, n in model["totals"]["counts"].items() if n} == expected
    assert [(r["nodeid"], r["message"]) for r in model["collection_errors"]] == [
        (e.nodeid, e.message) for e in state.collection_errors
    ]
    assert cli.main(["report", str(run.path)]) == 0
    text = capsys.readouterr().out
    assert f"Collection errors ({expected['error']})" in text
    assert "No module named 'no_such_module_of_testmon'" in text


@pytest.mark.compat
def test_a_module_failing_to_collect_on_one_worker_only_is_counted_as_pytest_counts_it(
    pytester: pytest.Pytester,
) -> None:
    """A module that fails on one worker alone: its error, and xdist's own that the workers
    collected different tests (no test runs then), named by a worker's id."""
    pytester.makepyfile(
        test_ok="def test_a(): pass\n",
        test_gw1="""
import os

if os.environ.get("PYTEST_XDIST_WORKER") == "gw1":
    raise RuntimeError("only on gw1")

def test_b(): pass
""",
    )
    result = pytester.runpytest_subprocess("--monitor", "-n", "2")
    output = result.stdout.str()
    expected = line_counts(output)
    assert expected == {"error": 2}

    state = only_run(pytester).state
    assert {k: n for k, n in state.counts.items() if n} == expected
    said = {e.nodeid: e.message for e in state.collection_errors}
    assert said.pop("test_gw1.py") == "RuntimeError: only on gw1"
    ((worker, message),) = said.items()
    assert worker in ("gw0", "gw1")
    assert message is not None
    assert message.startswith("Different tests were collected between")
    assert f"{COLLECTION_ERROR}: test_gw1.py: RuntimeError: only on gw1" in output.splitlines()


def test_a_logs_collect_reports_count_only_as_pytest_categories() -> None:
    """The fold never trusts a log: a collect report of any other outcome counts nothing."""
    from testmon_live.plugin.state import RunState

    state = RunState().apply_all(
        ev.CollectionReport(nodeid=f"test_{outcome}.py", outcome=outcome, message="m")
        for outcome in ("error", "skipped", "failed", "")
    )
    assert {k: n for k, n in state.counts.items() if n} == {"error": 1, "skipped": 1}
    assert [e.nodeid for e in state.collection_errors] == ["test_error.py"]


def test_summary_warns_of_costly_per_worker_fixtures_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
import time
import pytest

@pytest.fixture(scope="session")
def cheap():
    return 1

@pytest.fixture(scope="session")
def costly():
    time.sleep(0.1)

def test_x(cheap, costly): pass
"""
    )
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "--dist", "each")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "session fixture 'costly' set up 2x on 2 workers" in out
    assert "'cheap'" not in out  # pytest's own (tmp_path_factory...) likewise
    assert "fixture 'tmp_path_factory'" not in out


def test_monitor_dir_gets_a_gitignore_and_old_runs_are_pruned(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    for _ in range(3):
        pytester.runpytest_subprocess("--monitor", "--monitor-keep", "2").assert_outcomes(passed=1)
    assert (pytester.path / ".testmon" / ".gitignore").read_text() == GITIGNORE_TEXT
    assert len(run_logs(pytester.path)) == 2
    assert list((pytester.path / ".testmon" / "live").iterdir()) == []


def test_ini_options_and_monitor_dir(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
[pytest]
monitor = true
monitor_dir = recordings
monitor_keep = 0
monitor_stall = 7.5
"""
    )
    pytester.makepyfile(test_x="def test_x(): pass")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=1)
    logs = sorted((pytester.path / "recordings" / "runs").iterdir())
    assert len(logs) == 2
    assert read_recorded(logs[0]).header.stall_after == 7.5
    # --no-monitor wins over the ini file
    pytester.runpytest_subprocess("--no-monitor").assert_outcomes(passed=1)
    assert len(list((pytester.path / "recordings" / "runs").iterdir())) == 2
    assert not (pytester.path / ".testmon").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--monitor-keep", "many"], "--monitor-keep: 'many' is not a whole number"),
        (["--monitor-stall", "-1"], "--monitor-stall: '-1' must be 0.0 or more"),
        (["--monitor-stall", "nan"], "--monitor-stall: 'nan' is not a finite number"),
        (["--monitor-stall", "inf"], "--monitor-stall: 'inf' is not a finite number"),
        (["--monitor-listen", "localhost"], "--monitor-listen: 'localhost' is not HOST:PORT*"),
        (["-o", "monitor_notices=perhaps"], "ini option monitor_notices: invalid truth value*"),
    ],
)
def test_bad_option_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("--monitor", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])
    assert "Traceback" not in result.stderr.str()


def test_a_bad_monitor_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """pytest 8 raises a bare ValueError for a bool ini value it cannot read: the plugin
    reads it at configure, where that was an INTERNALERROR."""
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("-o", "monitor=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option monitor: invalid truth value 'maybe' (give*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_help_explains_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    out = result.stdout.str()
    for flag in (
        "--monitor ",
        "--no-monitor",
        "--monitor-dir",
        "--monitor-keep",
        "--monitor-stall",
        "--monitor-listen",
    ):
        assert flag in out
    for ini in ("monitor (bool)", "monitor_dir", "monitor_keep", "monitor_stall", "monitor_listen"):
        assert ini in out
    assert " ".join(HELP_MONITOR.split()[:4]) in " ".join(out.split())


def test_without_monitor_nothing_is_recorded_or_registered(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
def pytest_sessionfinish(session):
    names = [n for n, _ in session.config.pluginmanager.list_name_plugin() if n]
    print("PLUGINS=" + ",".join(sorted(n for n in names if "testmon" in n)))
"""
    )
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("-s", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*PLUGINS=testmon_live"])
    assert not (pytester.path / ".testmon").exists()


@pytest.mark.compat
def test_plugin_import_is_light() -> None:
    """Loaded into every pytest process: no Textual, no Rich, no TUI, not even msgspec."""
    code = (
        "import sys, json; import testmon_live.plugin.pytest_plugin; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(json.loads(out.stdout))
    assert "testmon_live.plugin.pytest_plugin" in modules
    for heavy in ("textual", "rich", "msgspec", "testmon_live.tui", "testmon_live.plugin.hub"):
        assert heavy not in modules, heavy


@pytest.mark.parametrize("dist", ["load", "loadscope", "loadfile", "worksteal", "loadgroup"])
def test_every_dist_mode_records_every_test_once(pytester: pytest.Pytester, dist: str) -> None:
    pytester.makepyfile(**SUITE)
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "--dist", dist)
    result.assert_outcomes(passed=11)
    run = only_run(pytester)
    assert run.header.dist == dist
    tests = run.tests_by_id()
    assert len(tests) == 11
    assert all(len(records) == 1 for records in tests.values())


def test_dist_each_records_every_test_on_every_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass\ndef test_y(): pass")
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "--dist", "each")
    result.assert_outcomes(passed=4)
    run = only_run(pytester)
    tests = run.tests_by_id()
    assert {n: sorted(t.w for t in ts) for n, ts in tests.items()} == {
        "test_x.py::test_x": ["gw0", "gw1"],
        "test_x.py::test_y": ["gw0", "gw1"],
    }
    assert run.state.counts["passed"] == 4


def test_run_ids_sort_in_start_order_within_one_second() -> None:
    """``latest`` and the runs list sort by id: runs a few ms apart must not swap."""
    base = 1_800_000_000.0
    starts = [base + 0.001, base + 0.120, base + 0.121, base + 0.999, base + 1.0]
    for _ in range(20):  # the random byte must never beat the clock
        ids = [new_run_id(t) for t in starts]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("mode", [XDIST, SINGLE])
def test_collect_only_counts_what_its_line_counts(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    """``--collect-only`` says ``2 tests collected, 2 errors``: a module that skipped
    itself is no count of that line, so not of the monitor's either."""
    pytester.makepyfile(**BROKEN_MODULES)
    result = pytester.runpytest_subprocess("--monitor", "--collect-only", *mode)
    output = result.stdout.str()
    assert re.search(r"\d+ errors? in", output), output
    errors = int(re.findall(r"(\d+) errors? in", output)[-1])
    state = only_run(pytester).state
    assert {k: n for k, n in state.counts.items() if n} == {"error": errors}


def test_the_slowest_test_slow_by_its_setup_says_so(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """The test that set up a slow session fixture (pytest-django's test database) is the
    slowest by that setup: the summary and the report's Slowest tests say how much of it was
    setup (the django-reversion trial read a 12.8 s test that spent 12.5 s in setup)."""
    pytester.makepyfile(
        test_slow_setup="""
        import time
        import pytest

        @pytest.fixture(scope="session")
        def database():
            time.sleep(0.5)

        def test_first(database):
            pass

        def test_second(database):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--monitor", "-p", "no:xdist")
    result.assert_outcomes(passed=2)
    line = next(x for x in result.stdout.str().splitlines() if x.startswith("slowest: "))
    assert re.fullmatch(
        r"slowest: test_slow_setup.py::test_first \S+ \(main, \S+ of it setup\)", line
    ), line
    run = only_run(pytester)
    capsys.readouterr()
    assert cli.main(["report", str(run.path)]) == 0
    text = capsys.readouterr().out
    header = next(x for x in text.splitlines() if x.strip().startswith("duration"))
    assert header.split()[:3] == ["duration", "setup", "call"]
