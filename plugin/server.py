"""The hub's viewer socket: a unix socket in a private 0700 directory, or TCP with a token.

Protocol (newline-delimited JSON both ways, see :mod:`.events`):

1. the viewer sends :class:`Hello` (schema, token) within :data:`HELLO_TIMEOUT` of
   connecting (until then a connection costs no thread, and only :data:`MAX_PENDING`
   may wait at once);
2. the hub answers :class:`Welcome`, then every line of the run log so far (header first),
   then each new batch as the hub accepts it;
3. the viewer may send :class:`Command` lines at any time (rate-limited per viewer and per
   worker: what is over the limit is refused, with one answer a second); bad lines are
   answered with a :class:`ControlError` and ignored; a stream ends with :class:`Bye`.

Viewers never slow the run: each has a bounded buffer, and one that falls behind is told
why and disconnected (it may reconnect and start over from the backlog).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from collections import deque
from pathlib import Path
from typing import Protocol

from . import events as ev
from .guard import REAL

HELLO_TIMEOUT = 5.0
"""Seconds from connecting to a complete hello line, for the whole hello."""
MAX_HELLO_LINE = 64 * 1024
MAX_PENDING = 64
"""Connections at most that have not said hello yet; a newcomer drops the oldest."""
MAX_VIEWERS = 32
"""Authenticated viewers at most (each has two threads)."""
COMMANDS_PER_SECOND = 5.0
COMMAND_BURST = 64
"""Commands a viewer may send: on average, and at once (`testmon dump` sends one to every
worker at once). Beyond, they are refused."""
VIEWER_BUFFER = 64 * 1024 * 1024
"""Bytes a viewer may lag behind before it is dropped."""
MAX_BAD_LINES = 50
BACKLOG_CHUNK = 1024 * 1024


class HubForViewers(Protocol):
    run_id: str
    log_path: Path

    def subscribe(self, viewer: ViewerConnection) -> int: ...
    def log_reader(self) -> int: ...
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


class RateLimit:
    """A token bucket: ``rate`` a second on average, bursts of ``burst``; never blocks."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = REAL.monotonic()
        self._lock = REAL.Lock()

    def take(self) -> bool:
        with self._lock:
            t = REAL.monotonic()
            self._tokens = min(self.burst, self._tokens + (t - self._at) * self.rate)
            self._at = t
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


class _Pending:
    """A connection that has not said hello yet: a socket, what it sent, one deadline."""

    __slots__ = ("buffer", "deadline", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""


class ViewerServer:
    """Accepts viewers. Until a connection has said a valid hello it costs a few hundred
    bytes and no thread: one selector thread accepts and reads every hello, each under one
    deadline for the whole hello (:data:`HELLO_TIMEOUT`), at most :data:`MAX_PENDING` at
    once (the oldest is dropped for a newcomer). Only an authenticated viewer gets threads
    of its own, and at most :data:`MAX_VIEWERS` are attached. Nothing a client does, and
    no error of ``accept`` (out of file descriptors, say), ends the accept loop."""

    def __init__(self, hub: HubForViewers, token: str, listen: str | None = None) -> None:
        self.hub = hub
        self.token = token
        self.viewers: set[ViewerConnection] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._tmpdir: str | None = None
        self.loopback = True
        """Reachable from this machine only (a unix socket, or TCP on a loopback address)."""
        self._pending: dict[int, _Pending] = {}
        self.refused = 0
        """Connections refused before or at their hello (for tests and the log)."""
        if listen:
            host, port = parse_listen(listen)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.sock.bind((host, port))
            except OSError:
                self.sock.close()  # the port is taken: nothing of ours may stay open
                raise
            bound = self.sock.getsockname()
            self.loopback = is_loopback(host)
            self.address: dict[str, object] = {"tcp": [host, int(bound[1])]}
        else:
            self._tmpdir = private_dir()
            path = os.path.join(self._tmpdir, "hub.sock")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.bind(path)
            except OSError:
                self.sock.close()
                self._remove_tmpdir()
                raise
            self.address = {"unix": path}
        try:
            self.sock.listen(128)
            self.sock.setblocking(False)
            self._selector = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
        except OSError:
            self.sock.close()
            self._remove_tmpdir()
            raise
        self._wake_r.setblocking(False)
        self._listen_fd = self.sock.fileno()
        self._selector.register(self.sock, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = REAL.Thread(target=self._loop, name="testmon-live-viewers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ------------------------------------------------------------ the selector thread

    def _loop(self) -> None:
        while not self._closed:
            try:
                self._once()
            # Whatever a client did, the listener stays: say what broke, go on.
            except Exception as exc:  # noqa: BLE001, PERF203
                self.hub.note("error", f"viewer socket: {type(exc).__name__}: {exc}")
                REAL.sleep(0.05)
        for pending in list(self._pending.values()):
            self._drop(pending)
        with contextlib.suppress(Exception):
            self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()

    def _once(self) -> None:
        t = REAL.monotonic()
        timeout = 1.0
        for pending in list(self._pending.values()):
            if pending.deadline <= t:
                self._refuse(pending, f"no hello within {HELLO_TIMEOUT:.0f} s")
            else:
                timeout = min(timeout, pending.deadline - t)
        for key, _ in self._selector.select(max(0.0, timeout)):
            if self._closed:
                return
            if key.fd == self._listen_fd:
                self._accept()
            elif key.fileobj is self._wake_r:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            else:
                waiting = self._pending.get(key.fd)
                if waiting is not None:
                    self._read_hello(waiting)

    def _accept(self) -> None:
        for _ in range(64):  # a burst at a time; the next select sees the rest
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                # EMFILE, ENFILE, ENOBUFS...: the listener stays; try again shortly.
                self.hub.note("warning", f"viewer socket: cannot accept: {exc}")
                REAL.sleep(0.1)
                return
            if len(self._pending) >= MAX_PENDING:
                oldest = min(self._pending.values(), key=lambda p: p.deadline)
                self._refuse(oldest, f"more than {MAX_PENDING} connections without a hello")
            conn.setblocking(False)
            pending = _Pending(conn, REAL.monotonic() + HELLO_TIMEOUT)
            try:
                self._selector.register(conn, selectors.EVENT_READ, None)
            except (OSError, ValueError):
                conn.close()
                continue
            self._pending[conn.fileno()] = pending

    def _read_hello(self, pending: _Pending) -> None:
        try:
            chunk = pending.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._drop(pending)
            return
        if not chunk:
            self._drop(pending)
            return
        pending.buffer += chunk
        line, newline, rest = pending.buffer.partition(b"\n")
        if not newline:
            if len(pending.buffer) > MAX_HELLO_LINE:
                self._refuse(pending, f"line longer than {MAX_HELLO_LINE} bytes")
            return
        if len(line) > MAX_HELLO_LINE:
            self._refuse(pending, f"line longer than {MAX_HELLO_LINE} bytes")
            return
        try:
            message = ev.decode_control(line)
        except ev.DecodeError as exc:
            self._refuse(pending, f"expected a hello line first: {exc}")
            return
        problem = self._check_hello(message)
        if problem is not None:
            self._refuse(pending, problem)
            return
        assert isinstance(message, ev.Hello)
        with self._lock:
            full = len(self.viewers) >= MAX_VIEWERS
        if full:
            self._refuse(pending, f"{MAX_VIEWERS} viewers are attached already")
            return
        self._forget_pending(pending)
        try:
            pending.sock.setblocking(True)
        except OSError:
            self._close(pending.sock)
            return
        viewer = ViewerConnection(pending.sock, self, message.client or "viewer", rest)
        with self._lock:
            self.viewers.add(viewer)
        viewer.start()

    def _check_hello(self, message: ev.Control) -> str | None:
        if not isinstance(message, ev.Hello):
            return f"expected a hello line first, got {type(message).__name__}"
        if message.schema != ev.SCHEMA_VERSION:
            return (
                f"viewer speaks schema {message.schema}; this hub speaks {ev.SCHEMA_VERSION}: "
                "use the same testmon-live version on both sides"
            )
        import hmac  # only when a viewer connects: hashlib is not free to import

        if not hmac.compare_digest(message.token.encode(), self.token.encode()):
            return "wrong token (take it from the run's .testmon/live/<run>.json)"
        return None

    def _refuse(self, pending: _Pending, why: str) -> None:
        self.refused += 1
        self.hub.note("warning", f"refused a viewer: {why}")
        with contextlib.suppress(OSError):
            # best effort, never blocking: a client that does not read loses the reason
            pending.sock.send(ev.encode_line(ev.ControlError(msg=why, fatal=True)))
        self._drop(pending)

    def _forget_pending(self, pending: _Pending) -> None:
        fd = next((fd for fd, p in self._pending.items() if p is pending), None)
        if fd is not None:
            del self._pending[fd]
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(pending.sock)

    def _drop(self, pending: _Pending) -> None:
        self._forget_pending(pending)
        self._close(pending.sock)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    # ------------------------------------------------------------ viewers, the end

    def forget(self, viewer: ViewerConnection) -> None:
        with self._lock:
            self.viewers.discard(viewer)

    def close(self, reason: str, timeout: float = 2.0) -> None:
        """Tell every viewer the stream ends, let them drain (bounded), stop listening."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout)
        else:  # never started: what the loop would have closed
            with contextlib.suppress(Exception):
                self._selector.close()
            for sock in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    sock.close()
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            viewers = list(self.viewers)
        for viewer in viewers:
            viewer.finish(reason)
        for viewer in viewers:
            viewer.join(timeout / max(1, len(viewers)))
        self._remove_tmpdir()

    def _remove_tmpdir(self) -> None:
        if self._tmpdir:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._tmpdir, "hub.sock"))
            with contextlib.suppress(OSError):
                os.rmdir(self._tmpdir)


class ViewerConnection:
    """One authenticated viewer: a reader thread (commands) and a writer thread (stream)."""

    def __init__(
        self, sock: socket.socket, server: ViewerServer, name: str, rest: bytes = b""
    ) -> None:
        self.sock = sock
        self.server = server
        self.hub = server.hub
        self.name = name
        self._rest = rest
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._cond = REAL.Condition()  # made when a viewer connects, maybe mid-test
        self._closing: str | None = None
        self._subscribed = False
        self.backlog_end = 0
        self._commands = RateLimit(COMMANDS_PER_SECOND, COMMAND_BURST)
        self._limited = 0
        self._limited_told = 0.0
        self._reader = REAL.Thread(target=self._read, name="testmon-live-viewer-in", daemon=True)
        self._writer = REAL.Thread(target=self._write, name="testmon-live-viewer-out", daemon=True)

    def start(self) -> None:
        self.backlog_end = self.hub.subscribe(self)
        self._subscribed = True
        self._writer.start()
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
            self.finish("viewer closed the connection")

    def _serve(self) -> None:
        sock = self.sock
        buffer = self._rest
        self._rest = b""
        bad = 0
        while True:
            if b"\n" not in buffer:
                if len(buffer) > ev.MAX_CONTROL_LINE:
                    self._close_with(f"line longer than {ev.MAX_CONTROL_LINE} bytes")
                    return
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                continue
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                if len(line) > ev.MAX_CONTROL_LINE:
                    self._close_with(f"line longer than {ev.MAX_CONTROL_LINE} bytes")
                    return
                try:
                    message = ev.decode_control(line)
                except ev.DecodeError as exc:
                    bad += 1
                    self.send_control(ev.ControlError(msg=f"ignored a malformed line: {exc}"))
                    if bad >= MAX_BAD_LINES:
                        self._close_with(f"{bad} malformed lines; closing")
                        return
                    continue
                self._handle(message)

    def _handle(self, message: ev.Control) -> None:
        if not isinstance(message, ev.Command):
            self.send_control(
                ev.ControlError(msg=f"viewers may send commands only, not {type(message).__name__}")
            )
            return
        if not self._commands.take():
            self._limited += 1
            t = REAL.monotonic()
            if t - self._limited_told >= 1.0:  # one answer a second for all refused
                self._limited_told = t
                self.send_control(
                    ev.ControlError(
                        msg=f"too many commands: {self._limited} refused so far (at most "
                        f"{COMMANDS_PER_SECOND:g} a second, bursts of {COMMAND_BURST})"
                    )
                )
            return
        problem = self.hub.command(message)
        if problem:
            self.send_control(ev.ControlError(msg=problem))

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
        """The log up to where the live tail starts, read through the hub's own descriptor:
        what it wrote, even if someone deleted the file meanwhile."""
        remaining = self.backlog_end
        if remaining <= 0:
            return
        fd = self.hub.log_reader()
        try:
            offset = 0
            while remaining > 0:
                chunk = REAL.pread(fd, min(BACKLOG_CHUNK, remaining), offset)
                if not chunk:
                    break
                self.sock.sendall(chunk)
                offset += len(chunk)
                remaining -= len(chunk)
        finally:
            REAL.close(fd)

    def _shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        self.server.forget(self)
