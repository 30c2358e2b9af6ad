"""The public API for what cannot be seen automatically: a cross-worker named lock and a
run-once helper for session setup, both recorded when the run is monitored.

>>> from testmon_live.plugin import monitor
>>> with monitor.lock("migrations"):
...     ...                                    # one worker at a time, across the run
>>> url = monitor.run_once("schema", migrate)  # the first worker migrates, the others
...                                            # wait and get its (JSON) result

Both work without ``--monitor`` (nothing is recorded then) and without xdist (one
process: the lock is uncontended, ``run_once`` simply runs). The locks are ``flock`` locks
on files in a directory shared by the workers of one run (see :func:`lock_dir`), so they
are POSIX only and hold across processes of one machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

from .clock import now
from .guard import REAL, exc_text
from .probes import locking
from .settings import RUN_KEY_ENV

__all__ = ["LockTimeout", "RunOnceFailed", "lock", "lock_dir", "run_once"]

T = TypeVar("T")

LOCK_DIR_ENV = "TESTMON_LIVE_LOCK_DIR"
"""Environment variable: directory for the lock files (default: per run, under the temp dir)."""
KIND_LOCK = "monitor"
KIND_ONCE = "run_once"


class LockTimeout(TimeoutError):
    """:func:`lock` or :func:`run_once` waited longer than its ``timeout``."""


class RunOnceFailed(RuntimeError):
    """The worker that ran a :func:`run_once` function failed; every other worker gets this."""


def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def lock_dir() -> Path:
    """The directory shared by all workers of this run (created on first use).

    ``$TESTMON_LIVE_LOCK_DIR`` if set, else ``<tmp>/testmon-live-<uid>/<run>``, where
    ``<run>`` is the run key the plugin sets in the controller (inherited by every worker
    of the run), else xdist's test run id, else this process's id.
    """
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        path = Path(configured)
    else:
        run = (
            os.environ.get(RUN_KEY_ENV)
            or os.environ.get("PYTEST_XDIST_TESTRUNUID")
            or f"pid{REAL.getpid()}"
        )
        uid = os.getuid() if hasattr(os, "getuid") else 0
        path = Path(tempfile.gettempdir(), f"testmon-live-{uid}", run)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _file_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:60]
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{safe}-{digest}"


@contextlib.contextmanager
def _hold(kind: str, name: str, timeout: float | None) -> Iterator[None]:
    path = lock_dir() / (_file_name(name) + ".lock")
    fd = REAL.os_open(path, os.O_RDWR | os.O_CREAT, 0o600)
    reporter = locking._current
    lock_id = reporter.new_id() if reporter is not None else ""
    try:
        try:
            REAL.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait(fd, kind, name, lock_id, timeout, reporter)
        else:
            if reporter is not None:
                reporter.acquired(kind, name, lock_id)
        try:
            yield
        finally:
            REAL.flock(fd, fcntl.LOCK_UN)
            reporter = locking._current
            if reporter is not None and lock_id:
                reporter.released(kind, name, lock_id)
    finally:
        REAL.close(fd)


def _wait(
    fd: int,
    kind: str,
    name: str,
    lock_id: str,
    timeout: float | None,
    reporter: locking.LockReporter | None,
) -> None:
    start = reporter.wait(kind, name, lock_id) if reporter is not None else now()
    try:
        if timeout is None:
            REAL.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = REAL.monotonic() + timeout
            delay = 0.005
            while True:
                try:
                    REAL.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    left = deadline - REAL.monotonic()
                    if left <= 0:
                        raise LockTimeout(
                            f"{kind} lock {name!r} not acquired within {timeout:g}s ({worker_id()})"
                        ) from None
                    REAL.sleep(min(delay, left))
                    delay = min(delay * 2, 0.1)
    except BaseException as exc:
        if reporter is not None:
            text = exc_text(exc)
            reporter.failed(
                kind,
                name,
                lock_id,
                now() - start,
                text,
                "timeout" if isinstance(exc, LockTimeout) else None,
            )
        raise
    if reporter is not None:
        reporter.acquired(kind, name, lock_id, waited=now() - start)


def lock(name: str, timeout: float | None = None) -> contextlib.AbstractContextManager[None]:
    """A named lock shared by every worker of the run: ``with monitor.lock("migrations"):``.

    ``timeout`` seconds (``None``: wait for ever) after which :class:`LockTimeout` is raised.
    Not re-entrant: taking it again inside itself waits for ever (or times out).
    """
    return _hold(KIND_LOCK, name, timeout)


def run_once(name: str, fn: Callable[[], T], timeout: float | None = None) -> T:
    """Run ``fn`` in the first worker that gets here; the others wait and get its result.

    The result must be JSON-serialisable (every worker, the first included, receives the
    JSON round-tripped value). If ``fn`` raises, that worker sees its exception and every
    other worker gets :class:`RunOnceFailed` naming the worker and the error. The result
    is kept for the rest of the run (per run, see :func:`lock_dir`).
    """
    result_path = lock_dir() / (_file_name(name) + ".once.json")
    with _hold(KIND_ONCE, name, timeout):
        if result_path.exists():
            record: dict[str, Any] = REAL.json_loads(result_path.read_text())
            if record.get("ok"):
                return cast(T, record.get("value"))
            raise RunOnceFailed(
                f"run_once({name!r}) failed on {record.get('worker', '?')}: {record.get('error')}"
            )
        try:
            value = fn()
            text = REAL.json_dumps({"ok": True, "worker": worker_id(), "value": value})
        except BaseException as exc:
            failure = {"ok": False, "worker": worker_id(), "error": exc_text(exc)}
            _write(result_path, REAL.json_dumps(failure))
            raise
        _write(result_path, text)
        return cast(T, REAL.json_loads(text)["value"])


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    REAL.replace(tmp, path)
