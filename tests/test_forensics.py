"""Forensics from recordings: suspects, bisect, diff, exports — on real recorded runs."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from testmon_live.plugin import events as ev
from testmon_live.tui.cli import main
from testmon_live.tui.testing import sample_runs

from .conftest import only_run, run_logs

POLLUTED = """
import pytest

STATE = {}

@pytest.mark.parametrize("n", range(N))
def test_step(n):
    if n == CULPRIT:
        STATE["dirty"] = True

def test_victim():
    assert not STATE.get("dirty"), "polluted by an earlier test"
"""


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what the recorded runs printed
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def replay_command(command: str, root: Path) -> subprocess.CompletedProcess[str]:
    """Run the shell line ``suspects`` printed (``cd ROOT && pytest ...``) with this
    environment's pytest."""
    cd, _, line = command.partition(" && ")
    assert shlex.split(cd) == ["cd", str(root)]
    argv = shlex.split(line)
    assert argv[0] == "pytest"
    return subprocess.run(
        [sys.executable, "-m", "pytest", *argv[1:]],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
    )


def record(pytester: pytest.Pytester, *args: str) -> None:
    pytester.runpytest_subprocess("--monitor", "--monitor-keep=0", *args)


@pytest.fixture
def polluted(pytester: pytest.Pytester) -> tuple[int, int]:
    """A suite where test_step[culprit] pollutes test_victim, recorded on one worker."""
    n, culprit = 23, 16
    pytester.makepyfile(test_pol=POLLUTED.replace("CULPRIT", str(culprit)).replace("N", str(n)))
    pytester.makeini("[pytest]\n")
    # -n 1: one worker runs every test, in file order, test_victim last
    result = pytester.runpytest_subprocess("--monitor", "-n", "1")
    result.assert_outcomes(passed=n, failed=1)
    return n, culprit


def test_suspects_lists_the_worker_order_and_a_replay_command(
    pytester: pytest.Pytester, polluted: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    n, _ = polluted
    os.chdir(pytester.path)
    code, out, _ = run_cli(capsys, "suspects", "latest", "victim", "--format", "json")
    assert code == 0
    model = json.loads(out)
    assert model["test"] == "test_pol.py::test_victim"
    assert model["worker"] == "gw0"
    assert model["outcome"] == "failed"
    assert [p["nodeid"] for p in model["predecessors"]] == [
        f"test_pol.py::test_step[{i}]" for i in range(n)
    ]
    ids_file = model["ids_file"]
    ids = Path(ids_file).read_text().splitlines()
    assert ids == [*(p["nodeid"] for p in model["predecessors"]), "test_pol.py::test_victim"]
    assert "-n 0 --dist no" in model["command"]
    assert "-p no:randomly" in model["command"]
    # the printed command really replays the failure
    replay = replay_command(model["command"], pytester.path)
    assert f"{n} passed" in replay.stdout
    assert "1 failed" in replay.stdout

    code, out, _ = run_cli(capsys, "suspects", "latest", "victim")
    assert "Ran before it on gw0, in order" in out
    assert "testmon bisect" in out


def test_bisect_names_the_polluter_within_log2_plus_2_runs(
    pytester: pytest.Pytester, polluted: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    n, culprit = polluted
    os.chdir(pytester.path)
    code, out, err = run_cli(
        capsys, "bisect", "latest", "test_pol.py::test_victim", "--format", "json"
    )
    assert code == 0, out + err
    result = json.loads(out)
    assert result["verdict"] == "polluter"
    assert result["culprit"] == f"test_pol.py::test_step[{culprit}]"
    assert len(result["runs"]) <= math.ceil(math.log2(n)) + 2
    assert result["runs"][0]["outcome"] == "passed"  # alone
    assert result["runs"][1]["outcome"] == "failed"  # after all predecessors
    assert result["runs"][1]["before"] == n
    # progress was shown as it went
    assert "[1/" in err
    assert "target passed" in err


GROUPED = """
import pytest

STATE = {}

def test_free(): pass

@pytest.mark.xdist_group("db")
@pytest.mark.parametrize("n", range(5))
def test_step(n):
    if n == 3:
        STATE["dirty"] = True

@pytest.mark.xdist_group("db")
def test_victim():
    assert not STATE.get("dirty"), "polluted by an earlier test"
"""


def test_forensics_on_a_grouped_suite_whose_ini_distributes_it(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ini's addopts say `-n 2 --dist loadgroup`: node ids carry `@db`. The repro file
    holds ids pytest finds, the printed command replays the failure whatever the ini adds,
    bisect finds the polluter; a replay that cannot run shows pytest's own error."""
    pytester.makeini("[pytest]\naddopts = -n 2 --dist loadgroup -p no:randomly\n")
    pytester.makepyfile(test_grp=GROUPED)
    result = pytester.runpytest_subprocess("--monitor")
    result.assert_outcomes(passed=6, failed=1)
    os.chdir(pytester.path)
    code, out, _ = run_cli(capsys, "suspects", "latest", "victim", "--format", "json")
    assert code == 0
    model = json.loads(out)
    assert model["test"] == "test_grp.py::test_victim@db"
    ids = Path(model["ids_file"]).read_text().splitlines()
    assert ids[-1] == "test_grp.py::test_victim"
    assert not [i for i in ids if "@" in i]
    replay = replay_command(model["command"], pytester.path)
    assert "1 failed" in replay.stdout, replay.stdout + replay.stderr
    assert "unrecognized arguments" not in replay.stderr

    # into a pipe (not a terminal) the text is whole: no `…`, the full command (without
    # $COLUMNS: an xdist worker has COLUMNS=80 in its environment)
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = run_cli(capsys, "suspects", "latest", "victim")
    assert "…" not in out
    assert model["command"] in out

    code, out, err = run_cli(capsys, "bisect", "latest", "victim", "--format", "json")
    assert code == 0, out + err
    found = json.loads(out)
    assert found["verdict"] == "polluter"
    assert found["culprit"] == "test_grp.py::test_step[3]@db"

    # the target is gone from the suite: said before anything runs (the log's node ids
    # are checked against what the project collects), naming it
    (pytester.path / "test_grp.py").write_text(GROUPED.replace("def test_victim", "def test_v2"))
    code, out, err = run_cli(capsys, "bisect", "latest", "victim", "--format", "json")
    assert (code, out) == (1, "")
    assert "not tests that pytest collects" in err
    assert "test_grp.py::test_victim@db" in err


def test_bisect_reports_a_flaky_failure_as_not_reproducible(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_flaky="""
import os, pytest

@pytest.mark.parametrize("n", range(5))
def test_other(n): pass

def test_sometimes():
    # fails the first time only: a flaky failure, not pollution
    marker = os.path.join(os.path.dirname(__file__), "first-time")
    if os.path.exists(marker):
        os.remove(marker)
        raise AssertionError("random hiccup")
"""
    )
    (pytester.path / "first-time").write_text("")
    pytester.runpytest_subprocess("--monitor", "-n", "1").assert_outcomes(passed=5, failed=1)
    os.chdir(pytester.path)
    code, out, _ = run_cli(capsys, "bisect", "latest", "sometimes", "--format", "json")
    assert code == 0
    result = json.loads(out)
    assert result["verdict"] == "not-reproduced"
    assert "flaky" in result["message"]
    assert [r["outcome"] for r in result["runs"]] == ["passed", "passed"]


def test_bisect_says_when_the_test_fails_on_its_own(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_b="def test_a(): pass\ndef test_broken(): assert False\n")
    pytester.runpytest_subprocess("--monitor", "-n", "1")
    os.chdir(pytester.path)
    code, out, _ = run_cli(capsys, "bisect", "latest", "broken")
    assert code == 0
    assert "fails on its own" in out


def test_suspects_errors_are_one_clear_line(
    pytester: pytest.Pytester, polluted: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    os.chdir(pytester.path)
    code, _, err = run_cli(capsys, "suspects", "latest", "no_such_test")
    assert code == 1
    assert err.strip().startswith("testmon suspects: error: no test matching 'no_such_test'")
    code, _, err = run_cli(capsys, "suspects", "latest", "test_step")
    assert code == 1
    assert "matches 23 tests" in err
    assert "Traceback" not in err


def test_random_seed_is_recorded_and_shown(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """pytest-randomly registers as "randomly" and keeps its seed in randomly_seed: a
    stand-in with the same name and option shows what the header records."""
    pytester.makeini("[pytest]\n")
    pytester.makeconftest(
        """
import pytest

class Shuffler:
    pass

def pytest_addoption(parser):
    parser.addoption("--randomly-seed", dest="randomly_seed", default=None)

def pytest_configure(config):
    config.pluginmanager.register(Shuffler(), "randomly")
"""
    )
    pytester.makepyfile(test_r="def test_a(): pass\ndef test_b(): assert 0\n")
    pytester.runpytest_subprocess("--monitor", "--randomly-seed=4242")
    run = only_run(pytester)
    assert run.header.order_plugins == ["randomly"]
    assert run.header.seed == "4242"
    os.chdir(pytester.path)
    code, out, _ = run_cli(capsys, "suspects", "latest", "test_b")
    assert code == 0
    assert "order shuffled by randomly, seed 4242" in out


# ----------------------------------------------------------------------- diff

CHANGING = """
import os, time

def test_steady(): pass
def test_slows_down(): time.sleep(float(os.environ.get("SLOW", "0")))
def test_starts_failing(): assert os.environ.get("BREAK") != "1", "broke in run B"
def test_wobbly(): assert os.environ.get("WOBBLE") != "1"
"""


def test_diff_shows_slower_tests_new_failures_and_flaky_history(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_change=CHANGING)
    monkeypatch.setenv("WOBBLE", "1")
    record(pytester, "-n", "2")  # run 0: wobbly fails
    monkeypatch.setenv("WOBBLE", "0")
    record(pytester, "-n", "2")  # run A
    monkeypatch.setenv("SLOW", "0.6")
    monkeypatch.setenv("BREAK", "1")
    record(pytester, "-n", "2")  # run B
    logs = run_logs(pytester.path)
    assert len(logs) == 3
    os.chdir(pytester.path)
    code, out, err = run_cli(capsys, "diff", str(logs[1]), str(logs[2]), "--format", "json")
    assert code == 0, err
    model = json.loads(out)
    changed = {c["nodeid"]: c for c in model["changed"]}
    assert set(changed) == {"test_change.py::test_starts_failing"}
    broke = changed["test_change.py::test_starts_failing"]
    assert (broke["change"], broke["a"], broke["b"]) == ("new failure", "passed", "failed")
    assert broke["history"] == "PPF"
    slower = {m["nodeid"]: m for m in model["slower"]}
    assert slower["test_change.py::test_slows_down"]["delta"] == pytest.approx(0.6, abs=0.3)
    assert model["a"]["counts"] == {"passed": 4}
    assert model["b"]["counts"] == {"passed": 3, "failed": 1}
    flaky = {f["nodeid"]: f for f in model["flaky"]}
    assert flaky["test_change.py::test_wobbly"]["history"] == "FPP"
    assert "test_change.py::test_starts_failing" in flaky  # passed twice, then failed
    assert model["history_runs"] == 3

    code, out, _ = run_cli(capsys, "diff", str(logs[1]))  # against latest
    assert code == 0
    assert "Outcomes that changed" in out
    assert "new failure" in out
    assert "Slower" in out
    code, out, _ = run_cli(capsys, "diff", str(logs[1]), "--format", "markdown")
    assert "| change |" in out


def test_diff_matches_a_lock_across_pytest_temp_folders() -> None:
    """The xdist file lock recipe puts the lock in pytest's numbered temp folder, new each
    run: the diff must still see one lock whose wait moved, not two unrelated ones."""
    from testmon_live.plugin.state import RunState
    from testmon_live.tui.reports.diff import History, build_diff

    def run(run_id: str, folder: str, waited: float) -> RunState:
        key = f"/tmp/pytest-of-root/{folder}/migrations.lock"
        return RunState().apply_all(
            [
                ev.RunStarted(
                    ts=1.0, schema=ev.SCHEMA_VERSION, run_id=run_id, rootdir="/p", workers=2
                ),
                ev.LockEvent(w="gw1", ts=2.0, action="wait", kind="filelock", key=key, lock_id="x"),
                ev.LockEvent(
                    w="gw1",
                    ts=2.0 + waited,
                    action="acquired",
                    kind="filelock",
                    key=key,
                    lock_id="x",
                    waited=waited,
                ),
            ]
        )

    a, b = (
        run("20260101-000000-000aa", "pytest-61", 7.0),
        run("20260101-000100-000bb", "pytest-62", 0.5),
    )
    (lock,) = build_diff(a, b, History(runs=[], marks={}))["locks"]
    assert lock["key"] == "/tmp/pytest-of-root/pytest-N/migrations.lock"
    assert (lock["a_wait"], lock["b_wait"]) == (7.0, 0.5)


def test_diff_shows_what_ran_before_a_changed_test(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_p=POLLUTED.replace("CULPRIT", "3").replace("N", "5"))
    record(pytester, "-n", "1", "--deselect", "test_p.py::test_step[3]")  # A: polluter left out
    record(pytester, "-n", "1")  # B: it ran
    logs = run_logs(pytester.path)
    os.chdir(pytester.path)
    code, out, _ = run_cli(capsys, "diff", str(logs[0]), str(logs[1]), "--format", "json")
    assert code == 0
    (changed,) = json.loads(out)["changed"]
    assert changed["before"]["only_in_b"] == ["test_p.py::test_step[3]"]
    assert changed["before"]["only_in_a"] == []


def test_diff_of_a_run_with_itself_is_refused(
    pytester: pytest.Pytester, polluted: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    os.chdir(pytester.path)
    code, _, err = run_cli(capsys, "diff", "latest", "latest")
    assert code == 1
    assert "same run" in err


# --------------------------------------------------------------------- export


def _slices(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def check_nesting(trace: dict[str, Any]) -> None:
    """On every track, slices nest (no partial overlaps): what trace viewers require."""
    by_track: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for event in _slices(trace):
        assert event["dur"] >= 0
        by_track[(event["pid"], event["tid"])].append((event["ts"], event["ts"] + event["dur"]))
    for spans in by_track.values():
        stack: list[float] = []
        for begin, end in sorted(spans, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1] <= begin + 1e-3:
                stack.pop()
            if stack:
                assert end <= stack[-1] + 1e-3, (begin, end, stack)
            stack.append(end)


def test_perfetto_export_loads_back_with_tracks_and_nesting(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_e="""
import time, pytest

@pytest.fixture(scope="session")
def db():
    time.sleep(0.05)
    yield

@pytest.fixture
def row(db):
    time.sleep(0.002)  # slower than 1 ms: recorded one by one (quicker ones are counted)
    yield

@pytest.mark.parametrize("n", range(8))
def test_x(n, row): time.sleep(0.01)
def test_fail(): assert 0
"""
    )
    record(pytester, "-n", "2")
    os.chdir(pytester.path)
    out_file = pytester.path / "trace.json"
    code, _, err = run_cli(capsys, "export", "latest", "-o", str(out_file))
    assert code == 0
    assert "ui.perfetto.dev" in err
    trace = json.loads(out_file.read_text())
    check_nesting(trace)
    names = {
        e["args"]["name"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert {"gw0", "gw1", "gw0 locks", "gw1 containers"} <= names
    tests = [e for e in _slices(trace) if e["cat"].startswith("test,")]
    assert len(tests) == 9
    assert {e["args"]["outcome"] for e in tests} == {"passed", "failed"}
    phases = [e for e in _slices(trace) if e["cat"].startswith("phase,")]
    assert len(phases) == 27
    fixtures = [e for e in _slices(trace) if e["cat"] == "fixture"]
    assert {e["name"] for e in fixtures} == {"fixture db", "fixture row"}
    run = only_run(pytester)
    assert trace["metadata"]["run_id"] == run.header.run_id
    # timestamps are microseconds from the run's start
    assert all(0 <= e["ts"] < 60e6 for e in tests)


def test_perfetto_export_draws_locks_containers_and_stalls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = 1_800_000_000.0
    lines = [
        ev.RunStarted(
            ts=t0,
            schema=ev.SCHEMA_VERSION,
            run_id="20270115-100000-aaaa",
            rootdir=str(tmp_path),
            workers=2,
        ),
        ev.TestFinished(
            w="gw0",
            ts=t0 + 3,
            nodeid="t.py::test_a",
            outcome="passed",
            phases=[
                ev.Phase("setup", t0 + 0.1, 0.1, "passed"),
                ev.Phase("call", t0 + 0.2, 2.5, "passed"),
                ev.Phase("teardown", t0 + 2.7, 0.1, "passed"),
            ],
            duration=2.7,
        ),
        ev.LockEvent(
            w="gw0",
            ts=t0 + 1.5,
            action="acquired",
            kind="filelock",
            key="/tmp/m.lock",
            lock_id="1",
            waited=1.0,
            holder=ev.Holder(w="gw1"),
        ),
        ev.ContainerEvent(
            w="gw1", ts=t0 + 2.0, action="ready", cid="abc123", image="pg:16", dur=1.5
        ),
        ev.Stall(
            w="gw0",
            ts=t0 + 2.2,
            test="t.py::test_a",
            phase="call",
            elapsed=2.0,
            location="t.py:3 in test_a",
        ),
        ev.WorkerCrashed(w="gw1", ts=t0 + 4, error="gone", signal="SIGKILL"),
        ev.RunFinished(ts=t0 + 5, exitstatus=1, status="tests_failed", duration=5.0),
    ]
    log = tmp_path / "run.jsonl"
    log.write_bytes(b"".join(ev.encode_line(e) for e in lines))
    code, out, _ = run_cli(capsys, "export", str(log), "-o", "-")
    assert code == 0
    trace = json.loads(out)
    check_nesting(trace)
    by_cat: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in trace["traceEvents"]:
        by_cat[event.get("cat", "")].append(event)
    (lock,) = by_cat["lock,filelock"]
    assert (lock["ts"], lock["dur"]) == (500000.0, 1000000.0)
    assert lock["args"]["holder"] == "gw1"
    (container,) = by_cat["container"]
    assert (container["ts"], container["dur"]) == (500000.0, 1500000.0)
    (stall,) = by_cat["stall"]
    assert stall["ph"] == "i"
    assert stall["args"]["location"] == "t.py:3 in test_a"
    (crash,) = by_cat["crash"]
    assert crash["args"]["signal"] == "SIGKILL"


def test_junit_and_the_report_give_the_start_as_one_aware_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One timestamp formatter: local time with its offset, in JUnit as in the report."""
    path = sample_runs.write_log(tmp_path / "run.jsonl", sample_runs.demo_run())
    code, out, _ = run_cli(capsys, "export", str(path), "--format", "junit", "-o", "-")
    assert code == 0
    suite = ET.fromstring(out).find("testsuite")
    assert suite is not None
    stamp = suite.get("timestamp") or ""
    code, out, _ = run_cli(capsys, "report", str(path), "--format", "json")
    assert code == 0
    assert stamp == json.loads(out)["run"]["started_at"]
    when = datetime.fromisoformat(stamp)
    assert when.tzinfo is not None
    assert when.timestamp() == int(sample_runs.T0)


def test_junit_export_matches_the_run(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_j="""
import pytest
class TestGroup:
    def test_ok(self): pass
def test_bad(): assert 1 == 2
@pytest.fixture
def broken(): raise RuntimeError("no")
def test_err(broken): pass
@pytest.mark.skip(reason="later")
def test_skip(): pass
"""
    )
    record(pytester, "-n", "2")
    os.chdir(pytester.path)
    code, out, _ = run_cli(capsys, "export", "latest", "--format", "junit", "-o", "-")
    assert code == 0
    root = ET.fromstring(out)
    suite = root.find("testsuite")
    assert suite is not None
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
    ) == (
        "4",
        "1",
        "1",
        "1",
    )
    cases = {f"{c.get('classname')}::{c.get('name')}": c for c in suite.iter("testcase")}
    assert set(cases) == {
        "test_j.TestGroup::test_ok",
        "test_j::test_bad",
        "test_j::test_err",
        "test_j::test_skip",
    }
    bad = cases["test_j::test_bad"].find("failure")
    assert bad is not None
    assert "assert 1 == 2" in (bad.get("message") or "")
    assert cases["test_j::test_err"].find("error") is not None
    assert cases["test_j::test_skip"].find("skipped") is not None
    workers = {p.get("value") for p in root.iter("property") if p.get("name") == "worker"}
    assert workers <= {"gw0", "gw1"}
    assert workers


# ------------------------------------------------------- a log is untrusted input


def _crafted_log(root: Path, rootdir: Path, before: list[str]) -> Path:
    """A log of one worker that ran ``before`` and then failed test_x.py::test_victim."""
    t0 = 1_780_000_000.0
    events: list[ev.Event] = [
        ev.RunStarted(ts=t0, schema=ev.SCHEMA_VERSION, run_id="20260101-120000-evil",
                      rootdir=str(rootdir), workers=1),
    ]  # fmt: skip
    for n, nodeid in enumerate([*before, "test_x.py::test_victim"]):
        outcome = "failed" if nodeid.endswith("test_victim") else "passed"
        phase = ev.Phase("call", t0 + n, 0.1, outcome)
        events.append(
            ev.TestFinished(
                w="gw0", ts=t0 + n + 0.1, nodeid=nodeid, outcome=outcome, phases=[phase]
            )
        )
    path = root / ".testmon" / "runs" / "20260101-120000-evil.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ev.encode_lines(events))
    return path


@pytest.fixture
def victim(pytester: pytest.Pytester) -> Path:
    pytester.makeini("[pytest]\n")
    # tmp_path: pytest empties --basetemp when a test first asks for a temporary folder
    pytester.makepyfile(test_x="def test_a(tmp_path): pass\ndef test_victim(): pass\n")
    canary = pytester.path / "precious"
    canary.mkdir()
    (canary / "canary.txt").write_text("still here")
    os.chdir(pytester.path)
    return canary


@pytest.mark.parametrize(
    "hostile",
    ["--basetemp={canary}", "-p", "@{canary}/canary.txt", "--rootdir={canary}"],
)
def test_bisect_never_passes_a_node_id_of_the_log_as_an_option(
    pytester: pytest.Pytester, victim: Path, hostile: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--basetemp=DIR` as a node id once made bisect's pytest empty DIR."""
    _crafted_log(pytester.path, pytester.path, ["test_x.py::test_a", hostile.format(canary=victim)])
    code, out, err = run_cli(capsys, "bisect", "latest", "test_x.py::test_victim")
    assert (victim / "canary.txt").read_text() == "still here"
    assert code == 1, out + err
    assert "look like pytest options" in err
    assert "nothing was run" in err
    assert "[1/" not in err  # no trial ran


def test_bisect_runs_only_tests_the_project_collects(
    pytester: pytest.Pytester, victim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = pytester.path.parent / f"{pytester.path.name}-outside"
    outside.mkdir()
    (outside / "test_evil.py").write_text(
        f"def test_evil():\n    open({str(victim / 'pwned')!r}, 'w').close()\n"
    )
    escaped = f"../{outside.name}/test_evil.py::test_evil"
    _crafted_log(pytester.path, pytester.path, ["test_x.py::test_a", escaped])
    code, _, err = run_cli(capsys, "bisect", "latest", "test_x.py::test_victim")
    assert code == 1
    assert "1 node ids of the log are not tests that pytest collects" in err
    assert escaped in err
    assert not (victim / "pwned").exists()


def test_bisect_runs_pytest_only_in_the_project_the_user_is_in(
    pytester: pytest.Pytester, victim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log's rootdir is where pytest would run: its conftest.py is code."""
    elsewhere = pytester.path.parent / f"{pytester.path.name}-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "conftest.py").write_text(f"open({str(victim / 'pwned')!r}, 'w').close()\n")
    (elsewhere / "test_x.py").write_text("def test_a(): pass\ndef test_victim(): pass\n")
    _crafted_log(pytester.path, elsewhere, ["test_x.py::test_a"])
    code, _, err = run_cli(capsys, "bisect", "latest", "test_x.py::test_victim")
    assert code == 1
    assert "a log does not choose where pytest runs" in err
    assert not (victim / "pwned").exists()


def test_suspects_command_is_safe_to_paste(
    pytester: pytest.Pytester, victim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _crafted_log(pytester.path, pytester.path, [f"--basetemp={victim}", "x; touch pwned"])
    code, out, _ = run_cli(capsys, "suspects", "latest", "test_victim", "--format", "json")
    assert code == 0
    model = json.loads(out)
    command = model["command"]
    assert command.endswith(" -- " + shlex.quote(f"@{model['ids_file']}"))
    # pasted into a shell, the ids stay test names: pytest reports them as missing files
    done = subprocess.run(
        command.replace("pytest ", f"{sys.executable} -m pytest -p no:cacheprovider ", 1),
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "file or directory not found: --basetemp=" in done.stdout + done.stderr
    assert (victim / "canary.txt").read_text() == "still here"
    assert not (pytester.path / "pwned").exists()
    code, out, _ = run_cli(capsys, "suspects", "latest", "test_victim")
    assert "testmon bisect 20260101-120000-evil test_x.py::test_victim" in out


def test_diff_says_when_the_runs_had_different_workers(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs on 2 and 3 workers: the table gives each run's workers and a line says the
    times are not like for like (a test that became a worker's first pays its session
    fixtures; the django-reversion trial read such a test as 14 s slower)."""
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        test_a="import pytest\n\n@pytest.mark.parametrize('i', range(6))\ndef test_a(i): pass\n"
    )
    record(pytester, "-n", "2")
    record(pytester, "-n", "3")
    logs = run_logs(pytester.path)
    os.chdir(pytester.path)
    code, out, err = run_cli(capsys, "diff", str(logs[0]), str(logs[1]), "--format", "json")
    assert code == 0, err
    model = json.loads(out)
    assert (model["a"]["workers"], model["b"]["workers"]) == (2, 3)
    code, out, _ = run_cli(capsys, "diff", str(logs[0]), str(logs[1]))
    assert code == 0
    assert "A ran on 2 workers, B on 3" in " ".join(out.split())
