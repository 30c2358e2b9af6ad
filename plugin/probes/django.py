"""Django: each worker's test-database creation and migrations (pytest-django).

Under pytest-django with xdist every worker creates a test database of its own
(``test_<name>_gw0``...) and migrates it: the cost is paid once per worker. Recorded as
:class:`~testmon_live.plugin.events.Migration` spans, tool ``django``:

- ``migrate``: from Django's own signals, ``pre_migrate`` (sent for every app before the
  migrations run, with the plan) and ``post_migrate`` (for every app after them); the
  migrations applied, each with its duration, from the migration executor's progress
  callback (``apply_start`` / ``apply_success``), which the probe chains in front of the
  one the ``migrate`` command gives (``MigrationExecutor.__init__`` wrapped, nothing else
  of the executor).
- ``create_test_db`` (``reuse_test_db`` under ``--reuse-db``):
  ``BaseDatabaseCreation.create_test_db`` (creating the database, its migrations,
  serialising it), the one place that has no signal. A ``--reuse-db`` that found no
  database to keep (its ``CREATE DATABASE`` went through, ``_execute_create_test_db``
  wrapped) or applied migrations to it ends as ``create_test_db``: that is what it did.

Installed when Django's modules are first imported; a suite without Django pays nothing.
Statements Django runs go through the DB-API drivers, where :mod:`.dbapi` sees their locks.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .. import events as ev
from ..guard import REAL, exc_text, text_of
from ..redact import redact_url
from . import locking
from .imports import when_imported
from .migrations import MigrationSpan

__tracebackhide__ = True
"""pytest leaves this module's frames out of the traceback of a failure: its wrappers sit
between the user's code and the library it called, and a failure reads as without the
monitor."""


class _Run:
    """A ``migrate`` of one database alias in progress."""

    __slots__ = ("pending", "posts", "pres", "span", "started")

    def __init__(self, span: MigrationSpan) -> None:
        self.span = span
        self.pres = 0
        self.posts = 0
        self.pending: dict[str, float] = {}
        """migration -> perf_counter when it started."""
        self.started: list[ev.MigrationStep] = []


_runs: dict[str, _Run] = {}
"""Database alias -> its migrate in progress (between the first pre_migrate and the last
post_migrate)."""
_made = [0]
"""Test databases created in this process so far (``CREATE DATABASE`` went through): a
reuse during which it grows created its database after all (a migration applied to a kept
database is no creation: its migrate is told apart)."""


def install(module: ModuleType | None = None) -> None:
    """Hook Django's modules as they load; a Django whose version the probe does not know
    (:data:`~.dbapi.KNOWN`) is left alone, with one notice."""
    if module is not None:
        from .dbapi import left_alone, version_problem

        problem = version_problem("django", text_of(getattr(module, "__version__", ""), 40))
        if problem is not None:
            left_alone("django", problem, "its test databases and migrations are not recorded")
            return
    when_imported("django.db.models.signals", _connect_signals)
    when_imported("django.db.migrations.executor", _patch_executor)
    when_imported("django.db.backends.base.creation", _patch_creation)


def _url(connection: Any, name: str | None = None) -> str:
    """vendor://host:port/name of a Django connection (no credentials): its database, or
    the one called ``name`` on the same server."""
    try:
        vendor = text_of(connection.vendor, 40)
        settings = connection.settings_dict
        if name is None:
            name = text_of(settings.get("NAME") or "", 500)
        if vendor == "sqlite":
            return f"sqlite:///{name}"
        host = text_of(settings.get("HOST") or "localhost", 200)
        port = text_of(settings.get("PORT") or "", 20)
        return redact_url(f"{vendor}://{host}{':' + port if port else ''}/{name}")
    except (AttributeError, TypeError):
        return ""


def _connection(using: Any) -> Any:
    return importlib.import_module("django.db").connections[using]  # (no stubs installed)


# ------------------------------------------------------------------ migrate


def _connect_signals(module: ModuleType) -> None:
    pre, post = getattr(module, "pre_migrate", None), getattr(module, "post_migrate", None)
    if pre is None or post is None:
        return
    pre.connect(_pre_migrate, weak=False, dispatch_uid="testmon_live.pre_migrate")
    post.connect(_post_migrate, weak=False, dispatch_uid="testmon_live.post_migrate")


def _plan_targets(plan: Any) -> str | None:
    """The last migration of each app in the plan, ``app.name`` comma-joined."""
    last: dict[str, str] = {}
    try:
        for migration, backwards in plan or ():
            if not backwards:
                last[text_of(migration.app_label, 100)] = text_of(migration.name, 200)
    except (AttributeError, TypeError, ValueError):
        return None
    return ",".join(f"{app}.{name}" for app, name in sorted(last.items())) or None


def _pre_migrate(sender: Any = None, **kwargs: Any) -> None:
    reporter = locking._current
    if reporter is None:
        return
    using = text_of(kwargs.get("using", "default"), 100)
    run = _runs.get(using)
    if run is None:
        url = _url(_connection(using))
        span = MigrationSpan(reporter, "django", "migrate", url, None, None)
        span.to_rev = _plan_targets(kwargs.get("plan"))
        run = _runs[using] = _Run(span)
        span.begin()
    run.pres += 1


def _post_migrate(sender: Any = None, **kwargs: Any) -> None:
    using = text_of(kwargs.get("using", "default"), 100)
    run = _runs.get(using)
    if run is None:
        return
    run.posts += 1
    if run.posts >= run.pres:
        _end(using, None)


def _end(using: str, error: str | None) -> None:
    run = _runs.pop(using, None)
    if run is None:
        return
    run.span.steps = run.started or None
    run.span.error = error
    run.span.end()


def _patch_executor(module: ModuleType) -> None:
    executor = getattr(module, "MigrationExecutor", None)
    if executor is None or getattr(executor, "_testmon_live_patched", False):
        return
    executor._testmon_live_patched = True
    executor.__init__ = _wrap_executor_init(executor.__init__)


def _wrap_executor_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """``MigrationExecutor(connection, progress_callback)``: ours chained in front."""

    @functools.wraps(original)
    def __init__(self: Any, connection: Any, progress_callback: Any = None) -> None:
        original(self, connection, progress_callback)
        if locking._current is None:
            return
        alias = text_of(getattr(connection, "alias", "default"), 100)
        self.progress_callback = functools.partial(_progress, alias, progress_callback)

    return __init__


def _progress(alias: str, chained: Any, action: str, *args: Any, **kwargs: Any) -> Any:
    """The executor's progress callback: ours, then the one it was given (if any)."""
    run = _runs.get(alias)
    migration = args[0] if args else kwargs.get("migration")
    if run is not None and migration is not None:
        try:
            name = f"{text_of(migration.app_label, 100)}.{text_of(migration.name, 200)}"
        except AttributeError:
            name = text_of(migration, 300)
        if action in ("apply_start", "unapply_start"):
            run.pending[name] = REAL.perf_counter()
        elif action in ("apply_success", "unapply_success"):
            started = run.pending.pop(name, None)
            if started is not None:
                run.started.append(
                    ev.MigrationStep(
                        name=name,
                        duration=REAL.perf_counter() - started,
                        backwards=action == "unapply_success",
                    )
                )
    return chained(action, *args, **kwargs) if chained is not None else None


# ------------------------------------------------------------------ test databases


def _patch_creation(module: ModuleType) -> None:
    creation = getattr(module, "BaseDatabaseCreation", None)
    if creation is None or getattr(creation, "_testmon_live_patched", False):
        return
    creation._testmon_live_patched = True
    creation.create_test_db = _wrap_create_test_db(creation.create_test_db)
    execute = getattr(creation, "_execute_create_test_db", None)
    if execute is not None:
        creation._execute_create_test_db = _wrap_execute_create(execute)


def _wrap_execute_create(original: Callable[..., Any]) -> Callable[..., Any]:
    """``CREATE DATABASE`` (the backends' own versions call it when there is none to keep):
    returning, it made one."""

    @functools.wraps(original)
    def _execute_create_test_db(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        _made[0] += 1
        return result

    return _execute_create_test_db


def _sqlite_file_missing(connection: Any, name: str) -> bool:
    """A SQLite test database in a file that does not exist yet (not in memory)."""
    try:
        if getattr(connection, "vendor", "") != "sqlite":
            return False
        path = name.removeprefix("sqlite:///")
        if not path or ":memory:" in path or "mode=memory" in path:
            return False
        REAL.stat(path)
    except FileNotFoundError:
        return True
    except Exception:  # noqa: BLE001  (ours: a guess at a label, never the user's problem)
        return False
    return False


def _wrap_create_test_db(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create_test_db(self: Any, *args: Any, **kwargs: Any) -> Any:
        reporter = locking._current
        if reporter is None:
            return original(self, *args, **kwargs)
        connection = self.connection
        alias = text_of(getattr(connection, "alias", "default"), 100)
        try:
            url = _url(connection, text_of(self._get_test_db_name(), 500))
        except Exception:  # noqa: BLE001  (the name is for display; Django says what is wrong)
            url = ""
        keepdb = bool(kwargs.get("keepdb", args[3] if len(args) > 3 else False))
        op = "reuse_test_db" if keepdb else "create_test_db"
        span = MigrationSpan(reporter, "django", op, url, None, None)
        made = _made[0]
        if keepdb and _sqlite_file_missing(connection, url):
            made -= 1  # SQLite makes its file without CREATE DATABASE: there is none to keep
        span.begin()
        try:
            return original(self, *args, **kwargs)
        except BaseException as exc:
            span.error = ev.clip(exc_text(exc), 2000)
            _end(alias, span.error)  # a migrate it interrupted sends no post_migrate
            raise
        finally:
            if keepdb and _made[0] > made:  # asked to reuse, it had to create one
                span.op = "create_test_db"
            span.end()

    return create_test_db
