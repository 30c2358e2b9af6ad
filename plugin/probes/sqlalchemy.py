"""SQLAlchemy and Alembic: lock statements, statements that waited, migrations.

A thin layer on :mod:`.dblocks`, the mechanism every driver shares: ``DefaultDialect.
do_execute`` (and ``do_execute_no_params``, ``do_executemany``, ``do_commit``,
``do_rollback``) are wrapped on the class, so every engine of the worker is seen, including
ones created before the probe was installed, whatever its driver (pg8000 and mysqlclient
too, which :mod:`.dbapi` does not wrap). SQLAlchemy's layer is the outer one: a statement
it runs through a DB-API cursor :mod:`.dbapi` wraps is seen once, with the engine's URL.

No Engine event listener is registered: any one of them switches every statement onto
SQLAlchemy's event-dispatching path, which alone cost more than the probe's own work.
``executemany`` (``Dialect.do_executemany``, which PyMySQL/mysqlclient and psycopg2
override: each dialect class is wrapped when its first engine is made) is put in flight
for the watchdog, so a bulk insert or update that waits behind another worker's table,
row or metadata lock is reported with its blocker; it is not classified. One wrapper call
per batch, not per row.

Server connection ids of the connections are announced once per connection: by
:mod:`.dbapi` for its drivers (read from the connection, no query), else through a Pool
``connect`` listener (a query on the new connection).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .. import events as ev
from ..clock import now
from ..dburl import display_url
from ..guard import REAL, exc_text, repr_of, text_of
from . import dblocks, locking
from .dbapi import dbapi_url, monitor_for, outer_connecting
from .imports import when_imported
from .migrations import MigrationSpan

__tracebackhide__ = True
"""pytest leaves this module's frames out of the traceback of a failure: its wrappers sit
between the user's code and the library it called, and a failure reads as without the
monitor."""

_get_ident = REAL.get_ident


def install(watchdog_checks: list[Callable[[float], None]] | None = None) -> None:
    when_imported("sqlalchemy", _patch_sqlalchemy)
    when_imported("alembic.runtime.migration", _patch_alembic)
    dblocks.install(watchdog_checks)


# ---------------------------------------------------------------- statements


def _dialect(conn: Any) -> str:
    try:
        return str(conn.engine.dialect.name)
    except AttributeError:
        return "?"


def _describe(context: Any, cursor: Any) -> dblocks.Target:
    """What a statement of an execution context runs on: the engine's URL and dialect."""
    conn = getattr(context, "root_connection", None)
    raw = getattr(cursor, "connection", None)
    dialect = _dialect(conn)
    database = ""
    try:
        url = conn.engine.url  # type: ignore[union-attr]
        shown = display_url(url.render_as_string(hide_password=True))
        if dialect == "sqlite":
            database = str(url.database or ":memory:")
    except AttributeError:
        url, shown = None, "?"
    monitor = monitor_for(raw)
    if monitor is None and url is not None:
        monitor = functools.partial(_monitor, url)
    return dblocks.Target(dialect, shown, raw, database, monitor)


def _monitor(url: Any) -> Any:
    """A short-lived raw DB-API connection of our own to the same server (autocommit), for
    a driver :mod:`.dbapi` does not know."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine(url, poolclass=NullPool)
    monitor = engine.raw_connection()
    dbapi: Any = monitor.dbapi_connection
    if hasattr(dbapi, "autocommit"):
        try:
            dbapi.autocommit = True
        except (AttributeError, TypeError):
            dbapi.autocommit(True)
    return monitor


def _wrap_execute(original: Callable[..., Any], many: bool = False) -> Callable[..., Any]:
    """``Dialect.do_execute`` (and ``do_executemany``, ``many``: in flight for the watchdog,
    never a lock statement): the statement goes through :mod:`.dblocks`. No SQLAlchemy
    event is used: an Engine listener of any kind puts every statement on SQLAlchemy's
    slower dispatching path, which cost more than this whole probe."""
    begin, done, failed = dblocks.begin, dblocks.done_fast, dblocks.failed

    def do_execute(
        self: Any, cursor: Any, statement: str, parameters: Any, context: Any = None
    ) -> Any:
        entry = begin(statement, parameters, context, cursor, _describe, many)
        if entry is None:
            return original(self, cursor, statement, parameters, context)
        try:
            result = original(self, cursor, statement, parameters, context)
        except BaseException as exc:
            failed(entry, exc)
            raise
        done(entry)
        return result

    do_execute.__wrapped__ = original  # type: ignore[attr-defined]
    do_execute.__name__ = getattr(original, "__name__", do_execute.__name__)
    do_execute.__qualname__ = getattr(original, "__qualname__", do_execute.__qualname__)
    do_execute._testmon_live = True  # type: ignore[attr-defined]
    return do_execute


def _wrap_execute_no_params(original: Callable[..., Any]) -> Callable[..., Any]:
    begin, done, failed = dblocks.begin, dblocks.done_fast, dblocks.failed

    def do_execute_no_params(self: Any, cursor: Any, statement: str, context: Any = None) -> Any:
        entry = begin(statement, None, context, cursor, _describe, False)
        if entry is None:
            return original(self, cursor, statement, context)
        try:
            result = original(self, cursor, statement, context)
        except BaseException as exc:
            failed(entry, exc)
            raise
        done(entry)
        return result

    do_execute_no_params.__wrapped__ = original  # type: ignore[attr-defined]
    return do_execute_no_params


def _wrap_dialect_initialize(original: Callable[..., Any]) -> Callable[..., Any]:
    """``DefaultDialect.initialize`` (called on each dialect's first connection, before any
    statement): wrap the ``do_executemany`` of the dialect's class (once a class) -- several
    dialects override it, so wrapping the base alone would miss them.

    Not ``__init__``: ``create_engine`` reads the dialect's keyword arguments off the
    ``__init__`` signatures of its classes, and a ``(*args, **kwargs)`` wrapper there hides
    ``DefaultDialect``'s (``isolation_level``, ``label_length``...), failing the user's engine.
    """

    def initialize(self: Any, connection: Any) -> None:
        cls = type(self)
        method = cls.do_executemany
        if not getattr(method, "_testmon_live", False):
            cls.do_executemany = _wrap_execute(method, many=True)
        original(self, connection)

    initialize.__wrapped__ = original  # type: ignore[attr-defined]
    return initialize


def _wrap_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Dialect.connect``: SQLAlchemy's layer sees every statement of the connection, so
    :mod:`.dbapi` leaves a SQLite connection made here unwrapped."""

    @functools.wraps(original)
    def connect(self: Any, *cargs: Any, **cparams: Any) -> Any:
        ident = _get_ident()
        outer_connecting.add(ident)
        try:
            return original(self, *cargs, **cparams)
        finally:
            outer_connecting.discard(ident)

    return connect


def _wrap_tx_end(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Dialect.do_commit`` / ``do_rollback``: transaction-scoped locks end here."""

    def tx_end(self: Any, dbapi_connection: Any) -> Any:
        result = original(self, dbapi_connection)
        dblocks.tx_end(getattr(dbapi_connection, "dbapi_connection", dbapi_connection))
        return result

    tx_end.__wrapped__ = original  # type: ignore[attr-defined]
    return tx_end


_BACKEND_QUERIES = {
    "psycopg": ("postgresql", "SELECT pg_backend_pid()"),
    "psycopg2": ("postgresql", "SELECT pg_backend_pid()"),
    "pg8000": ("postgresql", "SELECT pg_backend_pid()"),
    "pymysql": ("mysql", "SELECT CONNECTION_ID()"),
    "MySQLdb": ("mysql", "SELECT CONNECTION_ID()"),
    "mariadb": ("mysql", "SELECT CONNECTION_ID()"),
}


def _on_connect(dbapi_connection: Any, record: Any) -> None:
    """Pool ``connect`` (a new DB-API connection): announce its server connection id once,
    so the hub can map ``pg_blocking_pids`` / ``IS_USED_LOCK`` answers to this worker
    (unless :mod:`.dbapi` already did, from the connection itself)."""
    reporter = locking._current
    if reporter is None or dblocks.known(dbapi_connection):
        return
    driver = type(dbapi_connection).__module__.split(".", 1)[0]
    known = _BACKEND_QUERIES.get(driver)
    if known is None:
        return
    dialect, query = known
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(query)
            row = cursor.fetchone()
        finally:
            cursor.close()
        # The lookup may have opened a transaction; end it (the connection is brand new).
        dbapi_connection.rollback()
    # The lookup is ours, not the user's: a failure only costs the worker mapping.
    except Exception as exc:  # noqa: BLE001
        reporter.emit(
            ev.Notice(ts=now(), source="sqlalchemy", msg=f"backend id lookup: {repr_of(exc)}")
        )
        return
    dblocks.announce(dbapi_connection, dialect, dbapi_url(dialect, dbapi_connection), int(row[0]))


# ---------------------------------------------------------------- patching


def _patch_sqlalchemy(module: ModuleType) -> None:
    from sqlalchemy import event
    from sqlalchemy.engine.default import DefaultDialect
    from sqlalchemy.pool import Pool
    from sqlalchemy.sql.schema import MetaData

    if getattr(DefaultDialect, "_testmon_live_patched", False):
        return
    DefaultDialect._testmon_live_patched = True  # type: ignore[attr-defined]
    DefaultDialect.do_execute = _wrap_execute(DefaultDialect.do_execute)  # type: ignore[method-assign]
    DefaultDialect.do_execute_no_params = _wrap_execute_no_params(  # type: ignore[method-assign]
        DefaultDialect.do_execute_no_params
    )
    DefaultDialect.do_executemany = _wrap_execute(DefaultDialect.do_executemany, many=True)  # type: ignore[method-assign]
    DefaultDialect.initialize = _wrap_dialect_initialize(DefaultDialect.initialize)  # type: ignore[method-assign]
    DefaultDialect.connect = _wrap_connect(DefaultDialect.connect)  # type: ignore[method-assign]
    DefaultDialect.do_commit = _wrap_tx_end(DefaultDialect.do_commit)  # type: ignore[method-assign]
    DefaultDialect.do_rollback = _wrap_tx_end(DefaultDialect.do_rollback)  # type: ignore[method-assign]
    # Pool events, unlike Engine events, do not slow down statement execution.
    event.listen(Pool, "connect", _on_connect)
    MetaData.create_all = _migration_wrapper(MetaData.create_all, "create_all")  # type: ignore[method-assign]
    MetaData.drop_all = _migration_wrapper(MetaData.drop_all, "drop_all")  # type: ignore[method-assign]


def _bind_url(bind: Any) -> str:
    engine = getattr(bind, "engine", bind)
    try:
        return display_url(engine.url.render_as_string(hide_password=True))
    except AttributeError:
        return ""


def _migration_wrapper(original: Callable[..., Any], op: str) -> Callable[..., Any]:
    """``MetaData.create_all`` / ``drop_all``: any signature (SQLAlchemy 1.4 takes ``bind``
    as an optional keyword and falls back to bound metadata), identity kept for
    introspection (name, module, docstring, ``inspect.signature`` through ``__wrapped__``)."""

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        reporter = locking._current
        if reporter is None:
            return original(self, *args, **kwargs)
        bind = kwargs.get("bind", args[0] if args else None)
        if bind is None:
            bind = getattr(self, "bind", None)  # bound metadata (SQLAlchemy < 2)
        span = MigrationSpan(reporter, "sqlalchemy", op, _bind_url(bind))
        span.begin()
        try:
            return original(self, *args, **kwargs)
        except BaseException as exc:
            span.error = ev.clip(exc_text(exc), 2000)
            raise
        finally:
            span.end()

    return wrapper


# ------------------------------------------------------------------ alembic
#
# Alembic builds its command line from the functions of ``alembic.command`` (their
# ``__module__``, ``__name__`` and ``__code__``): those stay untouched. The probe hooks one level
# down, where every upgrade, downgrade and stamp runs, whoever calls it (the command line,
# ``command.upgrade``, an ``env.py`` of any shape): ``MigrationContext.run_migrations``. It
# learns the revisions from alembic itself - the heads alembic read before the run (handed
# to its ``HeadMaintainer``) and the heads after it - and never opens a connection of its own.
# The begin event goes out once alembic has read the heads (stamped with the start time), so
# it carries the revision the database was at.

_ALEMBIC_OPS = {"upgrade": "upgrade", "downgrade": "downgrade", "do_stamp": "stamp"}
"""Name of the work function ``alembic.command`` passes to the context -> the operation."""

_alembic_runs: dict[int, tuple[MigrationSpan, Any]] = {}
"""id(MigrationContext) -> its run in progress and the HeadMaintainer (the heads it moves)."""


def _patch_alembic(module: ModuleType) -> None:
    context = getattr(module, "MigrationContext", None)
    maintainer = getattr(module, "HeadMaintainer", None)
    if context is None or getattr(context, "_testmon_live_patched", False):
        return
    context._testmon_live_patched = True
    context.run_migrations = _wrap_run_migrations(context.run_migrations)
    if maintainer is not None:
        maintainer.__init__ = _wrap_head_maintainer(maintainer.__init__)
        if hasattr(maintainer, "update_to_step"):
            maintainer.update_to_step = _wrap_update_to_step(maintainer.update_to_step)


def _wrap_head_maintainer(original: Callable[..., Any]) -> Callable[..., Any]:
    """``HeadMaintainer(context, heads)``: alembic's own reading of the current revision."""

    @functools.wraps(original)
    def __init__(self: Any, context: Any, *args: Any, **kwargs: Any) -> None:
        original(self, context, *args, **kwargs)
        run = _alembic_runs.get(id(context))
        if run is not None and not run[0].begun:
            span = run[0]
            _alembic_runs[id(context)] = (span, self)
            span.from_rev = _revisions(getattr(self, "heads", ()))
            span.begin()
            self._testmon_live_step = REAL.perf_counter()

    return __init__


def _wrap_update_to_step(original: Callable[..., Any]) -> Callable[..., Any]:
    """``HeadMaintainer.update_to_step(step)``: alembic moves the version table after each
    revision's ``upgrade()`` / ``downgrade()`` ran; the time since the previous one (or the
    start) is that revision's step. Stamps run no code and are no step."""

    @functools.wraps(original)
    def update_to_step(self: Any, step: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, step, *args, **kwargs)
        started = getattr(self, "_testmon_live_step", None)
        if started is not None:
            ended = REAL.perf_counter()
            self._testmon_live_step = ended
            run = _alembic_runs.get(id(getattr(self, "context", None)))
            revision = getattr(step, "revision", None)
            if run is not None and revision is not None:
                doc = text_of(getattr(step, "doc", None) or "", 150).split("\n", 1)[0]
                name = text_of(getattr(revision, "revision", "?"), 40)
                if run[0].steps is None:
                    run[0].steps = []
                run[0].steps.append(
                    ev.MigrationStep(
                        name=f"{name} {doc}".strip(),
                        duration=ended - started,
                        backwards=not getattr(step, "is_upgrade", True),
                    )
                )
        return result

    return update_to_step


def _revisions(heads: Any) -> str | None:
    try:
        return ",".join(sorted(str(h) for h in heads)) or None
    except TypeError:
        return None


def _wrap_run_migrations(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def run_migrations(self: Any, **kw: Any) -> Any:
        reporter = locking._current
        work = getattr(self, "_migrations_fn", None)
        op = _ALEMBIC_OPS.get(getattr(work, "__name__", ""))
        # Offline (--sql) mode writes SQL and touches no database: it is no migration.
        offline = bool(getattr(self, "as_sql", False))
        if reporter is None or op is None or offline or id(self) in _alembic_runs:
            return original(self, **kw)
        url = _bind_url(getattr(self, "connection", None))
        span = MigrationSpan(reporter, "alembic", op, url, None, _alembic_target(self))
        _alembic_runs[id(self)] = (span, None)
        try:
            return original(self, **kw)
        except BaseException as exc:
            span.error = ev.clip(exc_text(exc), 2000)
            raise
        finally:
            _span, maintainer = _alembic_runs.pop(id(self), (span, None))
            if maintainer is not None and span.error is None:
                span.to_rev = _revisions(getattr(maintainer, "heads", ())) or span.to_rev
            span.end()

    return run_migrations


def _alembic_target(context: Any) -> str | None:
    """The destination as asked (``head`` resolved from the scripts, for display)."""
    destination = getattr(context, "opts", {}).get("destination_rev")
    if destination is None:
        return None
    target = text_of(destination)
    if target in ("head", "heads"):
        script = getattr(context, "script", None)
        try:
            return _revisions(script.get_heads()) or target  # type: ignore[union-attr]
        # Resolving "head" is for display only; the migration itself says what is wrong.
        except Exception:  # noqa: BLE001
            return target
    return target
