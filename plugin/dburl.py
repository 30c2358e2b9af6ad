"""Database URLs as the monitor shows and compares them.

Shown decoded (``sqlite:///:memory:``, not SQLAlchemy's ``%3Amemory%3A``) with the password
redacted; and :func:`is_private` says when a URL names a database no other worker can
reach, whatever the URL: SQLite's (and DuckDB's) in-memory databases live inside one
process (shared cache or not), so two workers "migrating" ``:memory:`` at once never share
anything.
"""

from __future__ import annotations

from urllib.parse import unquote


def display_url(url: str) -> str:
    """``url`` percent-decoded (as the user wrote it), its password redacted."""
    # Imported here, not with this module: the SQLAlchemy probe imports this one into every
    # worker whose suite imports SQLAlchemy, and :mod:`.redact` compiles its patterns at
    # import (~15 M instructions), which a worker only needs once it shows a URL (a lock
    # statement, a migration: never on a statement's hot path).
    from .redact import redact_url

    return redact_url(unquote(url)) if "%" in url else redact_url(url)


def is_private(url: str) -> bool:
    """An in-memory SQLite (or DuckDB) database: private to the process that opened it,
    though every worker's has the same URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.lower().startswith(("sqlite", "duckdb")):
        return False
    rest = unquote(rest)
    path, _, query = rest.partition("?")
    database = path[1:] if path.startswith("/") else path
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        return True
    return "mode=memory" in query or "mode=memory" in database


def sqlite_file(url: str) -> str | None:
    """The file a ``sqlite[+driver]:///path`` URL names (None: no SQLite file URL)."""
    scheme, sep, rest = url.partition(":///")
    if not sep or not scheme.lower().startswith("sqlite"):
        return None
    return rest.partition("?")[0] or None
