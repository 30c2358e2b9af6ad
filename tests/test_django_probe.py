"""Django under pytest-django: each worker's test database, its creation and migrations,
through real pytest sessions of the small project in ``tests/data/django_project`` (two
apps, five migrations of which one takes 0.3 s) against SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.tui import cli

from .conftest import INNER_ADDOPTS, only_run
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
    assert "--reuse-db" in line


def test_django_test_databases_per_worker_on_sqlite(
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
    rows = json.loads(capsys.readouterr().out)["migrations"]
    assert len([r for r in rows if r["op"] == "migrate"]) == 4


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
