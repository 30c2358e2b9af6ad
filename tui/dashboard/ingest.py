"""The dashboard's ingest: a :class:`~.sources.Sink` that folds a source's events.

It runs in a Textual thread worker, never on the UI thread. It folds with the one fold of
the project (:class:`~testmon_live.plugin.state.RunState`) under :attr:`Ingest.lock`, keeps
a bounded ring of recent raw events for the event view, and posts past-tense messages to
the app: :class:`RunReset`, :class:`StatusChanged` and :class:`StreamStateChanged` as they
happen, :class:`StateChanged` at most every :data:`POST_INTERVAL` seconds and only when the
app took the previous one (so a burst of events costs the UI one redraw, and a UI that
falls behind is not flooded).
The UI reads the state under the same lock while it renders.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import msgspec
from textual.message import Message

from testmon_live.plugin import events as ev
from testmon_live.plugin.state import RunState, WorkerView
from testmon_live.tui.reports.document import printable
from testmon_live.tui.reports.logs import INCOMPLETE

from .eta import History, estimate, read_history
from .sources import StreamState

POST_INTERVAL = 0.1
"""Seconds between two StateChanged messages at most (10 redraws a second)."""
RAW_KEPT = 20_000
"""Raw events kept for the event view (the newest ones)."""
NO_END = "no end recorded"
"""The state of a worker still busy when its run's log ended (killed or crashed run)."""


_MAYBE_CONTROL = (b"\\", b"\x7f", b"\xc2", b"\xe2")
"""Bytes the JSON encoding of a :data:`~testmon_live.tui.reports.document.CONTROL` character
starts with (C0 controls are escaped with a backslash, the rest are UTF-8 from 0x7f, 0xc2 or
0xe2 on): one byte each, searched at memchr speed; any text with one of them is walked."""


def printable_events(batch: list[ev.Event]) -> None:
    """Make the text of every event :func:`printable`, in place: a log is untrusted, and an
    escape sequence in a test name must not clear the dashboard. One C-speed look at the
    batch's JSON spares the walk through every field of a batch that has nothing to hide."""
    try:
        data = msgspec.json.encode(batch)
    except (msgspec.EncodeError, UnicodeEncodeError):  # lone surrogates: walk it
        data = b"\\u00"
    if any(mark in data for mark in _MAYBE_CONTROL):
        for event in batch:
            _printable_fields(event)


def _printable_fields(obj: msgspec.Struct) -> None:
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        cleaned = _printable_value(value)
        if cleaned is not value:
            setattr(obj, name, cleaned)


def _printable_value(value: object) -> object:
    if isinstance(value, str):
        return value if value.isprintable() else printable(value)
    if isinstance(value, msgspec.Struct):
        _printable_fields(value)
    elif isinstance(value, list):
        value[:] = [_printable_value(item) for item in value]
    elif isinstance(value, dict):
        items = [(_printable_value(k), _printable_value(v)) for k, v in value.items()]
        value.clear()
        value.update(items)
    return value


class RunReset(Message):
    """A new run (or a replay seeking backwards) starts from an empty state."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label


class StatusChanged(Message):
    """The source said something the user should read."""

    def __init__(self, text: str, level: str) -> None:
        super().__init__()
        self.text = text
        self.level = level


class StreamStateChanged(Message):
    """A live run's stream ended, was lost, or the hub dropped this viewer."""

    def __init__(self, state: StreamState, text: str) -> None:
        super().__init__()
        self.state = state
        self.text = text


class StateChanged(Message):
    """Events were folded since the last redraw."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, StateChanged)


class Ingest:
    """Folds a source's events for the dashboard; the UI reads it under :attr:`lock`."""

    def __init__(
        self, post: Callable[[Message], object], clock: Callable[[], float] = time.time
    ) -> None:
        self.post = post
        self.wall = clock
        self.lock = threading.RLock()
        self.state = RunState(detail=True)
        self.label = ""
        self.path: Path | None = None
        self.raw: deque[ev.Event] = deque(maxlen=RAW_KEPT)
        self.raw_total = 0
        """Events ever added to :attr:`raw` since the reset (a view caching their text
        encodes only the ones it has not seen)."""
        self.done: set[str] = set()
        """Node ids finished (for the ETA)."""
        self.history = History()
        """What earlier runs of the same tests took (for the ETA)."""
        self.replay_now: float | None = None
        self.stream: StreamState | None = None
        """What became of the live stream of this run (None: nothing yet, or a replay)."""
        self.lost = False
        """The hub went away without finishing the run (:attr:`StreamState.LOST`)."""
        self.lost_at: float | None = None
        """The wall clock when the hub was found gone: elapsed stops there, not before."""
        self.cut_short = False
        """A replay reached the end of a log without the run's end that nobody writes."""
        self.status_text = ""
        self.status_level = "info"
        self.generation = 0
        """Bumped on every reset: widgets drop their caches when it changes."""
        self.version = 0
        """Bumped on every folded batch."""
        self.pending = False
        self._last_post = 0.0

    # ------------------------------------------------------------------ Sink

    def reset(self, label: str, path: Path | None) -> None:
        history = read_history(path) if path is not None else History()
        label = printable(label)
        with self.lock:
            self.state = RunState(detail=True)
            self.label = label
            self.path = path
            self.raw.clear()
            self.raw_total = 0
            self.done = set()
            self.history = history
            self.replay_now = None
            self.stream = None
            self.lost = False
            self.lost_at = None
            self.cut_short = False
            self.generation += 1
            self.version += 1
        gc.unfreeze()  # the previous run's objects may be collected again
        self.post(RunReset(label))

    def events(self, batch: list[ev.Event]) -> None:
        printable_events(batch)
        with self.lock:
            apply = self.state.apply
            if self.history:  # node ids done only matter for the ETA
                done = self.done
                for event in batch:
                    apply(event)
                    if type(event) is ev.TestFinished:
                        done.add(event.nodeid)
            else:
                for event in batch:
                    apply(event)
            self.raw.extend(batch)
            self.raw_total += len(batch)
            self.version += 1
        # What was folded stays for the run's life: take it out of the cyclic collector's
        # sight, or every full collection walks the whole run (pauses of 0.3-0.9 s at a few
        # 100,000 tests, seen as screen lag). Frozen objects are still freed by refcount.
        gc.freeze()
        self._maybe_post()

    def status(self, text: str, level: str = "info") -> None:
        text = printable(text)
        with self.lock:
            self.status_text = text
            self.status_level = level
        self.post(StatusChanged(text, level))

    def stream_state(self, state: StreamState, text: str) -> None:
        with self.lock:
            self.stream = state
            self.status_text = text
            self.status_level = state.level
            if state is StreamState.LOST and not self.lost:
                self.lost = True
                self.lost_at = max(self.wall(), self.state.last_ts)
        self.post(StreamStateChanged(state, text))

    def clock(self, now: float) -> None:
        with self.lock:
            self.replay_now = now
            self.version += 1
        self._maybe_post()

    def incomplete(self) -> None:
        with self.lock:
            self.cut_short = True
            self.version += 1
        self._maybe_post()

    # ------------------------------------------------------------ throttling

    def _maybe_post(self) -> None:
        now = time.monotonic()
        if self.pending or now - self._last_post < POST_INTERVAL:
            return
        self.pending = True
        self._last_post = now
        self.post(StateChanged())

    def taken(self) -> None:
        """The UI handled a StateChanged: the next one may be posted."""
        self.pending = False

    # --------------------------------------------------------------- derived

    def now(self) -> float:
        """The time the dashboard shows: replay clock, end of run, or the wall clock."""
        state = self.state
        if self.replay_now is not None:
            return self.replay_now
        if state.end is not None:
            return state.end.ts
        if self.lost_at is not None:
            return self.lost_at
        if self.lost or state.header is None:
            return state.last_ts
        return self.wall()

    def run_status(self) -> str:
        """The run's status in the words of ``testmon runs`` and ``report``
        (:data:`~testmon_live.tui.reports.logs.STATUSES`): running / finished / interrupted /
        crashed (pytest's internal or usage error) / incomplete (no end record, and none will
        come: the hub vanished, or a replayed log was cut short), or waiting (no run yet)."""
        if self.state.header is None and self.state.end is None and not self.lost:
            return "waiting"
        if self.state.end is None and (self.lost or self.cut_short):
            return INCOMPLETE
        return self.state.status

    def worker_state(self, view: WorkerView) -> str:
        """The worker's state; in a log cut short, what it still did is not known."""
        state = view.state
        cut_short = self.state.end is None and (self.cut_short or self.lost)
        return NO_END if cut_short and state not in ("done", "crashed") else state

    def eta(self) -> float | None:
        """Seconds left, from what earlier runs of the same tests took (:mod:`.eta`); None
        without an earlier run (nothing to go by: no guess is shown)."""
        state = self.state
        if state.end is not None or self.cut_short or self.lost or not self.history:
            return None
        return estimate(self.history, state, self.done, self.now())
