"""What recording a run costs: testmon-live's ``--monitor`` against pytest-reportlog.

Builds synthetic suites in a temporary folder (never in the repository) and runs each one
with ``python -m pytest -n 2 -q -p no:cacheprovider`` in a fresh subprocess, in several
variants:

``off``        testmon-live not loaded at all (``-p no:testmon_live``)
``base``       testmon-live loaded, ``--monitor`` not given (what every user pays)
``monitor``    ``--monitor`` (log into the temp folder, ``--monitor-keep=1``)
``reportlog``  pytest-reportlog's ``--report-log=FILE``, the recorder we compare against
``monitor-lowfreq``  opt-in experiment: ``--monitor`` with fewer background wake-ups
``monitor-nostall``  opt-in: ``--monitor --monitor-stall=0``, paired against ``monitor``
                     (what stall detection, on by default, costs)
``monitor-allfixtures``  opt-in: ``--monitor --monitor-fixture-detail=0`` (every fixture
                     execution recorded one by one, as before quick ones were counted),
                     paired against ``base`` like ``monitor``

Variants run interleaved: every round runs each variant of a suite once, in an order
rotated by one per round (ABCD, BCDA, ...), so slow drift of a shared machine hits all
variants alike. Overheads are paired: each run is compared with its reference variant's
run of the same suite in the same round (``monitor`` and ``reportlog`` against ``base``,
``base`` against ``off``); the table shows the median of those paired ratios and their
interquartile range, the goal check a 95% bootstrap confidence interval of the median.

Bytecode is compiled once (warm-up) into a ``PYTHONPYCACHEPREFIX`` in the temp folder and
loaded from there, as on a user's machine, even where ``PYTHONDONTWRITEBYTECODE`` is set.

CPU time is measured with ``resource.getrusage(RUSAGE_CHILDREN)`` deltas around each run:
that counts the controller and every descendant it waited for. execnet's
``Group.terminate`` waits for popen workers (``Popen.wait``), so the xdist workers are
included; every run also cross-checks this with ``_overhead_probe.py`` (a ``-p`` plugin
that records each process's own ``os.times()`` in ``pytest_unconfigure``): the
controller's children time must match the sum of the workers' own times. Controller CPU
and peak RSS come from that probe (controller process only).

This is a measurement script, not a test: it asserts nothing about timings. Raw results go
to ``benchmarks/results/overhead-<time>.json`` (gitignored); the markdown table printed at
the end is the kind in ``benchmarks/README.md``.

    .venv/bin/python benchmarks/overhead.py                 # all suites, 5 rounds
    .venv/bin/python benchmarks/overhead.py --quick         # smoke run (small suites)
    .venv/bin/python benchmarks/overhead.py --suites trivial --variants off,base
    .venv/bin/python benchmarks/overhead.py --report A.json [B.json ...]   # re-render, pool
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
PROBE_MODULE = "_overhead_probe"
PROBE_ENV = "TESTMON_BENCH_PROBE_OUT"  # same value as _overhead_probe.OUT_ENV
GOAL_PERCENT = 5.0
RUN_TIMEOUT = 1800.0
"""Seconds before a hung run is killed (a safety net, not a measurement)."""

VARIANTS = ("off", "base", "monitor", "reportlog")
EXTRA_VARIANTS = (
    "monitor-lowfreq",
    "monitor-nodb",
    "monitor-nodbapi",
    "monitor-nostall",
    "monitor-nonotices",
    "monitor-allfixtures",
)
"""Selectable with --variants, not run by default (experiments)."""
REFERENCE: dict[str, str] = {
    "base": "off",
    "monitor": "base",
    "reportlog": "base",
    "monitor-lowfreq": "base",
    "monitor-nodb": "monitor",
    "monitor-nodbapi": "monitor",
    "monitor-nostall": "monitor",
    "monitor-nonotices": "monitor",
    "monitor-allfixtures": "base",
}
VARIANT_ENV: dict[str, dict[str, str]] = {
    "monitor-lowfreq": {"TESTMON_LIVE_FLUSH": "0.25"},
    # --monitor without the SQLAlchemy probe: against `monitor`, what the probe costs.
    "monitor-nodb": {"TESTMON_LIVE_PROBES_OFF": "sqlalchemy"},
    # --monitor without the DB-API drivers' probe: against `monitor`, what it costs.
    "monitor-nodbapi": {"TESTMON_LIVE_PROBES_OFF": "dbapi"},
}
"""Each variant's overhead is paired against this variant's run in the same round."""

ENV_DROP = (
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTEST_XDIST_AUTO_NUM_WORKERS",
    "PYTEST_DEBUG",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONPYCACHEPREFIX",
)
"""Environment variables that would change what a run does; removed for every run."""


# ------------------------------------------------------------------------- suites


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _chunks(total: int, per: int) -> list[int]:
    sizes = [per] * (total // per)
    if total % per:
        sizes.append(total % per)
    return sizes


def build_trivial(root: Path, count: int) -> int:
    """``count`` tests that do nothing, 500 to a module."""
    for m, size in enumerate(_chunks(count, 500)):
        body = "".join(f"def test_{i}():\n    pass\n\n\n" for i in range(size))
        _write(root / f"test_trivial_{m:03d}.py", body.rstrip() + "\n")
    return count


FIXTURES_CONFTEST = """\
import pytest


@pytest.fixture(scope="session")
def session_res():
    return {"calls": 0}


@pytest.fixture(scope="module")
def module_res(session_res):
    return [session_res]


@pytest.fixture(scope="class")
def class_res(module_res):
    return len(module_res)


@pytest.fixture
def func_res(class_res):
    return class_res + 1


@pytest.fixture
def func_yield(func_res):
    state = {"value": func_res}
    yield state
    state.clear()
"""


FIXTURE_ARGS = "session_res, module_res, class_res, func_res, func_yield"


def build_fixtures(root: Path, count: int) -> int:
    """``count`` tests using five fixtures (session, module, class, function, yield)."""
    _write(root / "conftest.py", FIXTURES_CONFTEST)
    for m, size in enumerate(_chunks(count, 100)):
        parts: list[str] = []
        for c, in_class in enumerate(_chunks(size, 10)):
            tests = "".join(
                f"    def test_{i}(self, {FIXTURE_ARGS}):\n"
                f'        assert func_yield["value"] == func_res\n\n'
                for i in range(in_class)
            )
            parts.append(f"class TestGroup{c}:\n{tests}\n")
        _write(root / f"test_fixtures_{m:03d}.py", "".join(parts).rstrip() + "\n")
    return count


def build_param(root: Path, count: int) -> int:
    """``count`` parametrized cases: two stacked parametrize marks, 1,000 cases a module."""
    for m, size in enumerate(_chunks(count, 1000)):
        outer = max(1, size // 20)
        inner = size // outer
        rest = size - outer * inner
        body = (
            "import pytest\n\n\n"
            f'@pytest.mark.parametrize("word", [f"w{{j}}" for j in range({inner})])\n'
            f'@pytest.mark.parametrize("number", range({outer}))\n'
            "def test_case(number, word):\n"
            '    assert word.startswith("w") and number >= 0\n'
        )
        if rest:
            body += (
                f'\n\n@pytest.mark.parametrize("number", range({rest}))\n'
                "def test_rest(number):\n"
                "    assert number >= 0\n"
            )
        _write(root / f"test_param_{m:03d}.py", body)
    return count


DB_CONFTEST = """\
import os

import pytest
import sqlalchemy as sa

METADATA = sa.MetaData()
ITEMS = sa.Table(
    "items",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(40)),
    sa.Column("qty", sa.Integer),
)


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    path = tmp_path_factory.getbasetemp() / f"bench-{worker}.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    METADATA.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def conn(engine):
    with engine.connect() as conn:
        yield conn
        conn.rollback()
"""


def build_db(root: Path, count: int) -> int:
    """``count`` tests of 20 SQLAlchemy Core statements each on a per-worker SQLite file
    (10 inserts, a SELECT ... FOR UPDATE-free read, updates, a count), 100 tests a module."""
    _write(root / "conftest.py", DB_CONFTEST)
    body = (
        "import sqlalchemy as sa\n"
        "from conftest import ITEMS\n\n\n"
        "def _work(conn, n):\n"
        "    base = n * 100\n"
        "    for i in range(10):\n"
        '        conn.execute(ITEMS.insert().values(id=base + i, name=f"item{i}", qty=i))\n'
        "    for i in range(8):\n"
        "        conn.execute(ITEMS.update().where(ITEMS.c.id == base + i).values(qty=i + 1))\n"
        "    rows = conn.execute(sa.select(ITEMS.c.qty).where(ITEMS.c.id >= base)).all()\n"
        "    total = conn.execute(sa.select(sa.func.count()).select_from(ITEMS)).scalar()\n"
        "    assert len(rows) == 10 and total >= 10\n\n\n"
    )
    for m, size in enumerate(_chunks(count, 100)):
        tests = "".join(
            f"def test_{i}(conn):\n    _work(conn, {m * 100 + i})\n\n\n" for i in range(size)
        )
        _write(root / f"test_db_{m:03d}.py", (body + tests).rstrip() + "\n")
    return count


DBAPI_CONFTEST = """\
import os
import sqlite3

import pytest


@pytest.fixture(scope="session")
def database(tmp_path_factory):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    path = tmp_path_factory.getbasetemp() / f"bench-{worker}.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def conn(database):
    conn = sqlite3.connect(database)
    yield conn
    conn.rollback()
    conn.close()
"""


def build_dbapi(root: Path, count: int) -> int:
    """``count`` tests of 20 statements each through sqlite3 directly (no SQLAlchemy), a
    connection of their own each, on a per-worker SQLite file, 100 tests a module."""
    _write(root / "conftest.py", DBAPI_CONFTEST)
    body = (
        "def _work(conn, n):\n"
        "    base = n * 100\n"
        "    for i in range(10):\n"
        '        conn.execute("INSERT INTO items VALUES (?, ?, ?)", (base + i, f"item{i}", i))\n'
        "    for i in range(8):\n"
        '        conn.execute("UPDATE items SET qty = ? WHERE id = ?", (i + 1, base + i))\n'
        '    rows = conn.execute("SELECT qty FROM items WHERE id >= ?", (base,)).fetchall()\n'
        '    total = conn.execute("SELECT count(*) FROM items").fetchone()[0]\n'
        "    assert len(rows) == 10 and total >= 10\n\n\n"
    )
    for m, size in enumerate(_chunks(count, 100)):
        tests = "".join(
            f"def test_{i}(conn):\n    _work(conn, {m * 100 + i})\n\n\n" for i in range(size)
        )
        _write(root / f"test_dbapi_{m:03d}.py", (body + tests).rstrip() + "\n")
    return count


DBPG_DSN = os.environ.get("TESTMON_BENCH_PG", "host=127.0.0.1 port=5432 user=postgres dbname=test")
"""The PostgreSQL server of the ``dbpg`` suite (libpq key=value string)."""

DBPG_CONFTEST = """\
import os

import psycopg
import pytest

DSN = os.environ.get("TESTMON_BENCH_PG", DEFAULT_DSN)
SCHEMA = "bench_" + os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def database():
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        conn.execute(
            f"CREATE TABLE {SCHEMA}.items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)"
        )
    yield DSN
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


@pytest.fixture
def conn(database):
    # Each worker's schema first on the search path: every worker runs the same texts.
    conn = psycopg.connect(database, options=f"-c search_path={SCHEMA}")
    yield conn
    conn.rollback()
    conn.close()
""".replace("DEFAULT_DSN", repr(DBPG_DSN))


def build_dbpg(root: Path, count: int) -> int:
    """``count`` tests of the ``dbapi`` suite's 20 statements through psycopg 3 on the local
    PostgreSQL (``TESTMON_BENCH_PG``), a connection per test, a schema per worker."""
    _write(root / "conftest.py", DBPG_CONFTEST)
    body = (
        "def _work(conn, n):\n"
        "    base = n * 100\n"
        "    cur = conn.cursor()\n"
        "    for i in range(10):\n"
        '        cur.execute("INSERT INTO items VALUES (%s, %s, %s)", (base + i, f"item{i}", i))\n'
        "    for i in range(8):\n"
        '        cur.execute("UPDATE items SET qty = %s WHERE id = %s", (i + 1, base + i))\n'
        '    rows = cur.execute("SELECT qty FROM items WHERE id >= %s", (base,)).fetchall()\n'
        '    total = cur.execute("SELECT count(*) FROM items").fetchone()[0]\n'
        "    assert len(rows) == 10 and total >= 10\n\n\n"
    )
    for m, size in enumerate(_chunks(count, 100)):
        tests = "".join(
            f"def test_{i}(conn):\n    _work(conn, {m * 100 + i})\n\n\n" for i in range(size)
        )
        _write(root / f"test_dbpg_{m:03d}.py", (body + tests).rstrip() + "\n")
    return count


DJANGO_SETTINGS = """\
SECRET_KEY = "bench"
INSTALLED_APPS = ["django.contrib.contenttypes", "benchapp"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "bench.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
"""
DJANGO_MODELS = """\
from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=40)
    qty = models.IntegerField()
"""
DJANGO_MIGRATION = """\
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=40)),
                ("qty", models.IntegerField()),
            ],
        ),
    ]
"""


def build_django(root: Path, count: int) -> int:
    """``count`` tests of 20 ORM statements each (pytest-django, ``django_db``: each test in
    a transaction rolled back after it) on SQLite: the test database each worker creates and
    migrates, then the statements through Django's ORM and the sqlite3 probe."""
    _write(
        root / "pytest.ini",
        f"[pytest]\naddopts = {NOT_MEASURED}\nDJANGO_SETTINGS_MODULE = bench_settings\n",
    )
    _write(root / "bench_settings.py", DJANGO_SETTINGS)
    _write(root / "benchapp" / "__init__.py", "")
    _write(root / "benchapp" / "models.py", DJANGO_MODELS)
    _write(root / "benchapp" / "migrations" / "__init__.py", "")
    _write(root / "benchapp" / "migrations" / "0001_initial.py", DJANGO_MIGRATION)
    body = (
        "import pytest\n"
        "from benchapp.models import Item\n\n\n"
        "def _work(n):\n"
        "    base = n * 100\n"
        "    for i in range(10):\n"
        '        Item.objects.create(id=base + i, name=f"item{i}", qty=i)\n'
        "    for i in range(8):\n"
        "        Item.objects.filter(id=base + i).update(qty=i + 1)\n"
        '    rows = list(Item.objects.filter(id__gte=base).values_list("qty", flat=True))\n'
        "    total = Item.objects.count()\n"
        "    assert len(rows) == 10 and total >= 10\n\n\n"
    )
    for m, size in enumerate(_chunks(count, 100)):
        tests = "".join(
            f"@pytest.mark.django_db\ndef test_{i}():\n    _work({m * 100 + i})\n\n\n"
            for i in range(size)
        )
        _write(root / f"test_django_{m:03d}.py", (body + tests).rstrip() + "\n")
    return count


@dataclass(frozen=True)
class Suite:
    name: str
    size: int
    build: Callable[[Path, int], int]
    about: str


SUITES: dict[str, Suite] = {
    "trivial": Suite("trivial", 10_000, build_trivial, "10,000 tests that pass at once"),
    "fixtures": Suite(
        "fixtures",
        2_000,
        build_fixtures,
        "2,000 tests, five fixtures (session/module/class/2x function)",
    ),
    "param": Suite("param", 5_000, build_param, "5,000 parametrized cases"),
    "db": Suite("db", 1_000, build_db, "1,000 tests x 20 SQLAlchemy statements on SQLite (20,000)"),
    "dbapi": Suite(
        "dbapi", 1_000, build_dbapi, "1,000 tests x 20 sqlite3 statements, no SQLAlchemy (20,000)"
    ),
    "dbpg": Suite(
        "dbpg", 1_000, build_dbpg, "1,000 tests x 20 psycopg 3 statements on PostgreSQL (20,000)"
    ),
    "django": Suite(
        "django", 1_000, build_django, "1,000 tests x 20 Django ORM statements on SQLite (20,000)"
    ),
}
OPT_IN_SUITES = ("dbpg", "django")
"""Run only when named in --suites: they need PostgreSQL / pytest-django."""


# -------------------------------------------------------------------------- runs


@dataclass
class Run:
    suite: str
    variant: str
    round: int
    position: int
    """Place of this run within its round (0 = first)."""
    ok: bool
    returncode: int
    passed: int
    expected: int
    wall: float
    """Seconds from spawn to exit of the pytest subprocess."""
    cpu: float
    """user + sys seconds of the run's whole process tree (RUSAGE_CHILDREN delta)."""
    cpu_user: float
    cpu_sys: float
    controller_cpu: float | None
    """The controller's own user + sys at its pytest_unconfigure (probe)."""
    controller_children_cpu: float | None
    """CPU of the children the controller had waited for by then (probe)."""
    workers_cpu: float | None
    """Sum of the workers' own user + sys at their pytest_unconfigure (probe)."""
    controller_rss_mib: float | None
    worker_rss_mib: float | None
    """Largest worker peak RSS."""
    probes: int
    record_bytes: int | None
    """Size of what the recorder wrote (run log / report log), None without a recorder."""
    load: float
    """1-minute load average just before the run."""
    source: str = ""
    """Fingerprint of testmon-live's plugin/ sources when the run started."""
    foreign_cpu: float | None = None
    """CPU seconds the rest of the machine used during the run (/proc/stat busy - ``cpu``)."""
    steal: float | None = None
    """CPU seconds the hypervisor stole from this VM during the run."""
    switches: int | None = None
    """Context switches of the run's process tree, voluntary (waits) + involuntary."""
    involuntary: int | None = None
    """Involuntary context switches (preempted while runnable)."""
    note: str = ""
    tail: str = ""


@dataclass
class Plan:
    python: str
    workers: int
    rounds: int
    suites: list[Suite]
    variants: list[str]
    scale: float
    warmup: bool
    tmp: Path
    suite_dirs: dict[str, Path] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)


def variant_args(variant: str, tmp: Path) -> list[str]:
    if variant == "off":
        return ["-p", "no:testmon_live"]
    if variant == "base":
        return []
    if variant == "monitor":
        # "--opt=value": pytest picks the rootdir before plugins add their options, so a
        # separate "--monitor-dir DIR" would count DIR as a test path and move the rootdir.
        return ["--monitor", f"--monitor-dir={tmp / '.testmon'}", "--monitor-keep=1"]
    if variant == "reportlog":
        return [f"--report-log={tmp / 'reportlog.jsonl'}"]
    if variant == "monitor-lowfreq":
        # --monitor with fewer background wake-ups (see _overhead_lowfreq.py).
        return [*variant_args("monitor", tmp), "-p", "_overhead_lowfreq"]
    if variant in ("monitor-nodb", "monitor-nodbapi"):
        return variant_args("monitor", tmp)
    if variant == "monitor-nostall":
        return [*variant_args("monitor", tmp), "--monitor-stall=0"]
    if variant == "monitor-nonotices":
        # --monitor without the live notices' thread: against `monitor`, what it costs.
        return [*variant_args("monitor", tmp), "--no-monitor-notices"]
    if variant == "monitor-allfixtures":
        return [*variant_args("monitor", tmp), "--monitor-fixture-detail=0"]
    raise ValueError(f"unknown variant {variant!r}")


def record_size(variant: str, tmp: Path) -> int | None:
    if variant.startswith("monitor"):
        logs = sorted((tmp / ".testmon" / "runs").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        return logs[-1].stat().st_size if logs else 0
    if variant == "reportlog":
        path = tmp / "reportlog.jsonl"
        return path.stat().st_size if path.exists() else 0
    return None


def run_env(probe_out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(HERE) + (os.pathsep + path if path else "")
    env[PROBE_ENV] = str(probe_out)
    # Bytecode as users have it: compiled once (in the warm-up), then loaded from .pyc. With
    # PYTHONDONTWRITEBYTECODE (set in some sandboxes) every run would compile testmon-live's
    # modules from source in every process and re-rewrite every test module: a fixed cost
    # that inflates --monitor and dilutes every percentage. The prefix keeps .pyc files in
    # the temp folder, out of the repository and out of site-packages.
    env["PYTHONPYCACHEPREFIX"] = str(probe_out.parent / "pycache")
    return env


_PASSED = re.compile(rb"(\d+) passed")


def run_once(plan: Plan, suite: Suite, variant: str, rnd: int, position: int) -> Run:
    tmp = plan.tmp
    probe_out = tmp / "probe.jsonl"
    probe_out.unlink(missing_ok=True)
    (tmp / "reportlog.jsonl").unlink(missing_ok=True)
    cmd = [
        plan.python, "-m", "pytest", "-n", str(plan.workers), "-q", "-p", "no:cacheprovider",
        "-p", PROBE_MODULE, *variant_args(variant, tmp),
    ]  # fmt: skip
    load = os.getloadavg()[0]
    source = source_fingerprint()
    machine_before = machine_times()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # Own session: a hung run is killed with all its workers, and nothing else.
    proc = subprocess.Popen(
        cmd,
        cwd=plan.suite_dirs[suite.name],
        env={**run_env(probe_out), **VARIANT_ENV.get(variant, {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    note = ""
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        note = f"killed after {RUN_TIMEOUT:.0f}s"
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_after = machine_times()
    cpu_user = after.ru_utime - before.ru_utime
    cpu_sys = after.ru_stime - before.ru_stime
    foreign = steal = None
    if machine_before is not None and machine_after is not None:
        foreign = machine_after[0] - machine_before[0] - (cpu_user + cpu_sys)
        steal = machine_after[1] - machine_before[1]

    records = read_probes(probe_out)
    controllers = [r for r in records if r["role"] == "controller"]
    workers = [r for r in records if r["role"] == "worker"]
    controller = controllers[0] if len(controllers) == 1 else None
    if controller is None:
        note = note or f"{len(controllers)} controller probe records"
    elif len(workers) != plan.workers:
        note = note or f"{len(workers)} worker probe records for -n {plan.workers}"
    elif controller.get("rootdir") != str(plan.suite_dirs[suite.name]):
        note = note or f"rootdir was {controller.get('rootdir')}, not the suite folder"
    passed_match = _PASSED.findall(out)
    passed = int(passed_match[-1]) if passed_match else 0
    expected = plan.expected[suite.name]
    ok = proc.returncode == 0 and passed == expected and not note
    if not ok and not note:
        note = f"exit {proc.returncode}, {passed} passed of {expected}"
    return Run(
        suite=suite.name,
        variant=variant,
        round=rnd,
        position=position,
        ok=ok,
        returncode=proc.returncode,
        passed=passed,
        expected=expected,
        wall=wall,
        cpu=cpu_user + cpu_sys,
        cpu_user=cpu_user,
        cpu_sys=cpu_sys,
        controller_cpu=_own_cpu(controller) if controller else None,
        controller_children_cpu=(
            float(controller["children_user"]) + float(controller["children_sys"])
            if controller
            else None
        ),
        workers_cpu=sum(_own_cpu(w) for w in workers) if workers else None,
        controller_rss_mib=float(controller["maxrss_kib"]) / 1024 if controller else None,
        worker_rss_mib=max(float(w["maxrss_kib"]) for w in workers) / 1024 if workers else None,
        probes=len(records),
        record_bytes=record_size(variant, tmp),
        load=load,
        source=source,
        foreign_cpu=foreign,
        steal=steal,
        switches=(after.ru_nvcsw - before.ru_nvcsw) + (after.ru_nivcsw - before.ru_nivcsw),
        involuntary=after.ru_nivcsw - before.ru_nivcsw,
        note=note,
        tail="" if ok else out[-3000:].decode(errors="replace"),
    )


def machine_times() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    ticks = [int(x) for x in fields[1:9]]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, ticks[7] / tick


PLUGIN_SOURCES = HERE.parent / "plugin"


def source_fingerprint() -> str:
    """Short hash of plugin/**/*.py: others may edit the plugin while a benchmark runs."""
    digest = hashlib.sha256()
    for path in sorted(PLUGIN_SOURCES.rglob("*.py")):
        digest.update(str(path.relative_to(PLUGIN_SOURCES)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _own_cpu(record: dict[str, Any]) -> float:
    return float(record["user"]) + float(record["sys"])


def read_probes(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


NOT_MEASURED = "-p no:rerunfailures"
"""Installed plugins the suites leave out (``addopts`` of each suite's ini file)."""


def generate(suite: Suite, folder: Path, scale: float) -> int:
    """Write one suite into a new folder; returns its number of tests."""
    folder.mkdir(parents=True)
    # An ini file makes the suite folder the rootdir: no project config leaks in; nor does
    # pytest-rerunfailures, a test dependency (with xdist installed it starts a socket and a
    # thread in every process, as no suite measured before it did).
    _write(folder / "pytest.ini", f"[pytest]\naddopts = {NOT_MEASURED}\n")
    return suite.build(folder, max(10, round(suite.size * scale)))


def prepare(plan: Plan) -> None:
    for suite in plan.suites:
        folder = plan.tmp / "suites" / suite.name
        plan.expected[suite.name] = generate(suite, folder, plan.scale)
        plan.suite_dirs[suite.name] = folder


def execute(plan: Plan, log: Callable[[str], None]) -> list[Run]:
    runs: list[Run] = []
    if plan.warmup:
        # Unmeasured: pytest writes its assertion-rewrite cache, the page cache fills.
        for suite in plan.suites:
            for variant in plan.variants:
                warm = run_once(plan, suite, variant, -1, 0)
                status = "ok" if warm.ok else f"FAILED: {warm.note}\n{warm.tail}"
                log(f"warm-up {suite.name:<9} {variant:<10} {warm.wall:7.2f}s {status}")
    total = plan.rounds * len(plan.suites) * len(plan.variants)
    done = 0
    for rnd in range(plan.rounds):
        for suite in plan.suites:
            k = rnd % len(plan.variants)
            order = plan.variants[k:] + plan.variants[:k]
            for position, variant in enumerate(order):
                run = run_once(plan, suite, variant, rnd, position)
                runs.append(run)
                done += 1
                status = "" if run.ok else f"  FAILED: {run.note}"
                log(
                    f"[{done:3d}/{total}] round {rnd} {suite.name:<9} {variant:<10} "
                    f"wall {run.wall:7.2f}s  cpu {run.cpu:7.2f}s  "
                    f"ctl {run.controller_cpu or 0:6.2f}s {run.controller_rss_mib or 0:6.1f}MiB  "
                    f"others {run.foreign_cpu or 0:5.2f}s steal {run.steal or 0:4.2f}s{status}"
                )
    return runs


# ----------------------------------------------------------------------- summary


@dataclass
class Spread:
    median: float
    low: float
    high: float
    q1: float
    q3: float
    n: int
    ci_low: float | None = None
    """95% bootstrap confidence interval of the median (None below 5 values)."""
    ci_high: float | None = None


BOOTSTRAP = 4000


def spread(values: Sequence[float]) -> Spread | None:
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    ci_low = ci_high = None
    if len(ordered) >= 5:
        rng = random.Random(0)  # the same resamples every time: reports are reproducible
        medians = sorted(
            statistics.median(rng.choices(ordered, k=len(ordered))) for _ in range(BOOTSTRAP)
        )
        ci_low, ci_high = medians[int(BOOTSTRAP * 0.025)], medians[int(BOOTSTRAP * 0.975) - 1]
    median = statistics.median(ordered)
    return Spread(median, ordered[0], ordered[-1], q1, q3, len(ordered), ci_low, ci_high)


@dataclass
class Row:
    suite: str
    variant: str
    reference: str | None
    runs: int
    failed: int
    wall: float
    cpu: float
    controller_cpu: float | None
    controller_rss_mib: float | None
    record_mib: float | None
    wall_pct: Spread | None
    cpu_pct: Spread | None
    controller_cpu_pct: Spread | None
    controller_rss_delta_mib: Spread | None
    switches: float | None = None


def paired(
    runs: list[Run], suite: str, variant: str, reference: str, metric: Callable[[Run], float | None]
) -> list[tuple[float, float]]:
    by_round = {r.round: r for r in runs if r.suite == suite and r.variant == reference and r.ok}
    pairs: list[tuple[float, float]] = []
    for run in runs:
        if run.suite != suite or run.variant != variant or not run.ok:
            continue
        ref = by_round.get(run.round)
        if ref is None:
            continue
        a, b = metric(run), metric(ref)
        if a is not None and b is not None:
            pairs.append((a, b))
    return pairs


def _pct(pairs: list[tuple[float, float]]) -> Spread | None:
    return spread([(a / b - 1.0) * 100.0 for a, b in pairs if b > 0])


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: list[Run], suites: list[str], variants: list[str]) -> list[Row]:
    rows: list[Row] = []
    for suite in suites:
        for variant in variants:
            ref = REFERENCE.get(variant)
            row = summarize_one(runs, suite, variant, ref if ref in variants else None)
            if row is not None:
                rows.append(row)
    return rows


def summarize_one(runs: list[Run], suite: str, variant: str, ref: str | None) -> Row | None:
    mine = [r for r in runs if r.suite == suite and r.variant == variant]
    if not mine:
        return None
    good = [r for r in mine if r.ok]
    sizes = [r.record_bytes / 2**20 for r in good if r.record_bytes is not None]

    def pct(metric: Callable[[Run], float | None]) -> Spread | None:
        return _pct(paired(runs, suite, variant, ref, metric)) if ref else None

    rss_delta = None
    if ref:
        rss_pairs = paired(runs, suite, variant, ref, lambda r: r.controller_rss_mib)
        rss_delta = spread([a - b for a, b in rss_pairs])
    return Row(
        suite=suite,
        variant=variant,
        reference=ref,
        runs=len(good),
        failed=len(mine) - len(good),
        wall=_median([r.wall for r in good]) or 0.0,
        cpu=_median([r.cpu for r in good]) or 0.0,
        controller_cpu=_median([r.controller_cpu for r in good]),
        controller_rss_mib=_median([r.controller_rss_mib for r in good]),
        record_mib=_median(sizes) if sizes else None,
        wall_pct=pct(lambda r: r.wall),
        cpu_pct=pct(lambda r: r.cpu),
        controller_cpu_pct=pct(lambda r: r.controller_cpu),
        controller_rss_delta_mib=rss_delta,
        switches=_median([float(r.switches) for r in good if r.switches is not None]),
    )


def _fmt_pct(s: Spread | None) -> str:
    if s is None:
        return "—"
    return f"{s.median:+.1f}% [{s.q1:+.1f}…{s.q3:+.1f}]"


def _fmt_mib(s: Spread | None) -> str:
    if s is None:
        return "—"
    return f"{s.median:+.1f} [{s.low:+.1f}…{s.high:+.1f}]"


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    head = (
        "| suite | variant | vs | runs | wall s | CPU s (ctl+workers) | ctl CPU s "
        "| ctl peak RSS MiB | log MiB | ctx switches | Δ wall | Δ CPU | Δ ctl CPU | Δ ctl RSS MiB |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        runs = f"{row.runs}" + (f" ({row.failed} failed)" if row.failed else "")
        lines.append(
            f"| {row.suite} | {row.variant} | {row.reference or '—'} | {runs} | {row.wall:.2f} "
            f"| {row.cpu:.2f} | {_fmt(row.controller_cpu, '.2f')} "
            f"| {_fmt(row.controller_rss_mib, '.1f')} | {_fmt(row.record_mib, '.1f')} "
            f"| {_fmt(row.switches, ',.0f')} "
            f"| {_fmt_pct(row.wall_pct)} | {_fmt_pct(row.cpu_pct)} "
            f"| {_fmt_pct(row.controller_cpu_pct)} | {_fmt_mib(row.controller_rss_delta_mib)} |"
        )
    return "\n".join(lines)


def _verdict(s: Spread) -> str:
    if s.ci_low is None or s.ci_high is None:
        return f"no verdict from {s.n} pairs (5 or more needed)"
    if s.ci_high <= GOAL_PERCENT:
        return "within"
    if s.ci_low > GOAL_PERCENT:
        return "over"
    return "undecided"


def _ci(s: Spread) -> str:
    if s.ci_low is None or s.ci_high is None:
        return f"{s.median:+.1f}%"
    return f"{s.median:+.1f}% (95% CI {s.ci_low:+.1f}…{s.ci_high:+.1f})"


def goal_lines(rows: list[Row]) -> list[str]:
    """Verdicts from the 95% bootstrap CI of the median paired ratio: within (CI <= goal),
    over (CI > goal) or undecided (the CI straddles it: more rounds or a quieter machine)."""
    lines: list[str] = []
    for row in rows:
        if row.reference is None or row.cpu_pct is None or row.wall_pct is None:
            continue
        cpu, wall = row.cpu_pct, row.wall_pct
        lines.append(
            f"- {row.suite} / {row.variant} vs {row.reference}: CPU {_ci(cpu)} -> "
            f"{_verdict(cpu)}; wall {_ci(wall)} -> {_verdict(wall)}"
        )
    return lines


def check_lines(runs: list[Run]) -> list[str]:
    """How well the probe records agree with the RUSAGE_CHILDREN totals."""
    good = [r for r in runs if r.ok and r.controller_children_cpu and r.workers_cpu]
    if not good:
        return ["- no probe records to cross-check the CPU totals against"]
    waited = spread([r.controller_children_cpu / r.workers_cpu for r in good])  # type: ignore[operator]
    covered = spread(
        [((r.controller_cpu or 0.0) + (r.workers_cpu or 0.0)) / r.cpu for r in good if r.cpu > 0]
    )
    lines = []
    if waited is not None:
        lines.append(
            "- controller's waited-for children CPU / workers' own CPU: "
            f"median {waited.median:.3f} "
            f"(min {waited.low:.3f}, max {waited.high:.3f}) over {waited.n} runs "
            "(>= 1: the controller reaped its workers, so RUSAGE_CHILDREN includes them)"
        )
    if covered is not None:
        lines.append(
            f"- (controller + workers at pytest_unconfigure) / RUSAGE_CHILDREN total: median "
            f"{covered.median:.3f} (min {covered.low:.3f}, max {covered.high:.3f}); the rest is "
            "interpreter shutdown after pytest_unconfigure"
        )
    return lines


def noise_lines(runs: list[Run]) -> list[str]:
    """How busy the rest of the machine was: the noise behind the spreads."""
    foreign = [r.foreign_cpu / r.wall for r in runs if r.foreign_cpu is not None and r.wall > 0]
    steal = [r.steal / r.wall for r in runs if r.steal is not None and r.wall > 0]
    if not foreign:
        return []
    f, st = spread(foreign), spread(steal)
    lines = (
        [
            f"- other processes used {f.median:.2f} CPUs on average during a run "
            f"(median over runs; min {f.low:.2f}, max {f.high:.2f})"
        ]
        if f
        else []
    )
    if st is not None:
        lines.append(f"- hypervisor steal: {st.median:.2f} CPUs (median; max {st.high:.2f})")
    return lines


def pool(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Several result files as one: runs keep their pairing (round numbers made distinct)."""
    if len(payloads) == 1:
        return payloads[0]
    meta = dict(payloads[0]["meta"])
    runs: list[dict[str, Any]] = []
    suites: list[str] = []
    variants: list[str] = []
    for index, payload in enumerate(payloads):
        runs.extend({**run, "round": index * 10_000 + int(run["round"])} for run in payload["runs"])
        suites += [s for s in payload["meta"]["suites"] if s not in suites]
        variants += [v for v in payload["meta"]["variants"] if v not in variants]
    meta["when"] = " + ".join(str(p["meta"]["when"]) for p in payloads)
    meta["rounds"] = "+".join(str(p["meta"]["rounds"]) for p in payloads)
    meta["suites"] = suites
    meta["variants"] = [v for v in (*VARIANTS, *EXTRA_VARIANTS) if v in variants]
    return {"meta": meta, "runs": runs}


def render(payload: dict[str, Any]) -> str:
    runs = [Run(**r) for r in payload["runs"]]
    meta = payload["meta"]
    suites = list(meta["suites"])
    rows = summarize(runs, suites, list(meta["variants"]))
    parts = [
        f"{meta['when']}  {meta['machine']}  python {meta['python_version']}  "
        f"-n {meta['workers']}  {meta['rounds']} rounds  scale {meta['scale']}  "
        f"git {meta.get('git_head', '?')}  plugin/ {', '.join(sorted({r.source for r in runs}))}",
        "",
        "Δ columns: median of the paired ratios (each run against its reference variant's run in",
        "the same round) [interquartile range]; Δ ctl RSS in MiB [min…max].",
        "",
        table(rows),
        "",
        "Goal: monitor within 5% of base in CPU and wall; base within 5% of off. Verdict per",
        "95% bootstrap CI of the median paired ratio (within: CI <= 5%; over: CI > 5%;",
        "undecided: the CI straddles 5%):",
        *goal_lines(rows),
        "",
        "CPU measurement cross-check:",
        *check_lines(runs),
        "",
        "Machine noise:",
        *noise_lines(runs),
    ]
    sources = sorted({r.source for r in runs})
    if len(sources) > 1:
        parts += [
            "",
            f"WARNING: plugin/ changed during the benchmark ({len(sources)} versions: "
            f"{', '.join(sources)}); compare runs of one version only.",
        ]
    failed = [r for r in runs if not r.ok]
    if failed:
        parts += ["", f"{len(failed)} runs failed and are left out:"]
        parts += [f"- {r.suite}/{r.variant} round {r.round}: {r.note}" for r in failed]
    return "\n".join(parts)


# --------------------------------------------------------------------------- main


def _versions(python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json\n"
        "names = ['pytest', 'pytest-xdist', 'execnet', 'pytest-reportlog', 'testmon-live',\n"
        "         'msgspec']\n"
        "out = {}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = 'missing'\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def _git_head() -> str:
    """HEAD and whether plugin/ has uncommitted changes (read-only git calls)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "plugin"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' + uncommitted plugin/ changes' if dirty else ''}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds (default 5; 2 with --quick)"
    )
    parser.add_argument(
        "--suites",
        default=",".join(s for s in SUITES if s not in OPT_IN_SUITES),
        help=f"comma list of {', '.join(SUITES)} (default all but {', '.join(OPT_IN_SUITES)})",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma list of {', '.join(VARIANTS + EXTRA_VARIANTS)} (default: the first four)",
    )
    parser.add_argument("-n", "--workers", type=int, default=2, help="xdist workers (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: suites at 1/10 size")
    parser.add_argument("--scale", type=float, default=None, help="suite size factor (default 1)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the unmeasured warm-up runs")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter with pytest installed"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON results")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the generated suites")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="print the table of earlier results; several files are pooled (rounds of each file "
        "stay paired within that file)",
    )
    parser.add_argument(
        "--generate",
        type=Path,
        metavar="DIR",
        help="only write the suites into DIR (for profiling)",
    )
    args = parser.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        print(render(pool([json.loads(path.read_text()) for path in args.report])))
        return 0
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    known = VARIANTS + EXTRA_VARIANTS
    unknown = [s for s in suites if s not in SUITES] + [v for v in variants if v not in known]
    if unknown or not suites or not variants:
        print(f"unknown or missing suites/variants: {unknown}", file=sys.stderr)
        return 2
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 5)
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    if args.generate is not None:
        for name in suites:
            folder = args.generate / name
            print(f"{folder}: {generate(SUITES[name], folder, scale)} tests")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="testmon-bench-"))
    plan = Plan(
        python=args.python,
        workers=args.workers,
        rounds=rounds,
        suites=[SUITES[s] for s in suites],
        variants=variants,
        scale=scale,
        warmup=not args.no_warmup,
        tmp=tmp,
    )

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    meta: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus {platform.platform()}",
        "python_version": platform.python_version(),
        "python": args.python,
        "versions": _versions(args.python),
        "workers": args.workers,
        "rounds": rounds,
        "scale": scale,
        "suites": suites,
        "variants": variants,
        "reference": REFERENCE,
        "cpu_method": "getrusage(RUSAGE_CHILDREN) delta around each run; probe cross-check",
        "git_head": _git_head(),
    }
    runs: list[Run] = []
    try:
        prepare(plan)
        meta["sizes"] = plan.expected
        log(f"suites in {tmp}: {plan.expected}; {rounds} rounds of {variants}")
        runs = execute(plan, log)
    finally:
        payload = {"meta": meta, "runs": [asdict(r) for r in runs]}
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps(payload, indent=1))
        log(f"raw results: {out}")
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(render(payload))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
