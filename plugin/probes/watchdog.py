"""The worker's watchdog thread: heartbeats once a second, activity changes as they happen.

It samples :class:`~testmon_live.plugin.activity.WorkerActivity` a few times a second and
emits an :class:`~testmon_live.plugin.events.Activity` event when it changed, so viewers
see the current test and phase live without the hot path sending anything per phase.
A worker whose GIL is held by native code cannot run this thread: the silence is the
signal the hub looks for.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .. import events as ev
from ..activity import WorkerActivity
from ..clock import now
from ..guard import REAL, repr_of

TICK = 0.25
HEARTBEAT_EVERY = 1.0

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resources() -> tuple[int, float, int]:
    """(RSS bytes, CPU seconds, thread count) of this process, cheaply."""
    times = REAL.times()
    cpu = times.user + times.system
    rss = 0
    threads = REAL.active_count()
    try:
        with REAL.open("/proc/self/statm", "rb") as handle:
            rss = int(handle.read().split()[1]) * _PAGE
        with REAL.open("/proc/self/stat", "rb") as handle:
            # field 20 (num_threads), after the parenthesised command name
            threads = int(handle.read().rsplit(b")", 1)[1].split()[17])
    except (OSError, ValueError, IndexError):
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return rss, cpu, threads


class Watchdog:
    """Background thread emitting Activity (on change) and Heartbeat (every second)."""

    def __init__(
        self,
        activity: WorkerActivity,
        emit: Callable[[ev.Event], None],
        *,
        dropped: Callable[[], int] = lambda: 0,
        pending: Callable[[], int] = lambda: 0,
        tick: float = TICK,
        heartbeat_every: float = HEARTBEAT_EVERY,
    ) -> None:
        self.activity = activity
        self._emit = emit
        self._dropped = dropped
        self._pending = pending
        self._tick = tick
        self._heartbeat_every = heartbeat_every
        self._stop = REAL.Event()
        self._last: tuple[str | None, str, str | None, float, str | None] | None = None
        self._thread = REAL.Thread(target=self._run, name="testmon-live-watchdog", daemon=True)
        self.extra_checks: list[Callable[[float], None]] = []
        """Called every tick with the current time (stall detection hooks in here)."""
        self.beats = 0
        """Heartbeats sent so far."""

    def start(self) -> None:
        self._thread.start()

    @property
    def ident(self) -> int | None:
        """The watchdog thread's ident (stall samples leave it out)."""
        return self._thread.ident

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def sample_activity(self) -> None:
        snap = self.activity.snapshot()
        if snap != self._last:
            self._last = snap
            test, phase, fixture, since, waiting = snap
            self._emit(
                ev.Activity(
                    ts=now(), test=test, phase=phase, fixture=fixture, since=since, waiting=waiting
                )
            )

    def heartbeat(self) -> None:
        self.beats += 1
        rss, cpu, threads = resources()
        act = self.activity
        t = now()
        self._emit(
            ev.Heartbeat(
                ts=t,
                test=act.test,
                phase=act.phase,
                fixture=act.fixture,
                elapsed=max(0.0, t - act.since),
                rss=rss,
                cpu=cpu,
                threads=threads,
                dropped=self._dropped(),
                pending=self._pending(),
            )
        )

    def _run(self) -> None:
        monotonic = REAL.monotonic
        next_beat = monotonic()
        while not self._stop.wait(self._tick):
            self.sample_activity()
            mono = monotonic()
            if mono >= next_beat:
                self.heartbeat()
                next_beat = mono + self._heartbeat_every
            if self.extra_checks:
                self._run_checks(now())

    def _run_checks(self, t: float) -> None:
        for check in list(self.extra_checks):
            try:
                check(t)
            # A broken check must not kill heartbeats: report it once and drop it.
            except Exception as exc:  # noqa: BLE001, PERF203 - once a second, not a hot loop
                self.extra_checks.remove(check)
                self._emit(
                    ev.Notice(
                        ts=t,
                        level="error",
                        source="watchdog",
                        msg=f"watchdog check {repr_of(check)} failed and was disabled: "
                        f"{repr_of(exc)}",
                    )
                )
