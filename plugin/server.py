"""The hub's viewer socket: a unix socket in a private 0700 directory, or TCP with a token.

Protocol (newline-delimited JSON both ways, see :mod:`.events`):

1. the viewer sends :class:`Hello` (schema, token) within :data:`HELLO_TIMEOUT`;
2. the hub answers :class:`Welcome`, then every line of the run log so far (header first),
   then each new batch as the hub accepts it;
3. the viewer may send :class:`Command` lines at any time; bad lines are answered with a
   :class:`ControlError` and ignored; a stream ends with :class:`Bye`.

Viewers never slow the run: each has a bounded buffer, and one that falls behind is told
why and disconnected (it may reconnect and start over from the backlog).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections import deque
from pathlib import Path
from typing import Protocol

from . import events as ev
from .guard import REAL

HELLO_TIMEOUT = 5.0
VIEWER_BUFFER = 64 * 1024 * 1024
"""Bytes a viewer may lag behind before it is dropped."""
MAX_BAD_LINES = 50
BACKLOG_CHUNK = 1024 * 1024


class HubForViewers(Protocol):
    run_id: str
    log_path: Path

    def subscribe(self, viewer: ViewerConnection) -> int: ...
    def unsubscribe(self, viewer: ViewerConnection) -> None: ...
    def command(self, command: ev.Command) -> str | None: ...
    def note(self, level: str, msg: str) -> None: ...


def private_dir() -> str:
    """A fresh folder only this user can enter, for the hub's unix socket (short path:
    unix socket paths are limited to about 100 bytes)."""
    base = os.environ.get("TMPDIR") or "/tmp"
    for _ in range(100):
        path = os.path.join(base, f"testmon-live-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)
        return path
    raise OSError(f"cannot create a private folder under {base}")


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0 picks a free one)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--monitor-listen wants HOST:PORT, got {value!r}")
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--monitor-listen: port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--monitor-listen: port {number} is out of range")
    return host, number


def is_loopback(host: str) -> bool:
    """Does ``host`` (an address or ``localhost``) reach this machine only?"""
    if host.lower() in ("localhost", "localhost."):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


class ViewerServer:
    def __init__(self, hub: HubForViewers, token: str, listen: str | None = None) -> None:
        self.hub = hub
        self.token = token
        self.viewers: set[ViewerConnection] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._tmpdir: str | None = None
        self.loopback = True
        """Reachable from this machine only (a unix socket, or TCP on a loopback address)."""
        if listen:
            host, port = parse_listen(listen)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            bound = self.sock.getsockname()
            self.loopback = is_loopback(host)
            self.address: dict[str, object] = {"tcp": [host, int(bound[1])]}
        else:
            self._tmpdir = private_dir()
            path = os.path.join(self._tmpdir, "hub.sock")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
            self.address = {"unix": path}
        self.sock.listen(16)
        self._thread = threading.Thread(
            target=self._accept, name="testmon-live-viewers", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            viewer = ViewerConnection(conn, self)
            with self._lock:
                self.viewers.add(viewer)
            viewer.start()

    def forget(self, viewer: ViewerConnection) -> None:
        with self._lock:
            self.viewers.discard(viewer)

    def close(self, reason: str, timeout: float = 2.0) -> None:
        """Tell every viewer the stream ends, let them drain (bounded), stop listening."""
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            viewers = list(self.viewers)
        for viewer in viewers:
            viewer.finish(reason)
        for viewer in viewers:
            viewer.join(timeout / max(1, len(viewers)))
        if self._tmpdir:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._tmpdir, "hub.sock"))
            with contextlib.suppress(OSError):
                os.rmdir(self._tmpdir)


class ViewerConnection:
    """One attached viewer: a reader thread (hello, commands) and a writer thread (stream)."""

    def __init__(self, sock: socket.socket, server: ViewerServer) -> None:
        self.sock = sock
        self.server = server
        self.hub = server.hub
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._cond = REAL.Condition()  # made when a viewer connects, maybe mid-test
        self._closing: str | None = None
        self._subscribed = False
        self.backlog_end = 0
        self.name = "viewer"
        self._reader = REAL.Thread(target=self._read, name="testmon-live-viewer-in", daemon=True)
        self._writer = REAL.Thread(target=self._write, name="testmon-live-viewer-out", daemon=True)

    def start(self) -> None:
        self._reader.start()

    def join(self, timeout: float) -> None:
        if self._writer.is_alive():
            self._writer.join(timeout)
        self._shutdown()

    # ------------------------------------------------------------ hub side

    def push(self, data: bytes) -> None:
        """Queue a batch for this viewer. Called under the hub's lock: never blocks."""
        with self._cond:
            if self._closing is not None:
                return
            if self._queued + len(data) > VIEWER_BUFFER:
                self._closing = (
                    f"viewer fell behind by more than {VIEWER_BUFFER // (1024 * 1024)} MiB; "
                    "reconnect to resume from the start"
                )
                self._queue.append(ev.encode_line(ev.Bye(reason=self._closing)))
            else:
                self._queue.append(data)
                self._queued += len(data)
            self._cond.notify()

    def send_control(self, message: ev.Control) -> None:
        with self._cond:
            if self._closing is None:
                self._queue.append(ev.encode_line(message))
                self._cond.notify()

    def finish(self, reason: str) -> None:
        """The run ended: send what is queued, then Bye."""
        with self._cond:
            if self._closing is None:
                self._queue.append(ev.encode_line(ev.Bye(reason=reason)))
                self._closing = reason
            self._cond.notify()
        if not self._subscribed:
            self._shutdown()

    # ------------------------------------------------------------ threads

    def _read(self) -> None:
        try:
            self._serve()
        except OSError:
            pass
        finally:
            if self._subscribed:
                self.finish("viewer closed the connection")
            else:
                self._shutdown()

    def _serve(self) -> None:
        sock = self.sock
        sock.settimeout(HELLO_TIMEOUT)
        buffer = b""
        hello_done = False
        bad = 0
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if not hello_done:
                    self._refuse(f"no hello within {HELLO_TIMEOUT:.0f} s")
                    return
                continue
            if not chunk:
                return
            buffer += chunk
            if b"\n" not in buffer:
                if len(buffer) > ev.MAX_CONTROL_LINE:
                    self._refuse(f"line longer than {ev.MAX_CONTROL_LINE} bytes")
                    return
                continue
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                if len(line) > ev.MAX_CONTROL_LINE:
                    self._refuse(f"line longer than {ev.MAX_CONTROL_LINE} bytes")
                    return
                try:
                    message = ev.decode_control(line)
                except ev.DecodeError as exc:
                    if not hello_done:
                        self._refuse(f"expected a hello line first: {exc}")
                        return
                    bad += 1
                    self.send_control(ev.ControlError(msg=f"ignored a malformed line: {exc}"))
                    if bad >= MAX_BAD_LINES:
                        self._close_with(f"{bad} malformed lines; closing")
                        return
                    continue
                if not hello_done:
                    if not self._accept_hello(message):
                        return
                    hello_done = True
                    sock.settimeout(None)
                    continue
                self._handle(message)

    def _accept_hello(self, message: ev.Control) -> bool:
        if not isinstance(message, ev.Hello):
            self._refuse(f"expected a hello line first, got {type(message).__name__}")
            return False
        if message.schema != ev.SCHEMA_VERSION:
            self._refuse(
                f"viewer speaks schema {message.schema}; this hub speaks {ev.SCHEMA_VERSION}: "
                "use the same testmon-live version on both sides"
            )
            return False
        import hmac  # only when a viewer connects: hashlib is not free to import

        if not hmac.compare_digest(message.token.encode(), self.server.token.encode()):
            self._refuse("wrong token (take it from the run's .testmon/live/<run>.json)")
            return False
        self.name = message.client or "viewer"
        self.backlog_end = self.hub.subscribe(self)
        self._subscribed = True
        self._writer.start()
        return True

    def _handle(self, message: ev.Control) -> None:
        if isinstance(message, ev.Command):
            problem = self.hub.command(message)
            if problem:
                self.send_control(ev.ControlError(msg=problem))
        else:
            self.send_control(
                ev.ControlError(msg=f"viewers may send commands only, not {type(message).__name__}")
            )

    def _refuse(self, why: str) -> None:
        self.hub.note("warning", f"refused a viewer: {why}")
        with contextlib.suppress(OSError):
            self.sock.sendall(ev.encode_line(ev.ControlError(msg=why, fatal=True)))
        self._shutdown()

    def _close_with(self, why: str) -> None:
        self.hub.note("warning", f"dropped viewer {self.name}: {why}")
        self.finish(why)

    def _write(self) -> None:
        sock = self.sock
        try:
            sock.sendall(
                ev.encode_line(
                    ev.Welcome(
                        schema=ev.SCHEMA_VERSION,
                        run_id=self.hub.run_id,
                        backlog_bytes=self.backlog_end,
                    )
                )
            )
            self._send_backlog()
            while True:
                with self._cond:
                    while not self._queue:
                        if self._closing is not None:
                            return
                        self._cond.wait()
                    data = self._queue.popleft()
                    self._queued -= len(data)
                sock.sendall(data)
        except OSError:
            return
        finally:
            self.hub.unsubscribe(self)
            self._shutdown()

    def _send_backlog(self) -> None:
        remaining = self.backlog_end
        if remaining <= 0:
            return
        with self.hub.log_path.open("rb") as log:
            while remaining > 0:
                chunk = log.read(min(BACKLOG_CHUNK, remaining))
                if not chunk:
                    break
                self.sock.sendall(chunk)
                remaining -= len(chunk)

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        self.server.forget(self)
