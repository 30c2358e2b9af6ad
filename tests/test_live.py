"""Viewers attach to a running hub over its socket: backlog first, then the live tail."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import LiveRun, MonitorDir, iter_log, live_runs
from testmon_live.plugin.server import HELLO_TIMEOUT
from testmon_live.tui.hub_client import LiveConnection, SourceError

GATED_SUITE = """
import os, time, pytest

def test_first(): pass

@pytest.mark.parametrize("n", range(4))
def test_early(n): pass

def test_gate():
    gate = os.environ["GATE"]
    deadline = time.monotonic() + 60
    while not os.path.exists(gate):
        assert time.monotonic() < deadline, "nobody opened the gate"
        time.sleep(0.02)

@pytest.mark.parametrize("n", range(6))
def test_late(n): time.sleep(0.05)
"""


class GatedRun:
    """A `pytest --monitor` run in the background that waits in test_gate until opened."""

    def __init__(self, root: Path, extra: list[str]) -> None:
        self.root = root
        self.gate = root / "gate"
        env = dict(os.environ, GATE=str(self.gate))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--monitor", *extra],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.mdir = MonitorDir(root / ".testmon")

    def live(self, timeout: float = 30) -> LiveRun:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = live_runs(self.mdir)
            if runs:
                return runs[0]
            assert self.proc.poll() is None, self.output()
            time.sleep(0.02)
        raise AssertionError("no live run appeared")

    def wait_in_log(self, needle: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = self.mdir.logs()
            if logs and needle in logs[0].read_bytes():
                return
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} never reached the log")

    def open_gate(self) -> None:
        self.gate.write_text("go")

    def finish(self, timeout: float = 60) -> int:
        self.open_gate()
        return self.proc.wait(timeout)

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


Start = Callable[[list[str]], GatedRun]


@pytest.fixture
def gated(pytester: pytest.Pytester) -> Iterator[Start]:
    """Start gated runs in pytester's folder; whatever still runs at the end is killed."""
    pytester.makepyfile(test_gated=GATED_SUITE)
    started: list[GatedRun] = []

    def start(extra: list[str]) -> GatedRun:
        run = GatedRun(pytester.path, extra)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def read_until(conn: LiveConnection, predicate: type | None = None) -> list[ev.Event | ev.Control]:
    got: list[ev.Event | ev.Control] = []
    for message in conn.messages():
        got.append(message)
        if predicate is not None and isinstance(message, predicate):
            break
    return got


@pytest.mark.parametrize("mode", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "single"])
def test_viewer_attaching_mid_run_gets_backlog_then_live_tail(
    gated: Start, mode: list[str]
) -> None:
    run = gated(mode)
    live = run.live()
    assert live.address.keys() == {"unix"}
    sock_dir = Path(str(live.address["unix"])).parent
    assert sock_dir.stat().st_mode & 0o777 == 0o700
    assert (run.mdir.live_path(live.run_id).stat().st_mode & 0o777) == 0o600
    run.wait_in_log(b'"nodeid":"test_gated.py::test_first"')

    with LiveConnection(live, client="test") as conn:
        conn.settimeout(60)
        stream = conn.messages()
        welcome = next(stream)
        assert isinstance(welcome, ev.Welcome)
        assert welcome.run_id == live.run_id
        assert welcome.backlog_bytes > 0
        header = next(stream)
        assert isinstance(header, ev.RunStarted)
        seen: list[ev.Event] = [header]
        # read until the gate test is running somewhere, then ping that worker
        gate_worker = None
        for message in stream:
            assert isinstance(message, ev.Event)
            seen.append(message)
            if (
                isinstance(message, (ev.Activity, ev.Heartbeat))
                and message.test == "test_gated.py::test_gate"
            ):
                gate_worker = message.w
                break
        assert gate_worker is not None
        connected_at = time.time()
        conn.send(ev.Command(worker=gate_worker, cmd="ping", id=41))
        conn.send(ev.Command(worker="gw99", cmd="ping", id=42))
        reply = error = None
        for message in stream:
            if isinstance(message, ev.ControlError):
                error = message
            elif isinstance(message, ev.Event):
                seen.append(message)
                if isinstance(message, ev.CommandReply):
                    reply = message
            if reply and error:
                break
        assert reply is not None
        assert reply.request == 41
        assert reply.w == gate_worker
        assert reply.result["test"] == "test_gated.py::test_gate"
        assert error is not None
        assert "no live worker 'gw99'" in error.msg
        run.open_gate()
        bye = None
        for message in stream:
            if isinstance(message, ev.Bye):
                bye = message
                break
            if isinstance(message, ev.Event):
                seen.append(message)
        assert bye is not None
        assert bye.reason == "run finished"

    assert run.finish() == 0
    # the viewer saw exactly what the log holds, in the same order: no gap, no duplicate
    (log,) = run.mdir.logs()
    logged = list(iter_log(log))
    assert [ev.encode(e) for e in seen] == [ev.encode(e) for e in logged]
    tests = {e.nodeid: e for e in seen if isinstance(e, ev.TestFinished)}
    assert len(tests) == 12
    # the gate test finished after the viewer attached: it came through the live tail
    assert tests["test_gated.py::test_gate"].ts > connected_at
    assert tests["test_gated.py::test_first"].ts < connected_at
    assert not run.mdir.live_path(live.run_id).exists()
    assert not sock_dir.exists()


def test_tcp_viewer_with_token(gated: Start) -> None:
    run = gated(["-n", "2", "--monitor-listen", "127.0.0.1:0"])
    live = run.live()
    assert live.address.keys() == {"tcp"}
    tcp = live.address["tcp"]
    assert isinstance(tcp, list)
    assert tcp[0] == "127.0.0.1"
    assert int(tcp[1]) > 0
    with LiveConnection(live) as conn:
        conn.settimeout(30)
        got = read_until(conn, ev.RunStarted)
        assert isinstance(got[0], ev.Welcome)
    wrong = LiveRun(live.run_id, live.path, live.pid, "not-the-token", live.address, live.log)
    with LiveConnection(wrong) as conn:
        conn.settimeout(30)
        with pytest.raises(SourceError, match="wrong token"):
            read_until(conn)
    assert run.finish() == 0


def _raw(live: LiveRun) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(live.address["unix"]))
    return sock


def _recv_lines(sock: socket.socket) -> list[bytes]:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return [line for line in data.split(b"\n") if line]


def test_garbage_on_the_viewer_socket_is_refused_and_the_run_goes_on(
    gated: Start, pytester: pytest.Pytester
) -> None:
    run = gated(["-n", "2"])
    live = run.live()

    # 1. garbage instead of a hello: a fatal error line, then the hub hangs up
    sock = _raw(live)
    sock.sendall(b"\x00\xffGET / HTTP/1.1\r\n\r\n")
    (line,) = _recv_lines(sock)
    error = ev.decode_control(line)
    assert isinstance(error, ev.ControlError)
    assert error.fatal
    assert "expected a hello line first" in error.msg
    sock.close()

    # 2. a hello of another schema
    sock = _raw(live)
    sock.sendall(ev.encode_line(ev.Hello(schema=99, token=live.token)))
    (line,) = _recv_lines(sock)
    error = ev.decode_control(line)
    assert isinstance(error, ev.ControlError)
    assert "schema 99" in error.msg
    sock.close()

    # 3. a line over the limit
    sock = _raw(live)
    with contextlib.suppress(OSError):  # the hub may hang up before it read everything
        sock.sendall(b"x" * (ev.MAX_CONTROL_LINE + 10))
    lines = _recv_lines(sock)
    assert lines
    assert b"longer than" in lines[0]
    sock.close()

    # 4. a good viewer that sends garbage after its hello keeps its stream
    with LiveConnection(live) as conn:
        conn.settimeout(30)
        conn.sock.sendall(b"{not json}\n" + b'{"t":"hello","schema":1,"token":"x"}\n')
        errors = []
        for message in conn.messages():
            if isinstance(message, ev.ControlError):
                errors.append(message)
                if len(errors) == 2:
                    break
        assert "malformed" in errors[0].msg
        assert not errors[0].fatal
        assert "commands only" in errors[1].msg
        run.wait_in_log(b'"test":"test_gated.py::test_gate"')
        gate_worker = next(
            e.w
            for e in iter_log(run.mdir.logs()[0])
            if isinstance(e, ev.Activity) and e.test == "test_gated.py::test_gate"
        )
        conn.send(ev.Command(worker=gate_worker, cmd="ping", id=7))
        assert any(isinstance(m, ev.CommandReply) and m.request == 7 for m in _take(conn, 400))

    # 5. a viewer that never says hello is dropped after the timeout, while the run goes on
    silent = _raw(live)  # (it waits up to 30 s for the hub to hang up)
    (line,) = _recv_lines(silent)
    silent.close()
    error = ev.decode_control(line)
    assert isinstance(error, ev.ControlError)
    assert error.fatal
    assert f"no hello within {HELLO_TIMEOUT:.0f} s" in error.msg
    assert run.proc.poll() is None, "the run went on"
    assert run.finish() == 0
    (log,) = run.mdir.logs()
    notices = [e.msg for e in iter_log(log) if isinstance(e, ev.Notice)]
    assert sum("refused a viewer" in n for n in notices) >= 4
    end = list(iter_log(log))[-1]
    assert isinstance(end, ev.RunFinished)
    assert end.counts == {"passed": 12}


def _take(conn: LiveConnection, limit: int) -> Iterator[ev.Event | ev.Control]:
    for n, message in enumerate(conn.messages()):
        yield message
        if n >= limit or isinstance(message, ev.CommandReply):
            return
