"""DB-API drivers used directly: psycopg 3, psycopg2, PyMySQL, mysqlclient and sqlite3.

Each driver is patched right after its first import (:func:`install_driver`, through the
post-import hook of :mod:`.imports`), so a driver the suite never imports costs nothing.
Statements go through :mod:`.dblocks`, the mechanism the SQLAlchemy layer shares: the same
lock events, held locks, waits and server lookups, whichever way a statement arrives.

- **psycopg 3** and **PyMySQL** are Python classes: ``Cursor.execute`` / ``executemany``,
  the connection's ``commit`` / ``rollback`` / ``close`` (and psycopg's outermost
  ``transaction()`` block) are wrapped on the class, so every cursor class built on them
  (client-side, dict, buffered...) is seen. A new connection announces its server
  connection id, read from the connection itself (no query): psycopg's ``backend_pid``,
  PyMySQL's ``thread_id()``.
- **mysqlclient** (``MySQLdb``, Django's MySQL driver): its cursors are Python classes, its
  ``Connection`` a Python subclass of the C ``_mysql.connection``. ``BaseCursor.execute`` /
  ``executemany`` / ``callproc`` are wrapped, and on the Python ``Connection`` the C type's
  ``commit`` / ``rollback`` / ``close`` and its own ``__init__``, which announces
  ``thread_id()`` and keeps where the connection goes, for the URL and the blocker lookup
  (older releases keep no host or database on the connection, none keeps the password).
  ``Connection.query``, which ``execute`` calls, is not wrapped: a statement is seen once,
  at the cursor (one the suite sends through ``Connection.query`` itself is not seen). A
  connection ``ping(True)`` reconnects keeps the server id it had.
- Drivers the probes do not wrap (:data:`.drivers.UNRECORDED`: pg8000, asyncpg, aiomysql,
  MariaDB's and MySQL's connectors) are named in one notice when imported
  (:func:`not_wrapped`): their lock waits are not recorded, unless SQLAlchemy runs them.
- **sqlite3** and **psycopg2** are C types that cannot be patched: their ``connect`` is
  wrapped to hand the driver a subclass of the connection class asked for (the default or
  the caller's ``factory`` / ``connection_factory``), whose ``cursor()`` returns a subclass
  of the cursor class asked for. ``isinstance`` checks hold; the subclasses carry the names
  of their bases. Connections made while nothing is recorded are the driver's own.

Wrappers keep the identity of what they wrap (``functools.wraps``: name, docstring,
``__wrapped__`` for ``inspect.signature``). A driver whose version the probe does not know,
or that lacks what it patches, is left alone with a notice.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .. import events as ev
from ..clock import now
from ..guard import REAL, repr_of, text_of
from . import dblocks, locking
from .drivers import RECORDED, UNRECORDED

__tracebackhide__ = True
"""pytest leaves this module's frames out of the traceback of a failure: its wrappers sit
between the user's code and the library it called, and a failure reads as without the
monitor."""

DRIVERS = RECORDED
"""Import names of the drivers this module patches (:data:`.drivers.RECORDED`)."""

KNOWN: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "psycopg": ((3, 1), (4, 0)),
    "psycopg2": ((2, 8), (3, 0)),
    "pymysql": ((1, 0), (2, 0)),
    "MySQLdb": ((2, 2), (3, 0)),
    "sqlite3": ((3, 10), (3, 14)),
    "django": ((4, 2), (6, 1)),
}
"""Versions whose internals the probes know, from the first (included) to the last
(excluded), as (major, minor): what they patch was read and tested on these. sqlite3 is the
standard library's: its C types change with Python, so its version is Python's. A version
outside its range is left alone (:func:`left_alone`)."""


def install_driver(name: str, module: ModuleType) -> None:
    """Patch the driver ``name`` (just imported as ``module``); a failure is one notice."""
    patch = _PATCHES.get(name)
    if patch is None or getattr(module, "_testmon_live_patched", False):
        return
    problem = version_problem(name, driver_version(name, module))
    if problem is None:
        try:
            patch(module)
            module._testmon_live_patched = True  # type: ignore[attr-defined]
            return
        # A probe that fails to install must not fail the suite: said once, driver untouched.
        except Exception as exc:  # noqa: BLE001
            problem = f"could not be patched ({repr_of(exc)})"
    left_alone(name, problem)


def left_alone(name: str, problem: str, lost: str = "its lock waits are not recorded") -> None:
    """The one notice for a library the probe does not patch: which, why, what is lost."""
    reporter = locking._current
    if reporter is not None:
        reporter.emit(
            ev.Notice(
                ts=now(),
                level="warning",
                source="db",
                msg=f"{name} {problem}: left unmonitored, {lost}",
            )
        )


def not_wrapped(module: ModuleType) -> None:
    """A driver the probes do not wrap was imported: said once in this worker (a module of
    the suite's own that only shares the name, with no ``connect``, is no driver)."""
    if not hasattr(module, "connect"):
        return
    name = UNRECORDED.get(module.__name__, module.__name__)
    left_alone(
        name,
        "is a driver the DB probes do not wrap",
        "lock waits through it are not recorded (unless SQLAlchemy runs its statements)",
    )


def driver_version(name: str, module: ModuleType) -> str:
    """The version of a driver as its module says it (PyMySQL's ``__version__`` is the
    mysqlclient version it poses as for Django: its own is ``VERSION_STRING``; mysqlclient
    says its own in ``version_info`` only; sqlite3's is Python's)."""
    if name == "sqlite3":
        return "{}.{}.{}".format(*sys.version_info[:3])
    if name == "MySQLdb":
        info = getattr(module, "version_info", ())
        return ".".join(str(part) for part in info[:3]) if isinstance(info, tuple) else ""
    attribute = "VERSION_STRING" if name == "pymysql" else "__version__"
    return text_of(getattr(module, attribute, ""), 40)


def version_problem(name: str, text: str) -> str | None:
    """Why version ``text`` of ``name`` is outside what the probe knows, or ``None``."""
    known = KNOWN.get(name)
    if known is None:
        return None
    low, high = known
    last = f"{high[0] - 1}.x" if high[1] == 0 else f"{high[0]}.{high[1] - 1}"
    span = f"{'Python ' if name == 'sqlite3' else ''}{low[0]}.{low[1]} to {last}"
    try:
        version = tuple(int(part) for part in text.split(" ")[0].split(".")[:2])
    except ValueError:
        version = ()
    if len(version) < 2:
        return f"version {text!r} is unknown to the probe (it knows {span})"
    if version < low:
        return f"{text} is older than the probe knows ({span})"
    if version >= high:
        return f"{text} is newer than the probe knows ({span})"
    return None


def _wrap_execute(original: Callable[..., Any], describe: dblocks.Describe, many: bool) -> Any:
    """A cursor's ``execute`` (or ``executemany``: ``many``) through :mod:`.dblocks`."""
    begin, done, failed = dblocks.begin, dblocks.done_fast, dblocks.failed

    @functools.wraps(original)
    def execute(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        entry = begin(
            query if type(query) is str else _text(query), params, None, self, describe, many
        )
        if entry is None:
            if args or kwargs:
                return _call(original, self, query, params, args, kwargs)
            return original(self, query) if params is None else original(self, query, params)
        try:
            if args or kwargs:
                result = _call(original, self, query, params, args, kwargs)
            else:
                result = original(self, query) if params is None else original(self, query, params)
        except BaseException as exc:
            failed(entry, exc)
            raise
        done(entry)
        return result

    return execute


def _call(
    original: Callable[..., Any],
    cursor: Any,
    query: Any,
    params: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """The driver's method with what else it was given (psycopg's ``prepare=``...)."""
    if params is None:
        return original(cursor, query, *args, **kwargs)
    return original(cursor, query, params, *args, **kwargs)


def _text(query: Any) -> str:
    """The statement as text: psycopg takes bytes and ``sql.Composed`` too."""
    if type(query) is str:
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    return text_of(query, 2000)


def _wrap_tx_end(original: Callable[..., Any]) -> Any:
    @functools.wraps(original)
    def tx_end(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        dblocks.tx_end(self)
        return result

    return tx_end


def _wrap_close(original: Callable[..., Any]) -> Any:
    @functools.wraps(original)
    def close(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        finally:
            dblocks.closed(self)

    return close


# ------------------------------------------------------------------- psycopg 3


def _pg_url(info: Any) -> str:
    return f"postgresql://{info.host}:{info.port}/{info.dbname}"


_psycopg_urls: dict[tuple[bytes, bytes, bytes], str] = {}
"""A psycopg 3 connection's (host, port, database) as libpq gives them -> its URL: read
through ``ConnectionInfo`` (which decodes each), the URL cost half of what the probe adds to
a connection, and a suite connects to the same few databases again and again."""


def _psycopg_url(raw: Any) -> str:
    pgconn = raw.pgconn
    key = (pgconn.host, pgconn.port, pgconn.db)
    url = _psycopg_urls.get(key)
    if url is None:
        if len(_psycopg_urls) >= 256:
            _psycopg_urls.clear()
        url = _psycopg_urls[key] = _pg_url(raw.info)
    return url


def _describe_psycopg(_source: Any, cursor: Any) -> dblocks.Target:
    raw = cursor.connection
    return dblocks.Target("postgresql", _pg_url(raw.info), raw, "", monitor_for(raw))


def _patch_psycopg(module: ModuleType) -> None:
    cursor, connection = module.Cursor, module.Connection
    transaction = getattr(module, "Transaction", None)
    cursor.execute = _wrap_execute(cursor.execute, _describe_psycopg, False)
    cursor.executemany = _wrap_execute(cursor.executemany, _describe_psycopg, True)
    connection.commit = _wrap_tx_end(connection.commit)
    connection.rollback = _wrap_tx_end(connection.rollback)
    connection.close = _wrap_close(connection.close)
    connection.__init__ = _wrap_psycopg_init(connection.__init__)
    if transaction is not None and hasattr(transaction, "__exit__"):
        transaction.__exit__ = _wrap_transaction_exit(transaction.__exit__)


def _wrap_psycopg_init(original: Callable[..., Any]) -> Any:
    """``Connection.__init__`` (every way of connecting ends here): announce the backend."""

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if locking._current is not None:
            try:
                backend = int(self.pgconn.backend_pid)
                url = _psycopg_url(self)
            except Exception:  # noqa: BLE001  (an odd connection: not mapped, still usable)
                return
            dblocks.announce(self, "postgresql", url, backend)

    return __init__


def _wrap_transaction_exit(original: Callable[..., Any]) -> Any:
    """``with conn.transaction():`` commits or rolls back without ``Connection.commit``:
    the outermost block's end ends the transaction's locks."""

    @functools.wraps(original)
    def __exit__(self: Any, *args: Any) -> Any:
        result = original(self, *args)
        if getattr(self, "_outer_transaction", False):
            dblocks.tx_end(self._conn)
        return result

    return __exit__


def _psycopg_monitor(params: dict[str, Any]) -> Any:
    import psycopg

    return psycopg.Connection.connect(**_pg_params(params), autocommit=True)


def _pg_params(params: dict[str, Any]) -> dict[str, Any]:
    """A lookup's connection parameters: the user's, with our timeouts."""
    return {
        **params,
        "connect_timeout": dblocks.LOOKUP_TIMEOUT,
        "options": f"-c statement_timeout={dblocks.LOOKUP_TIMEOUT * 1000}",
    }


# ------------------------------------------------------------------- psycopg2

_psycopg2_connect: list[Callable[..., Any]] = []
_psycopg2_classes: dict[type, type] = {}
_psycopg2_cursors: dict[type, type] = {}


def _describe_psycopg2(_source: Any, cursor: Any) -> dblocks.Target:
    raw = cursor.connection
    return dblocks.Target("postgresql", _pg_url(raw.info), raw, "", monitor_for(raw))


def _patch_psycopg2(module: ModuleType) -> None:
    extensions: Any = importlib.import_module("psycopg2.extensions")  # no stubs installed
    base_connection, base_cursor = extensions.connection, extensions.cursor
    original = module.connect
    _psycopg2_connect.append(original)

    @functools.wraps(original)
    def connect(*args: Any, **kwargs: Any) -> Any:
        if locking._current is None:
            return original(*args, **kwargs)
        if len(args) > 1:  # connect(dsn, connection_factory, ...)
            args = (args[0], _psycopg2_factory(args[1], base_connection, base_cursor), *args[2:])
        else:
            factory = kwargs.get("connection_factory") or base_connection
            kwargs["connection_factory"] = _psycopg2_factory(factory, base_connection, base_cursor)
        conn = original(*args, **kwargs)
        if locking._current is not None:
            try:
                backend = int(conn.get_backend_pid())
                url = _pg_url(conn.info)
            except Exception:  # noqa: BLE001  (an odd connection: not mapped, still usable)
                return conn
            dblocks.announce(conn, "postgresql", url, backend)
        return conn

    module.connect = connect  # type: ignore[attr-defined]


def _psycopg2_factory(factory: Any, base_connection: Any, base_cursor: Any) -> Any:
    if isinstance(factory, type) and issubclass(factory, base_connection):
        return _psycopg2_class(factory, base_cursor)
    return factory


def _psycopg2_class(base: Any, base_cursor: Any) -> type:
    cls = _psycopg2_classes.get(base)
    if cls is not None:
        return cls

    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        wanted = kwargs.get("cursor_factory") or self.cursor_factory or base_cursor
        if isinstance(wanted, type) and issubclass(wanted, base_cursor):
            kwargs["cursor_factory"] = _psycopg2_cursor(wanted)
        return base.cursor(self, *args, **kwargs)

    namespace = {
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "cursor": functools.wraps(base.cursor)(cursor),
        "commit": _wrap_tx_end(base.commit),
        "rollback": _wrap_tx_end(base.rollback),
        "close": _wrap_close(base.close),
    }
    cls = _psycopg2_classes[base] = type(base.__name__, (base,), namespace)
    return cls


def _psycopg2_cursor(base: Any) -> type:
    cls = _psycopg2_cursors.get(base)
    if cls is None:
        namespace = {
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
            "__doc__": base.__doc__,
            "execute": _wrap_execute(base.execute, _describe_psycopg2, False),
            "executemany": _wrap_execute(base.executemany, _describe_psycopg2, True),
        }
        cls = _psycopg2_cursors[base] = type(base.__name__, (base,), namespace)
    return cls


def _psycopg2_monitor(params: dict[str, Any]) -> Any:
    conn = _psycopg2_connect[0](**_pg_params(params))
    conn.autocommit = True
    return conn


# ------------------------------------------------------------------- PyMySQL


def _mysql_url(raw: Any) -> str:
    kept = getattr(raw, "_testmon_live_mysqldb", None)
    if kept is not None:  # mysqlclient: what its connection was made with
        return kept[0]  # type: ignore[no-any-return]
    database = getattr(raw, "db", b"") or b""
    if isinstance(database, bytes):
        database = database.decode(errors="replace")
    return f"mysql://{raw.host}:{raw.port}/{database}"


def _describe_mysql(_source: Any, cursor: Any) -> dblocks.Target:
    """PyMySQL's and mysqlclient's: a cursor's connection, as the connection says it."""
    raw = cursor.connection
    return dblocks.Target("mysql", _mysql_url(raw), raw, "", monitor_for(raw))


def _patch_pymysql(module: ModuleType) -> None:
    from pymysql import connections, cursors

    cursor, connection = cursors.Cursor, connections.Connection
    cursor.execute = _wrap_execute(cursor.execute, _describe_mysql, False)
    cursor.executemany = _wrap_execute(cursor.executemany, _describe_mysql, True)
    connection.commit = _wrap_tx_end(connection.commit)
    connection.rollback = _wrap_tx_end(connection.rollback)
    connection.close = _wrap_close(connection.close)
    connection.connect = _wrap_pymysql_connect(connection.connect)


def _wrap_pymysql_connect(original: Callable[..., Any]) -> Any:
    """``Connection.connect`` (at creation and on reconnect): announce the server's id."""

    @functools.wraps(original)
    def connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if locking._current is not None:
            try:
                backend = int(self.thread_id())
                url = _mysql_url(self)
            except Exception:  # noqa: BLE001  (an odd connection: not mapped, still usable)
                return result
            dblocks.announce(self, "mysql", url, backend)
        return result

    return connect


def _pymysql_monitor(params: dict[str, Any]) -> Any:
    from pymysql import connections

    return connections.Connection(
        **params,
        autocommit=True,
        connect_timeout=dblocks.LOOKUP_TIMEOUT,
        read_timeout=dblocks.LOOKUP_TIMEOUT,
        write_timeout=dblocks.LOOKUP_TIMEOUT,
    )


# ------------------------------------------------------------------- mysqlclient

_MYSQLDB_POSITIONAL = ("host", "user", "password", "database", "port", "unix_socket")
"""``MySQLdb.connect``'s arguments by position (its C type's order)."""
_MYSQLDB_LOOKUP = frozenset(
    (
        "host", "user", "password", "port", "unix_socket", "read_default_file",
        "read_default_group", "ssl", "ssl_mode", "auth_plugin", "server_public_key_path",
        "named_pipe", "compress",
    )
)  # fmt: skip
"""What of a connection's arguments the blocker lookup connects with: where to and as
whom, no session settings (``init_command``, ``sql_mode``, ``conv``...)."""


def _patch_mysqldb(module: ModuleType) -> None:
    connections: Any = importlib.import_module("MySQLdb.connections")  # no stubs installed
    cursors: Any = importlib.import_module("MySQLdb.cursors")
    # BaseCursor: every cursor class (buffered, dict, server-side SSCursor) is built on it;
    # its executemany runs through execute, seen once (the outermost wins).
    cursor, connection = cursors.BaseCursor, connections.Connection
    cursor.execute = _wrap_execute(cursor.execute, _describe_mysql, False)
    cursor.executemany = _wrap_execute(cursor.executemany, _describe_mysql, True)
    cursor.callproc = _wrap_callproc(cursor.callproc)
    # The C type's methods, set on the Python subclass every connection is made of.
    connection.commit = _wrap_tx_end(connection.commit)
    connection.rollback = _wrap_tx_end(connection.rollback)
    connection.close = _wrap_close(connection.close)
    connection.__init__ = _wrap_mysqldb_init(connection.__init__)


def _wrap_callproc(original: Callable[..., Any]) -> Any:
    """``callproc`` runs ``CALL`` without ``execute``: in flight (a procedure may wait on a
    lock), not classified (what it locks is inside the procedure)."""

    @functools.wraps(original)
    def callproc(self: Any, procname: Any, *args: Any, **kwargs: Any) -> Any:
        entry = dblocks.begin(f"CALL {_text(procname)}", None, None, self, _describe_mysql, True)
        if entry is None:
            return original(self, procname, *args, **kwargs)
        try:
            result = original(self, procname, *args, **kwargs)
        except BaseException as exc:
            dblocks.failed(entry, exc)
            raise
        dblocks.done_fast(entry)
        return result

    return callproc


def _wrap_mysqldb_init(original: Callable[..., Any]) -> Any:
    """``Connection.__init__`` (every connection, ``connect`` or a subclass): keep its URL
    and the lookup's arguments, announce the server's id."""

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if locking._current is not None:
            try:
                given = dict(zip(_MYSQLDB_POSITIONAL, args, strict=False))
                given.update(kwargs)
                for alias, name in (("passwd", "password"), ("db", "database")):
                    if alias in given:
                        given.setdefault(name, given.pop(alias))
                lookup = {k: v for k, v in given.items() if k in _MYSQLDB_LOOKUP}
                port = int(self.port)
                lookup["port"] = port
                database = given.get("database") or ""
                if isinstance(database, bytes):
                    database = database.decode(errors="replace")
                host = given.get("host") or "localhost"
                url = f"mysql://{host}:{port}/{database}"
                self._testmon_live_mysqldb = (url, lookup)
                backend = int(self.thread_id())
            except Exception:  # noqa: BLE001  (an odd connection: not mapped, still usable)
                return
            dblocks.announce(self, "mysql", url, backend)

    return __init__


def _mysqldb_monitor(params: dict[str, Any]) -> Any:
    connections: Any = importlib.import_module("MySQLdb.connections")
    return connections.Connection(
        **params,
        autocommit=True,
        connect_timeout=dblocks.LOOKUP_TIMEOUT,
        read_timeout=dblocks.LOOKUP_TIMEOUT,
        write_timeout=dblocks.LOOKUP_TIMEOUT,
    )


# ------------------------------------------------------------------- sqlite3

_sqlite_classes: dict[type, type] = {}
outer_connecting: set[int] = set()
"""Threads in which an outer layer (SQLAlchemy's dialect) is connecting: it sees every
statement of the connection itself, so sqlite3's is left unwrapped (no second layer to pay
per statement, as SQLite's statements are cheap)."""
_get_ident = REAL.get_ident
_sqlite_cursors: dict[type, type] = {}


def _describe_sqlite(_source: Any, cursor: Any) -> dblocks.Target:
    raw = cursor.connection
    database = getattr(raw, "_testmon_live_db", None) or ":memory:"
    return dblocks.Target("sqlite", f"sqlite:///{database}", raw, database)


def _patch_sqlite3(module: ModuleType) -> None:
    import sqlite3
    from sqlite3 import dbapi2

    original = sqlite3.connect
    base_connection, base_cursor = sqlite3.Connection, sqlite3.Cursor

    def factory_for(asked: Any) -> Any:
        if isinstance(asked, type) and issubclass(asked, base_connection):
            return _sqlite_class(asked, base_cursor)
        return asked

    @functools.wraps(original)
    def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
        if locking._current is None or _get_ident() in outer_connecting:
            return original(database, *args, **kwargs)
        if len(args) >= 5:  # factory given by position (after timeout, detect_types, ...)
            args = (*args[:4], factory_for(args[4]), *args[5:])
        else:
            kwargs["factory"] = factory_for(kwargs.get("factory", base_connection))
        conn = original(database, *args, **kwargs)
        if type(conn) in _sqlite_classes.values():
            try:
                conn._testmon_live_db = os.fsdecode(database)
            except TypeError:
                conn._testmon_live_db = text_of(database, 500)
        return conn

    sqlite3.connect = connect
    if dbapi2.connect is original:
        dbapi2.connect = connect


def _sqlite_class(base: Any, base_cursor: Any) -> type:
    cls = _sqlite_classes.get(base)
    if cls is not None:
        return cls

    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        wanted = args[0] if args else kwargs.get("factory", base_cursor)
        if isinstance(wanted, type) and issubclass(wanted, base_cursor):
            return base.cursor(self, _sqlite_cursor(wanted))
        return base.cursor(self, *args, **kwargs)

    # Connection.execute* of the C type make their cursor without calling cursor(): these
    # do what they do (a new cursor of the default class, its method) with our cursor class.
    default_cursor = _sqlite_cursor(base_cursor)
    make = base.cursor
    execute = dblocks.positional_wrapper(
        base_cursor.execute, _describe_sqlite, False, make, default_cursor
    )

    def executemany(self: Any, sql: Any, params: Any, /) -> Any:
        return make(self, default_cursor).executemany(sql, params)

    def executescript(self: Any, script: Any, /) -> Any:
        return make(self, default_cursor).executescript(script)

    def commit(self: Any) -> None:
        started = REAL.perf_counter()
        try:
            base.commit(self)
        except BaseException as exc:
            dblocks.busy_commit(self, getattr(self, "_testmon_live_db", ":memory:"), started, exc)
            raise
        dblocks.tx_end(self)

    def rollback(self: Any) -> None:
        base.rollback(self)
        dblocks.tx_end(self)

    def close(self: Any) -> None:
        try:
            base.close(self)
        finally:
            dblocks.closed(self)

    namespace = {
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        # The database file, in a slot: like sqlite3's own, no per-instance dict.
        "__slots__": ("_testmon_live_db",),
        "cursor": functools.wraps(base.cursor)(cursor),
        "execute": functools.wraps(base.execute)(execute),  # the connection's, not the cursor's
        "executemany": functools.wraps(base.executemany)(executemany),
        "executescript": functools.wraps(base.executescript)(executescript),
        "commit": functools.wraps(base.commit)(commit),
        "rollback": functools.wraps(base.rollback)(rollback),
        "close": functools.wraps(base.close)(close),
    }
    cls = _sqlite_classes[base] = type(base.__name__, (base,), namespace)
    return cls


def _sqlite_cursor(base: Any) -> type:
    cls = _sqlite_cursors.get(base)
    if cls is None:
        namespace = {
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
            "__doc__": base.__doc__,
            "__slots__": (),  # like sqlite3's own cursor: no per-instance dict to allocate
            # sqlite3's methods take their arguments by position only: a wrapper of that
            # shape calls them without packing, the cheapest of all, run per statement.
            "execute": dblocks.positional_wrapper(base.execute, _describe_sqlite, False),
            "executemany": dblocks.positional_wrapper(base.executemany, _describe_sqlite, True),
            # A script is in flight (waits, "database is locked") and read for its schema
            # changes only: the transactions it opens and ends are its own.
            "executescript": dblocks.positional_wrapper(
                base.executescript, _describe_sqlite, True, script=True
            ),
        }
        cls = _sqlite_cursors[base] = type(base.__name__, (base,), namespace)
    return cls


# ------------------------------------------------------------------- shared


_PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "sqlite3": _patch_sqlite3,
    "psycopg": _patch_psycopg,
    "psycopg2": _patch_psycopg2,
    "pymysql": _patch_pymysql,
    "MySQLdb": _patch_mysqldb,
}


def monitor_for(raw: Any) -> Callable[[], Any] | None:
    """How to open a short-lived autocommit connection to the server of the DB-API
    connection ``raw`` (with connect and statement timeouts), for a driver this module
    knows; ``None`` otherwise. Its parameters are read now, its connection made later."""
    driver = type(raw).__module__.split(".", 1)[0]
    try:
        if driver == "psycopg":
            params = dict(raw.info.get_parameters())
            if raw.info.password:
                params["password"] = raw.info.password
            return functools.partial(_psycopg_monitor, params)
        if driver == "psycopg2" and _psycopg2_connect:
            params = dict(raw.info.dsn_parameters)
            if raw.info.password:
                params["password"] = raw.info.password
            return functools.partial(_psycopg2_monitor, params)
        if driver == "pymysql":
            params = {"host": raw.host, "port": raw.port, "user": raw.user}
            params["password"] = raw.password
            if raw.unix_socket:
                params["unix_socket"] = raw.unix_socket
            return functools.partial(_pymysql_monitor, params)
        kept = getattr(raw, "_testmon_live_mysqldb", None)  # mysqlclient, even subclassed
        if kept is not None:
            return functools.partial(_mysqldb_monitor, kept[1])
    except AttributeError:
        return None
    return None


def dbapi_url(dialect: str, raw: Any) -> str:
    """host:port/database of a DB-API connection (no credentials), for display."""
    info = getattr(raw, "info", None)
    if info is not None and hasattr(info, "dbname"):  # psycopg 3, psycopg2
        return _pg_url(info)
    with contextlib.suppress(AttributeError):
        return f"{dialect}://{_mysql_url(raw).split('://', 1)[1]}"
    return f"{dialect}://?"
