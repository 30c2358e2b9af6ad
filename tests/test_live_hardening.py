"""The live socket under abuse: many idle connections, a hello dribbled byte by byte,
accept failing, a viewer flooding commands. The listener stays, a connection that has not
said hello costs no thread, and a run's speed never depends on its viewers."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.hub import WORKER_COMMAND_BURST, WORKER_COMMANDS_PER_SECOND
from testmon_live.plugin.runlog import LiveRun, iter_log, live_runs
from testmon_live.plugin.server import HELLO_TIMEOUT, MAX_PENDING, ViewerServer
from testmon_live.tui.hub_client import LiveConnection

from . import test_live
from .test_live import Start

gated = test_live.gated
"""Gated runs in pytester's folder (test_live's fixture)."""


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def connect(live: LiveRun) -> socket.socket:
    deadline = time.monotonic() + 30
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        try:
            sock.connect(str(live.address["unix"]))
        except BlockingIOError:  # the listen backlog is full for a moment: the hub is busy
            sock.close()
            assert time.monotonic() < deadline, "the hub accepted nothing for 30 s"
            time.sleep(0.01)
            continue
        return sock


def hung_up(sock: socket.socket, heard: dict[socket.socket, bytes] | None = None) -> bytes | None:
    """What the hub sent before hanging up, or None while the connection is open.

    The hub sends its reason and then hangs up: a look in between reads the reason but no
    end yet, so what was read is kept in ``heard`` for the next look.
    """
    heard = {} if heard is None else heard
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return heard.get(sock, b"")
            heard[sock] = heard.get(sock, b"") + chunk
    except BlockingIOError:
        return None
    except OSError:
        return heard.get(sock, b"")
    finally:
        sock.settimeout(30)


def attach(live: LiveRun) -> None:
    with LiveConnection(live, client="real") as conn:
        conn.settimeout(30)
        welcome = next(conn.messages())
        assert isinstance(welcome, ev.Welcome)


def test_idle_connections_cost_no_thread_and_a_viewer_still_attaches(gated: Start) -> None:
    run = gated(["-n", "2"])
    live = run.live()
    attach(live)  # every thread the hub makes for viewers exists once
    baseline = threads_of(live.pid)
    idle: list[socket.socket] = []
    most = baseline
    try:
        for n in range(200):
            sock = connect(live)
            sock.sendall(b"{")  # the start of a hello that never ends
            idle.append(sock)
            if n % 20 == 0:
                most = max(most, threads_of(live.pid))
        # the hub has seen all of them once all beyond MAX_PENDING were turned away
        deadline = time.monotonic() + 60
        refused: list[bytes] = []
        heard: dict[socket.socket, bytes] = {}
        while time.monotonic() < deadline:
            most = max(most, threads_of(live.pid))
            refused = [d for d in (hung_up(s, heard) for s in idle) if d is not None]
            if len(refused) >= len(idle) - MAX_PENDING:
                break
            time.sleep(0.05)
        assert len(refused) >= len(idle) - MAX_PENDING
        assert any(b"without a hello" in d for d in refused), refused[:3]
        assert most <= baseline + 4, f"{most} threads with 200 idle connections ({baseline})"
        attach(live)  # the newcomer's hello is read at once; the oldest idle one made room
        assert run.proc.poll() is None
    finally:
        for sock in idle:
            sock.close()
    assert run.finish() == 0
    end = list(iter_log(run.mdir.logs()[0]))[-1]
    assert isinstance(end, ev.RunFinished)
    assert end.counts == {"passed": 12}


def test_a_hello_dribbled_byte_by_byte_has_one_deadline(gated: Start) -> None:
    run = gated(["-n", "2"])
    live = run.live()
    sock = connect(live)
    said: bytes | None = None
    heard: dict[socket.socket, bytes] = {}
    try:
        for _ in range(int(HELLO_TIMEOUT * 4)):  # a byte every 0.5 s: twice the deadline
            with contextlib.suppress(OSError):
                sock.sendall(b" ")
            said = hung_up(sock, heard)
            if said is not None:
                break
            time.sleep(0.5)
    finally:
        sock.close()
    assert said is not None, "a byte now and then kept an unauthenticated connection open"
    assert b"no hello within" in said
    attach(live)
    assert run.finish() == 0


class _Hub:
    run_id = "r"

    def __init__(self, log: Path) -> None:
        self.log_path = log
        self.notes: list[str] = []

    def subscribe(self, viewer: Any) -> int:
        return 0

    def log_reader(self) -> int:
        return os.open(self.log_path, os.O_RDONLY)

    def unsubscribe(self, viewer: Any) -> None:
        pass

    def command(self, command: ev.Command) -> str | None:
        return None

    def note(self, level: str, msg: str) -> None:
        self.notes.append(msg)


class _FailingAccept:
    """The listening socket, whose ``accept`` fails as when file descriptors run out."""

    def __init__(self, sock: socket.socket, failures: int) -> None:
        self._sock = sock
        self.failures = failures

    def accept(self) -> tuple[socket.socket, Any]:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self._sock.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_accept_errors_never_end_the_listener(tmp_path: Path) -> None:
    hub = _Hub(tmp_path / "log")
    hub.log_path.write_bytes(b"")
    server = ViewerServer(hub, "tok")
    failing = _FailingAccept(server.sock, failures=3)
    server.sock = failing  # type: ignore[assignment]
    server.start()
    try:
        live = LiveRun("r", tmp_path / "r.json", os.getpid(), "tok", server.address, "")
        deadline = time.monotonic() + 60
        while True:
            try:
                attach(live)
                break
            except (OSError, StopIteration, AssertionError):
                assert time.monotonic() < deadline, hub.notes
                time.sleep(0.05)
        assert failing.failures == 0
        assert any("cannot accept" in n for n in hub.notes), hub.notes
    finally:
        server.close("done")
    assert not Path(str(server.address["unix"])).parent.exists()


def test_a_viewer_flooding_dumps_is_refused_and_the_worker_gets_few(gated: Start) -> None:
    run = gated(["-n", "2"])
    live = run.live()
    run.wait_in_log(b'"test":"test_gated.py::test_gate"')
    worker = next(
        e.w
        for e in iter_log(run.mdir.logs()[0])
        if isinstance(e, ev.Activity) and e.test == "test_gated.py::test_gate"
    )
    flood = 3000
    ids = range(1000, 1000 + flood)
    with LiveConnection(live) as conn:
        conn.settimeout(60)
        started = time.monotonic()
        conn.sock.sendall(
            b"".join(ev.encode_line(ev.Command(worker=worker, cmd="dump", id=i)) for i in ids)
        )
        refusals = []
        for message in conn.messages():
            if isinstance(message, ev.ControlError) and "too many commands" in message.msg:
                refusals.append(message)
                break
        assert refusals
        run.open_gate()
        for message in conn.messages():
            if isinstance(message, ev.Bye):
                break
        elapsed = time.monotonic() - started
    assert run.finish() == 0
    dumps = [
        e for e in iter_log(run.mdir.logs()[0]) if isinstance(e, ev.Stall) and e.request in set(ids)
    ]
    most = WORKER_COMMAND_BURST + WORKER_COMMANDS_PER_SECOND * elapsed + 1
    assert 0 < len(dumps) <= most, (len(dumps), elapsed)


def test_what_a_killed_controller_left_never_shows_as_running(gated: Start) -> None:
    run = gated(["-n", "2"])
    live = run.live()
    sock_dir = Path(str(live.address["unix"])).parent
    run.wait_in_log(b'"nodeid":"test_gated.py::test_first"')
    run.kill()  # SIGKILL: the hub cleans up nothing
    assert live.path.exists()
    assert sock_dir.exists()
    # its pid reused by a living process (this one)
    info = json.loads(live.path.read_text())
    info["pid"] = os.getpid()
    live.path.write_text(json.dumps(info))
    assert live_runs(run.mdir) == []
    assert not live.path.exists(), "the stale live file stays"
    assert not sock_dir.exists(), "the dead hub's socket folder stays"
    # and the killed run's log is pruned like any other
    (killed,) = run.mdir.logs()
    newer = run.mdir.log_path("29990101-000000-0000")
    newer.write_bytes(killed.read_bytes())
    assert run.mdir.prune(1) == [killed]


@pytest.mark.parametrize("what", ["log", "monitor-dir"])
def test_a_log_deleted_mid_run_is_said_and_a_viewer_still_gets_the_run(
    gated: Start, what: str
) -> None:
    run = gated(["-n", "2"])
    live = run.live()
    run.wait_in_log(b'"nodeid":"test_gated.py::test_first"')
    (log,) = run.mdir.logs()
    if what == "log":
        log.unlink()
    else:
        shutil.rmtree(run.mdir.root)
    with LiveConnection(live, client="late") as conn:
        conn.settimeout(60)
        stream = conn.messages()
        assert isinstance(next(stream), ev.Welcome)
        header = next(stream)
        assert isinstance(header, ev.RunStarted), header
        assert header.run_id == live.run_id
        seen = []
        for message in stream:
            if isinstance(message, ev.TestFinished):
                seen.append(message.nodeid)
                if message.nodeid == "test_gated.py::test_first":
                    break
        assert "test_gated.py::test_first" in seen  # the backlog, from a deleted file
        run.open_gate()
        bye = None
        for message in stream:
            assert not isinstance(message, ev.ControlError), message
            if isinstance(message, ev.Bye):
                bye = message
                break
        assert bye is not None
        assert bye.reason == "run finished"
    assert run.finish() == 0
    out = run.output()
    assert f"{log.name} was deleted during the run" in out, out
    assert "open: testmon tui" not in out
