"""Worker side transport: a bounded queue on the hot path, a thread that batches and ships.

The hot path (a pytest hook) only appends a struct to a deque. A daemon thread wakes a
few times a second while there is something to send, stamps worker id and sequence
numbers, encodes the whole batch once (newline-delimited JSON) and hands the bytes to
``ship`` - an execnet channel's ``send``
under xdist, the hub's in-process ingest without it. When the queue is full the event is
dropped and counted by kind; when shipping fails the sender stops trying, counts what it
could not ship, and the run goes on.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable

from . import events as ev
from .guard import exc_text

DEFAULT_CAPACITY = 100_000
"""Events queued at most before new ones are dropped."""
FLUSH_INTERVAL = 0.1
"""Seconds between batches: the live lag a worker adds."""
BATCH_MAX = 5_000
"""Events per shipped batch at most (keeps batches well under MAX_BATCH_BYTES)."""
NUDGE_AT = 2_000
"""Queue length at which the hot path wakes the sender early."""

Ship = Callable[[bytes, list[ev.Event]], None]


class Sender:
    """Bounded, non-blocking event queue with a background shipping thread."""

    def __init__(
        self,
        worker: str,
        ship: Ship,
        *,
        capacity: int = DEFAULT_CAPACITY,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.worker = worker
        self._ship = ship
        self._queue: deque[ev.Event] = deque()
        self._capacity = capacity
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = False
        self._dropped: Counter[str] = Counter()
        self._seq = 0
        self.sent = 0
        self.error: str | None = None
        """Why shipping stopped, once it has (the transport failed: never an event's text)."""
        self._told_unencodable = False
        self._idle = False
        """The thread sleeps until the next event (it found nothing to send)."""
        self._ship_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="testmon-live-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # The hot path: called from pytest hooks in the worker's main thread (and probes).
    def emit(self, event: ev.Event) -> None:
        queue = self._queue
        size = len(queue)
        if size < self._capacity:
            queue.append(event)
            if size == NUDGE_AT:
                self._wake.set()
            elif self._idle:  # the first event after a quiet spell (once, not per event)
                self._idle = False
                self._wake.set()
        else:
            self._dropped[ev.kind(event)] += 1

    def emit_always(self, event: ev.Event) -> None:
        """For the few events a reader cannot do without (worker up/end): never dropped."""
        self._queue.append(event)
        self._wake.set()

    @property
    def ident(self) -> int | None:
        """The sender thread's ident (stall samples leave it out)."""
        return self._thread.ident

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def dropped(self) -> dict[str, int]:
        return dict(self._dropped)

    @property
    def dropped_total(self) -> int:
        return sum(self._dropped.values())

    def flush(self) -> None:
        """Ship everything queued now, in the calling thread."""
        with self._ship_lock:
            queue = self._queue
            while queue:
                count = min(len(queue), BATCH_MAX)
                popleft = queue.popleft
                batch = [popleft() for _ in range(count)]
                seq = self._seq
                worker = self.worker
                for event in batch:
                    seq += 1
                    event.seq = seq
                    if not event.w:
                        event.w = worker
                self._seq = seq
                if self.error is not None:
                    self._count_lost(batch)
                    continue
                unencodable: list[ev.Event] = []
                data = ev.encode_lines(batch, unencodable)
                if unencodable:
                    batch = self._leave_out(batch, unencodable)
                    count = len(batch)
                    if not batch:
                        continue
                try:
                    self._ship(data, batch)
                # The transport may fail in any way (closed channel, dead hub, full disk);
                # none of it may reach the test run: record why and count what is lost.
                except Exception as exc:  # noqa: BLE001
                    self.error = exc_text(exc)
                    self._count_lost(batch)
                else:
                    self.sent += count

    def _leave_out(self, batch: list[ev.Event], bad: list[ev.Event]) -> list[ev.Event]:
        """Count events that could not be encoded (even escaped); say so once."""
        self._dropped[ev.UNENCODABLE] += len(bad)
        if not self._told_unencodable:
            self._told_unencodable = True
            kinds = ", ".join(sorted({ev.kind(e) for e in bad}))
            self._queue.append(
                ev.Notice(
                    ts=bad[0].ts,
                    level="warning",
                    source=self.worker,
                    msg=f"events that cannot be encoded were dropped ({kinds}); "
                    "the run's other events are recorded",
                )
            )
        gone = {id(e) for e in bad}
        return [e for e in batch if id(e) not in gone]

    def _count_lost(self, batch: list[ev.Event]) -> None:
        for event in batch:
            self._dropped[ev.kind(event)] += 1

    def _run(self) -> None:
        wake = self._wake
        while not self._stopping:
            wake.wait(self._interval)
            wake.clear()
            if self._queue:
                self.flush()
                continue
            if self._closing():  # close() set the event just before it was cleared
                break
            # A whole interval without an event (a test that runs for minutes): sleep until
            # the next one comes (emit wakes us) instead of waking every interval to find
            # nothing; then wait one interval more, so that what follows it goes in the same
            # batch. While events flow this never happens: no extra wake-up, no extra set().
            self._idle = True
            if not self._queue:  # after setting _idle: an event appended before is seen
                wake.wait()
            self._idle = False
            if not self._stopping:
                wake.clear()
        self.flush()

    def _closing(self) -> bool:
        """Read anew (another thread sets it): a call, so that no checker narrows it."""
        return self._stopping

    def close(self, timeout: float = 3.0) -> bool:
        """Stop the thread after a last flush; False if that did not finish in ``timeout``."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        if self._ship_lock.acquire(timeout=timeout):
            self._ship_lock.release()
            self.flush()
            return True
        return False
