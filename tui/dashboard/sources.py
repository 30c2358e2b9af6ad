"""Where the dashboard's events come from: a live hub's socket, or a recorded log.

:class:`Source` is what the dashboard reads: :class:`LiveSource` (the newest live run of a
monitor folder, else the last recorded one until a run starts) and :class:`ReplaySource`
(a recorded log, at its end state or played at a speed) behind one interface. A source
runs in the dashboard's ingest thread and hands batches of events to a :class:`Sink`; what
becomes of a live stream (ended, lost, fell behind) it says with a :class:`StreamState`.
The hub's stream is read through :mod:`testmon_live.tui.hub_client`, its one parser.
"""

from __future__ import annotations

import abc
import enum
import queue
import threading
from pathlib import Path
from typing import Protocol

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import (
    RUNS_DIR,
    LiveRun,
    MonitorDir,
    RunLogError,
    SkippedLines,
    iter_log,
    live_runs,
)
from testmon_live.tui.hub_client import (
    CONNECT_TIMEOUT,
    LiveConnection,
    SourceError,
    Unreadable,
    fell_behind,
)

# ----------------------------------------------------------------- one interface

POLL_INTERVAL = 0.5
"""How often a live source looks for a new run under ``.testmon/live/``."""
RECV_TIMEOUT = 0.1
"""A live source wakes this often to notice a stop request."""
REPLAY_BATCH = 5000
"""Events handed to the sink at once when a replay jumps (to its end, or by a seek)."""
MAX_RECONNECTS = 3
"""Times a live source starts a run over after the hub dropped it for falling behind;
then it stops following that run and says so."""


def where(path: Path) -> str:
    """A folder as the user reads it: relative to the working directory when below it,
    from ``~`` when below the home directory, else whole."""
    for base, shown in ((Path.cwd(), ""), (Path.home(), "~/")):
        try:
            rest = path.resolve().relative_to(base.resolve())
        except (ValueError, OSError, RuntimeError):
            continue
        return f"{shown}{rest}" if str(rest) != "." else (shown.rstrip("/") or ".")
    return str(path)


class StreamState(enum.Enum):
    """What became of a live run's stream."""

    ENDED = "ended"
    """The hub said goodbye: the run finished."""
    LOST = "lost"
    """The hub went away without finishing the run (the controller was killed?)."""
    FELL_BEHIND = "fell behind"
    """The hub dropped this viewer for reading too slowly: starting over."""
    GAVE_UP = "gave up"
    """Fell behind :data:`MAX_RECONNECTS` times more: no longer following the run."""

    @property
    def level(self) -> str:
        """How its line is shown: info, warning or error."""
        return _LEVELS[self]


_LEVELS = {
    StreamState.ENDED: "info",
    StreamState.FELL_BEHIND: "warning",
    StreamState.LOST: "error",
    StreamState.GAVE_UP: "error",
}


class Sink(Protocol):
    """Where a source delivers: the dashboard's ingest worker (or a test's recorder)."""

    def reset(self, label: str, path: Path | None) -> None:
        """Start over with an empty state: another run, or a replay seeking backwards."""

    def events(self, batch: list[ev.Event]) -> None:
        """Events to fold, in order."""

    def status(self, text: str, level: str = "info") -> None:
        """A line for the user: what the source is doing, or what went wrong."""

    def clock(self, now: float) -> None:
        """Replays: the run time shown (the live source leaves the wall clock in charge)."""

    def incomplete(self) -> None:
        """Replays: the log ended without the run's end record and no pytest writes it any
        more (killed or crashed); until the next :meth:`reset`."""

    def stream_state(self, state: StreamState, text: str) -> None:
        """Live: what became of the run's stream, and the line for the user."""


class Source(abc.ABC):
    """A stream of one run's events (or of runs one after the other), live or replayed.

    :meth:`run` blocks (the dashboard calls it in a thread worker) until ``stop`` is set or
    the source has nothing more to say. Transport commands (:meth:`play_pause`, :meth:`step`,
    :meth:`seek`) steer replays and are answered with a status line by live sources.
    """

    label = ""
    replay = False
    """True when the transport commands do something."""

    @abc.abstractmethod
    def run(self, sink: Sink, stop: threading.Event) -> None: ...

    def play_pause(self) -> str:
        return "live run: nothing to pause"

    def step(self, seconds: float) -> str:
        return "live run: cannot step"

    def seek(self, seconds: float) -> str:
        return "live run: cannot seek"


def read_events(path: Path) -> tuple[list[ev.Event], SkippedLines]:
    """A log's events and the lines skipped; RunLogError for logs that cannot be read."""
    problems = SkippedLines()
    events = list(iter_log(path, problems))
    return events, problems


def problems_text(problems: SkippedLines) -> str:
    torn = [p for p in problems if p[1].startswith("torn last line")]
    text = f"skipped {len(problems):,} unreadable line(s) of the log"
    if torn:
        text += f"; the last line (line {torn[0][0]}) is torn: the run was killed or still writes"
    elif problems.examples:
        line, reason = problems.examples[0]
        text += f" (line {line}: {reason[:80]})"
    return text


INCOMPLETE_TEXT = (
    "the log ends without the run's end record: pytest was killed or crashed, or the log "
    "could not be written to the end (a full disk); "
    "what its workers did after their last event is not known"
)


def has_end(events: list[ev.Event]) -> bool:
    """The run's end record is among ``events``."""
    return any(type(e) is ev.RunFinished for e in events)


def still_written(path: Path) -> bool:
    """A pytest still writes this log: a live hub of its run in the log's monitor folder."""
    if path.parent.name != RUNS_DIR:
        return False
    return any(run.run_id == path.stem for run in live_runs(MonitorDir(path.parent.parent)))


class ReplaySource(Source):
    """A recorded run: its end state at once, or played from the start at ``speed`` x.

    At the end of a log that has no end record, the sink is told the run is
    :meth:`~Sink.incomplete` unless ``live`` (None: looked up, see :func:`still_written`):
    a log still written has no end yet, one whose pytest is gone never will.
    """

    replay = True

    def __init__(
        self,
        path: Path,
        speed: float | None = None,
        live: bool | None = None,
        until: float | None = None,
    ) -> None:
        self.path = path
        self.label = path.stem
        self.speed = speed
        self.live = live
        self.until = until
        """Show the end state at this moment (wall clock) rather than at the last event: a
        log cut at a moment of a run (the screenshots' scenes) is shown as it was then."""
        self.playing = speed is not None
        self._commands: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        self.events: list[ev.Event] = []
        self.position = 0.0
        """Seconds of run time shown, from the first event."""

    # transport: called from the UI thread, executed by the replay thread
    def play_pause(self) -> str:
        self._commands.put(("toggle", 0.0))
        return "replay: play/pause"

    def step(self, seconds: float) -> str:
        self._commands.put(("step", seconds))
        return f"replay: step {seconds:+g} s"

    def seek(self, seconds: float) -> str:
        self._commands.put(("seek", seconds))
        return f"replay: seek to {seconds:g} s"

    def run(self, sink: Sink, stop: threading.Event) -> None:
        sink.reset(self.label, self.path)
        if self.speed is None:
            # the end state: streamed, nothing kept but the fold (a seek reads the log again)
            if not self._stream_to_end(sink, stop):
                return
            while True:  # until a transport command asks for the events themselves
                try:
                    command, arg = self._commands.get(timeout=0.2)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                self._commands.put((command, arg))
                break
        try:
            events, problems = read_events(self.path)
        except RunLogError as exc:
            sink.status(str(exc), "error")
            return
        if problems and self.speed is not None:
            sink.status(problems_text(problems), "warning")
        self.events = events
        start = events[0].ts if events else 0.0
        last = max((e.ts for e in events), default=start)
        total = max(0.0, last - start)
        cursor = 0
        unfinished = not has_end(events) and not self._live()
        if self.speed is None:
            self.position = total
            cursor = len(events)
        speed = self.speed or 1.0
        tick = 0.05
        while not stop.is_set():
            try:
                command, arg = self._commands.get(timeout=tick)
            except queue.Empty:
                command, arg = "", 0.0
            target = self.position
            if command == "toggle":
                self.playing = not self.playing
                if self.playing and self.position >= total:
                    target = 0.0  # play again from the start
            elif command == "step":
                self.playing = False
                target = self.position + arg
            elif command == "seek":
                target = arg
            elif self.playing:
                target = self.position + tick * speed
            target = min(max(0.0, target), total)
            if command == "" and not self.playing:
                continue
            if target < self.position:
                sink.reset(self.label, self.path)
                cursor = 0
            self.position = target
            upto = start + target
            end = cursor
            while end < len(events) and events[end].ts <= upto:
                end += 1
            for lo in range(cursor, end, REPLAY_BATCH):
                sink.events(events[lo : min(end, lo + REPLAY_BATCH)])
            cursor = end
            sink.clock(upto)
            cut_short = target >= total and unfinished
            if cut_short:
                sink.incomplete()
            if self.playing and target >= total:
                self.playing = False
                note = f"; {INCOMPLETE_TEXT}" if cut_short else ""
                sink.status(f"replay: at the end of the run (space plays it again){note}")

    def _stream_to_end(self, sink: Sink, stop: threading.Event) -> bool:
        problems = SkippedLines()
        batch: list[ev.Event] = []
        last = 0.0
        finished = False
        try:
            for event in iter_log(self.path, problems):
                batch.append(event)
                if type(event) is ev.RunFinished:
                    finished = True
                if len(batch) >= REPLAY_BATCH:
                    if stop.is_set():
                        return False
                    last = max(last, batch[-1].ts)
                    sink.events(batch)
                    batch = []
        except RunLogError as exc:
            sink.status(str(exc), "error")
            return False
        if batch:
            last = max(last, max(e.ts for e in batch))
            sink.events(batch)
        if problems:
            sink.status(problems_text(problems), "warning")
        sink.clock(last if self.until is None else max(last, self.until))
        self._at_end(sink, finished, problems)
        return True

    def _live(self) -> bool:
        return self.live if self.live is not None else still_written(self.path)

    def _at_end(self, sink: Sink, finished: bool, problems: SkippedLines | None = None) -> None:
        """The whole log is shown: without an end record (and no pytest writing it) the
        run is incomplete, never 'running'."""
        if finished or self._live():
            return
        sink.incomplete()
        said = f"{problems_text(problems)}; " if problems else ""
        sink.status(said + INCOMPLETE_TEXT, "warning")


class LiveSource(Source):
    """The newest live run of a monitor folder; with none live, the last recorded run
    until one starts. Keeps watching after a run ends, and switches to the next one."""

    def __init__(
        self, mdir: MonitorDir, timeout: float = CONNECT_TIMEOUT, show_last: bool = True
    ) -> None:
        self.mdir = mdir
        self.show_last = show_last
        self.label = str(mdir.root)
        self.timeout = timeout

    def run(self, sink: Sink, stop: threading.Event) -> None:
        seen: set[str] = set()
        showing: str | None = None
        while not stop.is_set():
            runs = [r for r in live_runs(self.mdir) if r.run_id not in seen]
            if runs:
                live = runs[0]
                seen.add(live.run_id)
                showing = live.run_id
                self._follow(live, sink, stop)
                continue
            if showing is None:
                if self.show_last:
                    showing = self._show_last(sink)
                else:
                    showing = ""
                    sink.reset("waiting", None)
                    sink.status(f"waiting for a run to start in {where(self.mdir.root)}")
            stop.wait(POLL_INTERVAL)

    def _show_last(self, sink: Sink) -> str:
        """With nothing live: the newest recorded run, and a line saying so."""
        logs = self.mdir.logs()
        waiting = (
            f"waiting for a run: start `pytest --monitor` (monitor folder {where(self.mdir.root)})"
        )
        if not logs:
            sink.reset("no runs yet", None)
            sink.status(f"no live run and none recorded; {waiting}", "warning")
            return ""
        path = logs[-1]
        sink.reset(path.stem, path)
        try:
            events, problems = read_events(path)
        except RunLogError as exc:
            sink.status(f"no live run; the last recorded run cannot be read: {exc}", "error")
            return path.stem
        for lo in range(0, len(events), REPLAY_BATCH):
            sink.events(events[lo : lo + REPLAY_BATCH])
        if events:
            sink.clock(max(e.ts for e in events))
        if not has_end(events) and not still_written(path):
            sink.incomplete()  # a killed run: it will not go on
        note = f"; {problems_text(problems)}" if problems else ""
        sink.status(f"no live run: showing the last recorded run {path.stem}; {waiting}{note}")
        return path.stem

    def _follow(self, live: LiveRun, sink: Sink, stop: threading.Event) -> None:
        """Follow one live run to its end. Dropped by the hub for falling behind, start
        it over from its beginning, at most :data:`MAX_RECONNECTS` times."""
        for _ in range(MAX_RECONNECTS + 1):
            if self._attach(live, sink, stop) is not StreamState.FELL_BEHIND:
                return
        sink.stream_state(
            StreamState.GAVE_UP,
            f"run {live.run_id}: this viewer fell behind {MAX_RECONNECTS + 1} times; "
            "stopped following it, showing what was received",
        )

    def _attach(self, live: LiveRun, sink: Sink, stop: threading.Event) -> StreamState | None:
        """One connection to the run's hub, read until it closes; how the stream ended
        (None: stopped, or no connection)."""
        sink.reset(live.run_id, Path(live.log) if live.log else None)
        try:
            conn = LiveConnection(live, client="testmon tui", timeout=self.timeout)
        except SourceError as exc:
            sink.status(str(exc), "error")
            return None
        sink.status(f"live: attached to run {live.run_id}")
        ended = False
        with conn:
            conn.settimeout(RECV_TIMEOUT)
            while not stop.is_set():
                try:
                    received = conn.receive()
                except TimeoutError:
                    continue
                except OSError:
                    received = None
                if received is None:
                    break
                batch: list[ev.Event] = []
                for message in received:
                    if isinstance(message, ev.Event):
                        batch.append(message)
                        if isinstance(message, ev.RunFinished):
                            ended = True
                    elif isinstance(message, ev.Bye):
                        if batch:
                            sink.events(batch)
                            batch = []
                        if fell_behind(message):
                            sink.stream_state(
                                StreamState.FELL_BEHIND, f"{message.reason}: reconnecting"
                            )
                            return StreamState.FELL_BEHIND
                        ended = True
                        sink.stream_state(
                            StreamState.ENDED, f"run {live.run_id} ended ({message.reason})"
                        )
                    elif isinstance(message, ev.ControlError):
                        sink.status(f"the hub says: {message.msg}", "error")
                    elif isinstance(message, Unreadable):
                        sink.status(f"skipped a line the hub sent: {message.reason}", "warning")
                if batch:
                    sink.events(batch)
        if stop.is_set():
            return None
        if ended:
            return StreamState.ENDED
        sink.stream_state(
            StreamState.LOST,
            f"run {live.run_id} ended unexpectedly: the hub went away without finishing "
            "the run (controller killed?); showing what was received",
        )
        return StreamState.LOST
