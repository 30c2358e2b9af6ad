"""Database locks through the DB-API drivers used directly (no SQLAlchemy): psycopg 3,
psycopg2, PyMySQL and sqlite3, through real pytest sessions against the real servers
(markers ``postgres`` / ``mariadb``) and real SQLite files.

Each test gets a database of its own; ``--dist each`` runs every test on every worker and a
barrier makes the workers meet, so who waits on whom is known.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from testmon_live.plugin import events as ev

from .conftest import in_own_process, only_run
from .test_locks import BARRIER, TIMEOUT

WORKERS4 = {"gw0", "gw1", "gw2", "gw3"}


def _params(url: str) -> str:
    """A ``dbparams.py`` for the inner suite: the driver keywords of a SQLAlchemy URL."""
    import sqlalchemy as sa

    u = sa.make_url(url)
    pg = {"host": u.host, "port": u.port or 5432, "user": u.username, "dbname": u.database}
    my = {"host": u.host, "port": u.port or 3306, "user": u.username, "database": u.database}
    if u.password:
        pg["password"] = my["password"] = u.password
    return f"PG = {pg!r}\nMY = {my!r}\n"


def _suite(pytester: pytest.Pytester, files: dict[str, str], url: str = "") -> None:
    (pytester.path / "barrier.py").write_text(BARRIER)
    (pytester.path / "dbparams.py").write_text(_params(url) if url else "")
    for name, text in files.items():
        (pytester.path / name).write_text(text)


def _run(pytester: pytest.Pytester, workers: int, *extra: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "--monitor", "-n", str(workers), "--dist", "each", *extra, timeout=TIMEOUT
    )


# ------------------------------------------------------------- psycopg 3: the case

PSYCOPG_QUEUE = {
    "conftest.py": """
import time
import psycopg
import pytest
from barrier import barrier
from dbparams import PG

@pytest.fixture(scope="session")
def schema():
    # A hand-written migration runner: one worker migrates, the others queue on the lock.
    conn = psycopg.connect(**PG, autocommit=True)
    barrier("migrate", 4)
    conn.execute("SELECT pg_advisory_lock(%s)", (4242,))
    try:
        time.sleep(1.0)
        return "migrated"
    finally:
        conn.execute("SELECT pg_advisory_unlock(4242)")
        conn.close()
""",
    "test_app.py": """
def test_app(schema):
    assert schema == "migrated"
""",
}


@pytest.mark.postgres
def test_psycopg_advisory_lock_queue_names_lock_wait_and_holder(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    """The issue's case at the default settings: a session fixture takes
    ``pg_advisory_lock`` through psycopg 3 while three workers queue behind it."""
    _suite(pytester, PSYCOPG_QUEUE, pg_url)
    result = _run(pytester, 4)
    result.assert_outcomes(passed=4)
    run = only_run(pytester)
    state = run.state
    stats = state.locks[("pg_advisory", "4242")]
    assert stats.acquisitions == 4
    assert stats.contended == 3
    assert 0.8 <= stats.max_wait < 20
    assert sum(stats.holders.values()) == 4
    assert not stats.held_by  # every unlock seen
    connected = run.of(ev.DbConnected)
    assert {c.w for c in connected} == WORKERS4
    assert all(c.url.startswith("postgresql://") and "tm_" in c.url for c in connected)
    waits = [e for e in state.lock_events if e.kind == "pg_advisory" and e.action == "wait"]
    assert len(waits) == 3
    for wait in waits:
        assert wait.fixture == "schema"
        holder = state.holder(wait)  # as the fold named it (it never edits events)
        assert holder is not None
        assert holder.w in WORKERS4 - {wait.w}
    # the server said who blocked: pg_blocking_pids' backend pid, mapped to a worker
    db_waits = [d for d in state.db_waits if d.lock == "pg_advisory:4242"]
    assert len(db_waits) == 3
    backends = {(c.backend, c.w) for c in connected}
    for d in db_waits:
        blocked_by = state.blocked_by(d)
        assert blocked_by is not None
        assert blocked_by.backend is not None
        assert (blocked_by.backend, blocked_by.w) in backends
        assert blocked_by.w != d.w
        assert d.statement.startswith("SELECT pg_advisory_lock")
    out = result.stdout.str()
    assert "lock contention:" in out
    # the fixture line says where its time went: the wait on the lock is named, apart from
    # the setup work (not counted as setup)
    (hint,) = [line for line in out.splitlines() if "fixture 'schema' set up 4x" in line]
    assert "of setup in all, besides " in hint
    assert hint.endswith("waiting on locks (pg_advisory:4242)")


# ------------------------------------------------------------------- psycopg2

PSYCOPG2_XACT = {
    "test_xact.py": """
import time
import psycopg2
import psycopg2.extras
from barrier import barrier, WORKER
from dbparams import PG

def test_xact_lock():
    conn = psycopg2.connect(**PG)
    # the user's own cursor class still is what they get
    cur = conn.cursor(cursor_factory=psycopg2.extras.DictCursor)
    assert isinstance(cur, psycopg2.extras.DictCursor)
    if WORKER == "gw0":
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (99,))
        barrier("holding", 2)
        time.sleep(0.8)
        conn.commit()  # ends the transaction-scoped lock
    else:
        barrier("holding", 2)
        cur.execute("SELECT pg_advisory_xact_lock(99)")
        conn.rollback()
    conn.close()
""",
}


@pytest.mark.postgres
def test_psycopg2_transaction_lock_waits_and_ends_with_the_transaction(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    _suite(pytester, PSYCOPG2_XACT, pg_url)
    result = _run(pytester, 2)
    result.assert_outcomes(passed=2)
    state = only_run(pytester).state
    stats = state.locks[("pg_advisory", "99")]
    assert (stats.acquisitions, stats.contended) == (2, 1)
    assert stats.waited_on == {"gw0": 1}
    assert stats.max_wait >= 0.5
    assert not stats.held_by  # commit and rollback ended both
    (d,) = [d for d in state.db_waits if d.lock == "pg_advisory:99"]
    assert d.w == "gw1"
    blocked_by = state.blocked_by(d)
    assert blocked_by is not None
    assert blocked_by.w == "gw0"
    assert blocked_by.backend is not None


# ------------------------------------------------------------- psycopg 3: ABBA

PSYCOPG_ABBA = {
    "test_abba.py": """
import psycopg
from barrier import barrier, WORKER
from dbparams import PG

def test_abba():
    first, second = (1, 2) if WORKER == "gw0" else (2, 1)
    with psycopg.connect(**PG, autocommit=True) as conn:
        conn.execute("SET deadlock_timeout = '3s'")
        conn.execute(f"SELECT pg_advisory_lock({first})")
        barrier("both-hold-one", 2)
        try:
            conn.execute(f"SELECT pg_advisory_lock({second})")
        except psycopg.errors.DeadlockDetected:
            pass
        conn.execute("SELECT pg_advisory_unlock_all()")
""",
}


@pytest.mark.postgres
def test_psycopg_abba_on_advisory_locks_is_a_deadlock(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    _suite(pytester, PSYCOPG_ABBA, pg_url)
    result = _run(pytester, 2)
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    (deadlock,) = run.of(ev.Deadlock)
    assert {(e.w, e.holds, e.waits_for) for e in deadlock.cycle} == {
        ("gw0", "pg_advisory:1", "pg_advisory:2"),
        ("gw1", "pg_advisory:2", "pg_advisory:1"),
    }
    (failed,) = [e for e in run.of(ev.LockEvent) if e.action == "failed"]
    assert "deadlock detected" in (failed.error or "")
    assert deadlock.ts < failed.ts  # seen before PostgreSQL broke it
    assert "deadlock: gw0 holds pg_advisory:1, waits for pg_advisory:2" in result.stdout.str()


# ------------------------------------------------------------------- PyMySQL

PYMYSQL_GET_LOCK = {
    "test_get_lock.py": """
import time
import pymysql
from barrier import barrier, WORKER
from dbparams import MY

def test_get_lock():
    conn = pymysql.connect(**MY)
    cur = conn.cursor()
    if WORKER == "gw0":
        cur.execute("SELECT GET_LOCK('seed', 10)")
        cur.execute("SELECT GET_LOCK(%s, 10)", ("wait",))
        barrier("holding", 2)
        time.sleep(0.8)
        cur.execute("SELECT RELEASE_LOCK('wait')")
        barrier("gave-up", 2)
        cur.execute("SELECT RELEASE_LOCK('seed')")
    else:
        barrier("holding", 2)
        cur.execute("SELECT GET_LOCK(%s, 10)", ("wait",))
        assert cur.fetchone() == (1,)  # the probe read it; the test still does
        cur.execute("SELECT RELEASE_LOCK('wait')")
        cur.execute("SELECT GET_LOCK('seed', 1)")
        assert cur.fetchone() == (0,)
        barrier("gave-up", 2)
    conn.close()
""",
}


@pytest.mark.mariadb
def test_pymysql_get_lock_wait_and_timeout(pytester: pytest.Pytester, mariadb_url: str) -> None:
    _suite(pytester, PYMYSQL_GET_LOCK, mariadb_url)
    result = _run(pytester, 2)
    result.assert_outcomes(passed=2)
    state = only_run(pytester).state
    wait = state.locks[("mysql_get_lock", "wait")]
    assert (wait.acquisitions, wait.contended, wait.waited_on) == (2, 1, {"gw0": 1})
    assert wait.max_wait >= 0.5
    (d,) = [d for d in state.db_waits if d.lock == "mysql_get_lock:wait"]
    assert d.w == "gw1"
    blocked_by = state.blocked_by(d)
    assert blocked_by is not None
    assert blocked_by.w == "gw0"  # IS_USED_LOCK's connection id, mapped
    seed = state.locks[("mysql_get_lock", "seed")]
    assert seed.holders == {"gw0": 1}
    assert (seed.failures, seed.timeouts) == (1, 1)
    (timeout,) = [e for e in state.lock_events if e.action == "failed"]
    assert (timeout.w, timeout.key, timeout.reason) == ("gw1", "seed", "timeout")
    assert not seed.held_by
    assert not wait.held_by


# ------------------------------------------------------------------- mysqlclient

MYSQLDB_GET_LOCK = {
    "test_get_lock.py": """
import time
import MySQLdb
import MySQLdb.cursors
from barrier import barrier, WORKER
from dbparams import MY

def test_get_lock():
    conn = MySQLdb.connect(**MY)
    cur = conn.cursor()
    if WORKER == "gw0":
        cur.execute("SELECT GET_LOCK('seed', 10)")
        cur.execute("SELECT GET_LOCK(%s, 10)", ("wait",))
        barrier("holding", 2)
        time.sleep(0.8)
        cur.execute("SELECT RELEASE_LOCK('wait')")
        barrier("gave-up", 2)
        cur.execute("SELECT RELEASE_LOCK('seed')")
    else:
        barrier("holding", 2)
        cur.execute("SELECT GET_LOCK(%s, 10)", ("wait",))
        assert cur.fetchone() == (1,)  # the probe read it; the test still does
        cur.execute("SELECT RELEASE_LOCK('wait')")
        # a dict cursor's row: the probe reads the refusal by position
        rows = conn.cursor(MySQLdb.cursors.DictCursor)
        rows.execute("SELECT GET_LOCK('seed', 1) AS got")
        assert rows.fetchone() == {"got": 0}
        barrier("gave-up", 2)
    conn.close()
""",
}


@pytest.mark.mariadb
@pytest.mark.mysqlclient
def test_mysqlclient_get_lock_wait_and_timeout(
    pytester: pytest.Pytester, mariadb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Django's default MySQL driver is recorded as PyMySQL is: the wait, who it waited
    for (``IS_USED_LOCK``'s connection id, announced from ``thread_id()``), the timeout."""
    from testmon_live.tui import cli

    _suite(pytester, MYSQLDB_GET_LOCK, mariadb_url)
    result = _run(pytester, 2)
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    state = run.state
    wait = state.locks[("mysql_get_lock", "wait")]
    assert (wait.acquisitions, wait.contended, wait.waited_on) == (2, 1, {"gw0": 1})
    assert wait.max_wait >= 0.5
    (d,) = [d for d in state.db_waits if d.lock == "mysql_get_lock:wait"]
    assert d.w == "gw1"
    blocked_by = state.blocked_by(d)
    assert blocked_by is not None
    assert blocked_by.w == "gw0"
    assert d.url.startswith("mysql://127.0.0.1:")
    seed = state.locks[("mysql_get_lock", "seed")]
    assert seed.holders == {"gw0": 1}
    assert (seed.failures, seed.timeouts) == (1, 1)
    (timeout,) = [e for e in state.lock_events if e.action == "failed"]
    assert (timeout.w, timeout.key, timeout.reason) == ("gw1", "seed", "timeout")
    assert not seed.held_by
    assert not wait.held_by
    assert not [n for n in state.notices if n.level != "info"], state.notices
    # the report names them, as it does PyMySQL's (the trial's report had no Locks section)
    capsys.readouterr()
    assert cli.main(["report", str(run.path)]) == 0
    text = capsys.readouterr().out
    assert re.search(
        r"gw1 waited \S+ for gw0 in test_get_lock\.py::test_get_lock; lock mysql_get_lock:wait",
        text,
    ), text
    assert cli.main(["report", str(run.path), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {row["key"] for row in report["locks"]} == {"seed", "wait"}
    assert [(r["worker"], r["blocked_by"]) for r in report["db_waits"] if r["lock"] == d.lock] == [
        ("gw1", "gw0, mysql_get_lock:wait")
    ]


MYSQLDB_ROW_LOCK = {
    "test_rows.py": """
import time
import MySQLdb
from barrier import barrier, WORKER
from dbparams import MY

def test_row_lock():
    conn = MySQLdb.connect(**MY)
    cur = conn.cursor()
    if WORKER == "gw0":
        cur.execute("CREATE TABLE items (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
        cur.execute("INSERT INTO items VALUES (1, 0)")
        conn.commit()
        cur.execute("SELECT n FROM items WHERE id = 1 FOR UPDATE")
        barrier("holding", 2)
        time.sleep(1.0)
        conn.commit()
    else:
        barrier("holding", 2)
        cur.execute("SELECT n FROM items WHERE id = %s FOR UPDATE", (1,))
        assert cur.fetchall() == ((0,),)
        conn.rollback()
    conn.close()
""",
}


@pytest.mark.mariadb
@pytest.mark.mysqlclient
def test_mysqlclient_row_lock_waits_and_ends_with_the_transaction(
    pytester: pytest.Pytester, mariadb_url: str
) -> None:
    _suite(pytester, MYSQLDB_ROW_LOCK, mariadb_url)
    result = _run(pytester, 2)
    result.assert_outcomes(passed=2)
    state = only_run(pytester).state
    rows = state.locks[("row", f"{mariadb_url.rsplit('/', 1)[1]}.items")]  # qualified
    assert rows.acquisitions == 2
    assert rows.contended == 1
    assert 0.5 <= rows.max_wait < 10
    waits = [e for e in state.lock_events if e.action == "wait" and e.kind == "row"]
    assert [w.w for w in waits] == ["gw1"]
    assert not rows.held_by  # commit and rollback ended both transactions' locks
    schema = [m for m in state.migrations if m.w == "gw0"]
    assert schema, "the CREATE TABLE is a schema change, as with the other drivers"


MYSQLDB_FAILING = {
    "store.py": """
import MySQLdb
from dbparams import MY

def query(sql):
    conn = MySQLdb.connect(**MY)
    conn.cursor().execute(sql)

def bulk(sql, rows):
    conn = MySQLdb.connect(**MY)
    conn.cursor().executemany(sql, rows)

def call(name):
    conn = MySQLdb.connect(**MY)
    conn.cursor().callproc(name, (1,))
""",
    "test_fail.py": """
from store import bulk, call, query

def test_missing_table():
    query("SELECT * FROM missing")

def test_missing_table_many():
    bulk("INSERT INTO missing VALUES (%s)", [(1,), (2,)])

def test_missing_procedure():
    call("missing")
""",
}


@pytest.mark.mariadb
@pytest.mark.mysqlclient
def test_a_failing_mysqlclient_statement_keeps_its_outcome_and_failure_text(
    pytester: pytest.Pytester, mariadb_url: str
) -> None:
    _suite(pytester, MYSQLDB_FAILING, mariadb_url)

    def failures(*extra: str) -> list[str]:
        result = pytester.runpytest_subprocess("-p", "no:randomly", *extra, timeout=TIMEOUT)
        result.assert_outcomes(failed=3)
        lines = result.stdout.lines
        start = next(i for i, line in enumerate(lines) if "FAILURES" in line)
        end = next(
            i
            for i, line in enumerate(lines)
            if i > start and ("short test summary" in line or "- testmon-live -" in line)
        )
        assert end > start + 10
        # (the test databases' names and the connections' addresses differ run to run)
        return [re.sub(r"runpytest-\d+|0x[0-9a-f]+", "N", line) for line in lines[start:end]]

    plain = failures()
    monitored = failures("--monitor")
    assert plain == monitored
    assert not [line for line in monitored if "testmon_live" in line or "dbapi.py" in line]
    assert any("doesn't exist" in line for line in monitored)


@pytest.mark.isolated  # the probe patches the driver for good
@pytest.mark.mariadb
@pytest.mark.mysqlclient
def test_mysqlclient_classes_keep_their_identity(recording: list[ev.Event]) -> None:
    """Every cursor class (server-side too) through one wrapper on ``BaseCursor``; a
    statement ``executemany`` runs through ``execute`` is seen once."""
    import inspect

    import MySQLdb
    import MySQLdb.cursors
    import sqlalchemy as sa

    from testmon_live.plugin.probes import dblocks

    from .conftest import MARIADB_URL

    base = MySQLdb.cursors.BaseCursor
    assert base.execute.__name__ == "execute"
    assert inspect.signature(base.execute) == inspect.signature(base.execute.__wrapped__)
    assert MySQLdb.connections.Connection.commit.__name__ == "commit"
    u = sa.make_url(MARIADB_URL)

    class Mine(MySQLdb.connections.Connection):  # type: ignore[misc]
        mine = True

    # What is in flight when each query reaches the server: one entry per statement the
    # suite made, whatever the driver runs for it.
    seen: list[Any] = []
    query = MySQLdb.connections.Connection.query

    def spy(self: Any, q: Any) -> Any:
        seen.append(dblocks._inflight.get(threading.get_ident()))
        return query(self, q)

    MySQLdb.connections.Connection.query = spy
    try:
        conn = Mine(host=u.host, port=u.port or 3306, user=u.username, database=u.database)
        assert isinstance(conn, MySQLdb.connections.Connection)
        cur = conn.cursor(MySQLdb.cursors.SSCursor)
        cur.execute("SELECT GET_LOCK('ss', 1)")
        assert cur.fetchall() == ((1,),)
        cur.execute("SELECT RELEASE_LOCK('ss')")
        cur.fetchall()
        cur = conn.cursor()
        cur.execute("CREATE TEMPORARY TABLE t (x INT)")
        cur.executemany("INSERT INTO t VALUES (%s)", [(1,), (2,)])
        cur.executemany("UPDATE t SET x = x + %s", [(1,), (2,)])  # a loop of execute
        cur.execute("SELECT sum(x) FROM t")
        assert cur.fetchone() == (9,)
        cur.execute("CREATE PROCEDURE IF NOT EXISTS tm_echo(IN a INT) SELECT a")
        assert cur.callproc("tm_echo", (7,)) == (7,)
        assert cur.fetchall() == ((7,),)
        cur.nextset()
        cur.execute("DROP PROCEDURE tm_echo")
        conn.commit()
        conn.close()
    finally:
        MySQLdb.connections.Connection.query = query
    assert None not in seen
    updates = [e for e in seen if e[1] == "UPDATE t SET x = x + %s"]
    assert len(updates) == 2  # executemany's loop of execute, seen as one statement
    assert updates[0] is updates[1]
    calls = [e for e in seen if e[1] == "CALL tm_echo"]
    assert len(calls) == 2  # callproc's SET of the arguments, then its CALL
    assert calls[0] is calls[1]
    locks = [(e.action, e.key) for e in recording if isinstance(e, ev.LockEvent)]
    assert locks == [("acquired", "ss"), ("released", "ss")]
    (connected,) = [e for e in recording if isinstance(e, ev.DbConnected)]
    assert connected.backend > 0
    assert connected.url == f"mysql://{u.host}:{u.port or 3306}/{u.database}"


UNWRAPPED_DRIVER = {
    # Named as a driver the probes do not wrap: what the worker hooks is the import name.
    "pg8000.py": "def connect(**kwargs):\n    raise NotImplementedError\n",
    "test_unwrapped.py": """
def test_uses_it():
    import pg8000
    assert pg8000.connect

def test_again():
    import pg8000
    assert pg8000.connect
""",
}


def test_a_driver_the_probes_do_not_wrap_is_named_once(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    from testmon_live.tui import cli

    _suite(pytester, UNWRAPPED_DRIVER)
    result = _run(pytester, 2)
    result.assert_outcomes(passed=4)
    run = only_run(pytester)
    said = [(n.w, n.msg) for n in run.state.notices if "pg8000" in n.msg]
    assert sorted(w for w, _msg in said) == ["gw0", "gw1"]  # once per worker, not per test
    assert {msg for _w, msg in said} == {
        "pg8000 is a driver the DB probes do not wrap: left unmonitored, lock waits through "
        "it are not recorded (unless SQLAlchemy runs its statements)"
    }
    capsys.readouterr()
    assert cli.main(["report", str(run.path)]) == 0
    assert capsys.readouterr().out.count("pg8000 is a driver the DB probes do not wrap") == 1


# ------------------------------------------------------------------- sqlite3

SQLITE_RUNNER = {
    "conftest.py": """
import sqlite3
import time
import pytest
from pathlib import Path
from barrier import barrier, WORKER

DB = str(Path(__file__).parent / "app.db")
SCHEMA = (Path(__file__).parent / "0001_users.sql").read_text()

@pytest.fixture(scope="session")
def schema():
    # A hand-written migration runner, racing: every worker changes the schema of one file
    # (its DDL read from a file, as such runners do). gw1 waits long enough for the
    # watchdog to see it wait (1 s), the others give up soon
    conn = sqlite3.connect(DB, timeout=1.0 if WORKER == "gw1" else 0.3)
    if WORKER == "gw0":
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(SCHEMA)
        barrier("locked", 4)
        time.sleep(1.5)
        conn.commit()
        conn.close()
        return "migrated"
    barrier("locked", 4)
    if WORKER == "gw1":  # this one guards its runner with the lock, the others do not
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            conn.execute("BEGIN IMMEDIATE")
    else:
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            conn.execute(SCHEMA)
    conn.close()
    return "raced"
""",
    "test_app.py": """
def test_app(schema):
    assert schema in ("migrated", "raced")
""",
}


RUNNER_DDL = {
    # as in a triple-quoted string: a newline first
    "blanks": "\n    CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY)\n",
    # a migration file's comments first: one a line, then a block
    "comments": (
        "-- 0001: the users table\n/* written by hand,\n   run by every worker */\n"
        "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY)\n"
    ),
}


@pytest.mark.parametrize("ddl", list(RUNNER_DDL))
def test_sqlite3_runner_racing_on_one_file_is_database_is_locked(
    pytester: pytest.Pytester, ddl: str
) -> None:
    """sqlite3 "database is locked" from a hand-written migration runner racing on one
    file: lock failures with the holder named, and concurrent schema changes flagged,
    whatever blanks and comments come before the runner's DDL."""
    _suite(pytester, SQLITE_RUNNER)
    (pytester.path / "0001_users.sql").write_text(RUNNER_DDL[ddl])
    result = _run(pytester, 4)
    result.assert_outcomes(passed=4)
    run = only_run(pytester)
    state = run.state
    path = str(pytester.path / "app.db")
    url = f"sqlite:///{path}"
    stats = state.locks[("sqlite", path)]
    assert stats.holders == {"gw0": 1}
    assert stats.failures == 3
    assert stats.longest_hold >= 0.7
    assert not stats.held_by  # the commit released it
    busy = [d for d in state.db_waits if d.error and "database is locked" in d.error]
    assert {d.w for d in busy} == {"gw1", "gw2", "gw3"}
    assert all(0.2 <= d.waited < 5 and d.url == url for d in busy)
    assert {d.statement for d in busy if d.w == "gw1"} == {"BEGIN IMMEDIATE"}
    assert {d.statement for d in busy if d.w != "gw1"} == {RUNNER_DDL[ddl]}  # as run
    # the guarded one waited (the watchdog saw it) on gw0's lock
    (wait,) = [e for e in state.lock_events if e.kind == "sqlite" and e.action == "wait"]
    assert wait.w == "gw1"
    holder = state.holder(wait)  # the fold names it beside the event, never in it
    assert holder is not None
    assert holder.w == "gw0"
    # schema changes: gw0's transaction, and the two unguarded workers' failed attempts
    changes = [m for m in state.migrations if m.tool == "ddl" and m.action == "end"]
    assert {m.w for m in changes} == {"gw0", "gw2", "gw3"}
    assert all(m.url == url and m.to_rev and m.to_rev.startswith("CREATE TABLE") for m in changes)
    (mine,) = [m for m in changes if m.w == "gw0"]
    assert mine.error is None
    assert (mine.duration or 0) >= 0.7  # from the CREATE to the commit
    assert all("database is locked" in (m.error or "") for m in changes if m.w != "gw0")
    assert state.migration_races == {url: {"gw0", "gw2", "gw3"}}
    # The live notice says the race once, when two workers are first seen in it (which
    # two depends on arrival); each worker that joins later is for the summary to name.
    (notice,) = [n.msg for n in run.of(ev.Notice) if n.msg.startswith("concurrent migrations")]
    assert re.fullmatch(
        rf"concurrent migrations: gw\d, gw\d migrate {re.escape(url)} at the same time", notice
    ), notice
    out = result.stdout.str()
    assert f"concurrent schema changes: gw0, gw2, gw3 on {url} at once (CREATE TABLE" in out


SCHEMA_PER_WORKER = {
    "conftest.py": """
import time
import psycopg
import pytest
from barrier import WORKER, barrier
from dbparams import PG

@pytest.fixture(scope="session")
def schema():
    # Each worker migrates a schema of its own in the one database, in a transaction that
    # stays open while the other worker does the same: no race.
    conn = psycopg.connect(**PG)
    barrier("migrate", 2)
    conn.execute(f"CREATE SCHEMA w_{WORKER}")
    conn.execute(f"CREATE TABLE w_{WORKER}.items (id INTEGER PRIMARY KEY)")
    conn.execute(f"CREATE INDEX items_id ON w_{WORKER}.items (id)")
    conn.execute("CREATE TEMPORARY TABLE scratch (id INTEGER)")  # its connection's own
    barrier("migrated", 2)
    time.sleep(0.3)
    conn.commit()
    # ...and both then add a table to one shared schema at once: that is flagged (a
    # comment before the DDL, as a migration file has it, changes nothing).
    barrier("shared", 2)
    conn.execute(
        "/* 0002: a table in the shared schema */\\n"
        f"CREATE TABLE shared.t_{WORKER} (id INTEGER)"
    )
    barrier("added", 2)
    time.sleep(0.3)
    conn.commit()
    conn.close()
    return "migrated"
""",
    "test_app.py": """
def test_app(schema):
    assert schema == "migrated"
""",
}


@pytest.mark.postgres
def test_a_schema_per_worker_in_one_database_is_no_race(
    pytester: pytest.Pytester, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Schema changes race only on the same schema: a schema per worker in one database
    (a common way to isolate workers) is not flagged; a temporary table is no schema
    change; two workers changing one shared schema at once still are, also with a comment
    before their DDL."""
    import psycopg
    import sqlalchemy as sa

    u = sa.make_url(pg_url)
    with psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database,
        password=u.password, autocommit=True,
    ) as conn:  # fmt: skip
        conn.execute("CREATE SCHEMA shared")
    _suite(pytester, SCHEMA_PER_WORKER, pg_url)
    result = _run(pytester, 2)
    result.assert_outcomes(passed=2)
    state = only_run(pytester).state
    changes = [m for m in state.migrations if m.tool == "ddl" and m.action == "end"]
    assert sorted((m.w, m.schema) for m in changes) == [
        ("gw0", "shared"),
        ("gw0", "w_gw0"),
        ("gw1", "shared"),
        ("gw1", "w_gw1"),
    ]
    assert not any("TEMPORARY" in s.name for m in changes for s in m.steps or [])
    url = changes[0].url
    assert state.migration_races == {f"{url} (schema shared)": {"gw0", "gw1"}}
    out = result.stdout.str()
    # the summary names the schema and the racing statements (not the generic wording)
    assert re.search(
        r"concurrent schema changes: gw0, gw1 on \S+ \(schema shared\) at once \(CREATE TABLE", out
    ), out
    assert "w_gw0) at once" not in out
    # the JSON report: the URL stays a URL, the schema has a key of its own
    from testmon_live.tui import cli

    capsys.readouterr()
    assert cli.main(["report", str(only_run(pytester).path), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (race,) = report["migration_races"]
    assert (race["schema"], race["workers"]) == ("shared", ["gw0", "gw1"])
    assert "(schema" not in race["url"]
    racing = {
        m["schema"]: m["concurrent_with"] for m in report["migrations"] if m["worker"] == "gw0"
    }
    assert racing == {"shared": ["gw1"], "w_gw0": []}


JOIN_SQL = """
# django-model-utils' JoinManager: one text that (re)makes its connection's own table
JOIN = '''
    DROP TABLE IF EXISTS temp_stuff;
    DROP INDEX IF EXISTS temp_stuff_id;
    CREATE TEMPORARY TABLE temp_stuff AS SELECT id AS belonging_id FROM items WHERE name <> 'a;b';
    CREATE INDEX temp_stuff_belonging_id ON temp_stuff (belonging_id);
'''
"""

TEMP_TABLE_TEXTS = {
    "join_sql.py": JOIN_SQL,
    "test_join.py": """
import psycopg
from dbparams import PG
from join_sql import JOIN

def test_join():
    conn = psycopg.connect(**PG, autocommit=True)
    conn.execute("CREATE TABLE items (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO items VALUES (1, 'x')")
    for _ in range(2):
        conn.execute(JOIN)
        assert conn.execute("SELECT count(*) FROM temp_stuff").fetchone() == (1,)
    # a real table after a temporary one in one text is a schema change still
    conn.execute("CREATE TEMP TABLE scratch (id INTEGER); CREATE TABLE audit (id INTEGER)")
    conn.close()
""",
}


@pytest.mark.postgres
def test_a_temporary_tables_text_of_several_statements_is_no_migration(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    """The text django-model-utils' ``JoinManager`` runs (``DROP TABLE IF EXISTS t; ...
    CREATE TEMPORARY TABLE t AS ...; CREATE INDEX ... ON t``) through psycopg is its
    connection's own business, not a schema change of the run; a real ``CREATE TABLE`` in
    a text of several statements still is one."""
    _suite(pytester, TEMP_TABLE_TEXTS, pg_url)
    result = pytester.runpytest_subprocess("--monitor", timeout=TIMEOUT)
    result.assert_outcomes(passed=1)
    state = only_run(pytester).state
    changes = [m for m in state.migrations if m.tool == "ddl" and m.action == "end"]
    assert [(m.to_rev, m.error) for m in changes] == [
        ("CREATE TABLE items (id INTEGER, name TEXT)", None),
        ("CREATE TEMP TABLE scratch (id INTEGER); CREATE TABLE audit (id INTEGER)", None),
    ]
    assert not any("temp_stuff" in s.name for m in changes for s in m.steps or [])


SQLITE_SCRIPTS = {
    "join_sql.py": JOIN_SQL,
    "test_scripts.py": """
import sqlite3
from join_sql import JOIN

def test_scripts(tmp_path):
    conn = sqlite3.connect(tmp_path / "app.db")
    # a runner's migration file, run as a script (sqlite3 runs one statement an execute)
    conn.executescript("CREATE TABLE items (id INT, name TEXT); INSERT INTO items VALUES (1, 'x')")
    for _ in range(2):
        conn.executescript(JOIN)
        assert conn.execute("SELECT count(*) FROM temp_stuff").fetchone() == (1,)
    conn.executescript("BEGIN; CREATE TEMP TABLE scratch (id INTEGER); COMMIT;")
    conn.close()
""",
}


def test_sqlite3_scripts_are_read_for_their_schema_changes(pytester: pytest.Pytester) -> None:
    """sqlite3 runs a text of several statements only as a script: a runner's migration file
    run with ``executescript`` is a schema change, the ``JoinManager``'s temporary table's
    text is none."""
    _suite(pytester, SQLITE_SCRIPTS)
    result = pytester.runpytest_subprocess("--monitor", timeout=TIMEOUT)
    result.assert_outcomes(passed=1)
    state = only_run(pytester).state
    changes = [m for m in state.migrations if m.tool == "ddl" and m.action == "end"]
    assert [(m.to_rev, m.error) for m in changes] == [
        ("CREATE TABLE items (id INT, name TEXT); INSERT INTO items VALUES (1, 'x')", None)
    ]
    assert changes[0].url.endswith("app.db")
    assert not state.lock_events  # a script's transactions are its own


LATE_DRIVER = {
    "test_late.py": """
import sys

PROBE = "testmon_live.plugin.probes.dbapi"

def test_1_nothing_loaded_before_a_driver():
    assert "sqlite3" not in sys.modules
    assert PROBE not in sys.modules

def test_2_probe_follows_the_import(tmp_path):
    import sqlite3
    assert PROBE in sys.modules
    conn = sqlite3.connect(tmp_path / "late.db")
    conn.execute("BEGIN EXCLUSIVE")
    conn.rollback()
    conn.close()
""",
}


def test_dbapi_probe_loads_only_with_a_driver(pytester: pytest.Pytester) -> None:
    _suite(pytester, LATE_DRIVER)
    result = _run(pytester, 2, "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    state = only_run(pytester).state
    sqlite = [e for e in state.lock_events if e.kind == "sqlite"]
    assert {(e.w, e.action) for e in sqlite} == {
        (w, a) for w in ("gw0", "gw1") for a in ("acquired", "released")
    }
    assert {e.test for e in sqlite} == {"test_late.py::test_2_probe_follows_the_import"}


# ------------------------------------------------------------------- transparency


@pytest.fixture
def recording() -> Iterator[list[ev.Event]]:
    """The DB-API probe installed on every driver and a reporter recording (in process):
    for ``isolated`` tests, in their own process only."""
    if not in_own_process():
        yield []
        return
    from testmon_live.plugin.activity import WorkerActivity
    from testmon_live.plugin.probes import dbapi, locking
    from testmon_live.plugin.probes.imports import when_imported

    got: list[ev.Event] = []
    for driver in dbapi.DRIVERS:
        when_imported(driver, lambda module: dbapi.install_driver(module.__name__, module))
    locking.activate(locking.LockReporter(got.append, WorkerActivity(0.0)))
    try:
        yield got
    finally:
        locking.activate(None)


@pytest.mark.isolated  # the probe patches the drivers for good
def test_sqlite3_behaves_as_unpatched(recording: list[ev.Event], tmp_path: Path) -> None:
    import inspect
    import sqlite3

    assert sqlite3.connect.__wrapped__ is not None  # type: ignore[attr-defined]
    assert sqlite3.connect.__name__ == "connect"

    class Mine(sqlite3.Connection):
        mine = True

    class MyCursor(sqlite3.Cursor):
        pass

    for factory in (None, Mine):
        kwargs: dict[str, Any] = {"factory": factory} if factory else {}
        conn = sqlite3.connect(str(tmp_path / "t.db"), **kwargs)
        assert isinstance(conn, factory or sqlite3.Connection)
        assert type(conn).__name__ == (factory or sqlite3.Connection).__name__
        conn.row_factory = sqlite3.Row
        with conn:  # the context manager commits through ours
            conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
        row = conn.execute("SELECT sum(x) AS s FROM t").fetchone()
        assert row["s"] in (3, 6)
        assert isinstance(conn.cursor(MyCursor), MyCursor)
        assert isinstance(conn.cursor(), sqlite3.Cursor)
        assert list(inspect.signature(type(conn.cursor()).execute).parameters)[:2] == [
            "self",
            "sql",
        ]
        conn.executescript("BEGIN; INSERT INTO t VALUES (0); COMMIT;")
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            conn.execute("SELECT * FROM missing")
        conn.close()
    # positional factory (the 6th argument)
    conn = sqlite3.connect(str(tmp_path / "p.db"), 5.0, 0, "DEFERRED", True, Mine)
    assert isinstance(conn, Mine)
    conn.close()
    # a failing statement that is no lock and no busy error leaves no lock events
    assert not [e for e in recording if isinstance(e, (ev.LockEvent, ev.DbWait))]


def _sqlite_scenario(db: Path, execute: Any) -> list[dict[str, Any]]:
    """What the probe records of one scenario on a fresh SQLite file, each statement run
    through ``execute(conn, sql, *params)``: schema changes alone, after a comment and in a
    transaction, a lock held and released, failures on it ("database is locked", a DDL's
    too), a failing plain statement, and a lock wait the watchdog reports before it is
    granted. Times are left out; lock ids are the reporter's, counted from 1 each run."""
    import sqlite3
    import threading
    import time

    from testmon_live.plugin.activity import WorkerActivity
    from testmon_live.plugin.clock import now
    from testmon_live.plugin.probes import dblocks, locking

    got: list[ev.Event] = []
    dblocks._maybe.clear()  # each path's own verdicts: neither reads the other's
    locking.activate(locking.LockReporter(got.append, WorkerActivity(0.0)))
    holder = sqlite3.connect(str(db), timeout=0)
    waiter = sqlite3.connect(str(db), timeout=0, check_same_thread=False)
    queued: threading.Thread | None = None
    try:
        execute(holder, "CREATE TABLE t (x INTEGER)")
        execute(holder, "-- 0002\nCREATE INDEX ix ON t (x)")
        execute(holder, "BEGIN")
        execute(holder, "\n  CREATE TABLE v (x INTEGER)\n")
        execute(holder, "ALTER TABLE v ADD COLUMN y INTEGER")
        execute(holder, "COMMIT")
        execute(holder, "BEGIN IMMEDIATE")
        execute(holder, "INSERT INTO t VALUES (?)", (1,))
        for sql in ("BEGIN IMMEDIATE", "\n  /* 0003 */ CREATE TABLE u (x INTEGER)\n"):
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                execute(waiter, sql)
        execute(holder, "COMMIT")
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            execute(waiter, "SELECT * FROM missing")
        # a wait: the waiter queues behind the holder's lock, the watchdog sees it, then it is
        # granted when the holder commits
        waiter.execute("PRAGMA busy_timeout = 60000")  # (a PRAGMA: never recorded)
        execute(holder, "BEGIN EXCLUSIVE")
        queued = threading.Thread(target=execute, args=(waiter, "BEGIN IMMEDIATE"), daemon=True)
        queued.start()
        deadline = time.monotonic() + 60
        while not any(
            e[1] == "BEGIN IMMEDIATE" and time.perf_counter() - e[0] > dblocks.WAIT_REPORT
            for e in list(dblocks._inflight.values())
        ):
            assert time.monotonic() < deadline, "the waiter's statement never was in flight"
            time.sleep(0.01)
        watchdog = threading.Thread(target=dblocks.BlockerCheck().check, args=(now(),))
        watchdog.start()
        watchdog.join()
        dblocks._quiet[0] = 0  # (its thread is gone: its id may be reused by the next one)
        execute(holder, "COMMIT")
        queued.join(60)
        execute(waiter, "COMMIT")
    finally:  # a failure part-way leaves no lock held and no thread waiting on one
        holder.close()
        if queued is not None:
            queued.join(60)
        waiter.close()
        locking.activate(None)
    volatile = {"ts", "seq", "waited", "held", "duration"}
    records = []
    for event in got:
        fields = msgspec.to_builtins(event).items()
        record = {"event": type(event).__name__} | {k: v for k, v in fields if k not in volatile}
        for step in record.get("steps") or []:
            del step["duration"]
        records.append(record)
    return records


@pytest.mark.isolated  # the probe patches the drivers for good
def test_sqlite3_wrapper_records_what_the_generic_path_records(
    recording: list[ev.Event], tmp_path: Path
) -> None:
    """sqlite3's statement wrapper inlines :func:`dblocks.begin` and :func:`dblocks.done`
    for speed; the same statements through the generic path (what psycopg's and PyMySQL's
    wrappers call) must record the same locks, waits and schema changes."""
    import sqlite3

    from testmon_live.plugin.probes import dbapi, dblocks

    def wrapped(conn: Any, sql: str, *params: Any) -> Any:
        return conn.execute(sql, *params)  # the wrapped connection's: positional_wrapper

    def generic(conn: Any, sql: str, *params: Any) -> Any:
        cursor = sqlite3.Cursor(conn)  # sqlite3's own cursor: no wrapper of ours
        entry = dblocks.begin(
            sql, params[0] if params else None, None, cursor, dbapi._describe_sqlite, False
        )
        if entry is None:
            return sqlite3.Cursor.execute(cursor, sql, *params)
        try:
            result = sqlite3.Cursor.execute(cursor, sql, *params)
        except BaseException as exc:
            dblocks.failed(entry, exc)
            raise
        dblocks.done(entry)
        return result

    db = tmp_path / "same.db"  # one path for both: the records name it
    through_wrapper = _sqlite_scenario(db, wrapped)
    db.unlink()
    through_generic = _sqlite_scenario(db, generic)
    assert through_wrapper == through_generic
    # ...and they are what the scenario makes (an empty or a lost record cannot pass)
    said = [
        (r["event"], r.get("action"), r.get("lock_id") or r.get("to_rev") or r.get("statement"))
        for r in through_wrapper
    ]
    assert said == [
        ("Migration", "begin", "CREATE TABLE t (x INTEGER)"),
        ("Migration", "end", "CREATE TABLE t (x INTEGER)"),
        ("Migration", "begin", "CREATE INDEX ix ON t (x)"),
        ("Migration", "end", "CREATE INDEX ix ON t (x)"),
        ("Migration", "begin", "CREATE TABLE v (x INTEGER)"),
        ("Migration", "end", "CREATE TABLE v (x INTEGER)"),
        ("LockEvent", "acquired", "1"),
        ("LockEvent", "failed", "2"),
        ("DbWait", None, "BEGIN IMMEDIATE"),
        ("Migration", "begin", "CREATE TABLE u (x INTEGER)"),
        ("Migration", "end", "CREATE TABLE u (x INTEGER)"),
        ("LockEvent", "failed", "3"),
        ("DbWait", None, "\n  /* 0003 */ CREATE TABLE u (x INTEGER)\n"),  # as run
        ("LockEvent", "released", "1"),
        ("LockEvent", "acquired", "4"),
        ("LockEvent", "wait", "5"),
        ("LockEvent", "released", "4"),
        ("LockEvent", "acquired", "5"),
        ("DbWait", None, "BEGIN IMMEDIATE"),
        ("LockEvent", "released", "5"),
    ]
    (steps,) = [
        r["steps"]
        for r in through_wrapper
        if r.get("to_rev") == "CREATE TABLE v (x INTEGER)" and r["action"] == "end"
    ]
    assert steps == [
        {"name": "CREATE TABLE v (x INTEGER)"},
        {"name": "ALTER TABLE v ADD COLUMN y INTEGER"},
    ]


@pytest.mark.isolated
@pytest.mark.postgres
def test_psycopg_classes_keep_their_identity(recording: list[ev.Event]) -> None:
    import inspect

    import psycopg
    import sqlalchemy as sa

    from .conftest import POSTGRES_URL

    assert psycopg.Cursor.execute.__name__ == "execute"
    assert inspect.signature(psycopg.Cursor.execute) == inspect.signature(
        psycopg.Cursor.execute.__wrapped__  # type: ignore[attr-defined]
    )
    u = sa.make_url(POSTGRES_URL)
    with psycopg.connect(
        host=u.host, port=u.port or 5432, user=u.username, dbname=u.database
    ) as conn:
        with conn.transaction():
            got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (5,)).fetchone()
            assert got == (True,)
        # the transaction block's end released it
        assert conn.execute(psycopg.sql.SQL("SELECT {}").format(1)).fetchone() == (1,)
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            assert cur.execute(b"SELECT 2 AS two").fetchone() == {"two": 2}
    locks = [(e.action, e.key) for e in recording if isinstance(e, ev.LockEvent)]
    assert locks == [("acquired", "5"), ("released", "5")]
    (connected,) = [e for e in recording if isinstance(e, ev.DbConnected)]
    assert connected.backend > 0
    assert "psycopg" in sys.modules


FAILING_STATEMENTS = {
    "store.py": """
import sqlite3

def query(path, sql):
    conn = sqlite3.connect(path)
    return conn.execute(sql)

def bulk(path, sql, rows):
    conn = sqlite3.connect(path)
    return conn.cursor().executemany(sql, rows)
""",
    "test_fail.py": """
from store import bulk, query

def test_missing_table(tmp_path):
    query(tmp_path / "f.db", "SELECT * FROM missing")

def test_missing_table_through_a_cursor(tmp_path):
    bulk(tmp_path / "f.db", "INSERT INTO missing VALUES (?)", [(1,)])
""",
}


def test_a_failing_statement_keeps_its_failure_text(pytester: pytest.Pytester) -> None:
    """The wrappers sit between the test and the driver: its traceback must not show them."""
    _suite(pytester, FAILING_STATEMENTS)

    def failures(*extra: str) -> list[str]:
        result = pytester.runpytest_subprocess("-p", "no:randomly", *extra, timeout=TIMEOUT)
        result.assert_outcomes(failed=2)
        lines = result.stdout.lines
        start = next(i for i, line in enumerate(lines) if "FAILURES" in line)
        end = next(
            i
            for i, line in enumerate(lines)
            if i > start and ("short test summary" in line or "- testmon-live -" in line)
        )
        assert end > start + 10  # the failures' text is there
        return [re.sub(r"runpytest-\d+", "runpytest-N", line) for line in lines[start:end]]

    plain = failures()
    monitored = failures("--monitor")
    assert plain == monitored
    assert not [line for line in monitored if "testmon_live" in line or "dbapi.py" in line]


SA_LISTENERS_CLEARED = {
    "conftest.py": """
import time
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import Pool
from barrier import barrier
from dbparams import PG

# What SQLAlchemy's own pool tests do: every listener of the Pool class goes.
Pool.dispatch._clear()

URL = sa.URL.create("postgresql+psycopg", username=PG["user"], password=PG.get("password"),
                    host=PG["host"], port=PG["port"], database=PG["dbname"])

@pytest.fixture(scope="session")
def schema():
    engine = sa.create_engine(URL)
    barrier("migrate", 2)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_advisory_lock(4343)"))
        time.sleep(0.8)
        conn.execute(sa.text("SELECT pg_advisory_unlock(4343)"))
        conn.commit()
    engine.dispose()
    return "ok"
""",
    "test_app.py": """
def test_app(schema):
    assert schema == "ok"
""",
}


@pytest.mark.postgres
def test_a_suite_that_clears_pool_listeners_keeps_the_blocker_named(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    """SQLAlchemy's pool tests remove every listener of the Pool class: the connections'
    server ids come from the driver itself, so the blocking worker is still named."""
    _suite(pytester, SA_LISTENERS_CLEARED, pg_url)
    result = _run(pytester, 2)
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    assert {c.w for c in run.of(ev.DbConnected)} == {"gw0", "gw1"}
    state = run.state
    stats = state.locks[("pg_advisory", "4343")]
    assert (stats.acquisitions, stats.contended) == (2, 1)  # once each: no double events
    (d,) = [d for d in state.db_waits if d.lock == "pg_advisory:4343"]
    blocked_by = state.blocked_by(d)
    assert blocked_by is not None
    assert blocked_by.backend is not None
    assert blocked_by.w in {"gw0", "gw1"} - {d.w}


# ------------------------------------------------------------------- unknown versions

FAKE_VERSIONS = {
    "conftest.py": """
import importlib.machinery
import sys

FAKE = {"psycopg": "9.0.1", "django": "99.1"}


class _Loader:
    # The real module, then a version the probe cannot know (before the probe's callback
    # runs: its finder wraps this loader).
    def __init__(self, inner, version):
        self.inner, self.version = inner, version

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        module.__version__ = self.version


class _Fake:
    def find_spec(self, name, path, target=None):
        if name not in FAKE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        spec.loader = _Loader(spec.loader, FAKE[name])
        return spec


sys.meta_path.insert(0, _Fake())
""",
    "test_versions.py": """
def test_psycopg_left_alone():
    import psycopg
    assert psycopg.__version__ == "9.0.1"
    assert not hasattr(psycopg.Cursor.execute, "__wrapped__")
    assert not getattr(psycopg, "_testmon_live_patched", False)

def test_django_left_alone():
    import django
    from django.db.migrations import executor
    assert django.__version__ == "99.1"
    assert not getattr(executor.MigrationExecutor, "_testmon_live_patched", False)
""",
}


def test_an_unknown_driver_version_is_left_alone_with_one_notice(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    from testmon_live.tui import cli

    _suite(pytester, FAKE_VERSIONS)
    plain = pytester.runpytest_subprocess("-n", "2", "-p", "no:randomly", timeout=TIMEOUT)
    plain.assert_outcomes(passed=2)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "-p", "no:randomly", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=2)  # the outcome is the one without --monitor
    state = only_run(pytester).state
    said = sorted((n.w, n.msg) for n in state.notices if "left unmonitored" in n.msg)
    # Each worker that imported one says it of its own process: one per worker and library.
    assert {msg for _w, msg in said} == {
        "psycopg 9.0.1 is newer than the probe knows (3.1 to 3.x): left unmonitored, its "
        "lock waits are not recorded",
        "django 99.1 is newer than the probe knows (4.2 to 6.0): left unmonitored, its test "
        "databases and migrations are not recorded",
    }
    capsys.readouterr()
    assert cli.main(["report", str(only_run(pytester).path)]) == 0
    text = capsys.readouterr().out
    # The report says each once, with the workers that said it.
    assert text.count("psycopg 9.0.1 is newer than the probe knows") == 1
    assert text.count("django 99.1 is newer than the probe knows") == 1


def test_known_versions_are_patched_and_the_ranges_are_said() -> None:
    from testmon_live.plugin.probes import dbapi

    assert dbapi.version_problem("psycopg", "3.3.9") is None
    assert dbapi.version_problem("psycopg2", "2.9.13 (dt dec pq3 ext lo64)") is None
    assert dbapi.version_problem("pymysql", "1.2.4") is None
    assert dbapi.version_problem("django", "5.2.19") is None
    assert dbapi.version_problem("psycopg", "3.0.18") == (
        "3.0.18 is older than the probe knows (3.1 to 3.x)"
    )
    assert dbapi.version_problem("pymysql", "") == (
        "version '' is unknown to the probe (it knows 1.0 to 1.x)"
    )
    assert dbapi.version_problem("sqlite3", "3.14.0") == (
        "3.14.0 is newer than the probe knows (Python 3.10 to 3.13)"
    )
    # PyMySQL poses as mysqlclient 2.2.x for Django in __version__: its own is read.
    import pymysql

    assert dbapi.driver_version("pymysql", pymysql) == pymysql.VERSION_STRING


def test_a_drivers_and_sqlalchemys_verdicts_on_one_text_stay_apart() -> None:
    """Hand-written DDL given to a driver is read past its leading newline; SQLAlchemy's
    compiled schema constructs start with one too and are not a runner's. Whichever sees a
    text first, the other's verdict is its own (one cache would let test order decide)."""
    from testmon_live.plugin.probes import dblocks

    text = "\n    CREATE TABLE t_verdicts (x INTEGER)\n"
    # SQLAlchemy's: a schema change unless compiled from a construct (told per execution)
    assert dblocks._precheck(text, direct=False) == dblocks.UNLESS_CONSTRUCT
    assert dblocks._precheck(text) is True
    assert dblocks._maybe_outer[text] == dblocks.UNLESS_CONSTRUCT
    assert dblocks._maybe[text] is True


@pytest.mark.parametrize(
    ("statement", "direct", "outer"),
    [
        ("-- step 3: add column\nALTER TABLE t ADD COLUMN c int", True, 2),
        ("/* 0003 */ CREATE TABLE t (x INTEGER)", True, 2),
        ("  \n  -- 0004\n  /* a\n b */ # c\n  DROP TABLE t", True, 2),
        ("\n    CREATE TABLE t (x INTEGER)", True, 2),
        ("CREATE INDEX ix ON t (x)", True, True),
        ("COMMIT", True, True),
        ("LOCK TABLE t IN EXCLUSIVE MODE", True, True),
        ("\n  LOCK TABLE t IN EXCLUSIVE MODE", True, True),
        ("-- step 3\nINSERT INTO t VALUES (1)", False, False),
        ("/* CREATE TABLE t (x INTEGER)", False, False),  # all comment
        ("-- CREATE TABLE t (x INTEGER)", False, False),
        ("SELECT x FROM t", False, False),
        ("  SELECT x FROM t", False, False),
        # a schema change in a later statement of the text, not a temporary table's
        ("SET search_path TO s1; CREATE TABLE t (x INTEGER)", True, True),
        ("SELECT 1; CREATE TEMP TABLE t (x INTEGER)", False, False),
        ("SELECT 'a; CREATE TABLE t (x INTEGER)'", False, False),
    ],
)
def test_precheck_reads_a_statement_past_its_leading_comments(
    statement: str, direct: bool, outer: int
) -> None:
    """A runner's DDL after ``--``, ``/* */`` or ``#`` comments passes the pre-check. An
    outer layer's (SQLAlchemy's) statement that passes only past its blanks or comments is
    :data:`~dblocks.UNLESS_CONSTRUCT` (2); one that starts with its word passes as before."""
    from testmon_live.plugin.probes import dblocks

    assert dblocks._precheck(statement) is direct
    assert dblocks._precheck(statement, direct=False) == outer
    assert type(dblocks._precheck(statement, direct=False)) is type(outer)


def test_the_precheck_verdicts_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from testmon_live.plugin.probes import dblocks

    monkeypatch.setattr(dblocks, "_MAYBE_KEPT", 8)
    monkeypatch.setattr(dblocks, "_maybe", {})
    monkeypatch.setattr(dblocks, "_maybe_outer", {})
    for i in range(50):
        for text in (f"SELECT {i}", f"-- {i}\nCREATE TABLE t{i} (x INTEGER)"):
            dblocks._precheck(text)
            dblocks._precheck(text, direct=False)
            assert len(dblocks._maybe) <= 8
            assert len(dblocks._maybe_outer) <= 8
