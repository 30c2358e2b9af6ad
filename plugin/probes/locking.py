"""What every lock probe shares: attribution to worker/test/fixture and the four lock events.

The probes patch library classes (``filelock.BaseFileLock``, SQLAlchemy's ``Engine``), which
is process-wide by nature, so the reporter they talk to is process-wide too: the worker
recorder installs one with :func:`activate` when it starts and removes it when it finishes.
With no reporter active (no ``--monitor``), every probe entry point is a single ``None``
check and the library behaves as if unpatched.

Cost when uncontended: one ``acquired`` and one ``released`` event per acquisition (a
struct appended to the sender's queue); a ``wait`` event only when the first, non-blocking
attempt failed.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Literal

from .. import events as ev
from ..activity import WorkerActivity
from ..clock import now

Emit = Callable[[ev.Event], None]


class LockReporter:
    """Emits :class:`~testmon_live.plugin.events.LockEvent` attributed to the current test."""

    def __init__(self, emit: Emit, activity: WorkerActivity) -> None:
        self.emit = emit
        self.activity = activity
        self._ids = itertools.count(1)
        self._held: dict[str, tuple[str, str, float]] = {}
        """lock_id -> (kind, key, acquired at) for locks this process holds now."""
        self._guard = threading.Lock()

    def new_id(self) -> str:
        return f"{next(self._ids):x}"

    def _emit(
        self,
        t: float,
        action: Literal["wait", "acquired", "released", "failed"],
        kind: str,
        key: str,
        lock_id: str,
        **detail: object,
    ) -> None:
        """One lock event, attributed to the test and fixture running now."""
        act = self.activity
        self.emit(
            ev.LockEvent(
                ts=t,
                action=action,
                kind=kind,
                key=key,
                lock_id=lock_id,
                test=act.test,
                fixture=act.fixture,
                **detail,  # type: ignore[arg-type]
            )
        )

    def wait(self, kind: str, key: str, lock_id: str, holder: ev.Holder | None = None) -> float:
        """A wait began; marks the worker as waiting. Returns its start time."""
        t = now()
        self.activity.waiting = f"lock:{key}"
        self._emit(t, "wait", kind, key, lock_id, holder=holder)
        return t

    def acquired(
        self,
        kind: str,
        key: str,
        lock_id: str,
        waited: float | None = None,
        holder: ev.Holder | None = None,
    ) -> None:
        t = now()
        if waited is not None:
            self.activity.waiting = None
        with self._guard:
            self._held[lock_id] = (kind, key, t)
        self._emit(t, "acquired", kind, key, lock_id, waited=waited, holder=holder)

    def released(self, kind: str, key: str, lock_id: str) -> None:
        t = now()
        with self._guard:
            entry = self._held.pop(lock_id, None)
        held = t - entry[2] if entry is not None else None
        self._emit(t, "released", kind, key, lock_id, held=held)

    def failed(
        self,
        kind: str,
        key: str,
        lock_id: str,
        waited: float | None,
        error: str | None,
        reason: Literal["timeout", "refused", "deadlock"] | None = None,
        holder: ev.Holder | None = None,
    ) -> None:
        self.activity.waiting = None
        self._emit(
            now(), "failed", kind, key, lock_id,
            waited=waited, error=ev.clip(error, 2000), reason=reason, holder=holder,
        )  # fmt: skip

    def release_all(self, kind: str, prefix: str = "") -> None:
        """Release every held lock of ``kind`` whose lock id starts with ``prefix``."""
        with self._guard:
            gone = [
                (lock_id, entry)
                for lock_id, entry in self._held.items()
                if entry[0] == kind and lock_id.startswith(prefix)
            ]
        for lock_id, (k, key, _t) in gone:
            self.released(k, key, lock_id)


_current: LockReporter | None = None


def current() -> LockReporter | None:
    """The reporter of this process's recording worker, ``None`` when not recording."""
    return _current


def activate(reporter: LockReporter | None) -> None:
    global _current
    _current = reporter
