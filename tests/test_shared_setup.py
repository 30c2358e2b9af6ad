"""What the monitor says about shared setup, lock waits and the end of a run, through real
pytest sessions with four xdist workers: a racing hand-written migration runner on one
SQLite file, a migration run once under a file lock while the others wait, two waits that
time out, alembic on private in-memory databases and offline, and a straggler collected
last. Each statement is checked where the user reads it: the live notices and the summary
in pytest's output, ``testmon report`` as text and JSON, and (for the tail) the dashboard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.dburl import display_url
from testmon_live.plugin.findings import FIX
from testmon_live.plugin.state import RunState
from testmon_live.plugin.summary import summary_lines
from testmon_live.tui import cli
from testmon_live.tui.dashboard.app import make_app
from testmon_live.tui.dashboard.screenshots import settle
from testmon_live.tui.dashboard.sources import ReplaySource
from testmon_live.tui.dashboard.widgets.parallelism import ParallelismPanel

from .conftest import Recorded, only_run, panel_text
from .test_alembic_probe import alembic_project
from .test_locks import BARRIER

pytestmark = pytest.mark.slow

TIMEOUT = 120.0
"""Seconds an inner pytest session may take (a hung inner suite fails the test)."""


def run4(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Recorded]:
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "4", "-p", "no:randomly", "-p", "no:cacheprovider", *args,
        timeout=TIMEOUT,
    )  # fmt: skip
    return result, only_run(pytester)


def summary(result: pytest.RunResult) -> list[str]:
    """The lines of the monitor's section at the end of pytest's output."""
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "testmon-live" in line and "---" in line)
    body = []
    for line in lines[start + 1 :]:
        if line.startswith("==="):
            break
        body.append(line)
    return body


def notices(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stdout.lines if line.startswith("[testmon-live] ")]


def report(capsys: pytest.CaptureFixture[str], recorded: Recorded, fmt: str = "text") -> str:
    capsys.readouterr()
    code = cli.main(["report", str(recorded.path), "-f", fmt, "--top", "10"])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def model(capsys: pytest.CaptureFixture[str], recorded: Recorded) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(report(capsys, recorded, "json"))
    return found


def section(text: str, title: str) -> str:
    """One section of a text report, title excluded."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body: list[str] = []
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break
        body.append(line)
    return "\n".join(body)


# ------------------------------------------------------------ racing setup

RACING_CONFTEST = """
from pathlib import Path

import pytest
import sqlalchemy as sa

from barrier import WORKER, barrier

DB = Path(__file__).parent / "app.db"


def migrate(engine):
    '''A hand-written runner: read the version, apply what is missing, write the version.'''
    with engine.connect() as conn:
        version = conn.exec_driver_sql("PRAGMA user_version").scalar()
        barrier("migrate", 4)  # all four read version 0 before any wrote it
        if version == 0:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.exec_driver_sql("CREATE TABLE users (id INTEGER PRIMARY KEY)")
            import time
            time.sleep(1.0)
            conn.exec_driver_sql("PRAGMA user_version = 1")
            conn.exec_driver_sql("COMMIT")


@pytest.fixture(scope="session")
def migrated_db():
    # gw3 waits for the lock long enough to get it, then finds the table there
    timeout = 20.0 if WORKER == "gw3" else 0.3
    engine = sa.create_engine(f"sqlite:///{DB}", connect_args={"timeout": timeout})
    migrate(engine)
    return engine
"""

RACING_TESTS = "\n".join(
    f"def test_{n}(migrated_db):\n    assert migrated_db is not None\n" for n in range(12)
)


def test_a_racing_hand_written_migration_runner_is_named_with_its_file_and_outcomes(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(barrier=BARRIER, test_users=RACING_TESTS)
    pytester.makeconftest(RACING_CONFTEST)
    result, recorded = run4(pytester)
    assert result.ret == 1, result.stdout.str()  # three workers' setups failed
    db = str(pytester.path / "app.db")

    race = model(capsys, recorded)["setup_races"]
    assert len(race) == 1, race
    (race,) = race
    assert race["fixture"] == "migrated_db"
    assert race["scope"] == "session"
    assert race["workers"] == ["gw0", "gw1", "gw2", "gw3"]
    assert race["resources"] == [{"kind": "sqlite", "name": db}]
    assert len(race["succeeded"]) == 1, race
    winner = race["succeeded"][0]
    assert sorted(race["failed"]) == sorted({"gw0", "gw1", "gw2", "gw3"} - {winner})
    for error in race["failed"].values():
        assert "database is locked" in error or "already exists" in error, race
    assert set(race["tests"]) == {"gw0", "gw1", "gw2", "gw3"}
    assert race["fix"] == "monitor.run_once"
    assert 0 <= race["spread"] <= race["overlap"] + 1.0

    lines = summary(result)
    head = "racing setup: gw0, gw1, gw2, gw3 set up session fixture 'migrated_db' at the same time"
    (said,) = [line for line in lines if line.startswith(head)]
    assert f" on SQLite file {db}: {winner} succeeded; " in said
    for worker, error in race["failed"].items():
        assert f"{worker} failed: {error}" in said
    assert f"  {FIX}" in lines
    assert not [line for line in lines if "set up 4x on 4 workers" in line], lines

    live = [line for line in notices(result) if line.startswith("[testmon-live] RACE ")]
    assert live, result.stdout.str()
    assert "session fixture 'migrated_db' at the same time" in live[0]
    assert f"SQLite file {db}" in live[0]
    assert "monitor.run_once" in live[0]

    text = section(report(capsys, recorded), "Racing shared setup")
    assert "gw0, gw1, gw2, gw3 set up session fixture 'migrated_db' at the same time" in text
    assert "  on SQLite file " in text
    assert "/app.db\n" in text
    assert f"  {winner} succeeded\n" in text
    for worker in race["failed"]:
        assert f"  {worker} failed in test_users.py::test_" in text
    assert f"fix: {FIX}" in text


# ---------------------------------------------------- run once under a lock

ONCE_CONFTEST = """
import time
from pathlib import Path

import pytest
from filelock import FileLock

from barrier import WORKER

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def migrated_db():
    arrived = HERE / "arrived"
    arrived.mkdir(exist_ok=True)
    (arrived / WORKER).touch()
    with FileLock(str(HERE / "migrations.lock"), timeout=60):
        done = HERE / "schema-version"
        if not done.exists():
            deadline = time.monotonic() + 30
            while len(list(arrived.iterdir())) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(1.0)  # the other three wait on the lock meanwhile
            done.write_text("1")
    return str(done)
"""


def test_a_migration_run_once_under_a_lock_is_no_setup_work_of_the_waiters(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(barrier=BARRIER, test_users=RACING_TESTS)
    pytester.makeconftest(ONCE_CONFTEST)
    result, recorded = run4(pytester)
    assert result.ret == 0, result.stdout.str()
    got = [e for e in recorded.of(ev.LockEvent) if e.action == "acquired"]
    (doer,) = [e.w for e in got if not e.waited]
    waiters = sorted(e.w for e in got if e.waited)
    assert waiters == sorted({"gw0", "gw1", "gw2", "gw3"} - {doer})

    data = model(capsys, recorded)
    (fixture,) = [f for f in data["fixtures"] if f["name"] == "migrated_db"]
    assert fixture["ran_once_on"] == doer
    assert fixture["waiters"] == waiters
    assert fixture["lock"] == "migrations.lock"
    assert fixture["work_total"] < fixture["setup_total"] - fixture["lock_wait_total"] + 0.001
    assert data["setup_races"] == []

    head = f"session fixture 'migrated_db' ran once on {doer}, "
    (said,) = [line for line in summary(result) if line.startswith(head)]
    assert said.endswith(f"; {', '.join(waiters)} waited " + said.split(" waited ")[1])
    assert said.endswith(" in all for its lock (migrations.lock)")
    assert not any("racing setup" in line for line in summary(result))

    text = report(capsys, recorded)
    assert head in section(text, "Fixtures by setup time")
    locks = section(text, "Locks")
    # top holders say how long each held it: the doer for its migration, the others briefly
    (row,) = [line for line in locks.splitlines() if "migrations.lock" in line][:1]
    assert re.search(rf"  {doer} \d[\d.]*m?s, gw\d ", row), row  # the doer first, its time
    for waiter in waiters:
        assert f"- {waiter} waited " in locks
        assert f" for {doer} in migrated_db (" in locks
    holders = next(lock for lock in data["locks"] if lock["key"].endswith("migrations.lock"))
    held = {h["worker"]: h["held"] for h in holders["holders"]}
    assert max(held, key=held.__getitem__) == doer


# ------------------------------------------------------------ lock timeouts

TIMEOUT_TESTS = """
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from barrier import WORKER, barrier

HERE = Path(__file__).parent


def test_contend():
    barrier("start", 4)
    if WORKER in ("gw2", "gw3"):
        with FileLock(str(HERE / f"{WORKER}.lock")):
            barrier("held", 4)
            barrier("done", 4, timeout=30)
    else:
        holder = {"gw0": "gw2", "gw1": "gw3"}[WORKER]
        barrier("held", 4)
        with pytest.raises(Timeout):
            FileLock(str(HERE / f"{holder}.lock"), timeout=1.5).acquire()
        barrier("done", 4, timeout=30)
"""


def test_every_wait_counts_timed_out_or_not_and_says_whom_it_waited_for(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(barrier=BARRIER, test_contend=TIMEOUT_TESTS)
    result, recorded = run4(pytester, "--dist", "each")
    assert result.ret == 0, result.stdout.str()

    (line,) = [line for line in summary(result) if line.startswith("lock contention: ")]
    assert line.startswith("lock contention: 2 locks waited on, 2 waits, "), line

    data = model(capsys, recorded)
    waited = {lock["key"].rsplit("/", 1)[-1]: lock for lock in data["locks"] if lock["waits"]}
    assert sorted(waited) == ["gw2.lock", "gw3.lock"]
    for lock in waited.values():
        assert (lock["waits"], lock["timeouts"], lock["contended"]) == (1, 1, 0)
        assert lock["total_wait"] >= 1.5
    assert {(w["worker"], w["holder"], w["outcome"]) for w in data["lock_waits"]} == {
        ("gw0", "gw2", "timeout"),
        ("gw1", "gw3", "timeout"),
    }

    locks = section(report(capsys, recorded), "Locks")
    for waiter, holder in (("gw0", "gw2"), ("gw1", "gw3")):
        assert f"- {waiter} waited " in locks
        assert f" for {holder} in test_contend.py::test_contend, then timed out" in locks
    for row in locks.splitlines():
        if row.startswith("  filelock:") and ("gw2.lock" in row or "gw3.lock" in row):
            assert row.split()[1:3] == ["1", "1"], row  # taken once (by its holder), waited once


# ------------------------------------------------------- alembic, no false alarms

SLOW_VERSION = """
import time
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

def upgrade():
    time.sleep(0.5)  # long enough for the four workers' migrations to overlap
    op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True))

def downgrade():
    op.drop_table("invoices")
"""

ALEMBIC_TESTS = """
from pathlib import Path

from alembic import command
from alembic.config import Config

from barrier import barrier

INI = str(Path(__file__).parent / "alembic.ini")


def test_upgrade_in_memory():
    barrier("start", 4)
    command.upgrade(Config(INI), "head")


def test_offline_sql(capsys):
    command.upgrade(Config(INI), "head", sql=True)
    assert "CREATE TABLE invoices" in capsys.readouterr().out
"""


def test_private_in_memory_databases_and_offline_runs_raise_no_alarm(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    alembic_project(pytester.path, "sqlite:///:memory:")
    (pytester.path / "migrations" / "versions" / "0003_invoices.py").write_text(SLOW_VERSION)
    pytester.makepyfile(barrier=BARRIER, test_alembic=ALEMBIC_TESTS)
    result, recorded = run4(pytester, "--dist", "each")
    assert result.ret == 0, result.stdout.str()

    migrations = [m for m in recorded.of(ev.Migration) if m.action == "end"]
    assert sorted(m.w for m in migrations) == ["gw0", "gw1", "gw2", "gw3"], migrations
    assert all(m.test == "test_alembic.py::test_upgrade_in_memory" for m in migrations)
    spans = sorted((m.ts - (m.duration or 0.0), m.ts) for m in migrations)
    assert spans[0][1] > spans[1][0], "the migrations must overlap for this test to mean it"

    out = result.stdout.str()
    assert "concurrent migrations" not in out
    assert "RACE" not in out
    data = model(capsys, recorded)
    assert data["migration_races"] == []
    assert data["setup_races"] == []
    for row in data["migrations"]:
        assert row["concurrent_with"] == []
        assert row["url"].endswith(":///:memory:"), row["url"]  # decoded, not %3Amemory%3A
    text = report(capsys, recorded)
    assert "at the same time" not in text
    assert "%3A" not in text


# ------------------------------------------------------------- the straggler

SHORT_TESTS = """
import time
import pytest

@pytest.mark.parametrize("n", range(48))
def test_short(n):
    time.sleep(0.25)
"""

STRAGGLER = """
import time

def test_straggler():
    time.sleep(8.0)
"""


async def test_a_straggler_collected_last_is_said_with_its_cost_and_an_estimate(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_a=SHORT_TESTS, test_z=STRAGGLER)
    result, recorded = run4(pytester)
    assert result.ret == 0, result.stdout.str()
    (straggler,) = [t for t in recorded.of(ev.TestFinished) if t.nodeid.startswith("test_z")]

    tail = model(capsys, recorded)["tail"]
    assert tail is not None
    assert tail["worker"] == straggler.w
    assert tail["test"] == "test_z.py::test_straggler"
    assert sorted(tail["idle_workers"]) == sorted({"gw0", "gw1", "gw2", "gw3"} - {straggler.w})
    assert 0 < tail["alone"] <= tail["below"] <= tail["wall"]
    assert tail["estimate"] is not None
    assert tail["estimate"] < tail["wall"]

    (said,) = [line for line in summary(result) if line.startswith("tail: ")]
    assert said.startswith("tail: the run ran below full width for its last ")
    assert f", held by {straggler.w} with test_z.py::test_straggler (" in said
    assert f"; {straggler.w} ran alone for the last " in said
    assert " idle meanwhile, " in said
    assert " of worker time in all; had that test started first, about " in said
    assert said.endswith("(an estimate from the recorded durations)")

    text = section(report(capsys, recorded), "The tail of the run")
    assert f"held by {straggler.w} with test_z.py::test_straggler" in text
    assert f"{straggler.w} ran alone for the last " in text
    assert " of worker time in all" in text
    assert "had that test started first, about " in text

    app = make_app(ReplaySource(recorded.path))
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        panel = await panel_text(app, pilot, "3", ParallelismPanel)
    assert "the tail: the run ran below full width for its last " in panel
    assert f"{straggler.w} ran alone for the last " in panel
    assert "test_z.py::test_straggler" in panel
    assert "had that test started first, about " in panel


# ------------------------------------------------------------- the fold alone


def _migration(w: str, ts: float, url: str, action: str = "begin") -> ev.Migration:
    return ev.Migration(
        w=w,
        ts=ts,
        action=action,  # type: ignore[arg-type]
        tool="sqlalchemy",
        op="create_all",
        url=url,
        duration=1.0 if action == "end" else None,
        fixture="db",
    )


@pytest.mark.parametrize(
    ("url", "private"),
    [
        ("sqlite://", True),
        ("sqlite:///:memory:", True),
        ("sqlite+pysqlite:///%3Amemory%3A", True),
        ("sqlite:///file:shared?mode=memory&cache=shared&uri=true", True),
        ("duckdb:///:memory:", True),
        ("duckdb://", True),
        ("duckdb:////tmp/app.duckdb", False),
        ("sqlite:////tmp/app.db", False),
        ("postgresql://app:***@db/test", False),
    ],
)
def test_only_a_shared_database_races(url: str, private: bool) -> None:
    state = RunState().apply_all(
        [
            _migration("gw0", 100.0, url),
            _migration("gw1", 100.1, url),
            _migration("gw0", 101.0, url, "end"),
            _migration("gw1", 101.1, url, "end"),
        ]
    )
    assert (state.migration_races == {}) is private, state.migration_races
    assert display_url(url) == url.replace("%3A", ":")


def test_a_migration_race_named_by_a_racing_setup_is_said_once() -> None:
    url = "sqlite:////tmp/app.db"
    events: list[ev.Event] = [_migration("gw0", 100.0, url), _migration("gw1", 100.1, url)]
    for w, error in (("gw0", None), ("gw1", "OperationalError: table users already exists")):
        events += [
            _migration(w, 101.0, url, "end"),
            ev.FixtureSetup(
                w=w, ts=101.2, name="db", scope="session", test="t.py::t", start=100.0,
                dur=1.2, error=error,
            ),
        ]  # fmt: skip
    state = RunState(detail=False).apply_all(events)
    (race,) = state.setup_races.values()
    assert [r.text for r in race.resources] == ["SQLite file /tmp/app.db"]
    assert (race.succeeded, list(race.failed)) == (["gw0"], ["gw1"])
    assert state.races_said_as_setup() == {url}
    lines = summary_lines(state, Path("x.jsonl"), [])
    assert not [line for line in lines if line.startswith("concurrent migrations")], lines
    assert [line for line in lines if line.startswith("racing setup: gw0, gw1 set up")], lines
