"""The workers of a run as the fold sees them, and the base of the fold's parts.

:class:`WorkerFold` keeps the run's workers by id; :class:`~.locks.LockFold`,
:class:`~.containers.ContainerFold` and :class:`~.fold.RunState` build on it.
"""

from __future__ import annotations

import itertools
import re

import msgspec

from testmon_live.plugin import events as ev

CLOCK_SLACK = 0.02
"""Seconds two workers' clocks may disagree: events of two workers this close are not
ordered (back-to-back setups or migrations are no race)."""

# The worker states a viewer shows, in the order of precedence used by WorkerView.state.
WORKER_STATES = (
    "starting",
    "collecting",
    "idle",
    "setup",
    "call",
    "teardown",
    "finishing",
    "waiting on lock",
    "waiting on container",
    "stalled",
    "unresponsive",
    "crashed",
    "done",
)

PHASES = frozenset({"setup", "call", "teardown"})
"""The phases of a test."""


class StallPlace(msgspec.Struct):
    """A place a stall moved to, found by a later sample: the stall as that sample saw it."""

    elapsed: float
    """Seconds the phase had run at the sample that found it there."""
    before: float
    """Seconds the phase had run at the sample just before it, the last that still found the
    stall at the place before (samples that found it unmoved included)."""
    frame: ev.Frame | None
    """The user's frame it was at (the key: a place is left when it changes)."""
    stall: ev.Stall
    """The first sample with this place's location and every thread as sampled then."""


class StallRecord(msgspec.Struct):
    """One stall of one worker: its first sample, every thread as last sampled, its end,
    and the places later samples found it at (where the first sample's had been left)."""

    w: str
    reason: str
    """``stall`` (the worker's watchdog) or ``unresponsive`` (stacks taken by the hub)."""
    first: ev.Stall
    threads: dict[int, ev.ThreadStack] = msgspec.field(default_factory=dict)
    """ident -> the thread as its latest sample showed it."""
    elapsed: float = 0.0
    """Seconds the phase had run at the latest sample."""
    samples: int = 1
    duration: float | None = None
    """Seconds the stalled phase ran in all, once it ended (None: never ended in the log);
    of an unresponsive spell, how long the worker was silent."""
    ended: float | None = None
    watched: bool = False
    """An unresponsive spell that the worker's own watchdog sampled once the worker came
    back, the phase still running: it ends with the phase, as a stall does."""
    moves: list[StallPlace] = msgspec.field(default_factory=list)
    """Where later samples found the stall once it had left the first sample's place, in
    order (each only when the place changed)."""

    @property
    def test(self) -> str | None:
        return self.first.test

    @property
    def thread_list(self) -> list[ev.ThreadStack]:
        return list(self.threads.values())

    def merge(self, e: ev.Stall) -> None:
        before = min(self.elapsed, e.elapsed)  # the previous sample's: still at the old place
        for thread in e.threads:
            self.threads[thread.ident] = thread
        self.elapsed = max(self.elapsed, e.elapsed)
        self.samples += 1
        self._moved(e, before)

    def _moved(self, e: ev.Stall, before: float) -> None:
        """Note a new place if the threads as now sampled are at another user frame."""
        from testmon_live.plugin.probes.stacks import frame_text, location_frame

        frame = location_frame(e.threads if e.sample == 1 else self.thread_list)
        was = self.moves[-1].frame if self.moves else location_frame(self.first.threads)
        if frame is None or frame == was:
            return
        text = e.location if e.location and e.sample == 1 else frame_text(frame, self._root())
        stall = msgspec.structs.replace(self.first, location=text, threads=self.thread_list)
        place = StallPlace(elapsed=e.elapsed, before=before, frame=frame, stall=stall)
        self.moves.append(place)

    def _root(self) -> str | None:
        """The folder the first sample's location is relative to (the worker's), so that
        later places read as it does."""
        from testmon_live.plugin.probes.stacks import location_frame

        frame = location_frame(self.first.threads)
        text = self.first.location
        if frame is None or not text:
            return None
        path = text.rsplit(f":{frame.line} in ", 1)[0]
        if path == frame.file or not frame.file.endswith(path):
            return None
        return frame.file[: -len(path)]

    @property
    def at_place(self) -> ev.Stall:
        """The stall as sampled where it spent its time. Once it ended, the place that held
        it longest: the first from the phase's start (it was there before the threshold,
        as far as anyone knows), each place until halfway from the last sample that still
        found it there (unmoved samples, backed off, are far apart) to the sample that
        found the next (when it moved between them is unknown), the last until the end.
        While it goes on (or if it never ended), where the latest sample found it. The
        first sample itself when it never moved, or spent longest there."""
        if not self.moves:
            return self.first
        if self.duration is None:
            return self.moves[-1].stall
        bounds = [0.0, *((m.before + m.elapsed) / 2 for m in self.moves)]
        bounds.append(max(self.duration, self.elapsed))
        spans = [end - start for start, end in itertools.pairwise(bounds)]
        longest = max(range(len(spans)), key=lambda i: (spans[i], i))
        return self.first if longest == 0 else self.moves[longest - 1].stall

    @property
    def left_from(self) -> str | None:
        """The first sample's location when the stall is told at another place."""
        place = self.at_place
        if place is self.first or place.location == self.first.location:
            return None
        return self.first.location


class Spell(msgspec.Struct):
    """One unresponsive spell of one worker: from the hub's first note of its silence to
    its recovery (if it came back)."""

    w: str
    first: ev.Unresponsive
    silent: float
    """Seconds without a sign of life: so far, or in all once it recovered."""
    recovered: float | None = None
    """When it came back (None: it did not, in the log)."""

    @property
    def test(self) -> str | None:
        return self.first.test


class WorkerView(msgspec.Struct):
    """What is known of one worker now."""

    id: str
    pid: int | None = None
    host: str = ""
    spec: str = ""
    remote: bool = False
    phase: str = "starting"
    test: str | None = None
    fixture: str | None = None
    since: float = 0.0
    """When the current phase began."""
    test_started: float | None = None
    """When the current test's first phase seen began (None: no test in progress)."""
    call_started: float | None = None
    """When the current test's call began (None: not reached yet)."""
    waiting: str | None = None
    started: float | None = None
    ended: float | None = None
    collected: int | None = None
    tests: int = 0
    failures: int = 0
    busy: float = 0.0
    """Seconds in its finished tests, each test's span (:func:`~..events.test_span`: its
    phases and the time between them), and the attempts before a rerun."""
    setup_time: float = 0.0
    call_time: float = 0.0
    teardown_time: float = 0.0
    reporting_time: float = 0.0
    """Seconds of its finished tests between their phases, in none: pytest making a
    phase's report (a failure's text) and handing it on (see :func:`~..events.test_span`)."""
    cpu: float = 0.0
    rss: int = 0
    threads: int = 0
    last_seen: float = 0.0
    last_heartbeat: float | None = None
    dropped: dict[str, int] = msgspec.field(default_factory=dict)
    crash: ev.WorkerCrashed | None = None
    replaced_by: str | None = None
    """The worker xdist started in its place after it crashed."""
    replaces: str | None = None
    """The crashed worker this one was started in place of."""
    down: bool = False
    stall: ev.Stall | None = None
    unresponsive: bool = False
    last_test: str | None = None
    last_test_end: float = 0.0
    """When its latest finished test ended (0: none yet)."""
    last_test_duration: float = 0.0
    """Its latest finished test's span (:func:`~..events.test_span`)."""
    first_test_start: float = 0.0
    """When its first finished test began (0: none yet)."""
    longest_duration: float = 0.0
    longest_test: str | None = None
    """Its longest test so far (its span ``longest_duration``, ending at ``longest_end``)."""
    longest_end: float = 0.0
    current_stall: StallRecord | None = None
    """The stall (or unresponsive spell) going on now, for a stuck-threads panel."""
    main_thread: int | None = None
    dump_signal: int | None = None
    dump_file: str | None = None

    def open_phases(self, now: float) -> list[tuple[str, float, float]]:
        """The test in progress, its phases so far as ``(phase, start, end)``, the one it is
        in open until ``now``: a running test counts up to now wherever time is summed
        (busy shares, the time breakdown, the timeline). Empty between tests."""
        begin = self.test_started
        if begin is None or self.down or self.crash is not None or self.phase not in PHASES:
            return []
        since, call = self.since, self.call_started
        end = max(now, since)
        if self.phase == "setup":
            spans = [("setup", begin, end)]
        elif self.phase == "call":
            spans = [("setup", begin, since), ("call", since, end)]
        elif call is not None:
            spans = [("setup", begin, call), ("call", call, since), ("teardown", since, end)]
        else:
            spans = [("setup", begin, since), ("teardown", since, end)]
        return [(phase, a, b) for phase, a, b in spans if b > a]

    def open_time(self, now: float) -> dict[str, float]:
        """Seconds of the test in progress so far, by phase (see :meth:`open_phases`)."""
        out = {"setup": 0.0, "call": 0.0, "teardown": 0.0}
        for phase, a, b in self.open_phases(now):
            out[phase] += b - a
        return out

    def busy_at(self, now: float | None) -> float:
        """Seconds in tests: the finished ones, and with ``now`` the one in progress so far."""
        if now is None:
            return self.busy
        return self.busy + sum(b - a for _, a, b in self.open_phases(now))

    @property
    def state(self) -> str:
        """One of :data:`WORKER_STATES`."""
        if self.crash is not None:
            return "crashed"
        if self.down:
            return "done"
        if self.unresponsive:
            return "unresponsive"
        if self.stall is not None:
            return "stalled"
        if self.waiting:
            if self.waiting.startswith("container"):
                return "waiting on container"
            return "waiting on lock"
        return self.phase


_NUMBERED = re.compile(r"([^0-9]*)([0-9]+)", re.ASCII)


def worker_order(wid: str) -> tuple[str, int, str]:
    """Sort key: gw2 before gw10; ``main`` and others by name. Any id at all: only ASCII
    digits count as a number (``gw²`` is a name: ``int("²")`` fails)."""
    match = _NUMBERED.fullmatch(wid)
    return (match.group(1), int(match.group(2)), "") if match else (wid, -1, wid)


class WorkerFold:
    """The run's workers by id: what every part of the fold updates."""

    def __init__(self, detail: bool = True) -> None:
        self.detail = detail
        self.workers: dict[str, WorkerView] = {}

    def worker(self, wid: str) -> WorkerView:
        view = self.workers.get(wid)
        if view is None:
            view = self.workers[wid] = WorkerView(id=wid)
        return view

    def _seen(self, event: ev.Event) -> WorkerView:
        view = self.worker(event.w)
        if event.ts > view.last_seen:
            view.last_seen = event.ts
        return view
