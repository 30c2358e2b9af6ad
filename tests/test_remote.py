"""Remote workers: xdist gateways over execnet's socket server are monitored like local ones."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import RunLogError

from .conftest import (
    HOLD_THE_GIL,
    Recorded,
    open_gate,
    read_recorded,
    run_logs,
    write_gate_module,
)

# execnet's own socket server (execnet/script/socketserver.py serves one gateway per
# process): N processes share one listening port, so `--tx N*socket=HOST:PORT` connects N
# workers to it.
SERVER = """
import os, sys
import execnet.script.socketserver as server
from execnet.gateway_base import get_execmodel

count = int(sys.argv[1])
# Remote code in the main thread, one remote_exec after the other: under "thread", xdist's
# worker could land in a pool thread when its remote_exec overtook the gateway's info call,
# and a test there cannot set a signal handler (execnet 2.1 has main_thread_only).
try:
    server.execmodel = get_execmodel("main_thread_only")
except ValueError:
    server.execmodel = get_execmodel("thread")
sock = server.bind_and_listen(("127.0.0.1", 0), server.execmodel)
print(sock.getsockname()[1], flush=True)
children = []
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        server.exec_from_one_connection(sock)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""

SUITE = """
import time
import pytest

@pytest.fixture(scope="session")
def service():
    # long enough that every worker's watchdog beats at least once (first beat at 0.25 s)
    time.sleep(0.6)
    yield "up"

@pytest.fixture
def client(service):
    yield service

@pytest.mark.parametrize("n", range(10))
def test_call(n, client):
    time.sleep(0.02)

def test_broken(client):
    assert client == "down"

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass
"""


@pytest.fixture
def socket_server(tmp_path: Path) -> Iterator[int]:
    """Two execnet socket-server processes on one loopback port; the port."""
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield port
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def comparable(run: Recorded) -> dict[str, object]:
    """What must not depend on where the workers ran."""
    tests = sorted(
        (t.nodeid, t.outcome, tuple(p.when for p in t.phases), tuple(f.name for f in t.fixtures))
        for t in run.of(ev.TestFinished)
    )
    fixtures = sorted((f.name, f.scope) for f in run.of(ev.FixtureSetup))
    end = run.events[-1]
    assert isinstance(end, ev.RunFinished)
    return {"tests": tests, "fixtures": fixtures, "counts": end.counts, "exit": end.exitstatus}


def test_remote_run_log_matches_a_local_run(pytester: pytest.Pytester, socket_server: int) -> None:
    pytester.makepyfile(test_svc=SUITE)
    local = pytester.runpytest_subprocess("--monitor", "-n", "2")
    local.assert_outcomes(passed=10, failed=1, skipped=1)
    tx = f"2*socket=127.0.0.1:{socket_server}//chdir={pytester.path}"
    remote = pytester.runpytest_subprocess("--monitor", "--dist", "load", "--tx", tx)
    remote.assert_outcomes(passed=10, failed=1, skipped=1)
    local_log, remote_log = (read_recorded(p) for p in run_logs(pytester.path))
    assert comparable(remote_log) == comparable(local_log)

    assert remote_log.header.tx == [f"socket=127.0.0.1:{socket_server}//chdir={pytester.path}"] * 2
    started = remote_log.of(ev.WorkerStarted)
    assert {s.w for s in started} == {"gw0", "gw1"}
    for s in started:
        assert s.remote
        assert s.spec == f"socket=127.0.0.1:{socket_server}"
        assert s.pid not in (0, os.getpid())
    assert len({s.pid for s in started}) == 2
    # heartbeats and live activity ride the same gateway
    assert {h.w for h in remote_log.of(ev.Heartbeat)} == {"gw0", "gw1"}
    assert {t.w for t in remote_log.of(ev.TestFinished)} == {"gw0", "gw1"}
    assert {d.w for d in remote_log.of(ev.WorkerDown)} == {"gw0", "gw1"}


def test_remote_crash_says_what_the_controller_cannot_know(
    pytester: pytest.Pytester, socket_server: int
) -> None:
    pytester.makepyfile(
        test_k="""
import os, time
def test_first(): time.sleep(0.2)
def test_dies(): os._exit(5)
"""
    )
    tx = f"2*socket=127.0.0.1:{socket_server}//chdir={pytester.path}"
    result = pytester.runpytest_subprocess(
        "--monitor", "--dist", "load", "--tx", tx, "--max-worker-restart=0"
    )
    result.assert_outcomes(passed=1, failed=1)
    (crash,) = read_recorded(run_logs(pytester.path)[0]).of(ev.WorkerCrashed)
    assert crash.test == "test_k.py::test_dies"
    assert crash.exitcode is None
    assert crash.signal is None
    assert crash.note == "remote worker: its exit code is not known to the controller"


def test_frozen_remote_worker_is_reported_unresponsive_without_stacks(
    pytester: pytest.Pytester, socket_server: int
) -> None:
    """The hub cannot signal a process on another machine: silence is all it reports."""
    gate = pytester.path / "gate"
    write_gate_module(pytester.path)
    pytester.makepyfile(
        test_f=f"""
import re
from gate import GateOpened, alarm_at_the_gate

def test_frozen():
    waiter = alarm_at_the_gate({str(gate)!r})  # (a remote worker has the server's env)
    try:
        {HOLD_THE_GIL}
    except GateOpened:
        pass
    finally:
        waiter.wait()
"""
    )
    tx = f"1*socket=127.0.0.1:{socket_server}//chdir={pytester.path}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--monitor",
         "--monitor-stall=1", "--dist", "load", "--tx", tx],
        cwd=pytester.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip

    def silent() -> bool:
        logs = run_logs(pytester.path)
        try:
            events = read_recorded(logs[0]).events if logs else []
        except RunLogError:  # the hub has only just created it
            return False
        return any(isinstance(e, ev.Unresponsive) and not e.recovered for e in events)

    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not silent():
            time.sleep(0.1)
        open_gate(gate)  # the worker holds the GIL until here
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "1 passed" in output
    run = read_recorded(run_logs(pytester.path)[0])
    silences = [u for u in run.of(ev.Unresponsive) if not u.recovered]
    assert silences, [(type(e).__name__, e.w, e.ts) for e in run.events]
    assert [u.test for u in silences] == ["test_f.py::test_frozen"]
    assert [u.w for u in run.of(ev.Unresponsive) if u.recovered] == ["gw0"]
    assert not [s for s in run.of(ev.Stall) if s.reason == "unresponsive"]
