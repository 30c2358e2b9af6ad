"""SQLAlchemy and Alembic: lock statements, statements that waited, migrations.

``DefaultDialect.do_execute`` (and ``do_execute_no_params``, ``do_commit``,
``do_rollback``) are wrapped on the class, so every engine of the worker is seen, including
ones created before the probe was installed. No Engine event listener is registered: any
one of them switches every statement onto SQLAlchemy's event-dispatching path, which
alone cost more than the probe's own work. Per statement the hot path stores one tuple
(the statement in flight, for the watchdog) and runs a substring pre-check; the lock regex
only runs on statements that mention ``lock``/``for``/``begin``/``commit``.

Recognised lock statements: ``pg_advisory_lock`` / ``pg_advisory_xact_lock`` (and their
``_shared`` forms), ``pg_advisory_unlock[_all]``, ``LOCK TABLE``, ``SELECT ... FOR
UPDATE|SHARE``, MariaDB/MySQL ``GET_LOCK`` / ``RELEASE_LOCK`` / ``UNLOCK TABLES`` and SQLite
``BEGIN IMMEDIATE|EXCLUSIVE``, and the try-locks ``pg_try_advisory_lock`` /
``pg_try_advisory_xact_lock``. Whether ``GET_LOCK`` and a try-lock got the lock is in the
result: for those statements only, the probe reads the one-row result where the driver
keeps it buffered (PyMySQL, mysqlclient, psycopg, psycopg2) without consuming it. A
``GET_LOCK`` that returned 0 is a wait that timed out, NULL an error, a try-lock that
returned false a refused try; none of them is a holder. Where the result cannot be read,
``GET_LOCK`` counts as acquired and the try-lock is not tracked.

``executemany`` (``Dialect.do_executemany``, which PyMySQL/mysqlclient and psycopg2 override:
each dialect class is wrapped when its first engine is made) is put in flight for the
watchdog, so a bulk insert or update that waits behind another worker's table, row or
metadata lock is reported with its blocker; it is not classified (a lock function called
once per parameter set is no way to take a lock). One wrapper call per batch, not per row.

While a statement runs longer than :data:`WAIT_REPORT` the watchdog thread emits a
``wait``; past :data:`BLOCKER_LOOKUP` it asks the server who blocks it through a
connection of its own (PostgreSQL ``pg_locks`` + ``pg_blocking_pids``, MariaDB
``IS_USED_LOCK`` and the processlist state). Server connection ids of the workers'
connections are announced with :class:`~testmon_live.plugin.events.DbConnected`, so the
hub can name the blocking worker.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any, Literal

from .. import events as ev
from ..clock import now
from ..dburl import display_url
from ..guard import REAL, exc_text, repr_of, text_of
from . import locking
from .imports import when_imported

__tracebackhide__ = True
"""pytest leaves this module's frames out of the traceback of a failure: its wrappers sit
between the user's code and the library it called, and a failure reads as without the
monitor."""

WAIT_REPORT = 0.2
"""Seconds a lock statement runs before the watchdog reports it as a wait."""
BLOCKER_LOOKUP = 0.5
"""Seconds any statement runs before the watchdog asks the server what blocks it."""
WAITED_MIN = 0.05
"""A lock statement that took longer than this counts as contended even if no wait was seen."""

_LOCK_RE = re.compile(
    r"""
    (?P<adv>pg_advisory(?P<xact>_xact)?_lock(?:_shared)?)\s*\((?P<advkey>(?:%\(\w+\)s|[^)])*)\)
  | pg_try_advisory(?P<tryxact>_xact)?_lock(?:_shared)?\s*\((?P<trykey>(?:%\(\w+\)s|[^)])*)\)
  | pg_advisory_unlock(?P<all>_all)?(?:_shared)?\s*\((?P<unkey>(?:%\(\w+\)s|[^)])*)\)
  | \bget_lock\s*\(\s*(?P<glkey>(?:%\(\w+\)s|[^,)])*)
  | \brelease_lock\s*\(\s*(?P<rlkey>(?:%\(\w+\)s|[^,)])*)\)
  | \bunlock\s+tables\b(?P<unlocktables>)
  | \block\s+(?:table\s+|tables\s+)?(?:only\s+)?(?P<table>[\w."`]+)
  | \bfor\s+(?:no\s+key\s+)?(?:update|share|key\s+share)\b(?P<forupdate>)
  | ^\s*begin\s+(?P<sqlite>immediate|exclusive)\b
  | ^\s*(?P<end>commit|rollback|end)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_FROM_RE = re.compile(r"\bfrom\s+([\w.\"`]+)", re.IGNORECASE)
_PARAM_RE = re.compile(r"%\((\w+)\)s|:(\w+)|%s|\?")


class _Lock:
    """A lock statement recognised before it ran."""

    __slots__ = ("action", "check", "key", "kind", "transactional")

    def __init__(
        self, action: str, kind: str, key: str, transactional: bool, check: str = ""
    ) -> None:
        self.action = action
        """``acquire``, ``release``, ``release_all`` or ``end`` (transaction end)."""
        self.kind = kind
        self.key = key
        self.transactional = transactional
        self.check = check
        """Whether the result says if the lock was taken: ``get_lock`` (1, 0 on timeout,
        NULL on error), ``try`` (true or false), or ``""`` (taken when it returns)."""


class _InFlight:
    """A statement that needs more than the hot path: a lock statement, or one the watchdog
    saw running long (then it is shared with the watchdog thread)."""

    __slots__ = (
        "blocker", "conn", "entry", "lock", "lock_id", "looked_up", "raw", "reported",
        "statement", "t0",
    )  # fmt: skip

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.t0, self.statement, context, cursor, self.lock = entry
        self.conn: Any = getattr(context, "root_connection", None)
        """The SQLAlchemy Connection (engine, URL, dialect)."""
        self.raw: Any = getattr(cursor, "connection", None)
        """The DBAPI connection (what locks are held through)."""
        self.lock_id = ""
        self.reported = False
        self.looked_up = False
        self.blocker: ev.Holder | None = None
        """What the server said blocks it, once the watchdog asked."""


Entry = tuple[float, str, Any, Any, "_Lock | None"]
"""(perf_counter at start, statement, execution context, cursor, lock) of a statement."""

_inflight: dict[int, Entry] = {}
"""thread id -> the statement it runs now (the hot path stores a tuple, nothing more)."""
_flights: dict[int, _InFlight] = {}
"""thread id -> the watchdog's view of a long-running statement."""
_held: dict[int, list[tuple[str, str, str, bool]]] = {}
"""id(DBAPI connection) -> [(kind, key, lock_id, transactional)] held through it."""
_backends: dict[int, int] = {}
"""id(DBAPI connection) -> server connection id (PostgreSQL backend pid, MariaDB id)."""
_get_ident = REAL.get_ident


def install(watchdog_checks: list[Callable[[float], None]] | None = None) -> None:
    when_imported("sqlalchemy", _patch_sqlalchemy)
    when_imported("alembic.runtime.migration", _patch_alembic)
    if watchdog_checks is not None:
        watchdog_checks.append(_BlockerCheck().check)


# ---------------------------------------------------------------- statements


_TX_WORDS = ("BEGIN", "COMMIT", "ROLLBACK", "END")


def classify(statement: str, parameters: Any) -> _Lock | None:
    """The lock a statement takes or releases, if any."""
    match = _LOCK_RE.search(statement)
    if match is None:
        return None
    group = match.group
    if group("adv"):
        key = _resolve(group("advkey"), statement, match.start("advkey"), parameters)
        return _Lock("acquire", "pg_advisory", key, bool(group("xact")))
    if group("trykey") is not None:
        key = _resolve(group("trykey"), statement, match.start("trykey"), parameters)
        return _Lock("acquire", "pg_advisory", key, bool(group("tryxact")), "try")
    if group("unkey") is not None:
        if group("all"):
            return _Lock("release_all", "pg_advisory", "", False)
        key = _resolve(group("unkey"), statement, match.start("unkey"), parameters)
        return _Lock("release", "pg_advisory", key, False)
    if group("glkey") is not None:
        key = _resolve(group("glkey"), statement, match.start("glkey"), parameters)
        return _Lock("acquire", "mysql_get_lock", key, False, "get_lock")
    if group("rlkey") is not None:
        key = _resolve(group("rlkey"), statement, match.start("rlkey"), parameters)
        return _Lock("release", "mysql_get_lock", key, False)
    if group("unlocktables") is not None:
        return _Lock("release_all", "table", "", False)
    if group("table"):
        table = group("table").strip('"`')
        if table.lower() in ("in", "tables", "table"):
            return None
        return _Lock("acquire", "table", table, True)
    if group("forupdate") is not None:
        found = _FROM_RE.search(statement)
        table = found.group(1).strip('"`') if found else "?"
        return _Lock("acquire", "row", table, True)
    if group("sqlite"):
        return _Lock("acquire", "sqlite", "", True)
    if group("end"):
        return _Lock("end", "", "", True)
    return None


def _resolve(text: str, statement: str, pos: int, parameters: Any) -> str:
    """A lock key as written, with a bound parameter replaced by its value."""
    text = text.strip()
    found = _PARAM_RE.fullmatch(text)
    if found is None:
        return text.strip("'\"")
    name = found.group(1) or found.group(2)
    try:
        if name is not None and isinstance(parameters, dict):
            return text_of(parameters[name], 200)
        if isinstance(parameters, (list, tuple)) and parameters:
            index = len(_PARAM_RE.findall(statement[:pos]))
            value = parameters[index]
            return text_of(value[0] if isinstance(value, (list, tuple)) else value, 200)
    except (KeyError, IndexError, TypeError):
        pass
    return text


def _dialect(conn: Any) -> str:
    try:
        return str(conn.engine.dialect.name)
    except AttributeError:
        return "?"


def _url(conn: Any) -> str:
    try:
        return display_url(conn.engine.url.render_as_string(hide_password=True))
    except AttributeError:
        return "?"


def _db_key(conn: Any, lock: _Lock) -> str:
    if lock.kind == "sqlite":
        try:
            return str(conn.engine.url.database or ":memory:")
        except AttributeError:
            return "?"
    return lock.key


def _dbapi_id(conn: Any) -> int:
    """id() of the DBAPI connection behind a SQLAlchemy Connection or pool proxy."""
    for path in ("connection.dbapi_connection", "dbapi_connection"):
        target = conn
        for name in path.split("."):
            target = getattr(target, name, None)
        if target is not None:
            return id(target)
    return id(conn)


def _take(ident: int, entry: Entry) -> _InFlight:
    flight = _flights.pop(ident, None)
    if flight is not None and flight.entry is entry:
        return flight
    return _InFlight(entry)


def _wrap_execute(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Dialect.do_execute``: the statement in flight for the watchdog, lock statements
    classified, and the end (or error) of those that matter. No SQLAlchemy event is used:
    an Engine listener of any kind puts every statement on SQLAlchemy's slower dispatching
    path, which cost more than this whole probe."""

    def do_execute(
        self: Any, cursor: Any, statement: str, parameters: Any, context: Any = None
    ) -> Any:
        if locking._current is None:
            return original(self, cursor, statement, parameters, context)
        lock = (
            classify(statement, parameters)
            if (
                "ock" in statement
                or "OCK" in statement
                or "FOR " in statement
                or "for " in statement
                or statement[:9].upper().startswith(_TX_WORDS)
            )
            else None
        )
        ident = _get_ident()
        entry = _inflight[ident] = (REAL.perf_counter(), statement, context, cursor, lock)
        try:
            result = original(self, cursor, statement, parameters, context)
        except BaseException as exc:
            if _inflight.get(ident) is entry:
                del _inflight[ident]
            _failed(ident, entry, exc)
            raise
        if _inflight.get(ident) is entry:
            del _inflight[ident]
        if lock is not None or _flights:
            _finished(ident, entry)
        return result

    do_execute.__wrapped__ = original  # type: ignore[attr-defined]
    return do_execute


def _wrap_execute_no_params(original: Callable[..., Any]) -> Callable[..., Any]:
    def do_execute_no_params(self: Any, cursor: Any, statement: str, context: Any = None) -> Any:
        if locking._current is None:
            return original(self, cursor, statement, context)
        lock = classify(statement, None) if len(statement) < 200 else None
        ident = _get_ident()
        entry = _inflight[ident] = (REAL.perf_counter(), statement, context, cursor, lock)
        try:
            result = original(self, cursor, statement, context)
        except BaseException as exc:
            if _inflight.get(ident) is entry:
                del _inflight[ident]
            _failed(ident, entry, exc)
            raise
        if _inflight.get(ident) is entry:
            del _inflight[ident]
        if lock is not None or _flights:
            _finished(ident, entry)
        return result

    do_execute_no_params.__wrapped__ = original  # type: ignore[attr-defined]
    return do_execute_no_params


def _wrap_executemany(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Dialect.do_executemany``: in flight for the watchdog; never a lock statement."""

    def do_executemany(
        self: Any, cursor: Any, statement: str, parameters: Any, context: Any = None
    ) -> Any:
        if locking._current is None:
            return original(self, cursor, statement, parameters, context)
        ident = _get_ident()
        entry = _inflight[ident] = (REAL.perf_counter(), statement, context, cursor, None)
        try:
            result = original(self, cursor, statement, parameters, context)
        except BaseException as exc:
            if _inflight.get(ident) is entry:
                del _inflight[ident]
            _failed(ident, entry, exc)
            raise
        if _inflight.get(ident) is entry:
            del _inflight[ident]
        if _flights:
            _finished(ident, entry)
        return result

    do_executemany.__wrapped__ = original  # type: ignore[attr-defined]
    do_executemany._testmon_live = True  # type: ignore[attr-defined]
    return do_executemany


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
            cls.do_executemany = _wrap_executemany(method)
        original(self, connection)

    initialize.__wrapped__ = original  # type: ignore[attr-defined]
    return initialize


def _finished(ident: int, entry: Entry) -> None:
    reporter = locking._current
    if reporter is None:
        return
    flight = _take(ident, entry)
    lock = flight.lock
    waited = REAL.perf_counter() - flight.t0
    if lock is not None:
        _lock_done(reporter, flight.conn, flight, lock, waited)
    elif flight.reported:
        # A plain statement that waited on a lock the server told us about.
        _close_wait(reporter, flight.conn, flight, waited, None)


def _lock_done(
    reporter: locking.LockReporter, conn: Any, flight: _InFlight, lock: _Lock, waited: float
) -> None:
    raw_id = id(flight.raw)
    holds = _held.setdefault(raw_id, [])
    if lock.action == "end":
        _release_transactional(reporter, raw_id)
        return
    if lock.action == "release_all":
        _release(reporter, raw_id, lambda k, _key, _tx: k == lock.kind)
        return
    key = _db_key(conn, lock)
    if lock.action == "release":
        _release(reporter, raw_id, lambda k, kk, _tx: k == lock.kind and kk == key, first=True)
        return
    if lock.check and _not_taken(reporter, conn, flight, lock, key, waited):
        return
    lock_id = flight.lock_id or reporter.new_id()
    contended = flight.reported or waited >= WAITED_MIN
    reporter.acquired(
        lock.kind,
        key,
        lock_id,
        waited=waited if contended else None,
        holder=flight.blocker,
    )
    holds.append((lock.kind, key, lock_id, lock.transactional))
    if flight.reported:
        _db_wait(reporter, conn, flight, waited, None)


def _not_taken(
    reporter: locking.LockReporter,
    conn: Any,
    flight: _InFlight,
    lock: _Lock,
    key: str,
    waited: float,
) -> bool:
    """Read whether ``GET_LOCK`` or a try-lock got the lock; record it when it did not.
    True when the acquisition must not be recorded as held."""
    value = _result_value(reporter, flight.entry[3], lock.check)
    if value is _UNREAD:
        return lock.check == "try"  # a try-lock whose answer is unknown is not tracked
    if value is not None and value not in (0, False):
        return False
    lock_id = flight.lock_id or reporter.new_id()
    reason: Literal["timeout", "refused"] | None
    if lock.check == "try":
        reason, error = "refused", "pg_try_advisory_lock: not granted (held elsewhere)"
        reporter.failed(lock.kind, key, lock_id, None, error, reason)
    else:
        if value is None:
            reason, error = None, "GET_LOCK returned NULL (an error: out of memory, killed)"
        else:
            reason, error = "timeout", f"GET_LOCK timed out after {waited:.1f} s"
        reporter.failed(lock.kind, key, lock_id, waited, error, reason)
    if flight.reported:
        _db_wait(reporter, conn, flight, waited, error)
    return True


_UNREAD = object()
"""The lock function's result could not be read without disturbing the user's cursor."""
_MARKERS = {"get_lock": "get_lock", "try": "try_advisory"}


def _result_value(reporter: locking.LockReporter, cursor: Any, check: str) -> Any:
    """The lock function's value in a one-row result, read without consuming it: from the
    rows PyMySQL and mysqlclient buffer, or fetched and scrolled back on a client-side
    psycopg / psycopg2 cursor. :data:`_UNREAD` for anything else."""
    try:
        description = cursor.description
        if not description:
            return _UNREAD
        column = 0
        if len(description) > 1:
            marker = _MARKERS[check]
            hits = [i for i, d in enumerate(description) if marker in str(d[0]).lower()]
            if len(hits) != 1:
                return _UNREAD
            column = hits[0]
        rows = getattr(cursor, "_rows", None)
        if isinstance(rows, (list, tuple)):  # PyMySQL, mysqlclient (buffered cursors)
            if len(rows) != 1 or cursor.rownumber:
                return _UNREAD
            return rows[0][column]
        driver = type(cursor).__module__.split(".", 1)[0]
        if driver in ("psycopg", "psycopg2") and getattr(cursor, "name", None) is None:
            if cursor.rowcount != 1 or cursor.rownumber not in (0, None):
                return _UNREAD
            row = cursor.fetchone()
            cursor.scroll(-1)
            return row[column]
    # Reading our way must never break the user's statement; what was lost is said.
    except Exception as exc:  # noqa: BLE001
        reporter.emit(ev.Notice(ts=now(), source="sqlalchemy", msg=f"lock result: {repr_of(exc)}"))
    return _UNREAD


def _close_wait(
    reporter: locking.LockReporter, conn: Any, flight: _InFlight, waited: float, error: str | None
) -> None:
    kind, key = _synthetic_key(flight)
    if error is None:
        reporter.acquired(kind, key, flight.lock_id, waited=waited, holder=flight.blocker)
        _held.setdefault(id(flight.raw), []).append((kind, key, flight.lock_id, True))
    else:
        reporter.failed(kind, key, flight.lock_id, waited, error)
    _db_wait(reporter, conn, flight, waited, error)


def _synthetic_key(flight: _InFlight) -> tuple[str, str]:
    blocker = flight.blocker
    detail = blocker.detail if blocker is not None and blocker.detail else "row:?"
    kind, _, key = detail.partition(":")
    return kind, key


def _db_wait(
    reporter: locking.LockReporter, conn: Any, flight: _InFlight, waited: float, error: str | None
) -> None:
    act = reporter.activity
    lock = flight.lock
    label = f"{lock.kind}:{_db_key(conn, lock)}" if lock is not None and lock.kind else None
    if label is None and flight.blocker is not None:
        label = flight.blocker.detail
    reporter.emit(
        ev.DbWait(
            ts=now(),
            dialect=_dialect(conn),
            url=_url(conn),
            statement=ev.clip(flight.statement, 2000) or "",
            waited=waited,
            lock=label,
            blocked_by=flight.blocker,
            test=act.test,
            fixture=act.fixture,
            error=error,
        )
    )


def _release(
    reporter: locking.LockReporter,
    raw_id: int,
    match: Callable[[str, str, bool], bool],
    first: bool = False,
) -> None:
    holds = _held.get(raw_id)
    if not holds:
        return
    keep: list[tuple[str, str, str, bool]] = []
    done = False
    for entry in reversed(holds):
        kind, key, lock_id, tx = entry
        if (not first or not done) and match(kind, key, tx):
            reporter.released(kind, key, lock_id)
            done = True
        else:
            keep.append(entry)
    holds[:] = reversed(keep)


def _release_transactional(reporter: locking.LockReporter, raw_id: int) -> None:
    if _held.get(raw_id):
        _release(reporter, raw_id, lambda _k, _key, tx: tx)


def _wrap_tx_end(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Dialect.do_commit`` / ``do_rollback``: transaction-scoped locks end here."""

    def tx_end(self: Any, dbapi_connection: Any) -> Any:
        result = original(self, dbapi_connection)
        if _held:
            reporter = locking._current
            if reporter is not None:
                raw = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)
                _release_transactional(reporter, id(raw))
        return result

    tx_end.__wrapped__ = original  # type: ignore[attr-defined]
    return tx_end


def _failed(ident: int, entry: Entry, error: BaseException) -> None:
    """A statement raised: SQLite busy errors, lock timeouts, deadlocks the server broke."""
    reporter = locking._current
    if reporter is None:
        return
    lock = entry[4]
    text = exc_text(error)
    lowered = text.lower()
    busy = "database is locked" in lowered or "database table is locked" in lowered
    if lock is None and not busy and not _flights:
        return
    flight = _take(ident, entry)
    conn = flight.conn
    waited = REAL.perf_counter() - flight.t0
    if busy and (lock is None or lock.kind == "sqlite"):
        key = _db_key(conn, _Lock("acquire", "sqlite", "", True))
        lock_id = flight.lock_id or reporter.new_id()
        reporter.failed("sqlite", key, lock_id, waited, text)
        flight.lock = _Lock("acquire", "sqlite", key, True)
        _db_wait(reporter, conn, flight, waited, text)
        return
    if lock is not None and lock.action == "acquire":
        lock_id = flight.lock_id or reporter.new_id()
        reporter.failed(lock.kind, _db_key(conn, lock), lock_id, waited, text)
        if flight.reported:
            _db_wait(reporter, conn, flight, waited, text)
    elif flight.reported:
        _close_wait(reporter, conn, flight, waited, text)


_BACKEND_QUERIES = {
    "psycopg": ("postgresql", "SELECT pg_backend_pid()"),
    "psycopg2": ("postgresql", "SELECT pg_backend_pid()"),
    "pg8000": ("postgresql", "SELECT pg_backend_pid()"),
    "pymysql": ("mysql", "SELECT CONNECTION_ID()"),
    "MySQLdb": ("mysql", "SELECT CONNECTION_ID()"),
    "mariadb": ("mysql", "SELECT CONNECTION_ID()"),
}


def _on_connect(dbapi_connection: Any, record: Any) -> None:
    """Pool ``connect`` (a new DBAPI connection): announce its server connection id once,
    so the hub can map ``pg_blocking_pids`` / ``IS_USED_LOCK`` answers to this worker."""
    reporter = locking._current
    if reporter is None:
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
    backend = int(row[0])
    _backends[id(dbapi_connection)] = backend
    reporter.emit(
        ev.DbConnected(
            ts=now(), dialect=dialect, url=_dbapi_url(dialect, dbapi_connection), backend=backend
        )
    )


def _dbapi_url(dialect: str, raw: Any) -> str:
    """host:port/database of a DBAPI connection (no credentials), for display."""
    info = getattr(raw, "info", None)
    if info is not None and hasattr(info, "dbname"):  # psycopg 3
        return f"{dialect}://{info.host}:{info.port}/{info.dbname}"
    host = getattr(raw, "host", "")
    port = getattr(raw, "port", "")
    database = getattr(raw, "db", b"")
    if isinstance(database, bytes):
        database = database.decode(errors="replace")
    return f"{dialect}://{host}:{port}/{database}"


# ---------------------------------------------------------------- the watchdog


class _BlockerCheck:
    """Runs in the watchdog thread every tick: reports long waits and asks who blocks them."""

    def __init__(self) -> None:
        self._monitors: dict[str, Any] = {}

    def check(self, t: float) -> None:
        reporter = locking._current
        if reporter is None or not (_inflight or _flights):
            return
        mono = REAL.perf_counter()
        for ident, entry in list(_inflight.items()):
            age = mono - entry[0]
            if age < WAIT_REPORT:
                continue
            flight = _flights.get(ident)
            if flight is None or flight.entry is not entry:
                flight = _flights[ident] = _InFlight(entry)
            lock = flight.lock
            is_lock = lock is not None and lock.action == "acquire"
            if is_lock and not flight.reported and age >= WAIT_REPORT:
                self._report_wait(reporter, flight, age >= BLOCKER_LOOKUP)
            elif age >= BLOCKER_LOOKUP and not flight.looked_up:
                flight.looked_up = True
                blocker = self._lookup(reporter, flight)
                if blocker is not None:
                    flight.blocker = blocker
                    if not flight.reported:
                        self._report_wait(reporter, flight, False)
        # Statements that ended while we looked: their flights would keep the slow path on.
        # (Reported ones carry the wait's lock id: their thread takes them in _after.)
        for ident, flight in list(_flights.items()):
            if not flight.reported and _inflight.get(ident) is not flight.entry:
                _flights.pop(ident, None)

    def _report_wait(self, reporter: locking.LockReporter, flight: _InFlight, lookup: bool) -> None:
        if lookup and not flight.looked_up:
            flight.looked_up = True
            flight.blocker = self._lookup(reporter, flight)
        flight.reported = True
        flight.lock_id = reporter.new_id()
        lock = flight.lock
        if lock is not None and lock.action == "acquire":
            kind, key = lock.kind, _db_key(flight.conn, lock)
        else:
            kind, key = _synthetic_key(flight)
        act = reporter.activity
        act.waiting = f"lock:{key}"
        reporter.emit(
            ev.LockEvent(
                ts=now() - (REAL.perf_counter() - flight.t0),
                action="wait",
                kind=kind,
                key=key,
                lock_id=flight.lock_id,
                test=act.test,
                fixture=act.fixture,
                holder=flight.blocker,
            )
        )

    def _lookup(self, reporter: locking.LockReporter, flight: _InFlight) -> ev.Holder | None:
        conn = flight.conn
        dialect = _dialect(conn)
        backend = _backends.get(id(flight.raw))
        if backend is None:
            return None
        try:
            if dialect == "postgresql":
                return self._pg_blocker(conn, backend)
            if dialect in ("mysql", "mariadb"):
                return self._mysql_blocker(conn, backend, flight)
        # A monitor query that fails must not disturb the test; it is said once a tick at most.
        except Exception as exc:  # noqa: BLE001
            reporter.emit(
                ev.Notice(
                    ts=now(), source="sqlalchemy", msg=f"blocker lookup failed: {repr_of(exc)}"
                )
            )
            self._drop(conn)
        return None

    def _monitor(self, conn: Any) -> Any:
        """A raw DBAPI connection of our own to the same server (autocommit)."""
        url = conn.engine.url
        key = url.render_as_string(hide_password=False)
        monitor = self._monitors.get(key)
        if monitor is None:
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
            self._monitors[key] = monitor
        return monitor

    def _drop(self, conn: Any) -> None:
        try:
            key = conn.engine.url.render_as_string(hide_password=False)
        except AttributeError:
            return
        monitor = self._monitors.pop(key, None)
        if monitor is not None:
            # Closing a monitor connection that already broke: nothing left to lose.
            with contextlib.suppress(Exception):
                monitor.close()

    def _query(self, conn: Any, sql: str, args: tuple[Any, ...]) -> list[Any]:
        cursor = self._monitor(conn).dbapi_connection.cursor()
        try:
            cursor.execute(sql, args)
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def _pg_blocker(self, conn: Any, backend: int) -> ev.Holder | None:
        rows = self._query(
            conn,
            "SELECT l.locktype, l.relation::regclass::text, l.classid, l.objid, l.objsubid,"
            " pg_blocking_pids(l.pid) FROM pg_locks l WHERE l.pid = %s AND NOT l.granted",
            (backend,),
        )
        if not rows:
            return None
        locktype, relation, classid, objid, objsubid, blockers = rows[0]
        if locktype == "advisory":
            key = str((int(classid) << 32) | int(objid)) if objsubid == 1 else f"{classid},{objid}"
            detail = f"pg_advisory:{key}"
        elif locktype == "relation":
            detail = f"table:{relation}"
        else:
            detail = f"row:{relation or locktype}"
        holder = ev.Holder(detail=detail)
        if blockers:
            holder.backend = int(blockers[0])
        return holder

    def _mysql_blocker(self, conn: Any, backend: int, flight: _InFlight) -> ev.Holder | None:
        lock = flight.lock
        if lock is not None and lock.kind == "mysql_get_lock":
            rows = self._query(conn, "SELECT IS_USED_LOCK(%s)", (lock.key,))
            if rows and rows[0][0] is not None:
                return ev.Holder(backend=int(rows[0][0]), detail=f"mysql_get_lock:{lock.key}")
            return None
        rows = self._query(
            conn,
            "SELECT state, info FROM information_schema.processlist WHERE id = %s",
            (backend,),
        )
        if not rows or not rows[0][0]:
            return None
        state = str(rows[0][0])
        if "metadata lock" in state:
            table = _table_of(str(rows[0][1] or ""))
            return ev.Holder(detail=f"metadata:{table}")
        if "lock" in state.lower():
            return ev.Holder(detail=f"table:{state}")
        return None


def _table_of(statement: str) -> str:
    found = re.search(
        r"\b(?:table|into|from|update)\s+(?:if\s+\w+\s+exists\s+)?([\w.`\"]+)",
        statement,
        re.IGNORECASE,
    )
    return found.group(1).strip('`"') if found else "?"


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
    DefaultDialect.do_executemany = _wrap_executemany(DefaultDialect.do_executemany)  # type: ignore[method-assign]
    DefaultDialect.initialize = _wrap_dialect_initialize(DefaultDialect.initialize)  # type: ignore[method-assign]
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
        span = _MigrationSpan(reporter, "sqlalchemy", op, _bind_url(bind))
        span.begin()
        try:
            return original(self, *args, **kwargs)
        except BaseException as exc:
            span.error = ev.clip(exc_text(exc), 2000)
            raise
        finally:
            span.end()

    return wrapper


class _MigrationSpan:
    """A migration: its begin event (stamped when it started) once :meth:`begin` is called
    or at the latest with the end event, which :meth:`end` emits."""

    __slots__ = (
        "act", "begun", "error", "from_rev", "op", "reporter", "start", "to_rev", "tool", "url",
    )  # fmt: skip

    def __init__(
        self,
        reporter: locking.LockReporter,
        tool: str,
        op: str,
        url: str,
        from_rev: str | None = None,
        to_rev: str | None = None,
    ) -> None:
        self.reporter = reporter
        self.tool = tool
        self.op = op
        self.url = url
        self.from_rev = from_rev
        self.to_rev = to_rev
        self.error: str | None = None
        self.act = reporter.activity
        self.start = now()
        self.begun = False

    def begin(self) -> None:
        if self.begun:
            return
        self.begun = True
        act = self.act
        self.reporter.emit(
            ev.Migration(
                ts=self.start,
                action="begin",
                tool=self.tool,
                op=self.op,
                url=self.url,
                from_rev=self.from_rev,
                to_rev=self.to_rev,
                test=act.test,
                fixture=act.fixture,
            )
        )

    def end(self) -> None:
        self.begin()
        t = now()
        act = self.act
        self.reporter.emit(
            ev.Migration(
                ts=t,
                action="end",
                tool=self.tool,
                op=self.op,
                url=self.url,
                from_rev=self.from_rev,
                to_rev=self.to_rev,
                duration=t - self.start,
                error=self.error,
                test=act.test,
                fixture=act.fixture,
            )
        )


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

_alembic_runs: dict[int, tuple[_MigrationSpan, Any]] = {}
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

    return __init__


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
        span = _MigrationSpan(reporter, "alembic", op, url, None, _alembic_target(self))
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
