"""Alembic and ``MetaData.create_all`` under ``--monitor``: alembic's command line keeps all its
sub-commands, the probe learns revisions from what alembic does (never from a connection of
its own), offline ``--sql`` runs touch no database, and the wrappers keep their identity.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.activity import WorkerActivity
from testmon_live.plugin.probes import locking
from testmon_live.plugin.probes import sqlalchemy as probe

from .conftest import only_run

TIMEOUT = 90.0

ENV = """
from alembic import context
from sqlalchemy import create_engine

config = context.config


def offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def online():
    shared = config.attributes.get("connection")
    if shared is not None:  # alembic's "share a connection" recipe
        context.configure(connection=shared)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


offline() if context.is_offline_mode() else online()
"""

VERSIONS = {
    "0001_users.py": """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

def upgrade():
    op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))

def downgrade():
    op.drop_table("users")
""",
    "0002_orders.py": """\"\"\"add orders

Revision ID: 0002
\"\"\"
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

def upgrade():
    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True))

def downgrade():
    op.drop_table("orders")
""",
}


def alembic_project(root: Path, url: str) -> None:
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ENV)
    (root / "migrations" / "script.py.mako").write_text("")
    for name, text in VERSIONS.items():
        (root / "migrations" / "versions" / name).write_text(text)
    (root / "alembic.ini").write_text(
        f"[alembic]\nscript_location = {root / 'migrations'}\nsqlalchemy.url = {url}\n"
    )


COMMAND_LINE = """
import sqlite3
from pathlib import Path

from alembic.config import main

HERE = Path(__file__).parent
INI = str(HERE / "alembic.ini")


def test_the_command_line_keeps_its_sub_commands():
    main(["-c", INI, "upgrade", "head"])
    main(["-c", INI, "downgrade", "0001"])
    main(["-c", INI, "stamp", "0002"])
    main(["-c", INI, "current"])
    with sqlite3.connect(HERE / "app.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
"""


def test_alembic_command_line_keeps_upgrade_downgrade_stamp(pytester: pytest.Pytester) -> None:
    alembic_project(pytester.path, f"sqlite:///{pytester.path / 'app.db'}")
    pytester.makepyfile(test_alembic=COMMAND_LINE)
    result = pytester.runpytest_subprocess("--monitor", "-p", "no:randomly", timeout=TIMEOUT)
    assert result.ret == 0, result.stdout.str()
    run = only_run(pytester)
    migrations = run.of(ev.Migration)
    ends = [(m.op, m.from_rev, m.to_rev) for m in migrations if m.action == "end"]
    assert ends == [
        ("upgrade", None, "0002"),
        ("downgrade", "0002", "0001"),
        ("stamp", "0001", "0002"),
    ]
    begins = [(m.op, m.from_rev) for m in migrations if m.action == "begin"]
    assert begins == [("upgrade", None), ("downgrade", "0002"), ("stamp", "0001")]
    assert all(m.url.endswith("app.db") and m.tool == "alembic" for m in migrations)
    # Each revision that ran is a step, with its message's first line; a stamp runs none.
    steps = [
        [(s.name, s.backwards) for s in m.steps or ()] for m in migrations if m.action == "end"
    ]
    assert steps == [
        [("0001", False), ("0002 add orders", False)],
        [("0002 add orders", True)],
        [],
    ]
    upgrade = next(m for m in migrations if m.action == "end" and m.op == "upgrade")
    assert upgrade.steps is not None
    assert upgrade.duration is not None
    assert 0 < sum(s.duration for s in upgrade.steps) <= upgrade.duration


OFFLINE = """
from pathlib import Path

from alembic.config import main

HERE = Path(__file__).parent


def test_offline_sql_touches_no_database():
    main(["-c", str(HERE / "alembic.ini"), "upgrade", "head", "--sql"])
    assert not (HERE / "offline.db").exists()
"""


def test_alembic_offline_sql_opens_no_database(pytester: pytest.Pytester) -> None:
    alembic_project(pytester.path, f"sqlite:///{pytester.path / 'offline.db'}")
    pytester.makepyfile(test_offline=OFFLINE)
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", timeout=TIMEOUT)
    assert result.ret == 0, result.stdout.str()
    # Writing SQL to a file migrates no database: no migration is recorded.
    assert only_run(pytester).of(ev.Migration) == []


SHARED_CONNECTION = """
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent


def test_migrates_on_its_own_locked_connection():
    cfg = Config(str(HERE / "alembic.ini"))
    command.upgrade(cfg, "0001")
    engine = sa.create_engine(cfg.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        # the recipe: the test's transaction holds alembic_version, then migrates through it
        connection.execute(sa.text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
    engine.dispose()
"""


@pytest.mark.postgres
def test_alembic_sharing_the_tests_connection_does_not_deadlock(
    pytester: pytest.Pytester,
    pg_url: str,
) -> None:
    alembic_project(pytester.path, pg_url)
    pytester.makepyfile(test_shared=SHARED_CONNECTION)
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", timeout=TIMEOUT)
    assert result.ret == 0, result.stdout.str()
    ends = [
        (m.from_rev, m.to_rev, m.error)
        for m in only_run(pytester).of(ev.Migration)
        if m.action == "end"
    ]
    assert ends == [(None, "0001", None), ("0001", "0002", None)]


# ------------------------------------------------------------------ identity


@pytest.mark.isolated  # the probe patches alembic and SQLAlchemy for good
def test_alembic_commands_keep_their_identity() -> None:
    import alembic.command
    from alembic.runtime.migration import MigrationContext

    probe.install([])
    assert getattr(MigrationContext, "_testmon_live_patched", False)
    for name in ("upgrade", "downgrade", "stamp"):
        function = getattr(alembic.command, name)
        assert function.__module__ == "alembic.command"
        assert function.__name__ == name
        assert function.__code__.co_varnames[:2] == ("config", "revision")
    run = MigrationContext.run_migrations
    assert run.__name__ == "run_migrations"
    assert run.__module__ == "alembic.runtime.migration"
    assert inspect.signature(run) == inspect.signature(run.__wrapped__)  # type: ignore[attr-defined]


@pytest.mark.isolated  # the probe patches SQLAlchemy for good
def test_create_all_keeps_its_identity() -> None:
    from sqlalchemy import MetaData

    probe.install([])
    create_all = MetaData.create_all
    assert create_all.__name__ == "create_all"
    assert create_all.__qualname__ == "MetaData.create_all"
    assert create_all.__module__ == "sqlalchemy.sql.schema"
    assert inspect.signature(create_all) == inspect.signature(create_all.__wrapped__)  # type: ignore[attr-defined]


class _BoundMetaData:
    """SQLAlchemy 1.4's ``MetaData``: ``bind`` is optional, bound metadata supplies it."""

    def __init__(self, bind: Any) -> None:
        self.bind = bind
        self.calls: list[tuple[Any, Any, bool]] = []

    def create_all(self, bind: Any = None, tables: Any = None, checkfirst: bool = True) -> None:
        self.calls.append((bind, tables, checkfirst))


def test_create_all_of_bound_metadata_as_in_sqlalchemy_1_4() -> None:
    class Engine:
        class url:
            @staticmethod
            def render_as_string(hide_password: bool) -> str:
                return "sqlite:///bound.db"

    got: list[ev.Event] = []
    metadata = _BoundMetaData(Engine())
    wrapped = probe._migration_wrapper(_BoundMetaData.create_all, "create_all")
    locking.activate(locking.LockReporter(got.append, WorkerActivity(0.0)))
    try:
        wrapped(metadata)  # metadata.create_all() with no bind: the metadata's own
        wrapped(metadata, checkfirst=False)
    finally:
        locking.activate(None)
    assert metadata.calls == [(None, None, True), (None, None, False)]
    urls = {m.url for m in got if isinstance(m, ev.Migration)}
    assert urls == {"sqlite:///bound.db"}
