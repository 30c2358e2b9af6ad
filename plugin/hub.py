"""The hub: lives in the controller, receives every worker's batches, writes the run log,
folds the run state and serves viewers.

Receivers only decode, validate and hand over: an execnet channel callback runs in the
gateway's receiver thread, so :meth:`Hub.ingest` never raises and does no heavy work.
A batch that is not bytes, too big, malformed or of a foreign schema is dropped with a
:class:`~testmon_live.plugin.events.Notice` (rate limited) and counted; the run goes on.
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import events as ev
from .clock import now
from .guard import REAL, exc_text
from .probes.unresponsive import Running, SilenceWatcher, local_dump_file, silence_after
from .redact import redact_bytes
from .runlog import LogWriter, MonitorDir, write_live_file
from .server import RateLimit, ViewerConnection, ViewerServer
from .state import RunState, worker_order

HUB_ONLY_COMMANDS = frozenset({"ports"})
"""Commands only the hub sends to workers (``ports``: the containers' mapped ports)."""
WORKER_COMMANDS_PER_SECOND = 5.0
WORKER_COMMAND_BURST = 10
"""Commands a worker receives from all viewers together, on average and at once: a run's
speed never depends on its viewers."""
NOTICES_PER_KIND = 20
"""Notices of one kind written to the log before the rest are only counted."""

Commander = Callable[[ev.Command], None]


class Hub:
    def __init__(
        self,
        mdir: MonitorDir,
        header: ev.RunStarted,
        *,
        listen: str | None = None,
        keep: int = 20,
    ) -> None:
        self.mdir = mdir
        self.header = header
        self.run_id = header.run_id
        self.log_path: Path = mdir.log_path(header.run_id)
        self.live_path: Path = mdir.live_path(header.run_id)
        self.listen = listen
        self.keep = keep
        self.token = base64.urlsafe_b64encode(os.urandom(18)).decode()
        self.state = RunState(detail=False)
        self.accepted = 0
        self.closed = False
        self.server: ViewerServer | None = None
        self.problems: list[str] = []
        """Things that went wrong in the monitor itself, for the terminal summary."""
        self._lock = threading.RLock()
        self._seq = 0
        self._writer: LogWriter | None = None
        self._viewers: list[ViewerConnection] = []
        self._commanders: dict[str, Commander] = {}
        self._refused: set[str] = set()
        self._lost: dict[str, Counter[str]] = {}
        self._notice_counts: Counter[str] = Counter()
        self._races_noted: set[str] = set()
        """Places whose migration race the log has a notice of."""
        self._silence: SilenceWatcher | None = None
        self._worker_limits: dict[str, RateLimit] = {}
        self._live_fd: int | None = None
        """The live file, locked while this hub lives (a reader that can lock it knows the
        run is gone, even if its pid was reused)."""
        self._unwritten = 0
        """Lines the log could not take (full disk)."""
        self._on_container: list[Callable[[], None]] = []
        """Called once, when the fold first holds a container (see :meth:`when_container`)."""

    @property
    def lock(self) -> threading.RLock:
        """Held while the fold changes: readers of :attr:`state` on other threads take it."""
        return self._lock

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Create the log and write the header; then open the viewer socket (best effort).

        Raises OSError when the log cannot be started (its header not written): then
        nothing of the run is left behind, neither an empty log nor a socket."""
        self.mdir.ensure()
        # The header's line made (and redaction's pattern compiled, when the header needs it)
        # before the file exists: a reader that finds the new log finds it empty for a
        # write's time at most. (A header that cannot be encoded: _write_own says so.)
        with contextlib.suppress(ev.EncodeError):
            redact_bytes(ev.encode_line(self.header))
        writer = self._writer = LogWriter(self.log_path)
        self._write_own(self.header)
        if writer.failed is not None:
            writer.close()
            self._writer = None
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            raise OSError(writer.failed)
        try:
            server = ViewerServer(self, self.token, self.listen)
        except OSError as exc:
            where = self.listen or "a unix socket"
            self._viewers_off(f"cannot listen on {where}: {exc}")
            return
        try:
            self._live_fd = write_live_file(
                self.live_path,
                {
                    "run_id": self.run_id,
                    "pid": os.getpid(),
                    "token": self.token,
                    "address": server.address,
                    "log": str(self.log_path),
                    "schema": ev.SCHEMA_VERSION,
                    "started": self.header.ts,
                    "rootdir": self.header.rootdir,
                    "locked": True,
                },
                hold=True,
            )
        except OSError as exc:
            server.close("no live file")
            self._viewers_off(f"cannot write {self.live_path}: {exc}")
            return
        self.server = server
        server.start()
        if self.listen and not server.loopback:
            why = (
                f"--monitor-listen {self.listen} is not a loopback address: the viewer token "
                "and every event of the run travel in clear to whoever can reach it"
            )
            self.note("warning", why)
            self.problems.append(why)

    def _viewers_off(self, why: str) -> None:
        self.note("error", f"live viewers disabled: {why}")
        self.problems.append(f"live viewers disabled: {why}")

    def watch_silence(self, stall: float, running: Running | None = None) -> None:
        """Notice workers whose heartbeats stop; take stacks of local ones (xdist only)."""
        self._silence = SilenceWatcher(
            self.state,
            self._lock,
            self.emit,
            silence_after(stall),
            root=self.header.rootdir or None,
            running=running,
        )
        self._silence.start()

    def close(self, exitstatus: int | None) -> None:
        """Write the end record, say goodbye to viewers, unpublish, prune old runs."""
        if self._silence is not None:
            self._silence.stop()
            self._silence = None
            for view in self.state.workers.values():
                local = local_dump_file(view)
                if local:  # a local worker that died before removing its own
                    with contextlib.suppress(OSError):
                        REAL.unlink(local)
        with self._lock:
            if self.closed:
                return
            suppressed = {k: n - NOTICES_PER_KIND for k, n in self._notice_counts.items()}
            for key, extra in suppressed.items():
                if extra > 0:
                    self._emit_locked(
                        ev.Notice(level="warning", source="hub", msg=f"{extra} more notices: {key}")
                    )
            dropped = self.state.dropped()
            for worker, kinds in self._lost.items():
                mine = dropped.setdefault(worker, {})
                for kind, count in kinds.items():
                    mine[kind] = mine.get(kind, 0) + count
            unwritten = self._unwritten
            if unwritten:
                dropped.setdefault("hub", {})["unwritten"] = unwritten
            status = (
                ev.EXIT_NAMES.get(exitstatus, "unknown") if exitstatus is not None else "unknown"
            )
            state = self.state
            t = now()
            self._emit_locked(
                ev.RunFinished(
                    ts=t,
                    exitstatus=exitstatus if exitstatus is not None else -1,
                    status=status,
                    duration=t - self.header.ts,
                    events=self.accepted,
                    dropped=dropped,
                    tests=state.tests_done,
                    counts=dict(state.counts),
                    workers=[w.id for w in state.active_workers()],
                    crashes=len(state.crashes),
                    stalls=state.stall_count(),
                    test_time=state.test_time,
                ),
                final=True,
            )
            self.closed = True
            writer = self._writer
            if writer is not None:
                if writer.failed:
                    ended = self._unwritten == unwritten  # the end record got in after all
                    self.problems.append(
                        f"{writer.failed}: {unwritten} events not written; "
                        + (
                            "the log has the run's end record"
                            if ended
                            else "the log ends there, without the run's end record"
                        )
                    )
                writer.close()
        if self.server is not None:
            self.server.close("run finished")
        with contextlib.suppress(OSError):
            self.live_path.unlink()
        if self._live_fd is not None:
            with contextlib.suppress(OSError):
                REAL.close(self._live_fd)  # unlocked: the run is over
            self._live_fd = None
        self.mdir.prune(self.keep, protect=frozenset({self.run_id}))

    # ------------------------------------------------------------------ sources

    def attach_channel(self, worker: str, channel: Any) -> None:
        """Take a worker's execnet channel: its batches come in, commands go out."""

        def receive(data: object) -> None:
            self.ingest(worker, data)

        def command(cmd: ev.Command) -> None:
            channel.send(ev.encode(cmd))

        channel.setcallback(receive)
        with self._lock:
            self._commanders[worker] = command

    def attach_local(self, worker: str, commander: Commander) -> None:
        with self._lock:
            self._commanders[worker] = commander

    def when_container(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the run has a container (at once if it has one): what
        watches containers starts then, so a run without any pays nothing for it (no
        thread waking up to look, no import). It runs on the thread that folded the
        container's event, under :attr:`lock`: it must only start something and return."""
        with self._lock:
            if not self.state.containers:
                self._on_container.append(callback)
                return
        callback()

    def _containers_seen(self) -> None:
        callbacks, self._on_container = self._on_container, []
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # noqa: BLE001, PERF203 - once a run
                self._on_container.clear()
                self.note("error", f"containers: watch not started: {exc_text(exc)}")

    def detach(self, worker: str) -> None:
        with self._lock:
            self._commanders.pop(worker, None)

    def ingest(self, worker: str, data: object) -> None:
        """A batch from a worker's channel (execnet receiver thread). Never raises."""
        try:
            self._ingest(worker, data)
        # The receiver thread must survive anything a batch can do to us; say what broke.
        except Exception as exc:  # noqa: BLE001
            self._lose(worker, "internal", 1)
            self.note("error", f"hub failed on a batch from {worker}: {exc_text(exc)}")

    def _ingest(self, worker: str, data: object) -> None:
        if worker in self._refused:
            self._lose(worker, "refused", 1)
            return
        if not isinstance(data, bytes):
            self._lose(worker, "malformed", 1)
            self.note(
                "warning", f"{worker} sent a {type(data).__name__}, not an event batch: dropped"
            )
            return
        if len(data) > ev.MAX_BATCH_BYTES:
            self._lose(worker, "oversized", 1)
            self.note(
                "warning",
                f"{worker} sent a batch of {len(data)} bytes (limit {ev.MAX_BATCH_BYTES}): dropped",
            )
            return
        try:
            events = ev.decode_events(data)
        except ev.DecodeError:
            events, bad = ev.decode_events_tolerant(data)
            for line, reason in bad[:3]:
                self.note(
                    "warning", f"{worker} sent a malformed event (batch line {line}): {reason}"
                )
            self._lose(worker, "malformed", len(bad))
            unencodable: list[ev.Event] = []
            data = ev.encode_lines(events, unencodable)
            if unencodable:
                self._lose(worker, ev.UNENCODABLE, len(unencodable))
                events = [e for e in events if not any(e is u for u in unencodable)]
        for event in events:
            if isinstance(event, ev.WorkerStarted) and event.schema != ev.SCHEMA_VERSION:
                self._refused.add(worker)
                self._lose(worker, "refused", len(events))
                self.note(
                    "error",
                    f"{worker} speaks event schema {event.schema}; this hub reads "
                    f"{ev.SCHEMA_VERSION}: its events are dropped (install the same "
                    "testmon-live version on every worker)",
                )
                return
        if events:
            self._accept(data, events)

    def ingest_local(self, data: bytes, events: list[ev.Event]) -> None:
        """A batch from this process's own worker recorder (already typed and trusted)."""
        self._accept(data, events)

    def _accept(self, data: bytes, events: list[ev.Event]) -> None:
        with self._lock:
            if self.closed:
                return
            self._append(data)
            apply = self.state.apply
            for event in events:
                apply(event)
            self.accepted += len(events)
            if self.state.lock_graph_changed:
                self._check_locks()
            if self._on_container and self.state.containers:
                self._containers_seen()

    def _check_locks(self) -> None:
        """Deadlocks (cycles in the wait-for graph) and workers migrating one database at
        once, reported as they form; called under the lock after a batch with lock events."""
        state = self.state
        for deadlock in state.new_deadlocks():
            deadlock.ts = now()
            self._emit_locked(deadlock)
        # Once a place: when its race is first seen. Workers that join it later would repeat
        # the warning (a line per worker on a wide run); the fold keeps them all, and the
        # summary and the report name every one.
        for place, workers in state.migration_races.items():
            if place not in self._races_noted:
                self._races_noted.add(place)
                names = ", ".join(sorted(workers, key=worker_order))
                where = state.race_where(place)
                self.note(
                    "warning", f"concurrent migrations: {names} migrate {where} at the same time"
                )

    def emit(self, event: ev.Event) -> None:
        """Record an event the hub itself observed (worker down, crash...)."""
        with self._lock:
            if not self.closed:
                self._emit_locked(event)

    def _emit_locked(self, event: ev.Event, final: bool = False) -> None:
        self._seq += 1
        event.seq = self._seq
        if not event.ts:
            event.ts = now()
        self._write_own(event, final)

    def _write_own(self, event: ev.Event, final: bool = False) -> None:
        with self._lock:
            try:
                line = ev.encode_line(event)
            except ev.EncodeError:
                self._lose(event.w or "hub", ev.UNENCODABLE, 1)
                return
            self._append(line, final)
            self.state.apply(event)
            self.accepted += 1
            if self._on_container and self.state.containers:
                self._containers_seen()

    def _append(self, data: bytes, final: bool = False) -> None:
        # The one place every line enters the log and the viewers' stream, whatever event
        # it holds and whoever made it: secrets are cut here, in the encoded JSON.
        data = redact_bytes(data)
        writer = self._writer
        # After a failed write (a full disk) the log takes nothing more but the end record,
        # tried once at the end; the viewers still get everything. close() says it, once.
        if writer is not None and not (writer.finish(data) if final else writer.write(data)):
            self._unwritten += data.count(b"\n")
        for viewer in self._viewers:
            viewer.push(data)

    def _lose(self, worker: str, kind: str, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            self._lost.setdefault(worker, Counter())[kind] += count

    def note(self, level: str, msg: str) -> None:
        """A :class:`Notice` in the log, at most NOTICES_PER_KIND per kind of message."""
        key = msg.split(":", 1)[0]
        with self._lock:
            self._notice_counts[key] += 1
            if self._notice_counts[key] > NOTICES_PER_KIND or self.closed:
                return
            lvl = level if level in ("info", "warning", "error") else "warning"
            self._emit_locked(ev.Notice(level=lvl, source="hub", msg=msg))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ viewers

    def subscribe(self, viewer: ViewerConnection) -> int:
        """Register a viewer; returns the log offset where its live tail starts."""
        with self._lock:
            self._viewers.append(viewer)
            return self._writer.offset if self._writer is not None else 0

    def log_reader(self) -> int:
        """A descriptor to read the log from (the viewer closes it)."""
        with self._lock:
            writer = self._writer
            if writer is None:
                raise OSError("the run has no log")
            return writer.reader()

    def unsubscribe(self, viewer: ViewerConnection) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._viewers.remove(viewer)

    def tell(self, worker: str, cmd: str, args: dict[str, str]) -> bool:
        """The hub's own command to a worker (no viewer's rate limit applies); whether it
        went out."""
        with self._lock:
            commander = self._commanders.get(worker)
        if commander is None:
            return False
        try:
            commander(ev.Command(worker=worker, cmd=cmd, args=args))
        except Exception as exc:  # noqa: BLE001 - a dead channel is said, not raised
            self.note("info", f"could not tell {worker} {cmd}: {exc_text(exc)}")
            return False
        return True

    def command(self, command: ev.Command) -> str | None:
        """Route a viewer's command to its worker; an error text if that cannot be done."""
        if command.cmd in HUB_ONLY_COMMANDS:
            return f"{command.cmd!r} is the hub's own command: viewers cannot send it"
        with self._lock:
            limit = self._worker_limits.get(command.worker)
            if limit is None and command.worker in self._commanders:
                limit = RateLimit(WORKER_COMMANDS_PER_SECOND, WORKER_COMMAND_BURST)
                self._worker_limits[command.worker] = limit
        if limit is not None and not limit.take():
            return (
                f"{command.worker} is sent at most {WORKER_COMMANDS_PER_SECOND:g} commands a "
                "second by all viewers together: refused"
            )
        silence = self._silence
        if command.cmd == "dump" and silence is not None and silence.dump_silent(command):
            return None  # a frozen worker cannot answer: the hub takes its stacks itself
        with self._lock:
            commander = self._commanders.get(command.worker)
            known = sorted(self._commanders)
        if commander is None:
            listed = ", ".join(known) or "none"
            return f"no live worker {command.worker!r} (live workers: {listed})"
        try:
            commander(command)
        except Exception as exc:  # noqa: BLE001 - a dead channel is reported, not raised
            return f"could not reach {command.worker}: {exc_text(exc)}"
        return None
