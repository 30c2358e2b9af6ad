"""Database locks and migrations through real pytest sessions against real servers:
PostgreSQL at 127.0.0.1:5432 (user postgres), MariaDB at 127.0.0.1:3306 (root) and SQLite
files. Tests marked ``postgres`` / ``mariadb`` need that server (tests/conftest.py checks it:
a missing server skips locally and fails under ``CI=true``).

Each test gets a database of its own, so runs do not see each other's tables or locks.
Placement: ``--dist each`` (every worker runs every test; a barrier makes them meet).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.probes import dbstatements
from testmon_live.plugin.probes import sqlalchemy as probe
from testmon_live.tui import cli

from .conftest import only_run
from .test_locks import BARRIER, TIMEOUT
from .test_mysql_holders import performance_schema

# ---------------------------------------------------------------- migrations

ALEMBIC_FILES = {
    "migrations/env.py": """
from alembic import context
from sqlalchemy import create_engine

url = context.config.get_main_option("sqlalchemy.url")
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
""",
    "migrations/script.py.mako": "",
    "migrations/versions/0001_users.py": """
import time
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

def upgrade():
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))
    time.sleep(0.4)  # a migration takes a moment: the window other workers race into
    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True))

def downgrade():
    op.drop_table("orders")
    op.drop_table("users")
""",
}

MIGRATE = """
import os
from pathlib import Path
from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent
URL = (HERE / "db_url.txt").read_text().strip()

def alembic_config():
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", URL)
    return cfg

def migrate():
    command.upgrade(alembic_config(), "head")
    return "0001"
"""


def _suite(pytester: pytest.Pytester, url: str, files: dict[str, str]) -> None:
    for name, text in {**ALEMBIC_FILES, **files}.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (pytester.path / "db_url.txt").write_text(url)
    (pytester.path / "barrier.py").write_text(BARRIER)
    (pytester.path / "migrate.py").write_text(MIGRATE)


def _migrations(run_events: list[ev.Event]) -> dict[str, list[ev.Migration]]:
    out: dict[str, list[ev.Migration]] = {}
    for event in run_events:
        if isinstance(event, ev.Migration) and event.action == "end":
            out.setdefault(event.w, []).append(event)
    return out


UNGUARDED = {
    # Every worker first spends a moment in its migration, then creates the table: their
    # migrations overlap for that moment whatever the machine's load (a migration that
    # fails within the clocks' slack of another's start is not told apart from
    # back-to-back ones; the first CREATE commits at once in SQLite, and a worker that
    # came a few ms late used to fail that fast on a loaded machine).
    "migrations/versions/0001_users.py": """
import time
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

def upgrade():
    time.sleep(0.4)
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))
    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True))

def downgrade():
    op.drop_table("orders")
    op.drop_table("users")
""",
    "conftest.py": """
import pytest
from barrier import barrier
from migrate import migrate

@pytest.fixture(scope="session")
def schema():
    barrier("migrate", 4)   # the classic: every worker migrates at session start
    return migrate()
""",
    "test_app.py": """
def test_app(schema):
    assert schema == "0001"
""",
}


def test_concurrent_sqlite_migrations_fail_and_name_the_workers(
    pytester: pytest.Pytester,
) -> None:
    url = f"sqlite:///{pytester.path / 'app.db'}"
    _suite(pytester, url, UNGUARDED)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "4", "--dist", "each", timeout=TIMEOUT
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) >= 1, result.stdout.str()  # the race is reproduced
    out = result.stdout.str()
    assert "already exists" in out or "database is locked" in out
    run = only_run(pytester)
    state = run.state
    migrations = _migrations(run.events)
    assert set(migrations) == {"gw0", "gw1", "gw2", "gw3"}
    failed = {w for w, ms in migrations.items() if any(m.error for m in ms)}
    assert failed, migrations
    assert all(m.tool == "alembic" and m.op == "upgrade" for ms in migrations.values() for m in ms)
    assert all(m.to_rev == "0001" for ms in migrations.values() for m in ms)
    (racing,) = state.migration_races.values()
    assert len(racing) >= 2
    # A worker whose migration started only after another one had finished fails too
    # ("already exists") without having overlapped anyone: failed workers need not race.
    assert racing <= set(migrations)
    notices = [n.msg for n in run.of(ev.Notice) if n.msg.startswith("concurrent migrations")]
    assert len(notices) == 1, notices  # once, however many workers join the race later
    assert "app.db" in notices[0]
    # The summary says it once: as the racing setup of `schema`, on that SQLite file.
    assert "racing setup: " in out
    assert "set up session fixture 'schema' at the same time" in out
    assert "concurrent migrations:" not in out


GUARDED_BY_RUN_ONCE = {
    "conftest.py": """
import pytest
from barrier import barrier
from migrate import migrate
from testmon_live.plugin import monitor

@pytest.fixture(scope="session")
def schema():
    barrier("migrate", 4)
    return monitor.run_once("migrations", migrate)
""",
    "test_app.py": UNGUARDED["test_app.py"],
}


def test_run_once_migrates_once_and_the_suite_passes(pytester: pytest.Pytester) -> None:
    url = f"sqlite:///{pytester.path / 'app.db'}"
    _suite(pytester, url, GUARDED_BY_RUN_ONCE)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "4", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=4)
    run = only_run(pytester)
    migrations = _migrations(run.events)
    assert sum(len(ms) for ms in migrations.values()) == 1
    ((worker, (migration,)),) = migrations.items()
    assert migration.from_rev is None
    assert migration.to_rev == "0001"
    assert migration.error is None
    assert migration.duration is not None
    assert migration.duration >= 0.4
    state = run.state
    assert state.migration_races == {}
    once = state.locks[("run_once", "migrations")]
    assert once.acquisitions == 4
    assert once.contended == 3
    assert once.waited_on == {worker: 3}


GUARDED_BY_FILELOCK = {
    "conftest.py": """
import pytest
from filelock import FileLock
from barrier import barrier
from migrate import migrate

@pytest.fixture(scope="session")
def schema(tmp_path_factory):
    barrier("migrate", 4)
    with FileLock(str(tmp_path_factory.getbasetemp().parent / "migrate.lock")):
        return migrate()
""",
    "test_app.py": UNGUARDED["test_app.py"],
}


def test_filelock_guarded_migrations_record_waits(pytester: pytest.Pytester) -> None:
    url = f"sqlite:///{pytester.path / 'app.db'}"
    _suite(pytester, url, GUARDED_BY_FILELOCK)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "4", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=4)
    run = only_run(pytester)
    state = run.state
    (stats,) = [s for s in state.locks.values() if s.kind == "filelock"]
    assert stats.acquisitions == 4
    assert stats.contended >= 2
    assert stats.max_wait >= 0.3
    waits = [e for e in state.lock_events if e.action == "wait"]
    holders = [(w, state.holder(w)) for w in waits]
    assert all(h is not None and h.w and h.w != w.w for w, h in holders)
    assert all(w.fixture == "schema" for w in waits)
    # one real upgrade (0001 applied); the others found the database current
    migrations = [m for ms in _migrations(run.events).values() for m in ms]
    assert len(migrations) == 4
    assert sorted(str(m.from_rev) for m in migrations) == ["0001", "0001", "0001", "None"]
    assert state.migration_races == {}


# ---------------------------------------------------------------- PostgreSQL

PG_ADVISORY = {
    "conftest.py": """
import time
import pytest
import sqlalchemy as sa
from barrier import barrier
from migrate import migrate, URL

@pytest.fixture(scope="session")
def schema():
    engine = sa.create_engine(URL)
    barrier("migrate", 4)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": 4242})
        try:
            time.sleep(0.8)  # long enough for the watchdog to ask the server who blocks
            return migrate()
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(4242)"))
            conn.commit()
""",
    "test_app.py": UNGUARDED["test_app.py"],
}


@pytest.mark.postgres
def test_pg_advisory_lock_waits_name_holder_and_waiter(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    _suite(pytester, pg_url, PG_ADVISORY)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "4", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=4)
    run = only_run(pytester)
    state = run.state
    stats = state.locks[("pg_advisory", "4242")]
    assert stats.acquisitions == 4
    assert stats.contended >= 2
    assert 0.3 <= stats.max_wait < 20
    assert sum(stats.holders.values()) == 4
    connected = run.of(ev.DbConnected)
    assert {c.w for c in connected} == {"gw0", "gw1", "gw2", "gw3"}
    assert all("tm_" in c.url for c in connected)
    waits = [e for e in state.lock_events if e.kind == "pg_advisory" and e.action == "wait"]
    assert waits
    for wait in waits:
        holder = state.holder(wait)
        assert holder is not None
        assert holder.w in {"gw0", "gw1", "gw2", "gw3"}
        assert holder.w != wait.w
        assert wait.fixture == "schema"
    # the server said who blocked: its backend pid mapped to a worker
    db_waits = [d for d in state.db_waits if d.lock == "pg_advisory:4242"]
    assert db_waits
    for d in db_waits:
        blocked_by = state.blocked_by(d)
        assert blocked_by is not None
        assert blocked_by.w in {"gw0", "gw1", "gw2", "gw3"} - {d.w}
    # the server said who blocked: pg_blocking_pids' backend pid, mapped to a worker
    told = [b for b in map(state.blocked_by, db_waits) if b is not None and b.backend]
    assert told
    backends = {(c.backend, c.w) for c in connected}
    assert all((b.backend, b.w) in backends for b in told)
    migrations = [m for ms in _migrations(run.events).values() for m in ms]
    assert sorted(str(m.from_rev) for m in migrations) == ["0001", "0001", "0001", "None"]
    assert state.migration_races == {}
    assert "lock contention:" in result.stdout.str()


PG_ABBA = {
    "test_abba.py": """
import sqlalchemy as sa
import pytest
from barrier import barrier, WORKER
from migrate import URL

def test_abba():
    first, second = (1, 2) if WORKER == "gw0" else (2, 1)
    engine = sa.create_engine(URL)
    with engine.connect() as conn:
        conn.execute(sa.text("SET deadlock_timeout = '3s'"))
        conn.execute(sa.text(f"SELECT pg_advisory_lock({first})"))
        barrier("both-hold-one", 2)
        try:
            conn.execute(sa.text(f"SELECT pg_advisory_lock({second})"))
        except sa.exc.OperationalError as exc:
            assert "deadlock detected" in str(exc)
            conn.rollback()
        conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
        conn.commit()
""",
}


@pytest.mark.postgres
def test_pg_advisory_abba_reported_as_deadlock(pytester: pytest.Pytester, pg_url: str) -> None:
    _suite(pytester, pg_url, PG_ABBA)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    deadlocks = run.of(ev.Deadlock)
    assert len(deadlocks) == 1, deadlocks
    cycle = {(e.w, e.holds, e.waits_for) for e in deadlocks[0].cycle}
    assert cycle == {
        ("gw0", "pg_advisory:1", "pg_advisory:2"),
        ("gw1", "pg_advisory:2", "pg_advisory:1"),
    }
    # PostgreSQL broke the deadlock after deadlock_timeout; we saw it before that
    failed = [e for e in run.of(ev.LockEvent) if e.action == "failed"]
    assert len(failed) == 1
    assert "deadlock detected" in (failed[0].error or "")
    assert deadlocks[0].ts < failed[0].ts
    assert "deadlock: gw0 holds pg_advisory:1, waits for pg_advisory:2" in result.stdout.str()


# ---------------------------------------------------------------- MariaDB

MARIADB_LOCKS = {
    "test_mariadb.py": """
import time
import sqlalchemy as sa
from barrier import barrier, WORKER
from migrate import URL

def test_get_lock_and_metadata_lock():
    engine = sa.create_engine(URL)
    with engine.connect() as conn:
        if WORKER == "gw0":
            conn.execute(sa.text("CREATE TABLE items (id INT PRIMARY KEY)"))
            conn.commit()
            conn.execute(sa.text("SELECT GET_LOCK('seed', 10)"))
            barrier("holding", 2)
            time.sleep(1.0)
            conn.execute(sa.text("SELECT RELEASE_LOCK('seed')"))
            # an open transaction that read the table holds its metadata lock
            conn.execute(sa.text("SELECT * FROM items"))
            barrier("reading", 2)
            time.sleep(1.0)
            conn.commit()
        else:
            barrier("holding", 2)
            conn.execute(sa.text("SELECT GET_LOCK(:name, 10)"), {"name": "seed"})
            conn.execute(sa.text("SELECT RELEASE_LOCK('seed')"))
            barrier("reading", 2)
            time.sleep(0.1)
            conn.execute(sa.text("ALTER TABLE items ADD COLUMN name VARCHAR(20)"))
""",
}


@pytest.mark.mariadb
def test_mariadb_get_lock_and_metadata_lock_waits(
    pytester: pytest.Pytester, mariadb_url: str
) -> None:
    _suite(pytester, mariadb_url, MARIADB_LOCKS)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    state = run.state
    stats = state.locks[("mysql_get_lock", "seed")]
    assert stats.acquisitions == 2
    assert stats.contended == 1
    assert stats.max_wait >= 0.5
    get_lock_waits = [d for d in state.db_waits if d.lock == "mysql_get_lock:seed"]
    assert len(get_lock_waits) == 1
    (gl,) = get_lock_waits
    assert gl.w == "gw1"
    blocked_by = state.blocked_by(gl)
    assert blocked_by is not None
    assert blocked_by.w == "gw0"
    metadata = [d for d in state.db_waits if (d.lock or "").startswith("metadata:")]
    assert len(metadata) == 1, state.db_waits
    assert metadata[0].w == "gw1"
    # qualified with the connection's database, as the holder's side would name it
    assert metadata[0].lock == f"metadata:{mariadb_url.rsplit('/', 1)[1]}.items"
    holder = state.blocked_by(metadata[0])
    if performance_schema(mariadb_url):
        assert holder is not None
        assert holder.w == "gw0"
    else:  # nothing says who holds a metadata lock for sure: none named
        assert holder is None or not holder.w, holder
    assert metadata[0].waited >= 0.5
    assert "ALTER TABLE items" in metadata[0].statement


MARIADB_TIMEOUT = {
    "test_timeout.py": """
import time
import sqlalchemy as sa
from barrier import barrier, WORKER
from migrate import URL

def test_get_lock_times_out():
    engine = sa.create_engine(URL)
    with engine.connect() as conn:
        if WORKER == "gw0":
            assert conn.execute(sa.text("SELECT GET_LOCK('seed', 10)")).scalar() == 1
            barrier("holding", 2)
            barrier("gave-up", 2)
            conn.execute(sa.text("SELECT RELEASE_LOCK('seed')"))
        else:
            barrier("holding", 2)
            # the probe reads the result; the test must still see it
            got = conn.execute(sa.text("SELECT GET_LOCK(:name, 1)"), {"name": "seed"})
            assert got.scalar() == 0
            assert conn.exec_driver_sql("SELECT GET_LOCK('other', 0) AS ok").scalar() == 1
            conn.exec_driver_sql("SELECT RELEASE_LOCK('other')")
            barrier("gave-up", 2)
""",
}


@pytest.mark.mariadb
def test_mariadb_get_lock_timeout_is_a_failed_wait_not_a_holder(
    pytester: pytest.Pytester, mariadb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _suite(pytester, mariadb_url, MARIADB_TIMEOUT)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    state = run.state
    stats = state.locks[("mysql_get_lock", "seed")]
    assert stats.acquisitions == 1
    assert stats.holders == {"gw0": 1}
    assert (stats.failures, stats.timeouts, stats.refused) == (1, 1, 0)
    assert 0.9 <= stats.max_wait < 5  # the timed-out wait counts as waiting
    assert not stats.held_by
    assert not stats.waiting
    failed = [e for e in state.lock_events if e.action == "failed"]
    assert len(failed) == 1
    (timeout,) = failed
    assert (timeout.w, timeout.kind, timeout.key, timeout.reason) == (
        "gw1", "mysql_get_lock", "seed", "timeout"
    )  # fmt: skip
    assert timeout.waited is not None
    assert 0.9 <= timeout.waited < 5
    assert "timed out" in (timeout.error or "")
    # the watchdog saw it wait, and it named the holder
    waits = [e for e in state.lock_events if e.action == "wait" and e.key == "seed"]
    assert [w.w for w in waits] == ["gw1"]
    holder = state.holder(waits[0])
    assert holder is not None
    assert holder.w == "gw0"
    (db_wait,) = [d for d in state.db_waits if d.lock == "mysql_get_lock:seed"]
    assert "timed out" in (db_wait.error or "")
    # a GET_LOCK that returned 1 is held as before
    other = state.locks[("mysql_get_lock", "other")]
    assert (other.acquisitions, other.failures, other.holders) == (1, 0, {"gw1": 1})
    assert not other.held_by
    # the report says it
    capsys.readouterr()
    assert cli.main(["report", str(run.path), "--format", "json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out)["locks"] if r["key"] == "seed"]
    assert (row["acquisitions"], row["failures"], row["timeouts"], row["refused"]) == (1, 1, 1, 0)
    assert [h["worker"] for h in row["holders"]] == ["gw0"]
    assert cli.main(["report", str(run.path)]) == 0
    assert "1 (1 timed out)" in capsys.readouterr().out


MARIADB_EXECUTEMANY = {
    "test_bulk.py": """
import time
import sqlalchemy as sa
from barrier import barrier, WORKER
from migrate import URL

def test_bulk_insert_waits():
    engine = sa.create_engine(URL)
    with engine.connect() as conn:
        if WORKER == "gw0":
            conn.execute(sa.text("CREATE TABLE items (id INT PRIMARY KEY)"))
            conn.commit()
            conn.execute(sa.text("LOCK TABLES items WRITE"))
            barrier("locked", 2)
            time.sleep(1.0)
            conn.execute(sa.text("UNLOCK TABLES"))
        else:
            barrier("locked", 2)
            rows = [{"id": i} for i in range(50)]
            conn.execute(sa.text("INSERT INTO items (id) VALUES (:id)"), rows)
            conn.commit()
""",
}


@pytest.mark.mariadb
def test_mariadb_executemany_that_waits_is_recorded_with_its_blocker(
    pytester: pytest.Pytester, mariadb_url: str
) -> None:
    _suite(pytester, mariadb_url, MARIADB_EXECUTEMANY)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=2)
    state = only_run(pytester).state
    waits = [d for d in state.db_waits if d.statement.startswith("INSERT INTO items")]
    assert len(waits) == 1, state.db_waits
    (bulk,) = waits
    assert bulk.w == "gw1"
    assert bulk.lock == f"metadata:{mariadb_url.rsplit('/', 1)[1]}.items"
    assert 0.5 <= bulk.waited < 5
    assert bulk.error is None


ENGINE_KWARGS = {
    "test_kwargs.py": """
import sqlalchemy as sa
from migrate import URL

def test_dialect_keywords_still_accepted(tmp_path):
    for url in (URL, f"sqlite:///{tmp_path / 'k.db'}"):
        engine = sa.create_engine(
            url, isolation_level="AUTOCOMMIT", label_length=30, insertmanyvalues_page_size=50
        )
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()
""",
}


@pytest.mark.postgres
def test_create_engine_keeps_its_dialect_keywords_under_monitor(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    """The probe wraps dialects, but create_engine must accept what it accepts without it
    (it reads the accepted keywords off the dialect classes' ``__init__`` signatures)."""
    _suite(pytester, pg_url, ENGINE_KWARGS)
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", timeout=TIMEOUT)
    result.assert_outcomes(passed=1)


PG_TRY = {
    "test_try.py": """
import sqlalchemy as sa
from barrier import barrier, WORKER
from migrate import URL

def test_try_locks():
    engine = sa.create_engine(URL)
    with engine.connect() as conn:
        if WORKER == "gw0":
            conn.execute(sa.text("SELECT pg_advisory_lock(77)"))
            barrier("holding", 2)
            barrier("tried", 2)
            conn.execute(sa.text("SELECT pg_advisory_unlock(77)"))
            conn.commit()
            barrier("released", 2)
        else:
            barrier("holding", 2)
            # the probe reads the result; the test must still see it
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": 77})
            assert got.scalar() is False
            barrier("tried", 2)
            barrier("released", 2)
            assert conn.execute(sa.text("SELECT pg_try_advisory_lock(77)")).scalar() is True
            conn.execute(sa.text("SELECT pg_advisory_unlock(77)"))
            assert conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(78)")).scalar()
            conn.commit()
""",
}


@pytest.mark.postgres
def test_pg_try_advisory_locks_granted_and_refused(pytester: pytest.Pytester, pg_url: str) -> None:
    _suite(pytester, pg_url, PG_TRY)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=2)
    state = only_run(pytester).state
    stats = state.locks[("pg_advisory", "77")]
    assert stats.acquisitions == 2
    assert stats.holders == {"gw0": 1, "gw1": 1}
    assert (stats.failures, stats.refused, stats.timeouts) == (1, 1, 0)
    assert stats.contended == 0
    assert not stats.held_by
    (refused,) = [e for e in state.lock_events if e.action == "failed"]
    assert (refused.w, refused.key, refused.reason, refused.waited) == (
        "gw1", "77", "refused", None
    )  # fmt: skip
    xact = state.locks[("pg_advisory", "78")]
    assert (xact.acquisitions, xact.holders) == (1, {"gw1": 1})
    assert not xact.held_by  # the commit ended the transaction-scoped try-lock
    released = [e for e in state.lock_events if e.action == "released" and e.key == "78"]
    assert len(released) == 1


# ---------------------------------------------------------------- SQLite busy

SQLITE_BUSY = {
    "test_busy.py": """
import time
import pytest
import sqlalchemy as sa
from barrier import barrier, WORKER
from migrate import URL

def test_busy():
    engine = sa.create_engine(URL, connect_args={"timeout": 0.3})
    with engine.connect() as conn:
        if WORKER == "gw0":
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x INT)")
            conn.commit()
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
            barrier("locked", 2)
            time.sleep(1.0)
            conn.exec_driver_sql("COMMIT")
        else:
            barrier("locked", 2)
            with pytest.raises(sa.exc.OperationalError, match="database is locked"):
                conn.exec_driver_sql("SELECT * FROM t")
""",
}


def test_sqlite_database_is_locked_recorded(pytester: pytest.Pytester) -> None:
    url = f"sqlite:///{pytester.path / 'busy.db'}"
    _suite(pytester, url, SQLITE_BUSY)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=2)
    state = only_run(pytester).state
    path = str(pytester.path / "busy.db")
    stats = state.locks[("sqlite", path)]
    assert stats.acquisitions == 1
    assert stats.holders == {"gw0": 1}
    assert stats.failures == 1
    assert stats.longest_hold >= 0.9
    (busy,) = state.db_waits
    assert busy.w == "gw1"
    assert busy.error is not None
    assert "database is locked" in busy.error
    assert 0.2 <= busy.waited < 5


# ---------------------------------------------------------------- unit


@pytest.mark.parametrize(
    ("statement", "params", "expected"),
    [
        ("SELECT pg_advisory_lock(%(k)s)", {"k": 42}, ("acquire", "pg_advisory", "42", False)),
        ("select pg_advisory_xact_lock(7)", None, ("acquire", "pg_advisory", "7", True)),
        ("SELECT pg_advisory_unlock(%s)", (9,), ("release", "pg_advisory", "9", False)),
        ("SELECT pg_advisory_unlock_all()", None, ("release_all", "pg_advisory", "", False)),
        ("SELECT GET_LOCK(%s, 10)", ("mig",), ("acquire", "mysql_get_lock", "mig", False)),
        ("SELECT pg_try_advisory_lock(5)", None, ("acquire", "pg_advisory", "5", False)),
        (
            "SELECT pg_try_advisory_xact_lock(%(k)s)",
            {"k": 6},
            ("acquire", "pg_advisory", "6", True),
        ),
        ("SELECT RELEASE_LOCK('mig')", None, ("release", "mysql_get_lock", "mig", False)),
        ("LOCK TABLE users IN EXCLUSIVE MODE", None, ("acquire", "table", "users", True)),
        ("UNLOCK TABLES", None, ("release_all", "table", "", False)),
        ("SELECT id FROM jobs WHERE x = 1 FOR UPDATE", None, ("acquire", "row", "jobs", True)),
        ("BEGIN IMMEDIATE", None, ("acquire", "sqlite", "", True)),
        ("COMMIT", None, ("end", "", "", True)),
        ("SELECT 1", None, None),
        ("SELECT blocked FROM clocks", None, None),
        ("INSERT INTO t VALUES (1)", None, None),
        # schema changes: the schema they name ("" none, or the default one)
        ("CREATE TABLE items (id INT)", None, ("ddl", "", "", False)),
        ("CREATE TABLE public.items (id INT)", None, ("ddl", "", "", False)),
        ("create table S1.items (id int)", None, ("ddl", "", "s1", False)),
        ('CREATE TABLE "S1".items (id INT)', None, ("ddl", "", "S1", False)),
        ("CREATE SCHEMA IF NOT EXISTS w_gw0", None, ("ddl", "", "w_gw0", False)),
        ("CREATE SCHEMA AUTHORIZATION joe", None, ("ddl", "", "joe", False)),
        ("CREATE INDEX ix ON s1.items (id)", None, ("ddl", "", "s1", False)),
        ("CREATE INDEX ON s1.items (id)", None, ("ddl", "", "s1", False)),
        (
            "CREATE UNIQUE INDEX CONCURRENTLY ix ON ONLY s1.items (id)",
            None,
            ("ddl", "", "s1", False),
        ),
        ("ALTER TABLE ONLY s1.items ADD COLUMN x INT", None, ("ddl", "", "s1", False)),
        ("ALTER TABLE IF EXISTS ONLY s1.items ADD x INT", None, ("ddl", "", "s1", False)),
        ("DROP TABLE main.items", None, ("ddl", "", "", False)),
        ("CREATE TEMPORARY TABLE scratch (id INT)", None, None),
        ("CREATE TABLE temp.scratch (id INT)", None, None),
        # leading comments are no part of what a statement does
        ("-- step 3: add column\nALTER TABLE t ADD COLUMN c int", None, ("ddl", "", "", False)),
        ("/* 0003 */ CREATE TABLE s1.items (id INT)", None, ("ddl", "", "s1", False)),
        ("  -- a\n/* b\n c */\n  # d\nCOMMIT", None, ("end", "", "", True)),
        ("/* 4 */ SELECT pg_advisory_lock(%s)", (4,), ("acquire", "pg_advisory", "4", False)),
        # psycopg and PyMySQL bind a %s in a comment too: the lock's is the second
        (
            "-- locks user %s\nSELECT pg_advisory_lock(%s)",
            (1, 2),
            ("acquire", "pg_advisory", "2", False),
        ),
        ("-- lock the table\nSELECT 1", None, None),
        ("/* unterminated CREATE TABLE t (id INT)", None, None),
        ("-- CREATE TABLE t (id INT)", None, None),
    ],
)
def test_classify_lock_statements(
    statement: str, params: object, expected: tuple[str, str, str, bool] | None
) -> None:
    found = dbstatements.classify(statement, params)
    got = None if found is None else (found.action, found.kind, found.key, found.transactional)
    assert got == expected


JOIN_TEMP = """
    DROP TABLE IF EXISTS temp_stuff;
    DROP INDEX IF EXISTS temp_stuff_id;
    CREATE TEMPORARY TABLE temp_stuff AS SELECT id AS belonging_id FROM items WHERE name <> 'a;b';
    CREATE INDEX temp_stuff_belonging_id ON temp_stuff (belonging_id);
"""
"""django-model-utils' ``JoinManager``: one text that (re)makes its connection's own table."""


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        # a temporary table's statements, and those of a table the text creates as one
        ("DROP TABLE IF EXISTS temp_stuff; CREATE TEMPORARY TABLE temp_stuff AS SELECT 1", None),
        (JOIN_TEMP, None),
        ("-- join\nDROP TABLE IF EXISTS t;\nCREATE TEMP TABLE t (id INT);", None),
        ("CREATE TEMP TABLE a (x INT); CREATE TEMP TABLE b (x INT); DROP TABLE a, b", None),
        (
            "CREATE TEMP TABLE a (x INT); ALTER TABLE a ADD COLUMN y INT; CREATE INDEX ON a (x)",
            None,
        ),
        ("CREATE TABLE temp.a (x INT); DROP TABLE a; CREATE TABLE pg_temp.b (x INT)", None),
        ("DROP TEMPORARY TABLE IF EXISTS t; CREATE TEMPORARY TABLE t (x INT)", None),  # MySQL
        ('DROP TABLE IF EXISTS "T"; CREATE TEMP TABLE "T" (x INT)', None),
        # one real schema change among them is a schema change
        ("CREATE TEMP TABLE scratch (x INT); CREATE TABLE items (x INT)", ("ddl", "")),
        ("CREATE TEMP TABLE scratch (x INT); CREATE TABLE s1.items (x INT)", ("ddl", "s1")),
        ("DROP TABLE IF EXISTS t; CREATE TABLE t AS SELECT 1", ("ddl", "")),  # not temporary
        ("CREATE TEMP TABLE t (x INT); DROP TABLE public.t", ("ddl", "")),  # the permanent one
        ("CREATE TEMP TABLE t (x INT); DROP TABLE t, items", ("ddl", "")),
        ('DROP TABLE IF EXISTS "T"; CREATE TEMP TABLE t (x INT)', ("ddl", "")),  # not one name
        ("DROP INDEX IF EXISTS ix; CREATE TEMP TABLE t (x INT)", ("ddl", "")),  # whose index?
        ("DROP INDEX IF EXISTS tx; CREATE TEMP TABLE t (x INT)", ("ddl", "")),
        ("DROP INDEX IF EXISTS t_old; CREATE TEMP TABLE t (x INT)", None),  # named after t
        ("CREATE TEMP TABLE t (x INT); DROP INDEX t_users_email_idx", ("ddl", "")),  # no IF
        ("CREATE TEMP TABLE t (x INT); INSERT INTO t VALUES ('a;b'); DROP TABLE u", ("ddl", "")),
        ("CREATE TEMP TABLE t (x INT); INSERT INTO t VALUES ('a;b')", None),
        ("DROP TABLE IF EXISTS t; INSERT INTO t VALUES ('a;b')", ("ddl", "")),
        ("SET search_path TO s1; CREATE TABLE items (x INT)", ("ddl", "")),
        (
            "BEGIN; CREATE TEMP TABLE t_backup (a); INSERT INTO t_backup SELECT a FROM t; "
            "DROP TABLE t; CREATE TABLE t (a); DROP TABLE t_backup; COMMIT;",
            ("ddl", ""),
        ),
        # a ";" in a string, a quoted name, a comment or a dollar-quoted body separates nothing
        ("SELECT 'x; CREATE TABLE t (id INT)'", None),
        ('SELECT 1 AS "a;b", `c;d`; -- e; CREATE TABLE t (x INT)\n/* ; DROP TABLE u */', None),
        (
            "CREATE FUNCTION f() RETURNS void AS $body$ BEGIN CREATE TEMP TABLE x (y INT); "
            "END $body$ LANGUAGE plpgsql; CREATE TEMP TABLE y (z INT)",
            ("ddl", ""),
        ),
        ("CREATE TEMP TABLE t (x INT); SELECT $$; DROP TABLE items$$", None),
        ("CREATE TABLE items (x INT);\n", ("ddl", "")),
        ("SELECT 1; SELECT 2", None),
        # a lock still comes first, as it did
        ("SELECT pg_advisory_lock(5); CREATE TABLE t (x INT)", ("acquire", "5")),
    ],
)
def test_classify_texts_of_several_statements(
    statement: str, expected: tuple[str, str] | None
) -> None:
    """A text of several statements is read by its statements: a temporary table's (and a
    table's or an index's the text creates as temporary) are no schema change, one real
    schema change among them is one."""
    found = dbstatements.classify(statement, None)
    assert (None if found is None else (found.action, found.key)) == expected


def test_a_text_is_split_at_its_separators_only() -> None:
    assert dbstatements.statements(
        "SELECT 'it''s; ok'; SELECT $$a;b$$ -- c;\n; /* d; */ ; SELECT $1; SELECT a$b$c;"
    ) == ["SELECT 'it''s; ok'", " SELECT $$a;b$$ -- c;\n", " SELECT $1", " SELECT a$b$c"]
    # the common text is not split: one statement, or one ";" at its end
    assert not dbstatements.more_statements("CREATE TABLE t (x INT)")
    assert not dbstatements.more_statements("CREATE TABLE t (x INT);\n  ")
    assert dbstatements.more_statements("DROP TABLE t; CREATE TABLE t (x INT)")


@contextlib.contextmanager
def sqlalchemy_events() -> Iterator[list[ev.Event]]:
    """What the SQLAlchemy probe reports in this process meanwhile. The probe patches
    SQLAlchemy for good: only in the body of an ``isolated`` test (a fixture would run in
    the outer process too)."""
    from testmon_live.plugin.activity import WorkerActivity
    from testmon_live.plugin.probes import locking

    got: list[ev.Event] = []
    probe.install([])
    locking.activate(locking.LockReporter(got.append, WorkerActivity(0.0)))
    try:
        yield got
    finally:
        locking.activate(None)


@pytest.mark.isolated  # the probe patches SQLAlchemy for good
def test_create_all_and_drop_all_are_migrations(tmp_path: Path) -> None:
    import sqlalchemy as sa

    with sqlalchemy_events() as got:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
        metadata = sa.MetaData()
        sa.Table("t", metadata, sa.Column("id", sa.Integer, primary_key=True))
        metadata.create_all(engine)
        metadata.drop_all(engine)
        with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
            conn.exec_driver_sql("SELECT * FROM t")
        engine.dispose()
    migrations = [e for e in got if isinstance(e, ev.Migration)]
    assert [(m.tool, m.op, m.action) for m in migrations] == [
        ("sqlalchemy", "create_all", "begin"),
        ("sqlalchemy", "create_all", "end"),
        ("sqlalchemy", "drop_all", "begin"),
        ("sqlalchemy", "drop_all", "end"),
    ]
    assert all(m.url.endswith("m.db") for m in migrations)
    assert migrations[1].duration is not None
    # a failing statement that is no lock and no busy error leaves no lock events behind
    assert not [e for e in got if isinstance(e, (ev.LockEvent, ev.DbWait))]


@pytest.mark.isolated  # the probe patches SQLAlchemy for good
def test_textual_ddl_through_sqlalchemy_is_a_schema_change(tmp_path: Path) -> None:
    """A user's textual DDL through SQLAlchemy (``text()``, ``exec_driver_sql``) is a
    hand-written runner's, whatever blanks or comments come first; SQLAlchemy's schema
    constructs are its own: ``Table.create()`` (text starting with a newline) is none, even
    of a table whose name says "lock"; ``Index.create()`` and ``DDL(...)`` (text starting
    with its word) are."""
    import sqlalchemy as sa

    with sqlalchemy_events() as got:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
        metadata = sa.MetaData()
        table = sa.Table("c", metadata, sa.Column("id", sa.Integer))
        # a construct's text naming a lock word ("stock", "locked") is still its own
        stock = sa.Table("stock", metadata, sa.Column("locked", sa.Integer))
        with engine.begin() as conn:
            stock.create(conn)
            # each text twice: a construct's and a user's, either first (one verdict a text)
            conn.execute(sa.text("\n  CREATE TABLE a (id INTEGER)\n"))
            table.create(conn)
            conn.execute(sa.text("\nDROP TABLE c"))
            conn.execute(sa.text("-- 0002\nCREATE TABLE b (id INTEGER)"))
            conn.exec_driver_sql("/* 0003 */ ALTER TABLE b ADD COLUMN x INTEGER")
            table.create(conn)
            sa.Index("ix", table.c.id).create(conn)
            conn.execute(sa.DDL("DROP INDEX ix"))  # type: ignore[no-untyped-call]
        engine.dispose()
    steps = [
        step.name
        for m in got
        if isinstance(m, ev.Migration) and m.tool == "ddl" and m.action == "end"
        for step in m.steps or []
    ]
    assert steps == [
        "CREATE TABLE a (id INTEGER)",
        "DROP TABLE c",
        "CREATE TABLE b (id INTEGER)",
        "ALTER TABLE b ADD COLUMN x INTEGER",
        "CREATE INDEX ix ON c (id)",
        "DROP INDEX ix",
    ]


class _BufferedCursor:
    """Stands for PyMySQL's buffered cursor: rows kept in ``_rows``."""

    def __init__(self, names: list[str], rows: tuple[tuple[object, ...], ...]) -> None:
        self.description = [(n, 3, None, 1, 1, 0, True) for n in names]
        self._rows = rows
        self.rownumber = 0


@pytest.mark.parametrize(
    ("names", "rows", "check", "expected"),
    [
        (["GET_LOCK('a', 1)"], ((None,),), "get_lock", None),  # NULL: an error
        (["x"], ((0,),), "get_lock", 0),
        (["id", "GET_LOCK('a', 1)"], ((7, 1),), "get_lock", 1),  # the lock's column
        (["id", "other"], ((7, 1),), "get_lock", "unread"),  # which column: unknown
        (["got"], ((1,), (0,)), "get_lock", "unread"),  # several rows: unknown
        (["pg_try_advisory_lock"], ((False,),), "try", False),
    ],
)
def test_lock_result_read_without_consuming(
    names: list[str], rows: tuple[tuple[object, ...], ...], check: str, expected: object
) -> None:
    from testmon_live.plugin.activity import WorkerActivity
    from testmon_live.plugin.probes import locking

    got: list[ev.Event] = []
    cursor = _BufferedCursor(names, rows)
    value = dbstatements.result_value(
        locking.LockReporter(got.append, WorkerActivity(0.0)), cursor, check
    )
    assert (value if value is not dbstatements.UNREAD else "unread") == expected
    assert cursor.rownumber == 0
    assert got == []


LATE_IMPORT = {
    "test_late.py": """
import sys

PROBE = "testmon_live.plugin.probes.sqlalchemy"

def test_1_probe_not_loaded_before_sqlalchemy():
    assert "sqlalchemy" not in sys.modules
    assert PROBE not in sys.modules

def test_2_probe_follows_the_import(tmp_path):
    import sqlalchemy as sa
    assert PROBE in sys.modules
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'late.db'}")
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.exec_driver_sql("COMMIT")
    engine.dispose()
""",
}


def test_sqlalchemy_probe_loaded_only_once_the_suite_imports_sqlalchemy(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(**LATE_IMPORT)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", "-p", "no:randomly", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=4)
    state = only_run(pytester).state
    sqlite = [e for e in state.lock_events if e.kind == "sqlite"]
    assert {e.w for e in sqlite} == {"gw0", "gw1"}
    assert {e.test for e in sqlite} == {"test_late.py::test_2_probe_follows_the_import"}
    assert {e.action for e in sqlite} >= {"acquired", "released"}


def test_long_texts_of_several_statements_are_read_but_not_kept() -> None:
    """A bulk ``INSERT`` whose literals hold ``;`` is read without being kept (hundreds of
    such megabyte texts would otherwise stay in the verdicts' cache), and a text whose later
    statements name no schema change is not split at all."""
    dbstatements._text_ddl.cache_clear()
    rows = ",".join(f"({i}, 'a;b {i}')" for i in range(2000))
    bulk = f"CREATE TEMP TABLE t (x INT, y TEXT); INSERT INTO t VALUES {rows}; DROP TABLE u"
    assert len(bulk) > dbstatements.CACHED_TEXT
    assert dbstatements.classify(bulk, None) is not None  # DROP TABLE u: a schema change
    assert dbstatements._text_ddl.cache_info().currsize == 0
    assert dbstatements.classify(f"INSERT INTO t VALUES {rows}; SELECT 1", None) is None
    assert dbstatements._text_ddl.cache_info().misses == 0
    assert dbstatements.classify("CREATE TEMP TABLE t (x INT); DROP TABLE t", None) is None
    assert dbstatements._text_ddl.cache_info().currsize == 1
