"""What the DB-API probe costs per statement, in process: time and instructions.

The suite-level counts of ``_instructions.py`` include work driven by the clock (the
sender's and watchdog's wake-ups), which valgrind's slow-down multiplies by however slow
the shared machine makes it; per statement that noise is larger than the probe. This runs
the ``dbapi`` / ``dbpg`` suites' statements (10 INSERT, 8 UPDATE, 2 SELECT, then a
rollback: 20 statements) in one process, no threads, with the driver as it is (``plain``)
or patched by the probe with a reporter recording (``probed``, as in a worker under
``--monitor``), and prints:

- time: best of 5 rounds, µs per statement;
- with ``--valgrind``: instructions per statement, from two cachegrind runs of the same
  process, one with no statements, one with ``--count`` rounds of 20 (the difference,
  divided: start-up and imports cancel out).

    .venv/bin/python benchmarks/_dbapi_statement.py                  # time, sqlite3 + psycopg
    .venv/bin/python benchmarks/_dbapi_statement.py --valgrind       # + instructions
    .venv/bin/python benchmarks/_dbapi_statement.py --drivers sqlite3
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PG = os.environ.get("TESTMON_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
STATEMENTS = 20
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _probe(driver: str) -> list[Any]:
    """Patch ``driver`` as a worker under --monitor does; the events it records."""
    sys.path.insert(0, str(HERE.parent))
    from testmon_live.plugin.activity import WorkerActivity
    from testmon_live.plugin.probes import dbapi, locking
    from testmon_live.plugin.probes.imports import when_imported

    got: list[Any] = []
    when_imported(driver, lambda module: dbapi.install_driver(module.__name__, module))
    activity = WorkerActivity(0.0)
    activity.test = "test_x.py::test_x"
    locking.activate(locking.LockReporter(got.append, activity))
    return got


def _sqlite_work(folder: str) -> Any:
    import sqlite3

    path = os.path.join(folder, "bench.db")
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, qty INT)")
    setup.commit()
    setup.close()
    conn = sqlite3.connect(path)

    def work(n: int) -> None:
        base = n * 100
        for i in range(10):
            conn.execute("INSERT INTO items VALUES (?, ?, ?)", (base + i, f"item{i}", i))
        for i in range(8):
            conn.execute("UPDATE items SET qty = ? WHERE id = ?", (i + 1, base + i))
        rows = conn.execute("SELECT qty FROM items WHERE id >= ?", (base,)).fetchall()
        total = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        assert len(rows) == 10
        assert total >= 10
        conn.rollback()

    return work


def _psycopg_work(_folder: str) -> Any:
    import psycopg

    schema = f"bench_stmt_{os.getpid()}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"CREATE TABLE {schema}.items (id INTEGER PRIMARY KEY, name TEXT, qty INT)")
    conn = psycopg.connect(PG, options=f"-c search_path={schema}")
    cur = conn.cursor()

    def work(n: int) -> None:
        base = n * 100
        for i in range(10):
            cur.execute("INSERT INTO items VALUES (%s, %s, %s)", (base + i, f"item{i}", i))
        for i in range(8):
            cur.execute("UPDATE items SET qty = %s WHERE id = %s", (i + 1, base + i))
        rows = cur.execute("SELECT qty FROM items WHERE id >= %s", (base,)).fetchall()
        total = cur.execute("SELECT count(*) FROM items").fetchone()
        assert len(rows) == 10
        assert total is not None
        assert total[0] >= 10
        conn.rollback()

    def cleanup() -> None:
        conn.close()
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")

    work.cleanup = cleanup  # type: ignore[attr-defined]
    return work


WORK = {"sqlite3": _sqlite_work, "psycopg": _psycopg_work}


def child(driver: str, mode: str, rounds: int, repeats: int) -> None:
    """In a fresh process: µs per statement (best of ``repeats``) on stdout."""
    got = _probe(driver) if mode == "probed" else []
    before = 0
    with tempfile.TemporaryDirectory() as folder:
        work = WORK[driver](folder)
        try:
            work(0)  # warm: statement caches, the probe's per-text verdicts
            before = len(got)
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                for n in range(rounds):
                    work(n)
                best = min(best, time.perf_counter() - started)
            assert len(got) == before, got[before : before + 3]  # plain statements: no events
        finally:
            getattr(work, "cleanup", lambda: None)()
    if rounds:
        print(f"{best / (rounds * STATEMENTS) * 1e6:.2f}")


def _run(driver: str, mode: str, rounds: int, repeats: int, valgrind: bool) -> str:
    cmd = [sys.executable, __file__, "--child", driver, mode, str(rounds), str(repeats)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if valgrind:
        with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
            vg = [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                "--cachegrind-out-file=/dev/null",
            ]
            subprocess.run(
                [*vg, f"--log-file={log.name}", *cmd], env=env, check=True, capture_output=True
            )
            found = _REFS.search(Path(log.name).read_text())
            assert found, "no count"
            return found.group(1).replace(",", "")
    return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--drivers", default="sqlite3,psycopg")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of 20 statements (time)")
    parser.add_argument("--count", type=int, default=50, help="rounds of 20 under valgrind")
    parser.add_argument("--valgrind", action="store_true")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        driver, mode, rounds, repeats = args.child
        child(driver, mode, int(rounds), int(repeats))
        return 0
    print("| driver | mode | µs / statement | instructions / statement |")
    print("|---|---|---|---|")
    for driver in args.drivers.split(","):
        for mode in ("plain", "probed"):
            micro = _run(driver, mode, args.rounds, 5, False)
            per = "—"
            if args.valgrind:
                empty = int(_run(driver, mode, 0, 1, True))
                full = int(_run(driver, mode, args.count, 1, True))
                per = f"{(full - empty) / (args.count * STATEMENTS):,.0f}"
            print(f"| {driver} | {mode} | {micro} | {per} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
