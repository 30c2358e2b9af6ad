"""The monitor never changes a run's outcome, survives crashes, and says what it lost."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import SkippedLines, iter_log

from .conftest import only_run, panel_text, run_logs

MIXED = """
import os
import pytest

def test_pass(): pass
def test_fail(): assert 1 == 2
@pytest.fixture
def broken(): raise RuntimeError("fixture broke")
def test_error(broken): pass
@pytest.fixture
def bad_teardown():
    yield
    raise RuntimeError("teardown broke")
def test_pass_then_teardown_error(bad_teardown): pass
@pytest.mark.skip(reason="not today")
def test_skip(): pass
def test_skip_inside(): pytest.skip("decided at runtime")
@pytest.mark.xfail(reason="known bug")
def test_xfail(): assert 0
@pytest.mark.xfail(reason="fixed?")
def test_xpass(): pass
@pytest.mark.xfail(strict=True)
def test_xpass_strict(): pass
@pytest.mark.parametrize("n", [1, 2, 3])
def test_many(n): assert n != 2
"""

CRASH = """
import os
def test_crash(): os._exit(3)
"""


def outcome_of(result: pytest.RunResult) -> tuple[int, dict[str, int]]:
    return int(result.ret), result.parseoutcomes()


@pytest.mark.compat
@pytest.mark.parametrize("mode", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "single"])
def test_monitor_does_not_change_outcomes(pytester: pytest.Pytester, mode: list[str]) -> None:
    pytester.makepyfile(test_mixed=MIXED)
    files = ["test_mixed.py"]
    if mode[0] == "-n":
        pytester.makepyfile(test_crash=CRASH)
        files.append("test_crash.py")
    plain = outcome_of(pytester.runpytest_subprocess(*mode, *files))
    monitored = pytester.runpytest_subprocess("--monitor", *mode, *files)
    assert outcome_of(monitored) == plain
    expected = {"passed": 4, "failed": 3, "errors": 2, "skipped": 2, "xfailed": 1, "xpassed": 1}
    if mode[0] == "-n":
        expected["failed"] += 1
    assert plain[1] == expected
    # ...and the log counts the way pytest counts
    state = only_run(pytester).state
    logged = dict(state.counts)
    logged["errors"] = logged.pop("error", 0)
    assert logged == expected
    assert state.end is not None
    assert state.end.exitstatus == plain[0]


def test_single_process_crash_exit_code_unchanged(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_crash=CRASH)
    plain = pytester.runpytest_subprocess("-p", "no:xdist")
    monitored = pytester.runpytest_subprocess("-p", "no:xdist", "--monitor")
    assert plain.ret == monitored.ret == 3
    # the log that remains reads back and names the run
    run = only_run(pytester)
    assert not run.problems, list(run.problems)
    assert isinstance(run.events[0], ev.RunStarted)


@pytest.mark.parametrize(
    ("body", "exitcode", "signame"),
    [
        ("os._exit(3)", 3, None),
        ("os.kill(os.getpid(), signal.SIGKILL)", None, "SIGKILL"),
        ("faulthandler.disable(); ctypes.string_at(0)", None, "SIGSEGV"),
    ],
    ids=["os_exit", "sigkill", "segfault"],
)
@pytest.mark.compat
def test_killed_worker_is_attributed_to_its_test(
    pytester: pytest.Pytester, body: str, exitcode: int | None, signame: str | None
) -> None:
    pytester.makepyfile(
        test_k=f"""
import ctypes, faulthandler, os, signal, time

def test_before(): time.sleep(0.3)
def test_killer():
    time.sleep(0.2)
    {body}
def test_after(): pass
"""
    )
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "-p", "no:faulthandler")
    result.assert_outcomes(passed=2, failed=1)
    run = only_run(pytester)
    (crash,) = run.of(ev.WorkerCrashed)
    assert crash.test == "test_k.py::test_killer"
    assert crash.exitcode == exitcode
    assert crash.signal == signame
    crashed = [t for t in run.of(ev.TestFinished) if t.crashed]
    assert [(t.nodeid, t.w, t.outcome) for t in crashed] == [
        ("test_k.py::test_killer", crash.w, "failed")
    ]
    state = run.state
    assert state.workers[crash.w].state == "crashed"
    assert state.counts["failed"] == 1
    result.stdout.fnmatch_lines([f"crash: {crash.w} while running test_k.py::test_killer (*)*"])


def test_full_queue_drops_and_counts_by_kind(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_flood="""
import pytest
@pytest.fixture
def f(): yield
@pytest.mark.parametrize("n", range(400))
def test_n(n, f): pass
"""
    )
    env = {"TESTMON_LIVE_QUEUE": "10"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        result = pytester.runpytest_subprocess("--monitor", "-n", "2")
    result.assert_outcomes(passed=400)
    run = only_run(pytester)
    finished = run.of(ev.WorkerFinished)
    assert len(finished) == 2
    dropped: dict[str, int] = {}
    for f in finished:
        for kind, n in f.dropped.items():
            dropped[kind] = dropped.get(kind, 0) + n
    assert dropped["test"] > 0
    assert set(dropped) <= set(ev.TAGS.values())
    recorded = len(run.of(ev.TestFinished))
    assert recorded + dropped["test"] == 400
    end = run.events[-1]
    assert isinstance(end, ev.RunFinished)
    assert sum(end.dropped[w].get("test", 0) for w in end.dropped) == dropped["test"]
    result.stdout.fnmatch_lines(["dropped events: * (the log says which kinds)"])


def test_malformed_batches_at_the_hub_are_dropped_with_a_notice(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import pytest

@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    link = getattr(config, "workerinput", {}).get("testmon_live")
    if not link or config.workerinput["workerid"] != "gw0":
        return
    ch = link["channel"]
    ch.send(b"this is not json\\n")
    ch.send({"not": "bytes"})
    ch.send(b'{"t":"no_such_event","w":"gw0"}\\n')
    ch.send(b'{"t":"test","w":"gw0","nodeid":42}\\n')
    ch.send(b"x" * (8 * 1024 * 1024 + 1))
"""
    )
    pytester.makepyfile(test_x="\n".join(f"def test_{i}(): pass" for i in range(20)))
    plain = pytester.runpytest_subprocess("-n", "2")
    result = pytester.runpytest_subprocess("--monitor", "-n", "2")
    assert outcome_of(result) == outcome_of(plain)
    run = only_run(pytester)
    notices = [n.msg for n in run.of(ev.Notice)]
    assert any("malformed event" in m and "gw0" in m for m in notices), notices
    assert any("unknown event type" in m for m in notices), notices
    assert any("sent a dict, not an event batch" in m for m in notices), notices
    assert any("sent a batch of 8388609 bytes" in m for m in notices), notices
    # the worker's real events still arrived
    assert len(run.of(ev.TestFinished)) == 20
    end = run.events[-1]
    assert isinstance(end, ev.RunFinished)
    assert end.dropped["gw0"]["malformed"] == 4
    assert end.dropped["gw0"]["oversized"] == 1


def test_unwritable_monitor_dir_degrades_to_a_summary_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    (pytester.path / "blocked").write_text("a file, not a folder")
    result = pytester.runpytest_subprocess("--monitor", "--monitor-dir", "blocked/sub", "-n", "2")
    result.assert_outcomes(passed=1)  # no warning: the user's filters could make it an error
    assert result.ret == 0
    result.stdout.fnmatch_lines(["testmon-live: not recording this run:*"])


def test_secrets_stay_out_of_the_log(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_PASSWORD", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cr3t@db.example/test")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_abcdef")
    monkeypatch.setenv("DB_PWD", "letmein")  # *PWD is a password...
    monkeypatch.setenv("PWD", "/home/dev/project")  # ...but PWD is the working folder
    pytester.makepyfile(test_x="def test_x(): pass")
    pytester.runpytest_subprocess(
        "--monitor", "-o", "markers=db: uses mysql://root:pw0rd@localhost/x"
    ).assert_outcomes(passed=1)
    text = run_logs(pytester.path)[0].read_text()
    for secret in ("hunter2", "s3cr3t", "ghp_abcdef", "pw0rd", "letmein"):
        assert secret not in text
    header = only_run(pytester).header
    # the header keeps only what explains a run: a database URL (redacted), not the rest
    assert "DB_PASSWORD" not in header.env
    assert "DB_PWD" not in header.env
    assert header.env["DATABASE_URL"] == "postgresql://app:***@db.example/test"
    assert "PWD" not in header.env
    assert any("mysql://root:***@localhost/x" in a for a in header.args)


def test_killed_controller_leaves_a_log_that_reads_back(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_slow="""
import time, pytest
@pytest.mark.parametrize("n", range(200))
def test_n(n): time.sleep(0.02)
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--monitor", "-n", "2", "-q", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        log = _wait_for_tests_in_log(pytester.path, minimum=20, timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        _kill_group(proc)
    problems = SkippedLines()
    events = list(iter_log(log, problems))
    # every complete line reads back; at most a torn last line is reported
    assert all(reason.startswith("torn last line") for _, reason in problems), problems
    assert len(problems) <= 1
    assert isinstance(events[0], ev.RunStarted)
    assert not any(isinstance(e, ev.RunFinished) for e in events)
    assert len([e for e in events if isinstance(e, ev.TestFinished)]) >= 20
    lines = log.read_bytes().split(b"\n")
    assert len(lines) - 1 >= len(events)  # nothing was invented


def _wait_for_tests_in_log(root: Path, minimum: int, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = run_logs(root)
        if logs and logs[0].read_bytes().count(b'"t":"test"') >= minimum:
            return logs[0]
        time.sleep(0.05)
    raise AssertionError(f"no log with {minimum} tests after {timeout}s")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_tests_a_dead_worker_never_shipped_are_recovered(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a long flush interval every event of the dying worker is still queued when it
    dies; the controller rebuilds its finished tests from xdist's reports."""
    monkeypatch.setenv("TESTMON_LIVE_FLUSH", "30")
    pytester.makepyfile(
        test_a="""
import os, pytest
@pytest.mark.parametrize("n", range(30))
def test_quick(n): pass
def test_zz_crash(): os._exit(7)
""",
        test_b="def test_other(): pass",
    )
    # one worker runs test_a.py in order and dies at its end; its replacement runs test_b.py
    result = pytester.runpytest_subprocess("--monitor", "-n", "1", "test_a.py", "test_b.py")
    result.assert_outcomes(passed=31, failed=1)
    run = only_run(pytester)
    (crash,) = run.of(ev.WorkerCrashed)
    assert crash.test == "test_a.py::test_zz_crash"
    assert crash.exitcode == 7
    quick = [t for t in run.of(ev.TestFinished) if "test_quick" in t.nodeid]
    assert len(quick) == 30
    assert all(t.recovered and t.w == crash.w for t in quick)
    assert all([p.when for p in t.phases] == ["setup", "call", "teardown"] for t in quick)
    assert run.state.counts == {"passed": 31, "failed": 1}


REPLACED = """
import os, time

def test_before(): time.sleep(0.2)
def test_dies():
    time.sleep(0.2)
    os._exit(3)
def test_after_1(): time.sleep(0.2)
def test_after_2(): time.sleep(0.2)
def test_after_3(): time.sleep(0.2)
"""


async def test_a_crashed_worker_and_its_replacement_are_named_everywhere(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """xdist starts a worker in place of one that crashed: the notice, the summary, the
    reports and the dashboard say which replaced which, and each shows the exit code."""
    from testmon_live.tui.cli import main
    from testmon_live.tui.dashboard.screens.test_detail import describe
    from testmon_live.tui.dashboard.screenshots import settle
    from testmon_live.tui.dashboard.widgets.stuck_panel import StuckPanel

    from .test_tui_recorded import SIZE, app_on, rows

    pytester.makepyfile(test_r=REPLACED)
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=4, failed=1)
    run = only_run(pytester)
    (crash,) = run.of(ev.WorkerCrashed)
    (replaced,) = run.of(ev.WorkerReplaced)
    dead, new = crash.w, replaced.w
    assert replaced.replaces == dead
    assert new not in (dead, *[s.w for s in run.of(ev.WorkerStarted) if s.ts < replaced.ts])
    out = result.stdout.str()
    assert f"[testmon-live] CRASH {dead} test_r.py::test_dies: exit code 3" in out
    assert f"[testmon-live] REPLACED {new} replaced {dead} (it crashed: exit code 3)" in out
    assert (
        f"crash: {dead} while running test_r.py::test_dies (exit code 3); {new} replaced it" in out
    )

    state = run.state
    assert (state.workers[dead].replaced_by, state.workers[new].replaces) == (new, dead)
    mdir = str(pytester.path / ".testmon")
    assert main(["report", "latest", "--dir", mdir]) == 0
    report = capsys.readouterr().out
    (row,) = [ln for ln in report.splitlines() if ln.strip().startswith(dead) and "exit" in ln]
    assert row.split() == [dead, "test_r.py::test_dies", "exit", "code", "3", new]
    assert main(["report", "latest", "--dir", mdir, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (crash_row,) = data["crashes"]
    assert (crash_row["exit_code"], crash_row["replaced_by"]) == (3, new)

    app = app_on(pytester.path / "view", run.events)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        cells = rows(app)[dead]
        assert cells[1] == "crashed"
        assert "(exit code 3" in cells[5]
        assert f"{new} replaced it" in cells[5]
        detail = describe(next(t for t in run.of(ev.TestFinished) if t.crashed), state).plain
        assert f"(the worker crashed while running it: exit code 3; {new} replaced it)" in detail
        stuck = await panel_text(app, pilot, "6", StuckPanel)
        assert f"CRASHED {dead}: " in stuck
        assert f"while running test_r.py::test_dies (exit code 3); {new} replaced it" in stuck
