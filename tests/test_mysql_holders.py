"""MariaDB/MySQL: who holds the row lock or the metadata lock a worker waits for, and a
deadlock the server broke called a deadlock, through real pytest sessions (``-n 2``,
``--dist each``) against the real server (marker ``mariadb``).

The holder keeps its lock until the server shows the waiter waiting for a second (polled in
``information_schema.processlist``), so the watchdog had its moment to ask who blocks it.
"""

from __future__ import annotations

import json

import pytest

from testmon_live.tui import cli

from .conftest import only_run
from .test_dbapi_locks import _run, _suite

WAITING = """
import time

def waiting(cur, marker, state="", at_least=1.0, timeout=30.0):
    '''Until another session runs a statement with ``marker`` (in state ``state``) for
    ``at_least`` seconds.'''
    deadline = time.monotonic() + timeout
    while True:
        cur.execute(
            "SELECT time_ms FROM information_schema.processlist"
            " WHERE info LIKE %s AND state LIKE %s AND id <> CONNECTION_ID()",
            ("%" + marker + "%", "%" + state + "%"),
        )
        row = cur.fetchone()
        if row is not None and row[0] >= at_least * 1000:
            return
        assert time.monotonic() < deadline, f"nobody ran {marker} for {at_least}s"
        time.sleep(0.02)
"""

ROW_LOCK = {
    "waiting.py": WAITING,
    "test_rows.py": """
import pymysql
from barrier import barrier, WORKER
from dbparams import MY
from waiting import waiting

NO_DB = {k: v for k, v in MY.items() if k != "database"}
DB = MY["database"]

def test_row_locks():
    if WORKER == "gw0":
        setup = pymysql.connect(**MY, autocommit=True)
        setup.cursor().execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        setup.cursor().execute("INSERT INTO t VALUES (1, 0), (2, 0)")
        conn = pymysql.connect(**MY)  # its statements name the table unqualified
        cur = conn.cursor()
        cur.execute("SELECT * FROM t WHERE id = 1 FOR UPDATE")
        barrier("selected", 2)
        waiting(cur, "waiter-select")
        conn.rollback()
        cur.execute("UPDATE t SET v = v + 1 WHERE id = 2")  # a row lock no statement names
        barrier("updated", 2)
        waiting(cur, "waiter-update")
        conn.rollback()
        conn.close()
        setup.close()
    else:
        conn = pymysql.connect(**NO_DB)  # names it qualified
        cur = conn.cursor()
        barrier("selected", 2)
        cur.execute(f"SELECT /* waiter-select */ * FROM {DB}.t WHERE id = 1 FOR UPDATE")
        conn.rollback()
        barrier("updated", 2)
        cur.execute(f"UPDATE /* waiter-update */ {DB}.t SET v = 5 WHERE id = 2")
        conn.rollback()
        conn.close()
""",
}


@pytest.mark.mariadb
def test_row_lock_waits_name_their_holder(
    pytester: pytest.Pytester, mariadb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _suite(pytester, ROW_LOCK, mariadb_url)
    _run(pytester, 2).assert_outcomes(passed=2)
    run = only_run(pytester)
    state = run.state
    db = mariadb_url.rsplit("/", 1)[1]
    # `t` (unqualified, in the holder's database) and `db.t` are one lock
    assert [k for k in state.locks if k[0] == "row"] == [("row", f"{db}.t")]
    rows = state.locks[("row", f"{db}.t")]
    # gw0's FOR UPDATE, gw1's FOR UPDATE and gw1's UPDATE (a wait the server told of)
    assert (rows.acquisitions, rows.contended, rows.waited_on) == (3, 2, {"gw0": 2})
    waits = [e for e in state.lock_events if e.action == "wait"]
    assert len(waits) == 2
    for wait in waits:
        holder = state.holder(wait)
        assert holder is not None
        assert (wait.w, holder.w) == ("gw1", "gw0")
    # the UPDATE took no lock a statement names: only the server can say who held its row
    (update,) = [d for d in state.db_waits if "waiter-update" in d.statement]
    assert update.w == "gw1"
    assert update.lock == f"row:{db}.t"
    blocked_by = state.blocked_by(update)
    assert blocked_by is not None
    assert blocked_by.w == "gw0"
    capsys.readouterr()
    assert cli.main(["report", str(run.path), "--format", "json"]) == 0
    waits = json.loads(capsys.readouterr().out)["db_waits"]
    assert {d["blocked_by"].split(",")[0] for d in waits} == {"gw0"}, waits


METADATA_LOCK = {
    "waiting.py": WAITING,
    "test_mdl.py": """
import pymysql
from barrier import barrier, WORKER
from dbparams import MY
from waiting import waiting

NO_DB = {k: v for k, v in MY.items() if k != "database"}
DB = MY["database"]

def test_metadata_lock():
    if WORKER == "gw0":
        conn = pymysql.connect(**MY)
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        cur.execute("SELECT * FROM t")  # its open transaction holds t's metadata lock
        barrier("reading", 2)
        waiting(cur, "waiter-alter", "metadata lock")
        conn.rollback()
        conn.close()
    else:
        conn = pymysql.connect(**NO_DB)
        cur = conn.cursor()
        barrier("reading", 2)
        cur.execute(f"ALTER /* waiter-alter */ TABLE {DB}.t ADD COLUMN extra INT NULL")
        conn.close()
""",
}


def performance_schema(url: str) -> bool:
    """The server keeps ``performance_schema`` (the one source that names who holds a
    metadata lock)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(conn.exec_driver_sql("SELECT @@performance_schema").scalar())
    finally:
        engine.dispose()


@pytest.mark.mariadb
def test_metadata_lock_wait_names_its_holder_only_when_certain(
    pytester: pytest.Pytester, mariadb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _suite(pytester, METADATA_LOCK, mariadb_url)
    _run(pytester, 2).assert_outcomes(passed=2)
    run = only_run(pytester)
    state = run.state
    db = mariadb_url.rsplit("/", 1)[1]
    (alter,) = [d for d in state.db_waits if "waiter-alter" in d.statement]
    assert alter.w == "gw1"
    assert alter.lock == f"metadata:{db}.t"
    blocked_by = state.blocked_by(alter)
    certain = performance_schema(mariadb_url)
    if certain:
        assert blocked_by is not None
        assert blocked_by.w == "gw0"
    else:  # nothing says who holds it for sure: no holder named, not a likely one
        assert blocked_by is None or not blocked_by.w, blocked_by
    capsys.readouterr()
    assert cli.main(["report", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert f"metadata:{db}.t" in out
    assert (f"gw0, metadata:{db}.t" in out) == certain, out


GET_LOCK_DEADLOCK = {
    "waiting.py": WAITING,
    "test_abba.py": """
import pymysql
import pytest
from barrier import barrier, WORKER
from dbparams import MY
from waiting import waiting

def test_abba():
    conn = pymysql.connect(**MY)
    cur = conn.cursor()
    # lock names are the server's, not the database's: this run's own
    a, b = MY["database"] + ":a", MY["database"] + ":b"
    mine, theirs = (a, b) if WORKER == "gw0" else (b, a)
    cur.execute("SELECT GET_LOCK(%s, 0)", (mine,))
    assert cur.fetchone() == (1,)
    barrier("held", 2)
    if WORKER == "gw0":
        cur.execute("SELECT GET_LOCK(%s, 30)", (theirs,))
        assert cur.fetchone() == (1,)  # once gw1 gave up b
    else:
        waiting(cur, "GET_LOCK('" + b, at_least=0.0)  # gw0 waits for b
        with pytest.raises(pymysql.err.OperationalError) as failed:
            cur.execute("SELECT GET_LOCK(%s, 30)", (theirs,))
        assert failed.value.args[0] == 1213  # ER_LOCK_DEADLOCK
    cur.execute("SELECT RELEASE_ALL_LOCKS()")
    conn.close()
""",
}


@pytest.mark.mariadb
def test_deadlock_the_server_broke_is_called_a_deadlock(
    pytester: pytest.Pytester, mariadb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _suite(pytester, GET_LOCK_DEADLOCK, mariadb_url)
    result = _run(pytester, 2)
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    state = run.state
    db = mariadb_url.rsplit("/", 1)[1]
    a, b = f"mysql_get_lock:{db}:a", f"mysql_get_lock:{db}:b"
    (failed,) = [e for e in state.lock_events if e.action == "failed"]
    assert (failed.w, failed.key, failed.reason) == ("gw1", f"{db}:a", "deadlock")
    (deadlock,) = state.deadlocks
    assert deadlock.broken
    edges = {(e.w, e.holds, e.waits_for) for e in deadlock.cycle}
    assert edges == {("gw1", b, a), ("gw0", a, b)}
    line = f"deadlock: gw1 holds {b}, waits for {a}; gw0 holds {a}, waits for {b}"
    assert line in result.stdout.str()
    capsys.readouterr()
    assert cli.main(["report", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "Deadlocks" in out
    assert f"gw0 holds {a}" in out


UPDATE_DEADLOCK = {
    "waiting.py": WAITING,
    "test_updates.py": """
import pymysql
import pytest
from barrier import barrier, WORKER
from dbparams import MY
from waiting import waiting

def test_abba_updates():
    if WORKER == "gw0":
        setup = pymysql.connect(**MY, autocommit=True)
        setup.cursor().execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        setup.cursor().execute("INSERT INTO t VALUES (1, 0), (2, 0)")
        setup.close()
    barrier("created", 2)
    conn = pymysql.connect(**MY)
    cur = conn.cursor()
    mine, theirs = (1, 2) if WORKER == "gw0" else (2, 1)
    cur.execute("UPDATE t SET v = v + 1 WHERE id = %s", (mine,))
    barrier("updated", 2)
    if WORKER == "gw0":
        cur.execute("UPDATE /* first-waiter */ t SET v = v + 1 WHERE id = %s", (theirs,))
        conn.commit()  # once the server failed gw1's
    else:
        waiting(cur, "first-waiter")  # gw0 waits for row 2
        with pytest.raises(pymysql.err.OperationalError) as failed:
            cur.execute("UPDATE t SET v = v + 1 WHERE id = %s", (theirs,))
        assert failed.value.args[0] == 1213  # ER_LOCK_DEADLOCK
        conn.rollback()
    conn.close()
""",
}


@pytest.mark.mariadb
def test_deadlock_of_two_plain_updates_is_called_a_deadlock(
    pytester: pytest.Pytester, mariadb_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _suite(pytester, UPDATE_DEADLOCK, mariadb_url)
    result = _run(pytester, 2)
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    state = run.state
    db = mariadb_url.rsplit("/", 1)[1]
    (failed,) = [e for e in state.lock_events if e.action == "failed"]
    assert (failed.w, failed.kind, failed.key, failed.reason) == (
        "gw1",
        "row",
        f"{db}.t",
        "deadlock",
    )
    (deadlock,) = state.deadlocks
    assert deadlock.broken
    assert {e.w for e in deadlock.cycle} == {"gw0", "gw1"}, deadlock
    assert "deadlock: gw1 holds" in result.stdout.str()
    capsys.readouterr()
    assert cli.main(["report", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "Deadlocks" in out
    assert "gw0 holds" in out, out
    assert "gw1 holds" in out, out
