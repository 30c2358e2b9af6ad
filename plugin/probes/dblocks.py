"""Database lock waits, whatever runs the statement: one mechanism for every driver.

The driver layers (:mod:`.dbapi` for psycopg 3, psycopg2, PyMySQL, mysqlclient and sqlite3
used directly; :mod:`.sqlalchemy` for SQLAlchemy's dialects, whatever their driver) call
:func:`begin` before a statement runs and :func:`done` or :func:`failed` after it, and
tell this module when a transaction ends (:func:`tx_end`), a connection closes
(:func:`closed`) and which server connection id a connection has (:func:`announce`).
Everything else is here: the lock events, what each connection holds, the watchdog's
view of long statements and the server lookup of what blocks them.

Per statement the hot path stores one tuple (the statement in flight, for the watchdog)
and looks up its text's pre-check (a few substring checks, once a text); only a statement
that passes it is classified.
The outermost layer wins: a statement SQLAlchemy runs through a wrapped DB-API cursor, or
one PyMySQL's ``executemany`` runs through ``execute``, is seen once (an inner
:func:`begin` finds its thread's statement in flight and returns ``None``).

While a statement runs longer than :data:`WAIT_REPORT` the watchdog thread emits a
``wait``; past :data:`BLOCKER_LOOKUP` it asks the server who blocks it through a
short-lived connection of its own, with connect and statement timeouts (PostgreSQL
``pg_locks`` + ``pg_blocking_pids``; MariaDB/MySQL ``IS_USED_LOCK``, the processlist state,
InnoDB's lock waits and, for a metadata lock, ``performance_schema.metadata_locks`` where
enabled, else the one open transaction in the table's database).
A wait the server fails to break a deadlock (MariaDB/MySQL error 1213, PostgreSQL 40P01) is
recorded as such (``reason="deadlock"``): the fold names the cycle.
Table names in MariaDB/MySQL lock keys are qualified with the connection's database when the
statement left them unqualified, so that ``t`` and ``db.t`` are one lock.
Server connection ids of the workers' connections are announced with
:class:`~testmon_live.plugin.events.DbConnected`, so the hub can name the blocking worker.
No other connection is ever opened to the user's database.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit

from .. import events as ev
from ..clock import now
from ..guard import REAL, exc_text, repr_of
from . import locking, portwatch
from .dbstatements import (
    COMMENT_STARTS,
    LEAD_CHARS,
    UNREAD,
    Lock,
    body_start,
    classify,
    more_statements,
    past_comments,
    result_value,
    table_of,
    text_ddl,
)
from .migrations import MigrationSpan, tool_running

__tracebackhide__ = True
"""pytest leaves this module's frames out of a failure's traceback: its statement wrapper
(:func:`positional_wrapper`) sits between the user's code and the driver."""

WAIT_REPORT = 0.2
"""Seconds a lock statement runs before the watchdog reports it as a wait."""
BLOCKER_LOOKUP = 0.5
"""Seconds any statement runs before the watchdog asks the server what blocks it."""
WAITED_MIN = 0.05
"""A lock statement that took longer than this counts as contended even if no wait was seen."""
LOOKUP_TIMEOUT = 2
"""Seconds the blocker lookup may take to connect, and its query to run."""


class Target:
    """What a statement runs against, for the slow path only (described lazily)."""

    __slots__ = ("database", "dialect", "monitor", "raw", "url")

    def __init__(
        self,
        dialect: str,
        url: str,
        raw: Any,
        database: str = "",
        monitor: Callable[[], Any] | None = None,
    ) -> None:
        self.dialect = dialect
        """``postgresql``, ``mysql`` (MariaDB too), ``sqlite`` or another dialect's name."""
        self.url = url
        """Redacted URL, for display."""
        self.raw = raw
        """The DB-API connection (what locks are held through)."""
        self.database = database
        """SQLite's database file (the key of its lock)."""
        self.monitor = monitor
        """Opens a short-lived autocommit DB-API connection to the same server."""


Describe = Callable[[Any, Any], Target]
"""(source, cursor) -> the Target: a driver layer's way to say what a statement runs on."""
Entry = tuple[float, str, Any, Any, "Lock | None", Describe, int]
"""(perf_counter at start, statement, source, cursor, lock, describe, thread id) of a
statement."""

_inflight: dict[int, Entry] = {}
"""thread id -> the statement it runs now (the hot path stores a tuple, nothing more)."""
_flights: dict[int, _InFlight] = {}
"""thread id -> the watchdog's view of a long-running statement."""
_held: dict[int, list[tuple[str, str, str, bool]]] = {}
"""id(DB-API connection) -> [(kind, key, lock_id, transactional)] held through it."""
_backends: dict[int, int] = {}
"""id(DB-API connection) -> server connection id (PostgreSQL backend pid, MariaDB id)."""
_get_ident = REAL.get_ident
_TX_PREFIXES = frozenset(
    w[:3]
    for word in ("BEGIN", "COMMIT", "ROLLBACK", "END", "CREATE", "ALTER", "DROP")
    for w in (word, word.lower())
)
"""First three letters of the statements that begin or end a transaction or change the
schema (either case; :func:`~.dbstatements.classify` decides)."""
_maybe: dict[str, int] = {}
"""A DB-API driver's statement text -> whether it passed the pre-check (bounded: cleared
when full)."""
_maybe_outer: dict[str, int] = {}
"""The same for an outer layer's (SQLAlchemy's) statements: :func:`_precheck` reads them
otherwise, and may say :data:`UNLESS_CONSTRUCT`."""
UNLESS_CONSTRUCT = 2
"""An outer layer's verdict on a text that passes the pre-check only past its leading
blanks or comments: classified unless SQLAlchemy compiled it from one of its schema
constructs (``context.isddl``), which is decided per execution, not per text. A user's
textual SQL (``text()``, ``exec_driver_sql``) is read as a driver's is."""
_MAYBE_KEPT = 4096
_schema: dict[int, MigrationSpan] = {}
"""id(DB-API connection) -> its schema changes in progress (a hand-written runner's)."""
_quiet: list[int] = [0]
"""The watchdog thread's id once it looked something up: its own connections are not the
user's (never announced, never in flight)."""


class _InFlight:
    """A statement that needs more than the hot path: a lock statement, or one the watchdog
    saw running long (then it is shared with the watchdog thread)."""

    __slots__ = (
        "blocker", "entry", "lock", "lock_id", "looked_up", "reported", "statement", "t0",
        "target",
    )  # fmt: skip

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self.t0, self.statement, source, cursor, self.lock, describe, _ident = entry
        try:
            self.target = describe(source, cursor)
        # Describing is ours: a connection we cannot read is "?", never the user's error.
        except Exception:  # noqa: BLE001
            self.target = Target("?", "?", getattr(cursor, "connection", None))
        self.lock_id = ""
        self.reported = False
        self.looked_up = False
        self.blocker: ev.Holder | None = None
        """What the server said blocks it, once the watchdog asked."""


# ---------------------------------------------------------------- the hot path


def begin(
    statement: str, parameters: Any, source: Any, cursor: Any, describe: Describe, many: bool
) -> Entry | None:
    """A statement starts: ``None`` when nothing is recorded (no ``--monitor``, or an outer
    layer has it), else its entry for :func:`done` / :func:`failed`. ``executemany`` is in
    flight for the watchdog but not classified (a lock function called once per parameter
    set is no way to take a lock)."""
    if locking._current is None:
        return None
    ident = _get_ident()
    if ident in _inflight or ident == _quiet[0]:
        return None
    lock = None
    if type(statement) is str and not many:
        # Statements repeat (a suite runs the same few hundred texts): the pre-check's
        # verdict is kept per text, so most statements cost one dict lookup here.
        direct = source is None  # a DB-API driver's statement (an outer layer passes its own)
        maybe = (_maybe if direct else _maybe_outer).get(statement)
        if maybe is None:
            maybe = _precheck(statement, direct)
        # (Only a text that passed looks further: SQLAlchemy's execution context says
        # whether it compiled the text from a schema construct.)
        if maybe and (maybe is True or getattr(source, "isddl", False) is not True):
            lock = classify(statement, parameters)
    entry = _inflight[ident] = (
        REAL.perf_counter(),
        statement,
        source,
        cursor,
        lock,
        describe,
        ident,
    )
    return entry


def _precheck(statement: str, direct: bool = True) -> int:
    """Whether a statement can take or end a lock or change the schema: it names a lock,
    says FOR UPDATE/SHARE, begins with a transaction's or a schema change's word, or holds
    a schema change in a later statement of its text.

    A statement given to a DB-API driver directly (``direct``: hand-written SQL) is read
    past leading blanks (a runner writes its DDL in a triple-quoted string, a newline
    first) and, when it starts with ``-``, ``/`` or ``#``, past leading comments (``-- step
    3``). An outer layer's (SQLAlchemy's) starting with its word is as before; read past
    blanks and comments it is :data:`UNLESS_CONSTRUCT`: SQLAlchemy's schema constructs
    (``Table.create()``) compile to text that starts with a newline, and are its own schema
    changes, recorded as ``create_all`` when they are one, not a hand-written runner's. The
    two kinds keep their verdicts apart (:data:`_maybe`, :data:`_maybe_outer`), whichever
    comes first."""
    lock = "ock" in statement or "OCK" in statement or "FOR " in statement or "for " in statement
    maybe: int
    if direct:
        maybe = lock or _head(statement) in _TX_PREFIXES or _later_ddl(statement)
    elif statement[:3] in _TX_PREFIXES:
        maybe = True
    elif statement[:1] in LEAD_CHARS and _head(statement) in _TX_PREFIXES:
        # (before the lock words: a construct's CREATE TABLE of a table named "stock" is
        # still SQLAlchemy's own)
        maybe = UNLESS_CONSTRUCT
    else:
        maybe = lock or _later_ddl(statement)
    cache = _maybe if direct else _maybe_outer
    if len(cache) >= _MAYBE_KEPT:
        cache.clear()
    cache[statement] = maybe
    return maybe


def _later_ddl(statement: str) -> bool:
    """Whether a statement after a text's first changes the schema (``SET search_path TO
    s; CREATE TABLE t ...``): a text with a ``;`` before more text is split, once a text."""
    return more_statements(statement) and text_ddl(past_comments(statement)) is not None


def _head(statement: str) -> str:
    """A statement's first three letters past leading blanks, and past leading comments
    when it starts with one (anything else pays nothing more for them)."""
    if statement[:1] not in LEAD_CHARS:
        return statement[:3]
    head = statement[:200].lstrip()[:3]
    if head[:1] in COMMENT_STARTS:
        start = body_start(statement)
        return statement[start : start + 3]
    return head


def done(entry: Entry) -> None:
    """The statement of ``entry`` returned."""
    _inflight.pop(entry[6], None)
    if entry[4] is not None or _flights:
        _guarded(_finished, entry[6], entry)


def _done_fast() -> Callable[[Entry], None]:
    """:func:`done` with the names it reads bound once (a wrapper calls it per statement)."""
    pop, flights, guarded, finished = _inflight.pop, _flights, _guarded, _finished

    def done_fast(entry: Entry) -> None:
        pop(entry[6], None)
        if entry[4] is not None or flights:
            guarded(finished, entry[6], entry)

    return done_fast


NOT_GIVEN: Any = object()
"""An argument not given (sqlite3 tells "not given" from ``None``)."""


def positional_wrapper(
    original: Callable[..., Any],
    describe: Describe,
    many: bool,
    make: Callable[[Any, Any], Any] | None = None,
    factory: Any = None,
    script: bool = False,
) -> Callable[..., Any]:
    """A statement method that takes ``(sql[, params])`` by position only (sqlite3's), with
    :func:`begin` and :func:`done` inlined: where a statement costs a few microseconds, two
    calls of ours per statement were a fifth of what the probe adds. Keep it in step with
    :func:`begin` (same checks, same entry) and :func:`done`.

    With ``make``, the wrapper is a connection's: it makes a ``factory`` cursor with
    ``make`` (the connection's ``cursor``) and runs ``original`` (the cursor's method) on it
    in the same frame, as the C type's ``Connection.execute`` does with its own cursor.

    With ``script`` (sqlite3's ``executescript``, ``many`` too), a text is classified for
    its schema changes only (:func:`script_ddl`)."""
    inflight, quiet, flights, maybe_get = _inflight, _quiet, _flights, _maybe.get
    pop, clock, get_ident, cheap = _inflight.pop, REAL.perf_counter, _get_ident, not many

    def execute(self: Any, sql: Any, params: Any = NOT_GIVEN, /) -> Any:
        cur = self if make is None else make(self, factory)
        ident = get_ident()
        if locking._current is None or ident in inflight or ident == quiet[0]:
            return original(cur, sql) if params is NOT_GIVEN else original(cur, sql, params)
        lock = None
        if cheap and type(sql) is str:
            maybe = maybe_get(sql)
            if maybe is None:
                maybe = _precheck(sql)
            if maybe:
                lock = classify(sql, None if params is NOT_GIVEN else params)
        elif script and type(sql) is str:
            lock = script_ddl(sql)
        entry = inflight[ident] = (clock(), sql, None, cur, lock, describe, ident)
        try:
            result = original(cur, sql) if params is NOT_GIVEN else original(cur, sql, params)
        except BaseException as exc:
            failed(entry, exc)
            raise
        pop(ident, None)
        if lock is not None or flights:
            _guarded(_finished, ident, entry)
        return result

    return functools.wraps(original)(execute)


def script_ddl(script: str) -> Lock | None:
    """A script's schema change (sqlite3's ``executescript``: a migration runner's file), by
    its statements as :func:`~.dbstatements.text_ddl` reads them. Nothing else of it is: the
    transactions and locks it opens and ends are its own."""
    return text_ddl(past_comments(script))


def failed(entry: Entry, error: BaseException) -> None:
    """The statement of ``entry`` raised ``error`` (which the caller re-raises)."""
    _inflight.pop(entry[6], None)
    _guarded(_failed, entry[6], entry, error)


def _guarded(work: Callable[..., None], *args: Any) -> None:
    """The probe's own work after a statement: a bug of ours is a notice, never the
    user's error (the statement's result or exception stays what the driver gave)."""
    try:
        work(*args)
    except Exception as exc:  # noqa: BLE001
        reporter = locking._current
        if reporter is not None:
            reporter.emit(ev.Notice(ts=now(), source="db", msg=f"db probe: {repr_of(exc)}"))


def tx_end(raw: Any) -> None:
    """A transaction of the DB-API connection ``raw`` ended: its transaction-scoped locks
    are released, its schema changes done."""
    if _schema:
        _end_schema(id(raw), None)
    if _held:
        reporter = locking._current
        if reporter is not None:
            _guarded(_release_transactional, reporter, id(raw))


def closed(raw: Any) -> None:
    """The DB-API connection ``raw`` closed: every lock held through it is released."""
    _backends.pop(id(raw), None)
    if _schema:
        _end_schema(id(raw), None)
    if _held:
        reporter = locking._current
        if reporter is not None and _held.get(id(raw)):
            _guarded(_release, reporter, id(raw), lambda _k, _key, _tx: True)


def known(raw: Any) -> bool:
    """Whether the server connection id of ``raw`` was announced."""
    return id(raw) in _backends


def announce(raw: Any, dialect: str, url: str, backend: int) -> None:
    """The DB-API connection ``raw`` has server connection id ``backend``: told to the hub
    once, so ``pg_blocking_pids`` / ``IS_USED_LOCK`` answers map to this worker."""
    reporter = locking._current
    if reporter is None or _get_ident() == _quiet[0] or _backends.get(id(raw)) == backend:
        return
    _backends[id(raw)] = backend
    reporter.emit(ev.DbConnected(ts=now(), dialect=dialect, url=url, backend=backend))
    if portwatch._sink:  # a connection libpq made in C: no Python socket saw it
        portwatch.seen_url(url)


# ---------------------------------------------------------------- after a statement


def _take(ident: int, entry: Entry) -> _InFlight:
    flight = _flights.pop(ident, None)
    if flight is not None and flight.entry is entry:
        return flight
    return _InFlight(entry)


def _finished(ident: int, entry: Entry) -> None:
    reporter = locking._current
    if reporter is None:
        return
    flight = _take(ident, entry)
    lock = flight.lock
    waited = REAL.perf_counter() - flight.t0
    if lock is not None:
        _lock_done(reporter, flight, lock, waited)
    elif flight.reported:
        # A plain statement that waited on a lock the server told us about.
        _close_wait(reporter, flight, waited, None)


def _db_key(target: Target, lock: Lock) -> str:
    if lock.kind == "sqlite":
        return target.database or ":memory:"
    if lock.kind in _TABLE_KINDS and target.dialect in _MYSQL:
        return qualified(lock.key, _mysql_schema(target))
    return lock.key


_MYSQL = ("mysql", "mariadb")
_TABLE_KINDS = ("row", "table", "metadata")
"""Lock kinds whose key is a table name."""


def qualified(table: str, schema: str) -> str:
    """A MariaDB/MySQL table name as ``schema.table`` (quotes dropped): a name the
    statement left unqualified is in the connection's database (``schema``)."""
    name = table.replace("`", "").replace('"', "")
    if "." in name or not schema or name == "?":
        return name
    return f"{schema}.{name}"


def _mysql_schema(target: Target) -> str:
    """The database a MariaDB/MySQL connection uses: PyMySQL's ``db``, else the URL's."""
    database = getattr(target.raw, "db", None)
    if isinstance(database, bytes):
        database = database.decode(errors="replace")
    if isinstance(database, str) and database:
        return database
    path = urlsplit(target.url).path if "://" in target.url else ""
    return path.strip("/").partition("/")[0]


def _autocommit(raw: Any) -> bool:
    """Whether ``raw`` commits every statement (transaction-scoped locks end with it)."""
    mode = getattr(raw, "autocommit_mode", None)  # PyMySQL
    if mode is None:
        mode = getattr(raw, "autocommit", None)  # psycopg, psycopg2, sqlite3 (3.12+)
        if callable(mode):  # mysqlclient: a setter; the client's status flag says it
            mode = bool(raw.get_autocommit())
    return mode is True


def _lock_done(
    reporter: locking.LockReporter, flight: _InFlight, lock: Lock, waited: float
) -> None:
    target = flight.target
    raw_id = id(target.raw)
    if lock.action == "end":
        _release_transactional(reporter, raw_id)
        _end_schema(raw_id, None)
        return
    if lock.action == "ddl":
        _schema_change(reporter, flight, waited, None)
        if flight.reported:  # it waited on a lock the server told us about (metadata)
            _close_wait(reporter, flight, waited, None)
        return
    if lock.action == "release_all":
        _release(reporter, raw_id, lambda k, _key, _tx: k == lock.kind)
        return
    key = _db_key(target, lock)
    if lock.action == "release":
        _release(reporter, raw_id, lambda k, kk, _tx: k == lock.kind and kk == key, first=True)
        return
    if lock.check and _not_taken(reporter, flight, lock, key, waited):
        return
    lock_id = flight.lock_id or reporter.new_id()
    contended = flight.reported or waited >= WAITED_MIN
    reporter.acquired(
        lock.kind, key, lock_id, waited=waited if contended else None, holder=flight.blocker
    )
    if lock.transactional and lock.kind != "sqlite" and _autocommit(target.raw):
        reporter.released(lock.kind, key, lock_id)  # the statement's own transaction ended
    else:
        _held.setdefault(raw_id, []).append((lock.kind, key, lock_id, lock.transactional))
    if flight.reported:
        _db_wait(reporter, flight, waited, None)


def _not_taken(
    reporter: locking.LockReporter, flight: _InFlight, lock: Lock, key: str, waited: float
) -> bool:
    """Read whether ``GET_LOCK`` or a try-lock got the lock; record it when it did not.
    True when the acquisition must not be recorded as held."""
    value = result_value(reporter, flight.entry[3], lock.check)
    if value is UNREAD:
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
        _db_wait(reporter, flight, waited, error)
    return True


def _close_wait(
    reporter: locking.LockReporter, flight: _InFlight, waited: float, error: str | None
) -> None:
    kind, key = _synthetic_key(flight)
    if error is None:
        reporter.acquired(kind, key, flight.lock_id, waited=waited, holder=flight.blocker)
        _held.setdefault(id(flight.target.raw), []).append((kind, key, flight.lock_id, True))
    elif is_deadlock(error):
        reporter.failed(kind, key, flight.lock_id, waited, error, "deadlock", flight.blocker)
    else:
        reporter.failed(kind, key, flight.lock_id, waited, error)
    _db_wait(reporter, flight, waited, error)


def _synthetic_key(flight: _InFlight) -> tuple[str, str]:
    blocker = flight.blocker
    detail = blocker.detail if blocker is not None and blocker.detail else "row:?"
    kind, _, key = detail.partition(":")
    return kind, key


def _db_wait(
    reporter: locking.LockReporter, flight: _InFlight, waited: float, error: str | None
) -> None:
    act = reporter.activity
    lock = flight.lock
    target = flight.target
    label = f"{lock.kind}:{_db_key(target, lock)}" if lock is not None and lock.kind else None
    if label is None and flight.blocker is not None:
        label = flight.blocker.detail
    reporter.emit(
        ev.DbWait(
            ts=now(),
            dialect=target.dialect,
            url=target.url,
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
    if not holds:
        del _held[raw_id]


def _release_transactional(reporter: locking.LockReporter, raw_id: int) -> None:
    if _held.get(raw_id):
        _release(reporter, raw_id, lambda _k, _key, tx: tx)


def _in_transaction(raw: Any) -> bool:
    """Whether ``raw`` is inside a transaction now (sqlite3, psycopg, psycopg2 say)."""
    inside = getattr(raw, "in_transaction", None)  # sqlite3
    if isinstance(inside, bool):
        return inside
    info = getattr(raw, "info", None)
    status = getattr(info, "transaction_status", None)  # psycopg 3, psycopg2: 0 is idle
    return status is not None and int(status) != 0


def _schema_change(
    reporter: locking.LockReporter, flight: _InFlight, waited: float, error: str | None
) -> None:
    """A ``CREATE`` / ``ALTER`` / ``DROP`` of a hand-written migration runner: a migration
    span from its first schema change to the end of its transaction (or the statement's,
    outside one), so that two workers changing one database's schema at once are flagged
    like racing migrations. Inside a tool's migration the tool's own span says it."""
    if tool_running():
        return
    target = flight.target
    raw_id = id(target.raw)
    span = _schema.get(raw_id)
    if span is None:
        first = ev.clip(" ".join(past_comments(flight.statement).split()), 200)
        span = _schema[raw_id] = MigrationSpan(reporter, "ddl", "schema", target.url, None, first)
        lock = flight.lock
        span.schema = (lock.key if lock is not None else "") or None
        span.start = now() - waited
        span.steps = []
        span.begin()
    assert span.steps is not None
    span.steps.append(
        ev.MigrationStep(
            name=ev.clip(" ".join(past_comments(flight.statement).split()), 200) or "",
            duration=waited,
        )
    )
    if error is not None:
        span.error = ev.clip(error, 2000)
    if error is not None or not _in_transaction(target.raw):
        _end_schema(raw_id, span.error)


def _end_schema(raw_id: int, error: str | None) -> None:
    span = _schema.pop(raw_id, None)
    if span is not None:
        if error is not None:
            span.error = error
        span.end()


def is_busy(text: str) -> bool:
    """SQLite's "database is locked" (or "database table is locked")."""
    lowered = text.lower()
    return "database is locked" in lowered or "database table is locked" in lowered


def _failed(ident: int, entry: Entry, error: BaseException) -> None:
    """A statement raised: SQLite busy errors, lock timeouts, deadlocks the server broke."""
    reporter = locking._current
    if reporter is None:
        return
    lock = entry[4]
    text = exc_text(error)
    busy = is_busy(text)
    deadlock = is_deadlock(text)
    if lock is None and not busy and not deadlock and not _flights:
        return
    flight = _take(ident, entry)
    waited = REAL.perf_counter() - flight.t0
    if lock is not None and lock.action == "ddl":
        _schema_change(reporter, flight, waited, text)
        if busy:  # the schema change waited on the database file and gave up
            key = _db_key(flight.target, Lock("acquire", "sqlite", "", True))
            reporter.failed("sqlite", key, flight.lock_id or reporter.new_id(), waited, text)
            flight.lock = Lock("acquire", "sqlite", key, True)
            _db_wait(reporter, flight, waited, text)
        elif flight.reported:
            _close_wait(reporter, flight, waited, text)
        return
    if busy and (lock is None or lock.kind == "sqlite"):
        key = _db_key(flight.target, Lock("acquire", "sqlite", "", True))
        lock_id = flight.lock_id or reporter.new_id()
        reporter.failed("sqlite", key, lock_id, waited, text)
        flight.lock = Lock("acquire", "sqlite", key, True)
        _db_wait(reporter, flight, waited, text)
        return
    if lock is not None and lock.action == "acquire":
        lock_id = flight.lock_id or reporter.new_id()
        key = _db_key(flight.target, lock)
        if is_deadlock(text):
            reporter.failed(lock.kind, key, lock_id, waited, text, "deadlock", flight.blocker)
        else:
            reporter.failed(lock.kind, key, lock_id, waited, text)
        if flight.reported:
            _db_wait(reporter, flight, waited, text)
    elif flight.reported:
        _close_wait(reporter, flight, waited, text)
    elif deadlock:
        # A plain statement (an ORM's UPDATE) the server failed at once to break a
        # deadlock: no wait was seen, the row lock it wanted is on its table.
        target = flight.target
        schema = _mysql_schema(target) if target.dialect in ("mysql", "mariadb") else ""
        key = qualified(table_of(flight.statement), schema)
        reporter.failed("row", key, reporter.new_id(), waited, text, "deadlock", flight.blocker)


def is_deadlock(text: str) -> bool:
    """The server failed the statement to break a deadlock: MariaDB/MySQL error 1213
    ("Deadlock found when trying to get lock"), PostgreSQL 40P01 ("deadlock detected")."""
    lowered = text.lower()
    return "deadlock found" in lowered or "deadlock detected" in lowered


def busy_commit(raw: Any, database: str, started: float, error: BaseException) -> None:
    """A ``commit`` of SQLite connection ``raw`` raised: "database is locked" is a failed
    wait on the database file like a statement's."""
    reporter = locking._current
    if reporter is None:
        return
    text = exc_text(error)
    if not is_busy(text):
        return
    waited = REAL.perf_counter() - started
    target = Target("sqlite", f"sqlite:///{database}", raw, database)
    lock = Lock("acquire", "sqlite", database, True)
    entry: Entry = (started, "COMMIT", None, None, lock, lambda _s, _c: target, _get_ident())
    flight = _InFlight(entry)
    reporter.failed("sqlite", database, reporter.new_id(), waited, text)
    _guarded(_db_wait, reporter, flight, waited, text)


# ---------------------------------------------------------------- the watchdog


class BlockerCheck:
    """Runs in the watchdog thread every tick: reports long waits and asks who blocks them."""

    def check(self, t: float) -> None:
        reporter = locking._current
        if reporter is None or not (_inflight or _flights):
            return
        _quiet[0] = _get_ident()
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
            if is_lock and not flight.reported:
                self._report_wait(reporter, flight, age >= BLOCKER_LOOKUP)
            elif age >= BLOCKER_LOOKUP and not flight.looked_up:
                flight.looked_up = True
                blocker = self._lookup(reporter, flight)
                if blocker is not None:
                    flight.blocker = blocker
                    if not flight.reported:
                        self._report_wait(reporter, flight, False)
        # Statements that ended while we looked: their flights would keep the slow path on.
        # (Reported ones carry the wait's lock id: their thread takes them in _finished.)
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
            kind, key = lock.kind, _db_key(flight.target, lock)
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
        target = flight.target
        backend = _backends.get(id(target.raw))
        if backend is None or target.monitor is None:
            return None
        if target.dialect not in ("postgresql", "mysql", "mariadb"):
            return None
        try:
            conn = target.monitor()
        # A monitor query that fails must not disturb the test; it is said once a tick at most.
        except Exception as exc:  # noqa: BLE001
            reporter.emit(ev.Notice(ts=now(), source="db", msg=f"blocker lookup: {repr_of(exc)}"))
            return None
        try:
            if target.dialect == "postgresql":
                return _pg_blocker(conn, backend)
            return _mysql_blocker(conn, backend, flight, _mysql_schema(target))
        except Exception as exc:  # noqa: BLE001
            reporter.emit(ev.Notice(ts=now(), source="db", msg=f"blocker lookup: {repr_of(exc)}"))
            return None
        finally:
            # Closing our own lookup connection: nothing left to lose if it broke.
            with contextlib.suppress(Exception):
                conn.close()


def _query(conn: Any, sql: str, args: tuple[Any, ...]) -> list[Any]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql, args)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _pg_blocker(conn: Any, backend: int) -> ev.Holder | None:
    rows = _query(
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


def _mysql_blocker(conn: Any, backend: int, flight: _InFlight, schema: str) -> ev.Holder | None:
    lock = flight.lock
    if lock is not None and lock.kind == "mysql_get_lock":
        rows = _query(conn, "SELECT IS_USED_LOCK(%s)", (lock.key,))
        if rows and rows[0][0] is not None:
            return ev.Holder(backend=int(rows[0][0]), detail=f"mysql_get_lock:{lock.key}")
        return None
    rows = _query(
        conn, "SELECT state, info FROM information_schema.processlist WHERE id = %s", (backend,)
    )
    state = str(rows[0][0] or "") if rows else ""
    if "metadata lock" in state:
        table = qualified(table_of(str(rows[0][1] or "")), schema)
        return ev.Holder(detail=f"metadata:{table}", backend=_mdl_holder(conn, backend, table))
    row_wait = _innodb_wait(conn, backend)
    if row_wait is not None:
        holder, table = row_wait
        return ev.Holder(backend=holder, detail=f"row:{table}")
    if "lock" in state.lower():
        return ev.Holder(detail=f"table:{state}")
    return None


_INNODB_WAITS = (
    # MariaDB, MySQL 5.7
    "SELECT b.trx_mysql_thread_id, l.lock_table"
    " FROM information_schema.INNODB_LOCK_WAITS w"
    " JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id"
    " JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id"
    " LEFT JOIN information_schema.INNODB_LOCKS l ON l.lock_id = w.requested_lock_id"
    " WHERE r.trx_mysql_thread_id = %s",
    # MySQL 8
    "SELECT bt.PROCESSLIST_ID, CONCAT(l.OBJECT_SCHEMA, '.', l.OBJECT_NAME)"
    " FROM performance_schema.data_lock_waits w"
    " JOIN performance_schema.threads rt ON rt.THREAD_ID = w.REQUESTING_THREAD_ID"
    " JOIN performance_schema.threads bt ON bt.THREAD_ID = w.BLOCKING_THREAD_ID"
    " LEFT JOIN performance_schema.data_locks l"
    " ON l.ENGINE_LOCK_ID = w.REQUESTING_ENGINE_LOCK_ID"
    " WHERE rt.PROCESSLIST_ID = %s",
)
"""Who holds the InnoDB row lock a connection waits for, and on which table: whichever
the server offers (an absent table is an error, and the next is tried)."""


def _innodb_wait(conn: Any, backend: int) -> tuple[int, str] | None:
    for sql in _INNODB_WAITS:
        try:
            rows = _query(conn, sql, (backend,))
        except Exception:  # noqa: BLE001  (not this server's table: try the next)
            continue
        for holder, table in rows:
            if holder is not None:
                return int(holder), qualified(str(table or "?"), "")
        return None
    return None


def _mdl_holder(conn: Any, backend: int, table: str) -> int | None:
    """The connection that holds the metadata lock on ``table`` (``schema.table``) that
    ``backend`` waits for, from ``performance_schema.metadata_locks`` when the server keeps
    it (MySQL 8 by default; MariaDB with ``performance_schema`` on). Without it, or with
    several holders, not known (``None``): no other table says who holds a metadata lock
    (a transaction's default database, say, is not where it holds its locks), and a guess
    is never named as the holder."""
    schema, _, name = table.rpartition(".")
    if not schema or name == "?":
        return None
    try:
        rows = _query(
            conn,
            "SELECT t.PROCESSLIST_ID FROM performance_schema.metadata_locks m"
            " JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID"
            " WHERE m.OBJECT_TYPE = 'TABLE' AND m.OBJECT_SCHEMA = %s AND m.OBJECT_NAME = %s"
            " AND m.LOCK_STATUS = 'GRANTED' AND t.PROCESSLIST_ID <> %s",
            (schema, name, backend),
        )
    except Exception:  # noqa: BLE001  (no performance_schema here: the holder stays unknown)
        return None
    holders = {int(r[0]) for r in rows if r[0] is not None}
    return holders.pop() if len(holders) == 1 else None


_check: list[BlockerCheck] = []


def install(watchdog_checks: list[Callable[[float], None]] | None) -> None:
    """Register the watchdog's check once per process (several driver layers ask)."""
    if watchdog_checks is None:
        return
    if not _check:
        _check.append(BlockerCheck())
    if _check[0].check not in watchdog_checks:
        watchdog_checks.append(_check[0].check)


done_fast = _done_fast()
"""The drivers' per-statement :func:`done` (made last: it binds the names it calls)."""
