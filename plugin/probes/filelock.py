"""``filelock`` (what the pytest-xdist docs recommend for run-once session fixtures).

``BaseFileLock.acquire`` and ``release`` are wrapped on the class, so every lock type
(Unix, Windows, soft) in every module is seen. An acquisition first tries once without
blocking: when that succeeds (the uncontended case) the wrapper adds one ``acquired``
event and nothing else; only when it fails is a ``wait`` emitted before the real, blocking
acquire runs with the caller's own timeout. Re-entrant acquisitions of a lock the instance
already holds pass straight through, as do acquisitions made while no recorder is active.

Who holds a contended lock is not looked up here: the hub's fold knows which worker
acquired which path and has not released it (:meth:`RunState.lock_holders`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

from ..clock import now
from ..guard import abspath, exc_text, text_of
from . import locking
from .imports import when_imported

__tracebackhide__ = True
"""pytest leaves this module's frames out of the traceback of a failure: its wrappers sit
between the user's code and the library it called, and a failure reads as without the
monitor."""

KIND = "filelock"
_PATCHED = "_testmon_live_patched"

_ids: dict[int, str] = {}
"""id(lock instance) -> lock id of the acquisition it holds (monitored ones only)."""


def install() -> None:
    """Patch filelock now if it is loaded, else as soon as it is imported."""
    when_imported("filelock", _patch)


def _patch(module: ModuleType) -> None:
    base = getattr(module, "BaseFileLock", None)
    if base is None or getattr(base, _PATCHED, False):
        return
    original_acquire = base.acquire
    original_release = base.release
    if inspect.iscoroutinefunction(original_acquire):
        return
    params = inspect.signature(original_acquire).parameters
    has_blocking = "blocking" in params
    timeout_error: type[BaseException] = getattr(module, "Timeout", TimeoutError)
    try_once: dict[str, Any] = {"blocking": False} if has_blocking else {"timeout": 0}
    acquire = _make_acquire(original_acquire, timeout_error, try_once)
    release = _make_release(original_release)
    base.acquire = acquire
    base.release = release
    setattr(base, _PATCHED, True)
    # Async locks override acquire with a coroutine; they keep their own (unwrapped) path.


def _key(lock: Any) -> str:
    return abspath(text_of(lock.lock_file))


def _make_acquire(
    original: Callable[..., Any], timeout_error: type[BaseException], try_once: dict[str, Any]
) -> Callable[..., Any]:
    def acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        reporter = locking._current
        if reporter is None or self.is_locked:
            return original(self, *args, **kwargs)
        key = _key(self)
        timeout = kwargs.get("timeout", args[0] if args else None)
        if kwargs.get("blocking") is False or timeout == 0:
            proxy = original(self, *args, **kwargs)  # a try-lock: no wait to report
            lock_id = _ids[id(self)] = reporter.new_id()
            reporter.acquired(KIND, key, lock_id)
            return proxy
        try:
            proxy = original(self, **try_once)
        except timeout_error:
            pass
        else:
            lock_id = _ids[id(self)] = reporter.new_id()
            reporter.acquired(KIND, key, lock_id)
            return proxy
        lock_id = reporter.new_id()
        start = reporter.wait(KIND, key, lock_id)
        try:
            proxy = original(self, *args, **kwargs)
        except BaseException as exc:
            text = exc_text(exc)
            reporter.failed(
                KIND,
                key,
                lock_id,
                now() - start,
                text,
                "timeout" if isinstance(exc, timeout_error) else None,
            )
            raise
        _ids[id(self)] = lock_id
        reporter.acquired(KIND, key, lock_id, waited=now() - start)
        return proxy

    acquire.__wrapped__ = original  # type: ignore[attr-defined]
    acquire.__doc__ = original.__doc__
    return acquire


def _make_release(original: Callable[..., Any]) -> Callable[..., Any]:
    def release(self: Any, *args: Any, **kwargs: Any) -> Any:
        lock_id = _ids.get(id(self))
        if lock_id is None:
            return original(self, *args, **kwargs)
        result = original(self, *args, **kwargs)
        if not self.is_locked and _ids.pop(id(self), None) is not None:
            reporter = locking._current
            if reporter is not None:
                reporter.released(KIND, _key(self), lock_id)
        return result

    release.__wrapped__ = original  # type: ignore[attr-defined]
    release.__doc__ = original.__doc__
    return release
