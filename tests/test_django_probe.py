"""Django under pytest-django: each worker's test database, its creation and migrations,
through real pytest sessions of the small project in ``tests/data/django_project`` (two
apps, five migrations of which one takes 0.3 s) against SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from testmon_live.plugin import events as ev
from testmon_live.tui import cli
from testmon_live.tui.dashboard.app import make_app
from testmon_live.tui.dashboard.screenshots import settle
from testmon_live.tui.dashboard.sources import ReplaySource
from testmon_live.tui.dashboard.widgets.locks_panel import STEPS_SHOWN, LocksPanel

from .conftest import INNER_ADDOPTS, Recorded, only_run, panel_text, read_recorded, run_logs
from .test_locks import TIMEOUT

PROJECT = Path(__file__).parent / "data" / "django_project"
MIGRATIONS = {
    "catalog.0001_initial",
    "catalog.0002_product_price",
    "catalog.0003_seed",
    "orders.0001_initial",
    "orders.0002_order_quantity",
}


def _project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(PROJECT, pytester.path, dirs_exist_ok=True)
    # The suite's own runs leave pytest-django out (-p no:django); this one needs it.
    monkeypatch.setenv("PYTEST_ADDOPTS", INNER_ADDOPTS.replace("-p no:django", ""))


def _ends(run_events: list[ev.Event], op: str) -> dict[str, ev.Migration]:
    out: dict[str, ev.Migration] = {}
    for e in run_events:
        if isinstance(e, ev.Migration) and e.action == "end" and e.op == op:
            assert e.w not in out, f"two {op} on {e.w}"
            out[e.w] = e
    return out


def _check_per_worker(
    run_events: list[ev.Event], workers: set[str], url_start: str, out: str
) -> None:
    created = _ends(run_events, "create_test_db")
    migrated = _ends(run_events, "migrate")
    assert set(created) == set(migrated) == workers
    for w in workers:
        assert created[w].tool == migrated[w].tool == "django"
        assert created[w].error is None
        assert created[w].url.startswith(url_start)
        assert created[w].url.endswith(f"_{w}")  # pytest-django's per-worker database
        assert migrated[w].url == created[w].url
        assert created[w].fixture == "django_db_setup"
        steps = {s.name: s.duration for s in migrated[w].steps or ()}
        assert set(steps) >= MIGRATIONS
        assert steps["catalog.0003_seed"] >= 0.3
        assert "catalog.0003_seed" in (migrated[w].to_rev or "")
        assert (migrated[w].duration or 0) >= 0.3
        assert (created[w].duration or 0) >= (migrated[w].duration or 0)
    (line,) = [x for x in out.splitlines() if x.startswith("test databases:")]
    assert f"created on each of {len(workers)} workers" in line
    assert "of 3 apps" in line  # catalog, orders, contenttypes
    # the migrations' time is said per worker, as the creation's is
    assert re.search(
        r"\d\.\d\ds each \(\d+\.\d\ds in all\), of which \d\.\d\ds each migrating", line
    )
    assert "--reuse-db" in line


async def test_django_test_databases_per_worker_on_sqlite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _project(pytester, monkeypatch)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "4", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=16)
    run = only_run(pytester)
    workers = {"gw0", "gw1", "gw2", "gw3"}
    _check_per_worker(run.events, workers, "sqlite:///", result.stdout.str())
    assert run.state.migration_races == {}  # a database each: no race
    # the report lists them
    capsys.readouterr()
    assert cli.main(["report", str(run.path), "--format", "json"]) == 0
    model = json.loads(capsys.readouterr().out)
    rows = model["migrations"]
    assert len([r for r in rows if r["op"] == "migrate"]) == 4
    _check_steps(run, model, capsys)
    # The dashboard's Locks view: the slowest steps, bounded like the report.
    app = make_app(ReplaySource(run.path), clock=lambda: run.events[-1].ts)
    async with app.run_test(size=(160, 60)) as pilot:
        await settle(app, pilot)
        panel = await panel_text(app, pilot, "4", LocksPanel)
    listed = panel.split("slowest migration steps\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(listed) == STEPS_SHOWN + 1
    assert all("catalog.0003_seed  (django migrate)" in line for line in listed[:4])
    assert listed[-1] == f"  ... and {len(_all_steps(run)) - STEPS_SHOWN} faster steps"


def _all_steps(run: Recorded) -> list[tuple[str, str, float]]:
    return [
        (m.w, s.name, s.duration)
        for m in run.of(ev.Migration)
        if m.action == "end" and m.tool == "django"
        for s in m.steps or ()
    ]


def _check_steps(run: Recorded, model: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Every worker's migrations, step by step, the slowest first, bounded by --top."""
    steps = _all_steps(run)
    workers = {w for w, _n, _d in steps}
    assert len(steps) >= len(MIGRATIONS) * len(workers)
    # JSON: the --top (default 10) slowest of all workers', the rest counted.
    listed = model["migration_steps"]
    assert len(listed) == 10
    assert model["omitted"]["migration_steps"] == len(steps) - 10
    assert [r["duration"] for r in listed] == sorted((r["duration"] for r in listed), reverse=True)
    seeds = [r for r in listed if r["step"] == "catalog.0003_seed"]
    assert {r["worker"] for r in seeds} == workers  # 0.3 s on each worker: the top ones
    assert listed[: len(workers)] == seeds
    assert all(r["tool"] == "django" and r["op"] == "migrate" for r in listed)
    assert all(r["url"].startswith("sqlite:///") and not r["backwards"] for r in listed)
    # Text and markdown: the same rows, --top 2 of them.
    for fmt in ("text", "markdown"):
        capsys.readouterr()
        assert cli.main(["report", str(run.path), "-f", fmt, "--top", "2"]) == 0
        out = capsys.readouterr().out
        title = "Migration steps, slowest first"
        assert title in out
        body = out.split(title, 1)[1]
        name = "catalog.0003_seed" if fmt == "text" else "catalog.0003\\_seed"
        assert body.count(name) == 2
        assert f"{len(steps) - 2} steps more not shown (--top N shows more)" in body


@pytest.mark.postgres
def test_django_test_databases_per_worker_on_postgresql(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    import sqlalchemy as sa

    _project(pytester, monkeypatch)
    u = sa.make_url(pg_url)
    monkeypatch.setenv(
        "TM_DJANGO_PG",
        f"{u.host} {u.port or 5432} {u.username} {u.database} {u.password or ''}".strip(),
    )
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=8)
    run = only_run(pytester)
    _check_per_worker(run.events, {"gw0", "gw1"}, "postgresql://", result.stdout.str())
    # Django's connections go through psycopg: the DB-API probe knows them
    connected = run.of(ev.DbConnected)
    assert {c.w for c in connected} == {"gw0", "gw1"}
    assert any(f"test_{u.database}_gw0" in c.url for c in connected)


TWO_DATABASES = """
import pytest
from catalog.models import Product


@pytest.mark.django_db(databases=["default", "other"])
def test_both():
    assert Product.objects.using("other").count() == Product.objects.count() == 3
"""


def _line(out: str, start: str) -> str | None:
    return next((x for x in out.splitlines() if x.startswith(start)), None)


def test_django_reuse_db_that_creates_is_a_creation_per_database_per_worker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--reuse-db with no test databases yet creates them: said as creations (two databases
    on each worker, the migrations of one), with what --reuse-db did; django_db_setup on
    every worker is how pytest-django works, no duplicate to remove. Run again, it keeps
    them and says nothing; --create-db with it is said as the reason they were made."""
    _project(pytester, monkeypatch)
    monkeypatch.setenv("TM_DJANGO_SECOND", "1")
    pytester.makepyfile(test_two=TWO_DATABASES)
    args = ("--monitor", "-n", "2", "--dist", "each", "--reuse-db", "-p", "no:randomly")
    result = pytester.runpytest_subprocess(*args, timeout=TIMEOUT)
    result.assert_outcomes(passed=10)
    out = result.stdout.str()
    line = _line(out, "test databases:")
    assert line is not None, out
    assert line.startswith("test databases: 2 created on each of 2 workers, ")
    assert "(7 migrations of 3 apps per database)" in line  # contenttypes 2, ours 5
    assert "--reuse-db found none to keep (kept now for the next run)" in line
    assert "remedies: --nomigrations, a template database" in line
    assert "django_db_setup" not in out  # no duplicate to remove
    (log,) = run_logs(pytester.path)
    run = read_recorded(log)
    created = [m for m in run.of(ev.Migration) if m.op == "create_test_db"]
    assert {(m.w, m.action) for m in created} == {("gw0", "end"), ("gw1", "end")}
    assert len(created) == 4  # begun as reuses, ended as the creations they were
    assert run.state.fixtures_by_cost()  # it was set up on each worker all the same
    capsys.readouterr()
    assert cli.main(["report", str(log), "--format", "json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out)["migrations"] if r["op"] != "migrate"]
    assert [(r["op"], r["finished"]) for r in rows] == [("create_test_db", True)] * 4

    # (A kept database lost its seeded rows to the transactional test's flush: tests that
    # read them fail in this run, which is no matter here.)
    again = pytester.runpytest_subprocess(*args, timeout=TIMEOUT)
    assert _line(again.stdout.str(), "test databases:") is None  # kept: nothing made
    kept = [p for p in run_logs(pytester.path) if p != log]
    assert {m.op for m in read_recorded(kept[0]).of(ev.Migration)} >= {"reuse_test_db"}

    # A migration new since: the kept databases are migrated, not created.
    (pytester.path / "catalog" / "migrations" / "0004_noop.py").write_text(
        "from django.db import migrations\n\n\nclass Migration(migrations.Migration):\n"
        '    dependencies = [("catalog", "0003_seed")]\n'
        '    operations = [migrations.RunSQL("SELECT 1", migrations.RunSQL.noop)]\n'
    )
    migrated = pytester.runpytest_subprocess(*args, timeout=TIMEOUT)
    assert _line(migrated.stdout.str(), "test databases:") is None, migrated.stdout.str()
    newest = max(run_logs(pytester.path), key=lambda p: p.name)
    ops = {m.op for m in read_recorded(newest).of(ev.Migration)}
    assert "create_test_db" not in ops
    assert {"reuse_test_db", "migrate"} <= ops

    recreated = pytester.runpytest_subprocess(*args, "--create-db", timeout=TIMEOUT)
    recreated.assert_outcomes(passed=10)
    line = _line(recreated.stdout.str(), "test databases:")
    assert line is not None
    assert "--create-db made --reuse-db recreate them" in line
    assert "--reuse-db," not in line
