"""Stall detection: a phase that runs past ``--monitor-stall`` gets every thread's stack.

A check on the watchdog's tick (:attr:`Watchdog.extra_checks`). While nothing stalls it
compares one timestamp. Once the current phase (test setup, call, teardown, a fixture in
them, collection) has run ``threshold`` seconds, it samples all threads twice, a tick
apart (so a moving stack and a burning CPU tell busy from blocked), and records a
:class:`~testmon_live.plugin.events.Stall`. While the stall lasts it samples again at a
slowing pace (1 s, 2 s, 4 s ... at most every 30 s) and records only threads whose stack
or verdict changed. When the phase moves on it records
:class:`~testmon_live.plugin.events.StallEnded`.

Stall records are queued with ``emit_always`` (never dropped, the sender wakes at once), so
a worker killed soon after - by pytest-timeout, by a CI timeout - has already shipped it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import events as ev
from ..activity import WorkerActivity
from ..clock import now
from ..guard import REAL

if TYPE_CHECKING:
    from .stacks import Sample

IDLE_PHASES = frozenset({"idle", "finish"})
"""Phases in which a worker waits for work or shuts down: never a stall."""
FIRST_RESAMPLE = 1.0
MAX_RESAMPLE = 30.0


class StallDetector:
    """Watches one worker's activity; call :meth:`check` on every watchdog tick."""

    def __init__(
        self,
        activity: WorkerActivity,
        emit: Callable[[ev.Event], None],
        threshold: float,
        *,
        skip: Callable[[], set[int]] = set,
        root: str | None = None,
    ) -> None:
        self.activity = activity
        self._emit = emit
        self.threshold = threshold
        self._skip = skip
        self.root = root if root is not None else REAL.getcwd()
        self._key: tuple[str | None, str, float] | None = None
        """(test, phase, since) of the phase being sampled, None while nothing stalls."""
        self._previous: Sample | None = None
        self._sent: dict[int, tuple[str, tuple[tuple[str, int, str], ...]]] = {}
        self._samples = 0
        self._next = 0.0
        self._pace = FIRST_RESAMPLE
        self.stalls = 0

    def check(self, t: float) -> None:
        act = self.activity
        since = act.since
        if self._key is None:
            if t - since < self.threshold or act.phase in IDLE_PHASES:
                return
            self._begin(act.test, act.phase, since)
            return
        key = (act.test, act.phase, since)
        if key != self._key:
            self._end(t, since)
            return
        if t >= self._next:
            self._sample(t)

    def _begin(self, test: str | None, phase: str, since: float) -> None:
        from .stacks import Sample  # only once something stalls: ~2 ms of import

        self._key = (test, phase, since)
        self._previous = Sample(REAL.perf_counter(), self._skip())
        self._samples = 0
        self._sent = {}
        self._pace = FIRST_RESAMPLE
        self._next = 0.0  # the first Stall goes out on the next tick, against this sample

    def _sample(self, t: float) -> None:
        from .stacks import Sample, location

        sample = Sample(REAL.perf_counter(), self._skip())
        threads = sample.stacks(self._previous)
        self._previous = sample
        self._next = t + self._pace
        self._pace = min(self._pace * 2, MAX_RESAMPLE)
        key = self._key
        assert key is not None
        test, phase, since = key
        if self._samples:
            threads = [th for th in threads if self._sent.get(th.ident) != _mark(th)]
            if not threads:
                return
        self._samples += 1
        for th in threads:
            self._sent[th.ident] = _mark(th)
        act = self.activity
        stall = ev.Stall(
            ts=t,
            reason="stall",
            test=test,
            phase=phase,
            fixture=act.fixture,
            elapsed=max(0.0, t - since),
            location=location(threads, self.root) if self._samples == 1 else None,
            threads=threads,
            sample=self._samples,
        )
        if self._samples == 1:
            self.stalls += 1
        self._emit(stall)

    def _end(self, t: float, next_since: float) -> None:
        key = self._key
        self._key = None
        self._previous = None
        if key is None or not self._samples:
            return
        test, _phase, since = key
        # The next phase began when this one ended (the watchdog may notice it later).
        end = next_since if since < next_since <= t else t
        self._emit(ev.StallEnded(ts=t, test=test, duration=max(0.0, end - since)))


def _mark(thread: ev.ThreadStack) -> tuple[str, tuple[tuple[str, int, str], ...]]:
    return thread.verdict, tuple((f.file, f.line, f.func) for f in thread.frames)


def dump(
    activity: WorkerActivity,
    skip: set[int],
    request: int | None = None,
    root: str | None = None,
    settle: float = 0.1,
) -> ev.Stall:
    """Every thread's stack now (asked for by a viewer): two samples ``settle`` s apart."""
    from .stacks import Sample, location

    first = Sample(REAL.perf_counter(), skip)
    REAL.Event().wait(settle)
    threads = Sample(REAL.perf_counter(), skip).stacks(first)
    t = now()
    return ev.Stall(
        ts=t,
        reason="dump",
        test=activity.test,
        phase=activity.phase,
        fixture=activity.fixture,
        elapsed=max(0.0, t - activity.since),
        location=location(threads, root if root is not None else REAL.getcwd()),
        threads=threads,
        request=request,
    )
