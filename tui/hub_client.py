"""The client of a live hub's viewer socket, and the one parser of the stream it sends.

:class:`StreamParser` cuts the hub's bytes into lines and decodes them (events and control
messages, a line it cannot read as :class:`Unreadable`); :class:`LiveConnection` connects,
says hello, and reads through it. The dashboard's live source follows a run with it, and
``testmon dump`` asks a worker for its stacks with it: neither needs Textual, so this
module sits outside the dashboard room.
"""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import LiveRun

CONNECT_TIMEOUT = 5.0
RECV_BYTES = 1 << 20
FELL_BEHIND = "viewer fell behind"
"""How the hub's :class:`~testmon_live.plugin.events.Bye` says it dropped a viewer that
read too slowly (the viewer may reconnect and start over)."""


class SourceError(Exception):
    """A source that cannot be read: the message is meant for the user."""


@dataclass(frozen=True)
class Unreadable:
    """A line of the stream that does not decode (the reason, for the user)."""

    reason: str


Message = ev.Event | ev.Control | Unreadable


def fell_behind(bye: ev.Bye) -> bool:
    """The hub dropped this viewer for reading too slowly (not the run's end)."""
    return FELL_BEHIND in bye.reason


class StreamParser:
    """Bytes of the hub's stream in, decoded messages out, in order; a line cut between two
    chunks waits for its end."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[Message]:
        data = self._rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._rest = data
            return []
        block, self._rest = data[:cut], data[cut + 1 :]
        out: list[Message] = []
        for line in block.split(b"\n"):
            if not line:
                continue
            try:
                out.append(ev.decode_stream_line(line))
            except ev.DecodeError as exc:
                out.append(Unreadable(str(exc)))
        return out


class LiveConnection:
    """A viewer's connection to a running hub."""

    def __init__(self, live: LiveRun, client: str = "testmon", timeout: float = CONNECT_TIMEOUT):
        self.live = live
        self.welcome: ev.Welcome | None = None
        self.parser = StreamParser()
        self._pending: deque[Message] = deque()
        self.sock = _connect(live, timeout)
        self.sock.sendall(
            ev.encode_line(ev.Hello(schema=ev.SCHEMA_VERSION, token=live.token, client=client))
        )

    def __enter__(self) -> LiveConnection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, command: ev.Command) -> None:
        self.sock.sendall(ev.encode_line(command))

    def settimeout(self, seconds: float | None) -> None:
        self.sock.settimeout(seconds)

    def receive(self) -> list[Message] | None:
        """What the next chunk completes (maybe nothing); None once the hub closed the
        stream. Raises TimeoutError when the socket's timeout passes with nothing read."""
        try:
            chunk = self.sock.recv(RECV_BYTES)
        except (ConnectionResetError, BrokenPipeError):
            return None
        if not chunk:
            return None
        return self.parser.feed(chunk)

    def messages(self) -> Iterator[ev.Event | ev.Control]:
        """Decoded events and control messages until the hub closes the stream; a line that
        does not decode, or a refusal, raises SourceError."""
        pending = self._pending
        while True:
            while pending:
                message = pending.popleft()  # taken before it is yielded: a caller that
                if isinstance(message, Unreadable):  # stops and reads on loses nothing
                    raise SourceError(
                        f"the hub sent a line this viewer cannot read: {message.reason}"
                    )
                if isinstance(message, ev.Welcome):
                    self.welcome = message
                elif isinstance(message, ev.ControlError) and message.fatal:
                    raise SourceError(f"the hub refused this viewer: {message.msg}")
                yield message
            batch = self.receive()
            if batch is None:
                return
            pending.extend(batch)


def _connect(live: LiveRun, timeout: float) -> socket.socket:
    address = live.address
    try:
        if "unix" in address:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(address["unix"]))
        elif "tcp" in address:
            tcp = address["tcp"]
            if not isinstance(tcp, (list, tuple)) or len(tcp) != 2:
                raise SourceError(f"run {live.run_id}: bad tcp address in live file: {tcp!r}")
            sock = socket.create_connection((str(tcp[0]), int(tcp[1])), timeout=timeout)
        else:
            raise SourceError(f"run {live.run_id}: live file names no address I know: {address}")
    except OSError as exc:
        raise SourceError(f"cannot reach the hub of run {live.run_id}: {exc}") from None
    sock.settimeout(None)
    return sock
