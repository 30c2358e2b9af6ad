"""Suites that build their schema per test (``metadata.create_all`` / ``drop_all`` in a
function fixture, as sqlalchemy-utils' does): the report groups the repeated migrations,
a private in-memory database never races, and the errors that came with a race are told
from those that stand on their own.

Real runs through pytester (``-n 2 --dist each`` where the workers must meet, a barrier
makes them), a real PostgreSQL for the race.
"""

from __future__ import annotations

import re

import pytest

from testmon_live.plugin import events as ev
from testmon_live.tui.dashboard.app import make_app
from testmon_live.tui.dashboard.screenshots import settle
from testmon_live.tui.dashboard.sources import ReplaySource
from testmon_live.tui.dashboard.widgets.locks_panel import LocksPanel

from .conftest import only_run, panel_text
from .test_locks import BARRIER
from .test_shared_setup import TIMEOUT, model, report, section, summary

TESTS = 12
"""Tests of the in-memory suite, each building and dropping the schema."""


# -------------------------------------------------- a schema per test, in memory

IN_MEMORY = f"""
import os
import time

import pytest
import sqlalchemy as sa

from barrier import barrier

metadata = sa.MetaData()
items = sa.Table("items", metadata, sa.Column("id", sa.Integer, primary_key=True))
BROKEN = "'SQLiteDialect_pysqlite' object has no attribute 'has_type'"


@sa.event.listens_for(metadata, "before_create")
def meet(target, connection, **kw):
    if os.environ.get("PYTEST_XDIST_WORKER") and not getattr(meet, "met", False):
        meet.met = True
        barrier("create", 2)  # both workers in create_all on the same URL at once
        time.sleep(0.3)
    if os.environ.get("BREAK_SCHEMA"):
        raise AttributeError(BROKEN)


@pytest.fixture
def db(request):
    if request.node.get_closest_marker("broken"):
        os.environ["BREAK_SCHEMA"] = "1"
    engine = sa.create_engine("sqlite:///:memory:")
    try:
        metadata.create_all(engine)
    finally:
        os.environ.pop("BREAK_SCHEMA", None)
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


@pytest.mark.parametrize("n", range({TESTS - 2}))
def test_item(db, n):
    with db.begin() as conn:
        conn.execute(items.insert().values(id=n))
        assert conn.execute(sa.select(sa.func.count()).select_from(items)).scalar() == 1


@pytest.mark.broken
@pytest.mark.parametrize("n", range(2))
def test_broken_schema(db, n):
    pass
"""


@pytest.mark.parametrize(
    ("workers", "args"),
    [(["main"], ["-p", "no:xdist"]), (["gw0", "gw1"], ["-n", "2", "--dist", "each"])],
    ids=["in process", "two workers"],
)
async def test_a_schema_built_per_test_in_memory_is_one_row_per_worker_and_no_race(
    pytester: pytest.Pytester,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    workers: list[str],
    args: list[str],
) -> None:
    (pytester.path / "barrier.py").write_text(BARRIER)
    pytester.makepyfile(test_items=IN_MEMORY)
    pytester.makeini("[pytest]\nmarkers = broken")
    result = pytester.runpytest_subprocess("--monitor", *args, timeout=TIMEOUT)
    result.assert_outcomes(passed=(TESTS - 2) * len(workers), errors=2 * len(workers))
    run = only_run(pytester)
    ends = [m for m in run.of(ev.Migration) if m.action == "end"]
    assert {m.w for m in ends} == set(workers)
    if len(workers) > 1:  # the same URL, at once: the workers' first create_all overlapped
        first = {w: min((m for m in ends if m.w == w), key=lambda m: m.ts) for w in workers}
        spans = sorted((m.ts - (m.duration or 0.0), m.ts) for m in first.values())
        assert spans[0][1] > spans[1][0] + 0.1, "the migrations must overlap for this test"
        assert {m.url for m in first.values()} == {"sqlite:///:memory:"}

    # no race: a private in-memory database is no shared schema
    state = run.state
    assert state.migration_races == {}
    assert "concurrent migrations" not in result.stdout.str()
    assert "RACE" not in result.stdout.str()
    data = model(capsys, run)
    assert data["migration_races"] == []

    # one row per worker and operation, with its count, time in all, longest and errors
    rows = {(m["worker"], m["op"]): m for m in data["migrations"]}
    assert sorted(rows) == sorted((w, op) for w in workers for op in ("create_all", "drop_all"))
    assert data["omitted"]["migrations"] == 0
    for w in workers:
        create, drop = rows[(w, "create_all")], rows[(w, "drop_all")]
        assert (create["count"], create["errors"], create["caught_errors"]) == (TESTS, 2, 0)
        assert (drop["count"], drop["errors"]) == (TESTS - 2, 0)
        for row in (create, drop):
            assert row["concurrent_with"] == []
            assert row["url"] == "sqlite:///:memory:"
            assert row["finished"]
            assert row["unfinished"] == 0
            assert row["longest"] is not None
            assert row["duration"] is not None
            assert 0 < row["longest"] <= row["duration"]
        assert "has_type" in (create["error"] or "")
        assert create["test"] == "test_items.py::test_item[0]"
        starts = [m.ts - (m.duration or 0.0) for m in ends if m.w == w]
        assert create["start"] == round(min(starts), 3)  # "at": the first began
    (error,) = data["migration_errors"]
    assert (error["count"], error["during_race"], error["url"]) == (
        2 * len(workers),
        False,
        "sqlite:///:memory:",
    )

    monkeypatch.setenv("COLUMNS", "400")
    migrations = section(report(capsys, run), "Migrations").splitlines()
    for w in workers:
        assert re.search(
            rf"^  {w} +sqlalchemy create_all ×{TESTS} +\+\S+ +\S+ +\S+ +2 errors +"
            r"sqlite:///:memory:$",
            "\n".join(migrations),
            re.M,
        ), migrations
        assert re.search(
            rf"^  {w} +sqlalchemy drop_all ×{TESTS - 2} .* ok +sqlite:///:memory:$",
            "\n".join(migrations),
            re.M,
        ), migrations
    assert not any("at the same time" in line or "race" in line for line in migrations)
    assert any(
        line.startswith(f"  ! sqlalchemy create_all failed {2 * len(workers)}×: AttributeError")
        for line in migrations
    ), migrations

    # the dashboard's Locks view groups them alike
    app = make_app(ReplaySource(run.path))
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        panel = await panel_text(app, pilot, "4", LocksPanel)
    listed = panel.split("migrations\n", 1)[1].split("\n\n", 1)[0]
    lines = [line for line in listed.splitlines() if not line.startswith(" " * 9)]
    assert len(lines) == 2 * len(workers), listed
    for w in workers:
        assert re.search(
            rf"^  {w} +sqlalchemy create_all ×{TESTS} \S+ in all, max \S+, 2 errors  "
            r"sqlite:///:memory:$",
            listed,
            re.M,
        ), listed
        assert re.search(rf"^  {w} +sqlalchemy drop_all ×{TESTS - 2} ", listed, re.M), listed
    assert "AttributeError: 'SQLiteDialect_pysqlite' object has no attribute 'has_type'" in listed


# ----------------------------------------- a race on PostgreSQL, and errors apart from it

RACING = """
import os
import time

import pytest
import sqlalchemy as sa

from barrier import barrier
from dburl import URL

WORKER = os.environ["PYTEST_XDIST_WORKER"]

shared = sa.MetaData()
sa.Table("items", shared, sa.Column("id", sa.Integer, primary_key=True))


@sa.event.listens_for(shared, "before_create")
def meet(target, connection, **kw):
    # both workers have looked for the table (not there) and both create it: one of them
    # fails, the race's doing
    barrier(os.environ["MEET"], 2)
    time.sleep(0.3)


class NoSuchType(sa.types.UserDefinedType):
    cache_ok = True

    def get_col_spec(self, **kw):
        return "no_such_type"


def broken(name):
    metadata = sa.MetaData()
    sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True))
    @sa.event.listens_for(metadata, "before_create")
    def fail(target, connection, **kw):
        raise AttributeError("'SQLiteDialect_pysqlite' object has no attribute 'has_type'")
    return metadata


def create(metadata, url, meet=None):
    engine = sa.create_engine(url)
    os.environ["MEET"] = meet or ""
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


def test_1_before_the_race():
    if WORKER == "gw0":  # alone on the database: an error of its own
        metadata = sa.MetaData()
        sa.Table("odd", metadata, sa.Column("x", NoSuchType()))
        with pytest.raises(sa.exc.ProgrammingError):
            create(metadata, URL)
        raise AssertionError("the schema did not build")
    barrier("ready", 2)


def test_2_race():
    if WORKER == "gw0":
        barrier("ready", 2)
    create(shared, URL, "race")


def test_3_another_database():
    if WORKER == "gw1":
        create(broken("other"), "sqlite:///:memory:")


def test_4_race_again():
    create(shared, URL, "again")
"""


@pytest.mark.postgres
def test_errors_during_a_race_are_told_from_errors_apart_from_it(
    pytester: pytest.Pytester,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers create one schema in one PostgreSQL database at once (a barrier makes
    them): one fails, the race's doing, said under the race line; an error on another
    database (a private in-memory one) while the race lasts, and one on the same database
    before the race began, are said apart."""
    (pytester.path / "barrier.py").write_text(BARRIER)
    (pytester.path / "dburl.py").write_text(f"URL = {pg_url!r}\n")
    pytester.makepyfile(test_racing=RACING)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", "-p", "no:randomly", timeout=TIMEOUT
    )
    outcomes = result.parseoutcomes()
    out = result.stdout.str()
    run = only_run(pytester)
    state = run.state
    ends = [m for m in run.of(ev.Migration) if m.action == "end"]
    raced = [m for m in ends if m.op == "create_all" and m.test == "test_racing.py::test_2_race"]
    assert sorted(m.w for m in raced) == ["gw0", "gw1"], ends
    (lost,) = [m for m in raced if m.error is not None]  # one of them lost the race
    assert re.search(r"already exists|duplicate key", lost.error or ""), lost.error
    before = next(m for m in ends if m.test == "test_racing.py::test_1_before_the_race")
    other = next(m for m in ends if m.test == "test_racing.py::test_3_another_database")
    assert (before.w, before.error is not None) == ("gw0", True)
    assert (other.w, other.url, other.error is not None) == ("gw1", "sqlite:///:memory:", True)
    assert outcomes.get("failed") == 3, out  # test_1 on gw0, test_2 on the loser, test_3 on gw1

    # the race, how long it lasted, and which migration came during it: the one helper
    (place,) = state.migration_races
    assert state.migration_races[place] == {"gw0", "gw1"}
    assert state.race_of(lost) == place
    assert all(state.race_of(m) == place for m in raced)
    assert state.race_of(before) is None, "before the race began"
    assert state.race_of(other) is None, "another database"
    start, end = state.race_windows[place]
    assert start < other.ts - (other.duration or 0.0), "meanwhile"
    assert other.ts < end, "meanwhile"

    data = model(capsys, run)
    (race,) = data["migration_races"]
    assert race["workers"] == ["gw0", "gw1"]
    assert race["start"] < race["end"]
    rows = {e["tests"][0]: e for e in data["migration_errors"]}
    assert len(rows) == len(data["migration_errors"]) == 3, data["migration_errors"]
    during = rows["test_racing.py::test_2_race"]
    assert during["during_race"]
    assert (during["url"], during["schema"]) == (race["url"], race["schema"])
    elsewhere = rows["test_racing.py::test_3_another_database"]
    assert not elsewhere["during_race"]
    assert elsewhere["url"] == "sqlite:///:memory:"
    earlier = rows["test_racing.py::test_1_before_the_race"]
    assert not earlier["during_race"]
    assert earlier["url"] == race["url"]
    assert earlier["error"].startswith("ProgrammingError")

    monkeypatch.setenv("COLUMNS", "400")
    text = section(report(capsys, run), "Migrations")
    bullets = [line for line in text.splitlines() if line.startswith("  ! ")]
    said = re.escape(race["url"])
    assert re.fullmatch(
        rf"  ! gw0 and gw1 migrated the same database {said} at the same time", bullets[0]
    )
    assert re.fullmatch(
        rf"  ! during the race: {lost.w} sqlalchemy create_all failed: \S+.* in "
        r"test_racing.py::test_2_race",
        bullets[1],
    ), bullets
    apart = sorted(bullets[2:])
    assert len(apart) == 2, bullets
    assert apart[0].startswith("  ! outside the race: gw0 sqlalchemy create_all failed on ")
    assert f" on {race['url']}: ProgrammingError" in apart[0]
    assert apart[1].startswith(
        "  ! outside the race: gw1 sqlalchemy create_all failed on sqlite:///:memory:: "
        "AttributeError"
    )

    (line,) = [line for line in summary(result) if line.startswith("concurrent migrations")]
    assert line.endswith(" at once; 1 migration failed meanwhile"), line
