"""What a database statement does to locks, read from its text: shared by every driver.

The hot path's only question about a statement is a few substring checks
(:func:`~.dblocks.begin`); only a statement that passes them is classified by the regex in
:func:`classify`. Recognised:
``pg_advisory_lock`` / ``pg_advisory_xact_lock`` (and their ``_shared`` forms),
``pg_advisory_unlock[_all]``, the try-locks ``pg_try_advisory_lock`` /
``pg_try_advisory_xact_lock``, ``LOCK TABLE``, ``SELECT ... FOR UPDATE|SHARE``, MariaDB/MySQL
``GET_LOCK`` / ``RELEASE_LOCK`` / ``UNLOCK TABLES``, SQLite ``BEGIN IMMEDIATE|EXCLUSIVE`` and
the ends of transactions (``COMMIT``, ``ROLLBACK``, ``END``), and schema changes (``CREATE``,
``ALTER``, ``DROP`` of anything but a database), which take no lock of their own here but
tell the probe that a migration is under way. Leading SQL comments (a migration file's
``-- step 3``) are no part of what a statement does: it is read past them. A text of several
statements (``DROP TABLE IF EXISTS t; CREATE TEMPORARY TABLE t AS ...``) is a schema change
when one of its statements is one, and a temporary table's statements are none (see
:func:`text_ddl`).

Whether ``GET_LOCK`` and a try-lock got the lock is in the result: :func:`result_value`
reads the one-row result where the driver keeps it buffered (PyMySQL, mysqlclient, psycopg,
psycopg2) without consuming it.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from .. import events as ev
from ..clock import now
from ..guard import repr_of, text_of
from . import locking


# Compiled on first use, as in :mod:`..redact`: the five compilations cost ~15 M instructions,
# which every worker whose suite imports SQLAlchemy or a DB-API driver paid at start-up, while
# only a statement that passes :func:`~.dblocks.begin`'s pre-check (a lock, the end of a
# transaction, a schema change) is classified, and many suites run none. Such a statement
# pays a cached call per pattern (~0.4 k instructions of the ~25 k its classification costs);
# every other statement never reaches them.
@functools.cache
def _lock_re() -> re.Pattern[str]:
    return re.compile(
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
      | ^\s*(?P<ddl>create|alter|drop)\s+(?!database\b)
        """,
        re.IGNORECASE | re.VERBOSE,
    )


COMMENT_STARTS = ("-", "/", "#")
"""First characters of a leading SQL comment (``--``, ``/* */``, MySQL's ``#``): a statement
that starts with one (past blanks) is read past its comments."""


@functools.cache
def _lead_re() -> re.Pattern[str]:
    # Each alternative starts with its own character and none matches empty: matched from
    # the start with nothing after it, it never backtracks (linear in the comments' length).
    return re.compile(r"(?:\s+|--[^\n]*|\#[^\n]*|/\*.*?\*/)*", re.DOTALL)


def body_start(statement: str) -> int:
    """Where a statement's own text starts: past leading blanks and SQL comments (``--`` and
    ``#`` to the end of the line, ``/* */``). An unterminated ``/*`` is where it stops: the
    rest is all comment. Read alike for every database, so not quite any one's: ``#`` is
    MySQL's alone (elsewhere such a statement fails), MySQL wants a blank after ``--``,
    PostgreSQL nests ``/* /* */ */`` (read here as ending at the first ``*/``)."""
    found = _lead_re().match(statement)
    return found.end() if found is not None else 0


LEAD_CHARS = frozenset(" \t\r\n\f\v-/#")
"""First characters of a statement that may have blanks or a comment before its own text:
any other statement is read as it stands, at the cost of one look-up."""


def past_comments(statement: str) -> str:
    """The statement without its leading comments (a migration runner's ``-- step 3``)."""
    if statement[:1] in LEAD_CHARS and statement[:200].lstrip()[:1] in COMMENT_STARTS:
        return statement[body_start(statement) :]
    return statement


_NAME = r"(?:\"[^\"]+\"|`[^`]+`|[\w$]+)"


@functools.cache
def _ddl_target_re() -> re.Pattern[str]:
    """What a schema change changes: a temporary object (private to its connection), and the
    schema it names, if it names one."""
    return re.compile(
        rf"""
        ^\s*(?:create|alter|drop)\s+(?:or\s+replace\s+)?
        (?P<temp>(?:global\s+|local\s+)?(?:temp|temporary)\s+)?
        (?:unique\s+)?(?:unlogged\s+)?
        (?P<what>schema|table|index|view|materialized\s+view|sequence|type|function|procedure
            |trigger|extension|domain)?\s*
        (?:concurrently\s+)?(?:if\s+not\s+exists\s+|(?P<gone>if\s+exists\s+))?(?:only\s+)?(?:authorization\s+)?
        (?:on\s+(?P<on_unnamed>{_NAME})\s*\.
          |(?P<name>{_NAME})(?:\s*\.\s*(?P<inner>{_NAME}))?
           (?:\s+on\s+(?:only\s+)?(?P<on>{_NAME})\s*\.)?)
        """,
        re.IGNORECASE | re.VERBOSE,
    )


@functools.cache
def _from_re() -> re.Pattern[str]:
    return re.compile(r"\bfrom\s+([\w.\"`]+)", re.IGNORECASE)


@functools.cache
def _param_re() -> re.Pattern[str]:
    return re.compile(r"%\((\w+)\)s|:(\w+)|%s|\?")


@functools.cache
def _table_re() -> re.Pattern[str]:
    return re.compile(
        r"\b(?:table|into|from|update)\s+(?:if\s+\w+\s+exists\s+)?([\w.`\"]+)", re.IGNORECASE
    )


class Lock:
    """A lock statement recognised before it ran."""

    __slots__ = ("action", "check", "key", "kind", "transactional")

    def __init__(
        self, action: str, kind: str, key: str, transactional: bool, check: str = ""
    ) -> None:
        self.action = action
        """``acquire``, ``release``, ``release_all``, ``end`` (transaction end) or ``ddl``."""
        self.kind = kind
        self.key = key
        self.transactional = transactional
        self.check = check
        """Whether the result says if the lock was taken: ``get_lock`` (1, 0 on timeout,
        NULL on error), ``try`` (true or false), or ``""`` (taken when it returns)."""


def classify(statement: str, parameters: Any) -> Lock | None:
    """The lock a statement takes or releases, if any. Leading comments are no part of it:
    a schema change after ``-- step 3`` is one, a ``lock`` said in them is none (but a
    ``%s`` in them is a placeholder still: psycopg and PyMySQL bind those too)."""
    whole = statement
    statement = past_comments(statement)
    skipped = len(whole) - len(statement)
    match = _lock_re().search(statement)
    if match is None:
        # a schema change after the first statement (``SET ...; CREATE TABLE ...``)
        return text_ddl(statement) if more_statements(statement) else None
    group = match.group
    if group("adv"):
        key = _resolve(group("advkey"), whole, match.start("advkey") + skipped, parameters)
        return Lock("acquire", "pg_advisory", key, bool(group("xact")))
    if group("trykey") is not None:
        key = _resolve(group("trykey"), whole, match.start("trykey") + skipped, parameters)
        return Lock("acquire", "pg_advisory", key, bool(group("tryxact")), "try")
    if group("unkey") is not None:
        if group("all"):
            return Lock("release_all", "pg_advisory", "", False)
        key = _resolve(group("unkey"), whole, match.start("unkey") + skipped, parameters)
        return Lock("release", "pg_advisory", key, False)
    if group("glkey") is not None:
        key = _resolve(group("glkey"), whole, match.start("glkey") + skipped, parameters)
        return Lock("acquire", "mysql_get_lock", key, False, "get_lock")
    if group("rlkey") is not None:
        key = _resolve(group("rlkey"), whole, match.start("rlkey") + skipped, parameters)
        return Lock("release", "mysql_get_lock", key, False)
    if group("unlocktables") is not None:
        return Lock("release_all", "table", "", False)
    if group("table"):
        table = group("table").strip('"`')
        if table.lower() in ("in", "tables", "table"):
            return None
        return Lock("acquire", "table", table, True)
    if group("forupdate") is not None:
        found = _from_re().search(statement)
        table = found.group(1).strip('"`') if found else "?"
        return Lock("acquire", "row", table, True)
    if group("sqlite"):
        return Lock("acquire", "sqlite", "", True)
    if group("end"):
        return Lock("end", "", "", True)
    if group("ddl"):
        return text_ddl(statement) if more_statements(statement) else _ddl(statement)
    return None


def _ddl(statement: str) -> Lock | None:
    """A schema change, with the schema it names in ``key`` (``""``: none named); ``None``
    for a temporary object, which only its own connection sees."""
    target = _ddl_target_re().match(statement)
    if target is None:
        return Lock("ddl", "", "", False)
    if target.group("temp"):
        return None
    # CREATE SCHEMA s, CREATE TABLE s.t: the name or its qualifier; an index: its table's
    if (target.group("what") or "").lower() == "schema" or target.group("inner") is not None:
        schema = target.group("name")
    else:
        schema = target.group("on") or target.group("on_unnamed") or ""
    if schema[:1] in ('"', "`"):
        schema = schema[1:-1]  # a quoted name is as written
    else:
        schema = schema.lower()  # an unquoted one is folded (PostgreSQL folds to lower case)
        if schema in _TEMP_SCHEMAS:
            return None  # SQLite's temp.t: private to its connection, as TEMP is
        if schema in _DEFAULT_SCHEMAS:
            schema = ""  # where an unqualified name goes (the default search path)
    return Lock("ddl", "", schema, False)


_DEFAULT_SCHEMAS = frozenset({"public", "main"})
"""PostgreSQL's and SQLite's default schemas: ``public.t`` and ``t`` are one place."""
_TEMP_SCHEMAS = frozenset({"temp", "pg_temp"})
"""SQLite's ``temp.t`` and PostgreSQL's ``pg_temp.t``: a connection's own, as TEMP is."""


# ---------------------------------------------------------------- texts of several statements


def more_statements(statement: str) -> bool:
    """Whether a text may hold more than one statement: a ``;`` with more than blanks after
    it. One look for the common text (none, or one at its end); only such a text is split."""
    end = statement.find(";")
    if end < 0:
        return False
    rest = statement[end + 1 :]
    return rest != "" and not rest.isspace()


@functools.cache
def _scan_re() -> re.Pattern[str]:
    # What may hide a ";": a string, a quoted name, a comment, a dollar-quoted body (a
    # PostgreSQL function's), each to its end or to the end of the text; else a separator.
    return re.compile(
        r"""'[^']*'?|"[^"]*"?|`[^`]*`?|--[^\n]*|/\*.*?(?:\*/|\Z)
          |(?<![\w$])\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z)|;""",
        re.DOTALL | re.VERBOSE,
    )


def statements(text: str) -> list[str]:
    """The statements of a text, each past its leading comments, the empty ones left out. A
    ``;`` in a string (``'...'``), a quoted name (``"..."``, ```...```), a comment (``--``,
    ``/* */``) or a dollar-quoted body (``$$...$$``) separates nothing. (Read alike for
    every database: MySQL's backslash escapes and ``#`` comments are not.)"""
    parts: list[str] = []
    start = 0
    for found in _scan_re().finditer(text):
        if found.end() - found.start() == 1 and text[found.start()] == ";":
            parts.append(text[start : found.start()])
            start = found.end()
    parts.append(text[start:])
    bodies = (past_comments(part) for part in parts)
    return [body for body in bodies if body and not body.isspace()]


_QNAME = rf"{_NAME}(?:\s*\.\s*{_NAME})?"


@functools.cache
def _object_re() -> re.Pattern[str]:
    """A table's or an index's schema change: the names it changes (a ``DROP`` lists several)
    and, for an index, its table."""
    return re.compile(
        rf"""
        ^\s*(?P<verb>create|alter|drop)\s+
        (?P<temp>(?:global\s+|local\s+)?(?:temp|temporary)\s+)?(?:unique\s+)?
        (?P<what>table|index)\s+
        (?:concurrently\s+)?(?:if\s+not\s+exists\s+|(?P<gone>if\s+exists\s+))?(?:only\s+)?
        (?P<names>(?!on\s){_QNAME}(?:\s*,\s*{_QNAME})*)?
        (?:\s*\bon\s+(?:only\s+)?(?P<table>{_QNAME}))?
        """,
        re.IGNORECASE | re.VERBOSE,
    )


@functools.cache
def _qname_re() -> re.Pattern[str]:
    return re.compile(rf"({_NAME})(?:\s*\.\s*({_NAME}))?")


Name = tuple[str, str]
"""(schema, name) as the database reads them: unquoted folded, quoted as written."""


def _names(text: str | None) -> list[Name]:
    return [
        (_fold(found.group(1)), _fold(found.group(2)))
        if found.group(2)
        else ("", _fold(found.group(1)))
        for found in _qname_re().finditer(text or "")
    ]


def _fold(name: str) -> str:
    return name[1:-1] if name[:1] in ('"', "`") else name.lower()


CACHED_TEXT = 4096
"""Characters of a text up to which :func:`text_ddl` keeps its verdict (a bulk ``INSERT``
of a megabyte is not kept: 256 of them would hold their copies, hundreds of MB)."""


def text_ddl(text: str) -> Lock | None:
    """A text of several statements as a schema change (:func:`_text_ddl`); none when no
    statement after its first so much as names ``CREATE``, ``ALTER`` or ``DROP`` (read
    without splitting it)."""
    first = text.find(";")
    if first < 0 or _ddl_word_re().search(text, first) is None:
        found = _lock_re().match(text)  # then its first statement says it all
        return _ddl(text) if found is not None and found.group("ddl") else None
    if len(text) > CACHED_TEXT:
        return _text_ddl.__wrapped__(text)
    return _text_ddl(text)


@functools.cache
def _ddl_word_re() -> re.Pattern[str]:
    return re.compile(r"\b(?:create|alter|drop)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=256)
def _text_ddl(text: str) -> Lock | None:
    """A text of several statements as a schema change: its first statement that changes a
    schema other connections see, ``None`` when none does (kept per text: a suite runs its
    texts again and again).

    A temporary table is its connection's: creating one is no schema change, and neither is
    dropping, altering or indexing a table the same text creates as temporary, nor dropping
    an index it creates on one or one named after one (``DROP TABLE IF EXISTS t; DROP INDEX
    IF EXISTS t_id; CREATE TEMPORARY TABLE t AS ...; CREATE INDEX t_id ON t (id)``). Read by
    name: the text's ``DROP TABLE IF EXISTS t`` of a permanent ``t`` (no temporary one yet)
    is not told apart."""
    changes: list[tuple[str, re.Match[str] | None]] = []
    for part in statements(text):
        found = _lock_re().match(part)
        if found is not None and found.group("ddl"):
            changes.append((part, _object_re().match(part)))
    tables: set[Name] = set()
    indexes: set[Name] = set()
    for _part, obj in changes:  # what the text creates as its connection's own
        if obj is None or obj.group("verb").lower() != "create":
            continue
        names = _names(obj.group("names"))
        if obj.group("what").lower() == "table":
            if names and (obj.group("temp") or names[0][0] in _TEMP_SCHEMAS):
                tables.add(("", names[0][1]))
        elif obj.group("table") and set(_names(obj.group("table"))) <= tables:
            indexes.update(names)  # an index on one of them
    for part, obj in changes:
        if obj is not None and _temporary(obj, tables, indexes):
            continue
        lock = _ddl(part)
        if lock is not None:
            return lock
    return None


def _temporary(obj: re.Match[str], tables: set[Name], indexes: set[Name]) -> bool:
    """Whether a table's or an index's change concerns the text's temporary tables only."""
    verb = obj.group("verb").lower()
    names = _names(obj.group("names"))
    if obj.group("what").lower() == "table":
        return verb != "create" and bool(names) and set(names) <= tables
    table = _names(obj.group("table"))
    if table:
        return set(table) <= tables
    if verb == "create" or not names:
        return False
    if set(names) <= indexes:
        return True
    # ``DROP INDEX IF EXISTS t_id`` of an index named after one of them, as a text that
    # remakes its temporary table clears the last one's (django-model-utils' JoinManager
    # drops ``temp_stuff_id`` and creates ``temp_stuff_<column>``)
    return (
        bool(obj.group("gone"))
        and verb == "drop"
        and all(any(n[1].startswith(f"{table}_") for _schema, table in tables) for n in names)
    )


def _resolve(text: str, statement: str, pos: int, parameters: Any) -> str:
    """A lock key as written, with a bound parameter replaced by its value."""
    text = text.strip()
    found = _param_re().fullmatch(text)
    if found is None:
        return text.strip("'\"")
    name = found.group(1) or found.group(2)
    try:
        if name is not None and isinstance(parameters, dict):
            return text_of(parameters[name], 200)
        if isinstance(parameters, (list, tuple)) and parameters:
            index = len(_param_re().findall(statement[:pos]))
            value = parameters[index]
            return text_of(value[0] if isinstance(value, (list, tuple)) else value, 200)
    except (KeyError, IndexError, TypeError):
        pass
    return text


def table_of(statement: str) -> str:
    """The table a statement names first (for a metadata-lock wait's label)."""
    found = _table_re().search(statement)
    return found.group(1).strip('`"') if found else "?"


UNREAD = object()
"""The lock function's result could not be read without disturbing the user's cursor."""
_MARKERS = {"get_lock": "get_lock", "try": "try_advisory"}


def result_value(reporter: locking.LockReporter, cursor: Any, check: str) -> Any:
    """The lock function's value in a one-row result, read without consuming it: from the
    rows PyMySQL and mysqlclient buffer, or fetched and scrolled back on a client-side
    psycopg / psycopg2 cursor. :data:`UNREAD` for anything else."""
    try:
        description = cursor.description
        if not description:
            return UNREAD
        column = 0
        if len(description) > 1:
            marker = _MARKERS[check]
            hits = [i for i, d in enumerate(description) if marker in str(d[0]).lower()]
            if len(hits) != 1:
                return UNREAD
            column = hits[0]
        rows = getattr(cursor, "_rows", None)
        if isinstance(rows, (list, tuple)):  # PyMySQL, mysqlclient (buffered cursors)
            if len(rows) != 1 or cursor.rownumber:
                return UNREAD
            row = rows[0]
            if isinstance(row, dict):  # a dict cursor's row: its columns in their order
                row = tuple(row.values())
            return row[column]
        driver = type(cursor).__module__.split(".", 1)[0]
        if driver in ("psycopg", "psycopg2") and getattr(cursor, "name", None) is None:
            if cursor.rowcount != 1 or cursor.rownumber not in (0, None):
                return UNREAD
            row = cursor.fetchone()
            cursor.scroll(-1)
            return row[column]
    # Reading our way must never break the user's statement; what was lost is said.
    except Exception as exc:  # noqa: BLE001
        reporter.emit(ev.Notice(ts=now(), source="db", msg=f"lock result: {repr_of(exc)}"))
    return UNREAD
