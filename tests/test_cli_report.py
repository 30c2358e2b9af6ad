"""`testmon runs` and `testmon report`: real xdist runs recorded through pytester, real CLI.

Sections that the recorder cannot produce yet (locks, migrations, containers, stalls,
crashes) are checked on a log written from the event structs by hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir, write_live_file
from testmon_live.plugin.state import RunState, StallRecord, own_times
from testmon_live.plugin.summary import stall_lines
from testmon_live.tui import cli
from testmon_live.tui.predict.profile import build_profile
from testmon_live.tui.reports.document import Code, Format, Prose, Section
from testmon_live.tui.reports.formatting import shorten_nodeid
from testmon_live.tui.reports.logs import INCOMPLETE, RUNNING
from testmon_live.tui.reports.render import RENDERERS, render
from testmon_live.tui.reports.render_text import WIDTH, text_width
from testmon_live.tui.testing import sample_runs

from .conftest import read_recorded

DOC = Path(__file__).resolve().parents[1] / "docs" / "report-json.md"

SUITE = """
import time
import pytest

@pytest.fixture(scope="session")
def shared_db():
    time.sleep(0.2)
    return {"ready": True}

@pytest.fixture(scope="session")
def cheap_settings():
    return {"debug": False}

@pytest.fixture
def broken():
    raise RuntimeError("fixture broke on purpose")

@pytest.mark.parametrize("n", range(6))
def test_pass(shared_db, cheap_settings, n):
    assert shared_db["ready"]

def test_fail(shared_db):
    assert 6 * 7 == 41, "expected the answer"

def test_error(shared_db, broken):
    pass

@pytest.mark.skip(reason="not today")
def test_skip(shared_db):
    pass

def test_slow(shared_db):
    time.sleep(0.6)
"""


# ------------------------------------------------------------------- helpers


@dataclass
class RealRun:
    result: pytest.RunResult
    monitor: Path
    log: Path

    @property
    def run_id(self) -> str:
        return self.log.name.removesuffix(".jsonl")


def record(pytester: pytest.Pytester) -> RealRun:
    """Run the suite with `-n 2 --monitor` in a subprocess; the log it wrote."""
    monitor = pytester.path / ".testmon"
    before = set(MonitorDir(monitor).logs())
    result = pytester.runpytest_subprocess("-n", "2", "--monitor")
    new = sorted(set(MonitorDir(monitor).logs()) - before)
    assert len(new) == 1, result.stdout.str()
    return RealRun(result, monitor, new[0])


@pytest.fixture
def real_run(pytester: pytest.Pytester) -> RealRun:
    pytester.makepyfile(test_suite=SUITE)
    return record(pytester)


def counts_of_pytest(result: pytest.RunResult) -> dict[str, int]:
    """pytest's own counts, in the report's words (pytest says `errors`, we say `error`)."""
    return {
        ("error" if key == "errors" else key): n
        for key, n in result.parseoutcomes().items()
        if key not in ("warnings", "deselected")
    }


@dataclass
class Out:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> Out:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return Out(code, captured.out, captured.err)


def run_module(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TESTMON_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "testmon_live.tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )


def section(text: str, title: str) -> list[str]:
    """The lines of one text-report section, title excluded."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        body.append(line)
    return body


def counts_in(summary_line: str) -> dict[str, int]:
    """`10 tests: 1 failed, 7 passed, 1 error` -> {"failed": 1, "passed": 7, "error": 1}."""
    found = re.findall(r"(\d+) (failed|passed|skipped|errors?|xfailed|xpassed)\b", summary_line)
    return {("error" if word.startswith("error") else word): int(n) for n, word in found}


@pytest.fixture
def terminal_100(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text reports as a 100-column terminal shows them (into a pipe nothing is cut:
    test_text_into_a_pipe_or_a_file_is_never_cut)."""
    monkeypatch.setenv("COLUMNS", str(WIDTH))


def assert_fits(text: str) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not too_wide, too_wide


def documented_keys(heading: str) -> set[str]:
    """Backticked names in the first column of the table under ``heading`` in the docs."""
    text = DOC.read_text()
    body = text.split(heading, 1)[1].split("\n#", 1)[0]
    keys: set[str] = set()
    for line in body.splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`(\w+)`", line.split("|")[1]))
    return keys


# ------------------------------------------------------------ hand-made logs

T0 = 1_780_000_000.0
LONG_NODEID = (
    "tests/integration/very/deeply/nested/package/test_database_migrations.py::"
    "TestAlembicUpgrades::test_upgrade_runs_once_even_when_every_worker_tries[postgres-16]"
)


def header(run_id: str, ts: float = T0) -> ev.RunStarted:
    return ev.RunStarted(
        ts=ts, schema=ev.SCHEMA_VERSION, run_id=run_id, rootdir="/proj", workers=2, dist="load"
    )


def finished_test(w: str, nodeid: str, ts: float, outcome: str, dur: float) -> ev.TestFinished:
    phases = [ev.Phase("setup", ts - dur, 0.0, "passed"), ev.Phase("call", ts - dur, dur, outcome)]
    message = "AssertionError: relation already exists" if outcome == "failed" else None
    return ev.TestFinished(
        w=w, ts=ts, nodeid=nodeid, outcome=outcome, phases=phases, duration=dur, message=message
    )


def lock_events() -> list[ev.Event]:
    key = "/tmp/migrations.lock"
    return [
        ev.LockEvent(w="gw0", ts=T0 + 1, action="wait", kind="filelock", key=key, lock_id="a"),
        ev.LockEvent(
            w="gw0", ts=T0 + 1, action="acquired", kind="filelock", key=key, lock_id="a", waited=0.0
        ),
        ev.LockEvent(w="gw1", ts=T0 + 1.5, action="wait", kind="filelock", key=key, lock_id="b"),
        ev.LockEvent(
            w="gw0", ts=T0 + 4, action="released", kind="filelock", key=key, lock_id="a", held=3.0
        ),
        ev.LockEvent(
            w="gw1", ts=T0 + 4, action="acquired", kind="filelock", key=key, lock_id="b", waited=2.5
        ),
        ev.LockEvent(
            w="gw1", ts=T0 + 5, action="released", kind="filelock", key=key, lock_id="b", held=1.0
        ),
    ]


def migration(
    w: str, at: float, took: float | None = None, error: str | None = None
) -> ev.Migration:
    """``alembic upgrade`` of the one shared database: a begin, or an end when ``took``."""
    return ev.Migration(
        w=w,
        ts=T0 + at,
        action="begin" if took is None else "end",
        tool="alembic",
        op="upgrade",
        url="postgresql://***@db/app",
        to_rev="head" if took is None else None,
        duration=took,
        error=error,
    )


def migration_events() -> list[ev.Event]:
    return [
        migration("gw0", 1.0),
        migration("gw1", 1.5),
        migration("gw0", 4.0, took=3.0),
        migration("gw1", 5.0, took=3.5, error="DuplicateTable: alembic_version"),
    ]


def container_events() -> list[ev.Event]:
    found: list[ev.Event] = []
    for number, worker in enumerate(("gw0", "gw1")):
        cid = f"c0ffee{number}"
        at = T0 + 0.5 + number
        found += [
            ev.ContainerEvent(
                w=worker, ts=at, action="create", cid=cid, image="postgres:16", dur=0.5
            ),
            ev.ContainerEvent(w=worker, ts=at + 1, action="start", cid=cid, dur=1.0),
            ev.ContainerEvent(w=worker, ts=at + 3, action="ready", cid=cid, dur=2.0),
        ]
    found.append(ev.ContainerEvent(w="gw1", ts=T0 + 6, action="use", cid="c0ffee0"))
    return found


def stall_event() -> ev.Stall:
    main = ev.ThreadStack(
        name="MainThread",
        ident=1,
        verdict="lock",
        detail="threading.Lock.acquire",
        frames=[
            ev.Frame("tests/test_db.py", 12, "test_upgrade", True),
            ev.Frame("/usr/lib/python3.11/threading.py", 320, "wait"),
        ],
    )
    watcher = ev.ThreadStack(name="pool-worker-1", ident=2, daemon=True, verdict="sleep")
    return ev.Stall(
        w="gw1",
        ts=T0 + 7,
        test=LONG_NODEID,
        phase="call",
        elapsed=31.0,
        location="tests/test_db.py:12 in test_upgrade",
        threads=[main, watcher],
    )


def synthetic_events(run_id: str = "20260101-120000-abcd", start: float = T0) -> list[ev.Event]:
    """A run of two workers with every kind of trouble the report knows about."""
    events = [
        header(run_id),
        ev.WorkerStarted(w="gw0", ts=T0 + 0.1, schema=ev.SCHEMA_VERSION, pid=99991),
        ev.WorkerStarted(w="gw1", ts=T0 + 0.1, schema=ev.SCHEMA_VERSION, pid=99992),
        *lock_events(),
        *migration_events(),
        *container_events(),
        finished_test("gw0", "tests/test_db.py::test_ok", T0 + 6, "passed", 1.0),
        finished_test("gw1", LONG_NODEID, T0 + 6.5, "failed", 2.0),
        stall_event(),
        ev.Unresponsive(w="gw1", ts=T0 + 8, silent=12.0, test=LONG_NODEID),
        ev.Deadlock(
            ts=T0 + 8.5,
            cycle=[
                ev.WaitEdge(w="gw0", holds="lock:a", waits_for="lock:b"),
                ev.WaitEdge(w="gw1", holds="lock:b", waits_for="lock:a"),
            ],
        ),
        ev.WorkerCrashed(
            w="gw1", ts=T0 + 9, error="node down: Not properly terminated", test=LONG_NODEID,
            signal="SIGKILL",
        ),
        ev.Notice(ts=T0 + 9, level="warning", source="hub", msg="gw1 sent a malformed event"),
        ev.RunFinished(
            ts=T0 + 10, exitstatus=1, status="tests_failed", duration=10.0, tests=2,
            counts={"passed": 1, "failed": 1}, workers=["gw0", "gw1"], crashes=1, stalls=1,
            test_time=3.0, dropped={"gw0": {"hb": 3}},
        ),
    ]  # fmt: skip
    return [msgspec.structs.replace(e, ts=e.ts - T0 + start) for e in events]


@pytest.fixture
def monitor(tmp_path: Path) -> MonitorDir:
    mdir = MonitorDir(tmp_path / ".testmon")
    mdir.ensure()
    return mdir


@pytest.fixture
def synthetic(monitor: MonitorDir) -> Path:
    return sample_runs.write_log(monitor.log_path("20260101-120000-abcd"), synthetic_events())


# ---------------------------------------------------------- reports of real runs


@pytest.mark.compat
@pytest.mark.usefixtures("terminal_100")
def test_text_report_matches_pytest(real_run: RealRun, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(capsys, "report", "--dir", str(real_run.monitor))
    assert out.code == 0, out.err
    text = out.out
    title, summary = text.splitlines()[:2]
    assert real_run.run_id in title
    assert "finished (tests_failed, exit 1)" in title
    assert counts_in(summary) == counts_of_pytest(real_run.result)
    workers = section(text, "Workers")
    assert [line.split()[0] for line in workers[1:3]] == ["gw0", "gw1"]
    fixtures = "\n".join(section(text, "Fixtures by setup time"))
    assert "session fixture 'shared_db' set up 2x on 2 workers" in fixtures
    # cheap_settings (and any plugin's quick fixtures) is not listed, but said to be left out
    assert re.search(r"\n  \d+ fixtures? under 5ms of setup in all not shown$", fixtures)
    failures = section(text, "Failures (2)")
    assert failures[0].split() == ["outcome", "test", "worker", "phase"]
    failed = next(i for i, line in enumerate(failures) if "::test_fail " in line)
    assert re.fullmatch(r"  FAILED +test_suite.py::test_fail +gw\d +call", failures[failed])
    assert failures[failed + 1] == "      AssertionError: expected the answer"
    errored = next(i for i, line in enumerate(failures) if "::test_error " in line)
    assert re.fullmatch(r"  ERROR +test_suite.py::test_error +gw\d +setup", failures[errored])
    assert failures[errored + 1] == "      RuntimeError: fixture broke on purpose"
    slowest = section(text, "Slowest tests")[1]
    assert re.search(r"\d+ms +gw\d +passed +test_suite.py::test_slow$", slowest)
    for absent in ("Locks", "Migrations", "Containers", "Stalls", "Skipped log lines"):
        assert absent not in text
    assert_fits(text)


def test_json_and_markdown_say_the_same(
    real_run: RealRun, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_cli(capsys, "report", str(real_run.log), "--format", "json")
    assert out.code == 0, out.err
    model = json.loads(out.out)
    assert model["report_version"] == 1
    assert set(model) == documented_keys("## Top-level keys")
    assert set(model["run"]) == documented_keys("## `run`")
    assert set(model["totals"]) == documented_keys("## `totals`")
    counts = {k: n for k, n in model["totals"]["counts"].items() if n}
    assert counts == counts_of_pytest(real_run.result)
    assert [w["id"] for w in model["workers"]] == ["gw0", "gw1"]
    assert all(0 < w["busy_share"] <= 1 for w in model["workers"])
    assert 0 < model["totals"]["efficiency"] <= 1
    shared = next(f for f in model["fixtures"] if f["name"] == "shared_db")
    assert shared["duplicated"] is True
    assert shared["workers"] == ["gw0", "gw1"]
    assert shared["count"] == 2
    # set up on both workers too, but in microseconds: not worth a row
    assert "cheap_settings" not in {f["name"] for f in model["fixtures"]}
    assert model["omitted"]["quick_fixtures"] >= 1
    failed = {f["nodeid"]: f for f in model["failures"]}
    assert failed["test_suite.py::test_fail"]["message"].startswith(
        "AssertionError: expected the answer"
    )
    assert failed["test_suite.py::test_error"]["phase"] == "setup"
    assert model["slowest"][0]["nodeid"] == "test_suite.py::test_slow"

    markdown = run_cli(capsys, "report", str(real_run.log), "-f", "markdown").out
    assert markdown.startswith(f"### testmon-live run `{real_run.run_id}`")
    assert "| worker | tests | failed |" in markdown
    assert "| --- | ---: | ---: |" in markdown
    assert "| `gw0` |" in markdown
    assert "| `gw1` |" in markdown
    assert model["totals"]["summary"] in markdown
    assert "session fixture 'shared\\_db' set up 2x on 2 workers" in markdown


NESTED_SLEEP = 0.3
"""Seconds each inner (session) fixture of :data:`NESTED` sleeps."""

NESTED = f"""
import time
import pytest

@pytest.fixture(scope="session")
def migrated():  # pytest-django's django_db_setup: the migrations
    time.sleep({NESTED_SLEEP})

@pytest.fixture(scope="class", autouse=True)
def _setup_unittest(request):  # pytest-django's _django_setup_unittest
    request.getfixturevalue("migrated")

@pytest.fixture(scope="session")
def warehouse():
    time.sleep({NESTED_SLEEP})

@pytest.fixture(scope="module")
def shelf(request):
    request.getfixturevalue("warehouse")

@pytest.fixture
def box(request):
    request.getfixturevalue("shelf")
    yield

def test_box(box): pass

def test_plain(): pass
"""


@pytest.mark.parametrize("mode", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "single"])
def test_a_fixture_is_charged_its_own_setup_not_the_setups_it_requested(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], mode: list[str]
) -> None:
    # A fixture that requests another from its body has the other's setup inside its own:
    # the recorded intervals say so (timelines draw them), the sums charge it once.
    pytester.makepyfile(test_nested=NESTED)
    result = pytester.runpytest_subprocess("--monitor", "-p", "no:randomly", *mode)
    result.assert_outcomes(passed=2)
    (log,) = MonitorDir(pytester.path / ".testmon").logs()
    recorded = read_recorded(log)
    inner, outer = {"migrated", "warehouse"}, {"_setup_unittest", "shelf", "box"}
    longest: dict[str, float] = {}
    for e in recorded.of(ev.FixtureSetup):
        longest[e.name] = max(e.dur, longest.get(e.name, 0.0))
    (box,) = [f for t in recorded.of(ev.TestFinished) for f in t.fixtures if f.name == "box"]
    for name in ("_setup_unittest", "shelf", "migrated", "warehouse"):
        assert longest[name] >= NESTED_SLEEP, name  # as it ran, the inner one inside
    assert box.setup_dur >= NESTED_SLEEP

    state = recorded.state
    stats = {f.name: f for f in state.fixtures.values() if f.name in inner | outer}
    for name in inner:
        assert stats[name].setup_max >= NESTED_SLEEP, name
        assert stats[name].setup_total >= NESTED_SLEEP * stats[name].count, name
    for name in outer:  # on every worker together, less than one inner setup
        assert stats[name].setup_total < NESTED_SLEEP, (name, stats[name])

    capsys.readouterr()  # what the recorded run printed
    out = run_cli(capsys, "report", str(log), "--format", "json", "--top", "50")
    assert out.code == 0, out.err
    rows = {f["name"]: f for f in json.loads(out.out)["fixtures"]}
    assert inner <= set(rows)
    for name in outer & set(rows):
        assert rows[name]["setup_total"] < NESTED_SLEEP, rows[name]
        assert rows[name]["work_total"] < NESTED_SLEEP, rows[name]
    text = run_cli(capsys, "report", str(log)).out
    ranked = section(text, "Fixtures by setup time")[1:3]
    assert {line.split()[0] for line in ranked} == inner, ranked

    profile = build_profile(state)  # what whatif replays: each setup paid once
    paid = {f.name: f.first for f in profile.fixtures}
    assert paid["migrated"] >= NESTED_SLEEP
    assert paid["warehouse"] >= NESTED_SLEEP
    assert paid["_setup_unittest"] < NESTED_SLEEP
    assert paid["shelf"] < NESTED_SLEEP


def test_own_times_take_each_inner_setup_out_of_the_innermost_it_ran_in() -> None:
    spans = [
        (10.0, 1.0),  # outer: 0.5 s of it in middle, then 0.25 s in sibling
        (10.1, 0.5),  # middle: 0.25 s of it in inner
        (10.2, 0.25),  # inner
        (10.6, 0.25),  # sibling, after middle ended
        (12.0, 0.5),  # alone, later
        (12.0, 0.5),  # the same interval again (a hand-made log): no parent of the other
        (12.4, 0.4),  # sticks out of the one before it: not inside it
    ]
    assert own_times(spans) == pytest.approx([0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 0.4])
    assert own_times([]) == []
    assert own_times([(1.0, -2.0)]) == [0.0]
    # An inner setup read off the same clock may end a rounding error past the outer.
    assert own_times([(5.0, 1.0), (5.5, 0.5 + 1e-7)]) == pytest.approx([0.5, 0.5])


# ------------------------------------------------------------------ resolving


def test_run_resolution(
    real_run: RealRun, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = real_run.run_id
    where = ("--dir", str(real_run.monitor))
    for spec in (run_id, run_id[:17], str(real_run.log), "latest"):
        out = run_cli(capsys, "report", spec, *where)
        assert out.code == 0, (spec, out.err)
        assert out.out.splitlines()[0].startswith(f"testmon-live run {run_id}:"), spec
    monkeypatch.chdir(real_run.monitor.parent)  # no --dir, no RUN: the latest run found from here
    assert run_cli(capsys, "report").out.splitlines()[0].startswith(f"testmon-live run {run_id}")

    twin = real_run.log.with_name(run_id[:9] + "999999-ffff.jsonl")
    twin.write_bytes(real_run.log.read_bytes())
    out = run_cli(capsys, "report", run_id[:9], *where)
    assert out.code == cli.EXIT_ERROR
    assert out.out == ""
    assert f"'{run_id[:9]}' matches 2 runs" in out.err
    assert len(out.err.splitlines()) == 1

    out = run_cli(capsys, "report", "nosuchrun", *where)
    assert out.code == cli.EXIT_ERROR
    assert "no run matches 'nosuchrun'" in out.err
    assert "testmon runs" in out.err


# ----------------------------------------------------------------------- runs


@pytest.mark.usefixtures("terminal_100")
def test_runs_lists_newest_first(real_run: RealRun, capsys: pytest.CaptureFixture[str]) -> None:
    mdir = MonitorDir(real_run.monitor)
    started = json.loads(real_run.log.read_text().splitlines()[0])["ts"]
    killed = synthetic_events("20990101-000000-dead", started + 3600)[:-1]  # no end record
    sample_runs.write_log(mdir.log_path("20990101-000000-dead"), killed)
    live = synthetic_events("20000101-000000-1111", started + 7200)[:-1]  # newest; id sorts first
    sample_runs.write_log(mdir.log_path("20000101-000000-1111"), live)
    info = {"run_id": "20000101-000000-1111", "pid": os.getpid(), "token": "t", "address": {}}
    write_live_file(mdir.live_path("20000101-000000-1111"), info)
    older = synthetic_events("20000101-000000-0000", started - 3600)
    sample_runs.write_log(mdir.log_path("20000101-000000-0000"), older)

    out = run_cli(capsys, "runs", "--dir", str(real_run.monitor))
    assert out.code == 0, out.err
    lines = out.out.splitlines()[2:]
    assert [line.split()[0] for line in lines] == [
        "20000101-000000-1111",
        "20990101-000000-dead",
        real_run.run_id,
        "20000101-000000-0000",
    ]
    assert re.search(rf" 9.00s +2  {RUNNING}, 1 crash, 1 stall +1 failed, 1 passed$", lines[0])
    assert re.search(rf" 9.00s +2  {INCOMPLETE}, 1 crash, 1 stall +1 failed, 1 passed$", lines[1])
    # the counts may be cut to fit 100 columns: failures and errors come first
    assert re.search(r" \d+(\.\d+)?m?s   2  finished  +1 failed, 1 error, ", lines[2])
    assert_fits(out.out)

    model = json.loads(run_cli(capsys, "runs", "--dir", str(real_run.monitor), "-f", "json").out)
    assert model["runs_version"] == 1
    real = model["runs"][2]
    assert real["id"] == real_run.run_id
    assert {k: n for k, n in real["counts"].items() if n} == counts_of_pytest(real_run.result)
    assert real["workers"] == 2
    assert real["status"] == "finished"
    assert [r["status"] for r in model["runs"]] == ["running", "incomplete", "finished", "finished"]


def test_runs_reads_only_head_and_tail_of_finished_logs(
    monitor: MonitorDir, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sample_runs.write_log(monitor.log_path("20260101-120000-abcd"), synthetic_events())

    def no_fold(*args: object) -> Iterator[ev.Event]:
        raise AssertionError("a finished log was folded")

    monkeypatch.setattr("testmon_live.tui.reports.run_list.iter_log", no_fold)
    model = json.loads(run_cli(capsys, "runs", "--dir", str(monitor.root), "-f", "json").out)
    (run,) = model["runs"]
    assert (run["tests"], run["crashes"], run["stalls"], run["workers"]) == (2, 1, 1, 2)
    assert run["wall"] == 10.0
    assert run["summary"] == "1 failed, 1 passed"


# ------------------------------------------------ migration errors a suite provokes

EXPECTED_ERRORS = """
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.util import CommandError

HERE = Path(__file__).parent


def config(tmp_path):
    cfg = Config(str(HERE / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", f"sqlite:///{tmp_path / 'app.db'}")
    return cfg


@pytest.mark.parametrize("n", range(5))
def test_an_unknown_revision_is_refused(tmp_path, n):
    with pytest.raises(CommandError):
        command.upgrade(config(tmp_path), "nope")


def test_upgrade_to_head(tmp_path):
    command.upgrade(config(tmp_path), "head")


def test_upgrade_that_fails(tmp_path):
    command.upgrade(config(tmp_path), "nope")
"""

SLOW_REVISION = """
import time

revision = "0003"
down_revision = "0002"

def upgrade():
    time.sleep(0.3)

def downgrade():
    pass
"""


def test_migration_errors_caught_by_passing_tests_come_last_and_once(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """alembic's own suite provokes migration errors on purpose inside passing tests: they
    are one line with a count, after the error that failed a test, and cost no ranking."""
    from .test_alembic_probe import alembic_project

    alembic_project(pytester.path, "sqlite://")
    (pytester.path / "migrations" / "versions" / "0003_slow.py").write_text(SLOW_REVISION)
    pytester.makepyfile(test_migrations=EXPECTED_ERRORS)
    run = record(pytester)
    assert run.result.parseoutcomes() == {"failed": 1, "passed": 6}, run.result.stdout.str()

    monkeypatch.setenv("COLUMNS", "400")  # whole lines
    text = run_cli(capsys, "report", str(run.log)).out
    bullets = [line for line in section(text, "Migrations") if line.startswith("  ! ")]
    bullets += [line for line in section(text, "Migrations") if line.startswith("  - ")]
    message = "CommandError: Can't locate revision identified by 'nope'"
    failed, caught = bullets
    failing = "test_migrations.py::test_upgrade_that_fails"
    said = re.escape(f" alembic upgrade failed: {message} in {failing}")
    assert re.fullmatch(rf"  ! gw\d{said}", failed)
    assert caught.startswith(
        f"  - alembic upgrade raised 5× inside tests that passed (an error they expect, caught): "
        f"{message} ("
    )
    assert caught.endswith(" and 2 more")

    model = json.loads(run_cli(capsys, "report", str(run.log), "-f", "json", "--top", "2").out)
    real, expected = model["migration_errors"]
    assert (real["count"], real["caught"], real["error"]) == (1, False, message)
    assert real["tests"] == ["test_migrations.py::test_upgrade_that_fails"]
    assert (expected["count"], expected["caught"], expected["error"]) == (5, True, message)
    assert set(expected["workers"]) <= {"gw0", "gw1"}
    assert len(expected["tests"]) == 3
    assert all("::test_an_unknown_revision_is_refused[" in t for t in expected["tests"])
    # --top 2: the failure that failed a test, then the slowest; no caught error
    shown = sorted((m["test"], m["error"] is not None, m["caught"]) for m in model["migrations"])
    assert shown == [
        ("test_migrations.py::test_upgrade_that_fails", True, False),
        ("test_migrations.py::test_upgrade_to_head", False, False),
    ]


# ------------------------------------------------------- sections from hand-made logs


@pytest.mark.usefixtures("terminal_100")
def test_a_dump_on_demand_is_not_counted_as_a_stall(
    monitor: MonitorDir, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary and the runs list count one stall; the report's heading must too, with
    the stacks a user asked for (``testmon dump``) said apart."""
    *events, end = synthetic_events()
    dump = ev.Stall(w="gw0", ts=end.ts - 0.5, reason="dump", request=7, phase="call")
    log = sample_runs.write_log(monitor.log_path("20260101-120000-abcd"), [*events, dump, end])
    text = run_cli(capsys, "report", str(log)).out
    assert "\nStalls (1), and stacks of 1 dump\n" in text
    assert "  gw0 stacks (dump) after " in text
    assert "Stalls (2" not in text


@pytest.mark.usefixtures("terminal_100")
def test_trouble_sections(synthetic: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(capsys, "report", str(synthetic))
    assert out.code == 0, out.err
    text = out.out
    assert_fits(text)
    locks = section(text, "Locks")
    assert re.search(r"migrations.lock +2 +1 +2.50s +2.50s +3.00s +gw0 3.00s, gw1 1.00s$", locks[1])
    assert re.fullmatch(
        r"  lock +taken +waited +wait total +wait max +max hold +fail +top holders: time held",
        locks[0],
    )
    assert "  - gw1 waited 2.50s for gw0; lock migrations.lock" in locks
    migrations = "\n".join(section(text, "Migrations"))
    assert (
        "! gw0 and gw1 migrated the same database postgresql://***@db/app at the same time"
        in migrations
    )
    assert "gw1 alembic upgrade failed: DuplicateTable: alembic_version" in migrations
    containers = "\n".join(section(text, "Containers"))
    assert "! postgres:16 started 2x by gw0, gw1, 7.00s of startup in all" in containers
    assert re.search(r"postgres:16 +c0ffee0 +gw0 +3.50s +ready +gw1 +2", containers)
    stalls = section(text, "Stalls (1)")
    assert stalls[:3] == [
        "  gw1 stalled after 31.0s in call",
        "  test …ns.py::TestAlembicUpgrades::"
        "test_upgrade_runs_once_even_when_every_worker_tries[postgres-16]",
        "  at tests/test_db.py:12 in test_upgrade",
    ]
    assert stalls[3].split() == ["thread", "verdict", "blocked", "in", "where"]
    assert re.fullmatch(
        r"  MainThread +lock +threading.Lock.acquire +tests/test_db.py:12 in test_upgrade",
        stalls[4],
    )
    assert re.fullmatch(r"  pool-worker-1 +sleep", stalls[5])
    crashes = section(text, "Worker crashes (1)")
    assert re.search(r"gw1 +….*_tries\[postgres-16\] +signal SIGKILL +-$", crashes[1])
    assert crashes[2] == "      node down: Not properly terminated"
    failures = section(text, "Failures (1)")
    assert failures[1].endswith(
        "test_upgrade_runs_once_even_when_every_worker_tries[postgres-16]  gw1     call"
    )
    assert failures[2] == "      AssertionError: relation already exists"
    assert "Unresponsive workers" in text
    assert "gw0 holds lock:a, waits for lock:b → gw1 holds lock:b, waits for lock:a" in text
    assert section(text, "Dropped events")[2].split() == ["gw0", "hb", "3"]
    assert "warning: hub: gw1 sent a malformed event" in text

    model = json.loads(run_cli(capsys, "report", str(synthetic), "-f", "json").out)
    (lock,) = model["locks"]
    assert (lock["acquisitions"], lock["contended"], lock["total_wait"]) == (2, 1, 2.5)
    assert lock["waits"] == 1
    assert [(h["worker"], h["held"]) for h in lock["holders"]] == [("gw0", 3.0), ("gw1", 1.0)]
    assert [(w["worker"], w["holder"], w["waited"]) for w in model["lock_waits"]] == [
        ("gw1", "gw0", 2.5)
    ]
    assert [m["concurrent_with"] for m in model["migrations"]] == [["gw1"], ["gw0"]]
    assert [c["image_starts"] for c in model["containers"]] == [2, 2]
    assert model["containers"][0]["users"] == ["gw1"]
    assert model["stalls"][0]["threads"][0]["where"] == "tests/test_db.py:12 in test_upgrade"
    assert model["crashes"][0]["signal"] == "SIGKILL"

    markdown = run_cli(capsys, "report", str(synthetic), "-f", "markdown").out
    assert "#### Locks" in markdown
    assert "| `filelock:/tmp/migrations.lock` | 2 | 1 |" in markdown
    assert f"`{LONG_NODEID}`" in markdown


def test_report_reads_the_log_once(
    synthetic: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next-run prediction is made from the report's own fold, not from a second read."""
    from testmon_live.plugin import runlog

    opened: list[Path] = []

    def counting(path: Path, *args: Any, **kwargs: Any) -> Iterator[ev.Event]:
        opened.append(path)
        return read(path, *args, **kwargs)

    read = runlog.iter_log
    for module in ("testmon_live.tui.reports.logs", "testmon_live.tui.predict.profile"):
        monkeypatch.setattr(f"{module}.iter_log", counting)
    model = json.loads(run_cli(capsys, "report", str(synthetic), "-f", "json").out)
    assert model["next_run"] is not None
    assert opened == [synthetic]


def test_failures_listed_are_the_first_two_thousand(
    monitor: MonitorDir, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report's fold keeps every test (for the next-run line); its list of failures
    stays at most FAILURES_KEPT long, as documented."""
    from testmon_live.plugin.state import FAILURES_KEPT

    failing = [
        finished_test("gw0", f"t.py::test_{i}", T0 + 1 + i / 1000, "failed", 0.001)
        for i in range(FAILURES_KEPT + 1)
    ]
    end = ev.RunFinished(ts=T0 + 5, exitstatus=1, status="tests_failed", duration=5.0)
    path = sample_runs.write_log(
        monitor.log_path("20260101-120000-many"), [header("many"), *failing, end]
    )
    model = json.loads(run_cli(capsys, "report", str(path), "-f", "json").out)
    assert model["totals"]["failing"] == FAILURES_KEPT + 1
    assert len(model["failures"]) == FAILURES_KEPT
    assert model["failures"][0]["nodeid"] == "t.py::test_0"


def test_torn_and_garbage_lines_are_reported_not_fatal(
    monitor: MonitorDir, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [ev.encode_line(e) for e in synthetic_events()[:-1]]
    lines.insert(2, b"this is not json\n")
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # the killed writer's half line
    path = monitor.log_path("20260101-120000-abcd")
    path.write_bytes(b"".join(lines))

    out = run_cli(capsys, "report", str(path))
    assert out.code == 0, out.err
    assert "incomplete (no end record" in out.out.splitlines()[0]
    skipped = section(out.out, "Skipped log lines")
    assert skipped[0] == "  the reader skipped 2 lines of the log:"
    assert re.match(r" +3 +JSON is malformed", skipped[2])
    assert re.match(rf" +{len(lines)} +torn last line", skipped[3])

    model = json.loads(run_cli(capsys, "report", str(path), "-f", "json").out)
    assert [s["line"] for s in model["skipped_lines"]] == [3, len(lines)]
    assert model["run"]["status"] == "incomplete"
    assert model["run"]["exit_status"] is None


# ----------------------------------------------------------------------- errors


def test_newer_schema_says_upgrade(monitor: MonitorDir) -> None:
    newer = {"t": "run", "schema": 99, "run_id": "x", "rootdir": "/", "args": "now a string"}
    path = monitor.log_path("20990101-000000-beef")
    path.write_text(json.dumps(newer) + "\n")
    for args in (("report", str(path)), ("runs", "--dir", str(monitor.root))):
        done = run_module(*args)
        assert "Traceback" not in done.stderr
        if args[0] == "report":
            assert done.returncode == cli.EXIT_SCHEMA
            assert len(done.stderr.splitlines()) == 1
            assert "has log schema 99" in done.stderr
            assert "upgrade testmon-live" in done.stderr
        else:  # the listing goes on, and says why the file is not listed
            assert done.returncode == 0
            assert "20990101-000000-beef.jsonl: not listed: it has log schema 99" in done.stdout


def test_errors_are_one_line_with_exit_codes(
    tmp_path: Path, monitor: MonitorDir, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (("runs", "--dir", str(empty)), ("report", "--dir", str(empty))):
        out = run_cli(capsys, *args)
        assert out.code == cli.EXIT_ERROR
        assert out.err.count("\n") == 1
        assert "pytest --monitor" in out.err

    foreign = sample_runs.write_log(monitor.runs / "notes.jsonl", [])
    foreign.write_text('{"hello": "world"}\n')
    out = run_cli(capsys, "report", str(foreign))
    assert (out.code, out.out) == (cli.EXIT_ERROR, "")
    assert "is not a testmon-live run log (line 1:" in out.err

    out = run_cli(capsys, "report", str(tmp_path / "missing.jsonl"))
    assert out.code == cli.EXIT_ERROR
    assert f"no run log at {tmp_path / 'missing.jsonl'}" in out.err

    out = run_cli(capsys, "runs", "--dir", str(tmp_path / "nowhere"))
    assert out.code == cli.EXIT_ERROR
    assert "no such folder" in out.err

    out = run_cli(capsys, "runs", "--dir", str(foreign))
    assert out.code == cli.EXIT_ERROR
    assert "a file, not a folder" in out.err

    (tmp_path / "odd.jsonl").mkdir()
    out = run_cli(capsys, "report", str(tmp_path / "odd.jsonl"))
    assert out.code == cli.EXIT_ERROR
    assert "odd.jsonl is a folder, not a run log" in out.err

    done = run_module("report", "--format", "xml")
    assert done.returncode == cli.EXIT_USAGE
    assert "invalid choice: 'xml'" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_monitor_folder_says_where_it_looked(tmp_path: Path) -> None:
    done = run_module("runs", cwd=tmp_path)
    assert done.returncode == cli.EXIT_ERROR
    assert done.stderr.strip() == (
        f"testmon runs: error: no .testmon folder from {tmp_path} upwards: record a run with "
        "`pytest --monitor`, or point --dir at a .testmon folder"
    )


# -------------------------------------------------------------------- the command


def test_help_version_and_light_imports(synthetic: Path) -> None:
    top = run_module("--help")
    assert top.returncode == 0
    assert re.search(r"runs +list the recorded runs", top.stdout)
    assert re.search(r"report +summarise a run", top.stdout)
    report_help = run_module("report", "--help").stdout
    assert "-f FORMAT, --format FORMAT" in report_help
    assert "markdown (for a CI job summary" in report_help
    assert "GITHUB_STEP_SUMMARY" in report_help
    assert "incomplete" in run_module("runs", "--help").stdout
    assert re.match(
        r"testmon-live \S+ \(reads run logs of schema \d+", run_module("--version").stdout
    )

    probe = (
        "import sys\n"
        "from testmon_live.tui.cli import main\n"
        f"code = main(['report', {str(synthetic)!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "assert not heavy, heavy\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Locks" in done.stdout


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (200, LONG_NODEID),
        (130, "…/package/test_database_migrations.py::TestAlembicUpgrades::"
              "test_upgrade_runs_once_even_when_every_worker_tries[postgres-16]"),
        (110, "…database_migrations.py::TestAlembicUpgrades::"
              "test_upgrade_runs_once_even_when_every_worker_tries[postgres-16]"),
        (30, "…ery_worker_tries[postgres-16]"),
    ],
)  # fmt: skip
def test_shorten_nodeid_keeps_the_end(width: int, expected: str) -> None:
    assert shorten_nodeid(LONG_NODEID, width) == expected


def test_summary_stall_verdicts_are_those_of_its_location_with_later_changes() -> None:
    """The location is taken at the first sample: the verdicts beside it must be that
    sample's too (a filelock wait that turned into a sleep is still shown as the lock)."""
    first = stall_event()
    threads = {t.ident: t for t in first.threads}
    record = StallRecord(w="gw1", reason="stall", first=first, threads=threads)
    later = ev.ThreadStack(name="MainThread", ident=1, verdict="sleep", detail="time.sleep")
    record.merge(ev.Stall(w="gw1", ts=T0 + 9, test=LONG_NODEID, sample=2, threads=[later]))
    head, verdicts = stall_lines(record)
    assert head.endswith("at tests/test_db.py:12 in test_upgrade")
    assert verdicts == "    threads: MainThread lock (later sleep), pool-worker-1 sleep"


def test_text_output_uses_a_wider_terminal(
    monkeypatch: pytest.MonkeyPatch, synthetic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """100 columns at least; more when the terminal (or $COLUMNS) has them, so that
    `testmon runs` does not cut a long result a wide screen could show."""
    monkeypatch.setenv("COLUMNS", "60")
    assert text_width() == WIDTH
    monkeypatch.setenv("COLUMNS", "250")
    assert text_width() == 250
    out = run_cli(capsys, "report", str(synthetic)).out
    assert any(len(line) > WIDTH for line in out.splitlines())
    assert "…" not in out


def test_text_into_a_pipe_or_a_file_is_never_cut(
    monkeypatch: pytest.MonkeyPatch, synthetic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a terminal (a CI log, a file, grep) and no $COLUMNS: whole lines, no `…`."""
    monkeypatch.delenv("COLUMNS", raising=False)
    assert text_width() > 10_000
    out = run_cli(capsys, "report", str(synthetic)).out
    assert "…" not in out
    assert LONG_NODEID in out


def test_every_format_has_one_renderer_and_json_builds_no_document() -> None:
    """``--format`` goes through one table of renderers for every command; JSON prints
    the model as it is and never asks for the text document."""
    assert set(RENDERERS) == set(get_args(Format))
    model = {"a": 1}

    def no_document(_: object) -> list[Section]:
        raise AssertionError("JSON needs no sections")

    assert json.loads(render("json", model, no_document)) == model
    drawn = [Section(("Title",), [Prose([("some ", Code("code"))])])]
    assert render("markdown", model, lambda _: drawn).startswith("### Title\n")
    assert render("text", model, lambda _: drawn).startswith("Title\n")


def test_migration_errors_group_across_tmp_paths_count_tests_and_obey_top() -> None:
    """Errors that differ only in each test's tmp_path are one row; "and N more" counts
    tests, not migrations; the text says how many kinds --top left out."""
    from testmon_live.tui.reports.logs import LoadedRun
    from testmon_live.tui.reports.model import build_report
    from testmon_live.tui.reports.render_text import render_text
    from testmon_live.tui.reports.sections import sections

    events: list[ev.Event] = [
        ev.RunStarted(ts=1.0, schema=ev.SCHEMA_VERSION, run_id="r", rootdir="/p")
    ]
    ts = 2.0

    def failed(test: str, error: str) -> None:
        nonlocal ts
        ts += 1.0
        events.append(
            ev.Migration(
                w="gw0", ts=ts, action="end", tool="alembic", op="upgrade",
                url="sqlite:///x.db", duration=0.1, error=error, test=test,
            )
        )  # fmt: skip

    for n in range(4):  # four tests, the first provoking it twice, each in its own tmp_path
        for _ in range(2 if n == 0 else 1):
            failed(
                f"t.py::test_{n}", f"no such table in /tmp/pytest-of-me/pytest-7/test_{n}0/app.db"
            )
    for n in range(12):  # twelve other messages
        failed("t.py::test_other", f"error kind {'abcdefghijkl'[n]}")
    state = RunState().apply_all(events)
    report = build_report(LoadedRun(Path("r.jsonl"), state, "finished"), top=3)
    rows = report["migration_errors"]
    assert len(rows) == 3
    assert report["omitted"]["migration_errors"] == 13 - 3
    first = rows[0]
    assert (first["count"], first["test_count"], len(first["tests"])) == (5, 4, 3)
    text = render_text(sections(report), width=400)
    assert "failed 5×: no such table in /tmp/pytest-of-me/pytest-7/test_00/app.db" in text
    assert "t.py::test_2 and 1 more" in text
    assert "10 migration errors more not shown" in text


@pytest.mark.parametrize(
    ("outcome", "subtests", "caught"),
    [
        ("passed", {}, True),
        ("xfailed", {}, False),  # marked xfail because the migration fails: a failure
        ("skipped", {}, False),
        ("passed", {"passed": 1, "failed": 1}, False),
        ("failed", {}, False),
    ],
)
def test_only_a_passing_test_catches_a_migration_error(
    outcome: str, subtests: dict[str, int], caught: bool
) -> None:
    migration = ev.Migration(
        w="gw0", ts=2.0, action="end", tool="alembic", op="upgrade",
        url="sqlite:///x.db", duration=0.1, error="boom", test="t.py::test_it",
    )  # fmt: skip
    state = RunState().apply_all(
        [
            ev.RunStarted(ts=1.0, schema=ev.SCHEMA_VERSION, run_id="r", rootdir="/p"),
            migration,
            ev.TestFinished(
                w="gw0", ts=3.0, nodeid="t.py::test_it", outcome=outcome, subtests=subtests
            ),
        ]
    )
    assert state.caught(migration) is caught


def test_a_workers_reports_between_phases_are_in_its_busy_time_and_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failing tests of 3 ms by pytest's count whose failure reports took 0.5 s each: the
    report counts their workers busy, gives the time between phases per worker, and its
    Workers section says where busy time beyond the phase columns went."""
    events = sample_runs.slow_reports_run(tests=8, workers=2, report=0.5)
    log = sample_runs.write_log(tmp_path / "runs" / "20261117-070640-reports.jsonl", events)
    out = run_cli(capsys, "report", str(log), "--format", "json")
    assert out.code == 0, out.err
    model = json.loads(out.out)
    for worker in model["workers"]:
        assert worker["busy"] == pytest.approx(4 * 0.503, abs=0.001)
        assert worker["reports"] == pytest.approx(4 * 0.5, abs=0.001)
        assert worker["call"] == pytest.approx(0.004, abs=0.001)
    assert model["totals"]["test_time"] == pytest.approx(8 * 0.503, abs=0.001)
    assert model["totals"]["efficiency"] == pytest.approx(0.714, abs=0.001)
    monkeypatch.setenv("COLUMNS", "400")  # whole lines, whatever width the runner has
    out = run_cli(capsys, "report", str(log))
    said = " ".join(out.out.split())
    assert "4.00s of it (99%) was between phases, in none: pytest making a phase's report" in said
    assert "parallel efficiency 71%" in said
    quick = run_cli(capsys, "report", str(_quick_log(tmp_path)))
    assert "between phases" not in quick.out  # a run without such gaps: not a word


def _quick_log(folder: Path) -> Path:
    events = sample_runs.slow_reports_run(tests=8, workers=2, report=0.0)
    return sample_runs.write_log(folder / "runs" / "20261117-070641-quick.jsonl", events)


def test_json_is_a_shorthand_for_format_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`testmon report --json` (what people type first) is `--format json`, as is
    `testmon whatif --json`; it was an "unrecognized arguments" error."""
    events = sample_runs.slow_reports_run(tests=4, workers=2, report=0.0)
    log = sample_runs.write_log(tmp_path / "runs" / "20261117-070640-json.jsonl", events)
    for command in ("report", "whatif"):
        out = run_cli(capsys, command, str(log), "--json")
        assert out.code == 0, out.err
        long = run_cli(capsys, command, str(log), "--format", "json")
        assert json.loads(out.out) == json.loads(long.out)
