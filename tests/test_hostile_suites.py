"""Suites that attack the monitor from inside the run, as real test suites do by accident:
they mock the clock, install signal handlers, make text that is no valid Unicode, turn
warnings into errors, name their gateways oddly and raise exceptions that cannot be printed.
Whatever they do, the run's outcome is what it is without ``--monitor``, and the monitor
keeps recording.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.state import worker_order

from .conftest import only_run, run_logs

TIMEOUT = 120.0
MODES = pytest.mark.parametrize(
    "mode", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "single"]
)


def outcomes(result: pytest.RunResult) -> tuple[int, dict[str, int]]:
    return int(result.ret), result.parseoutcomes()


def assert_same_outcome(
    pytester: pytest.Pytester, *args: str, monitor: tuple[str, ...] = ("--monitor",)
) -> pytest.RunResult:
    """Run the suite plain and monitored: exit code and counts must be equal."""
    plain = pytester.runpytest_subprocess(*args, timeout=TIMEOUT)
    monitored = pytester.runpytest_subprocess(*monitor, *args, timeout=TIMEOUT)
    assert outcomes(monitored) == outcomes(plain), monitored.stdout.str() + monitored.stderr.str()
    assert "INTERNALERROR" not in monitored.stdout.str() + monitored.stderr.str()
    return monitored


# ----------------------------------------------------------------- 1. the clock

HEARTBEATS = '''
import time
import pytest

_sleep, _monotonic = time.sleep, time.monotonic  # bound before any test patches them


@pytest.fixture
def heartbeats(request):
    """Waits until the monitor's watchdog has beaten ``n`` more times (at once without it)."""
    from testmon_live.plugin.session import worker_key

    recorder = request.config.stash.get(worker_key, None)

    def wait(n=2):
        if recorder is None:
            return
        watchdog = recorder.watchdog
        if not hasattr(watchdog, "beats"):  # an older monitor: give it time to beat
            _sleep(2.5)
            return
        goal = watchdog.beats + n
        deadline = _monotonic() + 60
        while watchdog.beats < goal:
            assert _monotonic() < deadline, "the watchdog did not beat for 60 s"
            _sleep(0.01)

    return wait
'''

CLOCK_TESTS = """
import threading
import time
from unittest import mock


def test_mocked_perf_counter(heartbeats):
    with mock.patch("time.perf_counter", side_effect=[10.0, 12.5]):
        heartbeats()  # the monitor's threads run meanwhile
        start = time.perf_counter()
        end = time.perf_counter()
    assert end - start == 2.5


def test_counting_fake_of_monotonic(monkeypatch, heartbeats):
    calls = []
    real = time.monotonic

    def counting():
        calls.append(threading.get_ident())
        return real()

    monkeypatch.setattr(time, "monotonic", counting)
    heartbeats()
    time.monotonic()
    assert calls == [threading.get_ident()]


def test_the_watchdog_still_beats(heartbeats):
    heartbeats()
"""


@MODES
def test_a_mocked_clock_sees_only_the_tests_own_calls(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    pytester.makeconftest(HEARTBEATS)
    pytester.makepyfile(test_clock=CLOCK_TESTS)
    result = assert_same_outcome(pytester, *mode, "-p", "no:randomly", "--monitor-stall=1")
    result.assert_outcomes(passed=3)
    out = result.stdout.str() + result.stderr.str()
    assert "Exception in thread" not in out
    assert "PytestUnhandledThreadExceptionWarning" not in out
    run = only_run(pytester)
    assert not run.of(ev.Unresponsive)
    assert not [s for s in run.of(ev.Stall) if s.reason == "unresponsive"]
    # the watchdog outlived the mocked clocks: heartbeats during the last test
    last = "test_clock.py::test_the_watchdog_still_beats"
    assert [h for h in run.of(ev.Heartbeat) if h.test == last]
    assert len(run.of(ev.TestFinished)) == 3


AUDIT_CONFTEST = HEARTBEATS + '''
import builtins, json, os, signal, socket, sys, sysconfig, threading

_getframe = sys._getframe
_STDLIB = tuple(
    sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")
)
PATCHED = [
    (time, "time"), (time, "monotonic"), (time, "perf_counter"), (time, "sleep"),
    (time, "time_ns"), (time, "monotonic_ns"), (time, "perf_counter_ns"),
    (os, "getpid"), (os, "getcwd"), (os, "times"), (os, "uname"), (os, "stat"),
    (os, "fstat"), (os, "listdir"), (os, "unlink"), (os, "replace"), (os, "open"),
    (os, "write"), (os, "read"), (os, "close"), (os, "kill"), (os, "urandom"),
    (builtins, "open"), (threading, "get_ident"), (threading, "current_thread"),
    (threading, "main_thread"), (threading, "enumerate"), (threading, "active_count"),
    (sys, "_current_frames"), (signal, "getsignal"), (socket, "create_connection"),
    (json, "dumps"), (json, "loads"),
]


def _caller_module():
    """The module of the first caller outside the standard library (and this file)."""
    frame = _getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        path = frame.f_code.co_filename
        if name != __name__ and not (path.startswith(_STDLIB) and "site-packages" not in path):
            return name, frame.f_code.co_name
        frame = frame.f_back
    return "", ""


@pytest.fixture
def audit(monkeypatch):
    """Patches the standard library the way tests do; lists every call the monitor made."""
    hits = []

    def counting(owner, name, real):
        def fake(*args, **kwargs):
            module, func = _caller_module()
            if module.startswith("testmon_live"):
                hits.append(f"{owner.__name__}.{name} from {module}.{func}")
            return real(*args, **kwargs)
        return fake

    for owner, name in PATCHED:
        monkeypatch.setattr(owner, name, counting(owner, name, getattr(owner, name)))
    yield hits
    monkeypatch.undo()
'''

AUDIT_TESTS = """
import os
import time
from pathlib import Path

from filelock import FileLock

from testmon_live.plugin import monitor

_sleep = time.sleep


def test_a_test_that_patches_everything(audit, heartbeats, request):
    from testmon_live.plugin.session import worker_key

    with FileLock(str(Path(__file__).parent / "shared.lock")):
        pass
    with monitor.lock("audit", timeout=5):
        pass
    heartbeats(3)  # the watchdog beats and samples a stall (--monitor-stall=0.5)
    recorder = request.config.stash.get(worker_key, None)
    if recorder is not None and recorder.stalls is not None:
        while recorder.stalls.stalls < 1:
            _sleep(0.01)
        heartbeats(2)
    assert audit == []
"""


@MODES
def test_no_call_of_the_monitor_goes_through_a_patchable_name(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    pytester.makeconftest(AUDIT_CONFTEST)
    pytester.makepyfile(test_audit=AUDIT_TESTS)
    result = pytester.runpytest_subprocess(
        "--monitor", *mode, "--monitor-stall=0.5", timeout=TIMEOUT
    )
    assert result.ret == 0, result.stdout.str()
    run = only_run(pytester)
    # it did stall (so the stacks of every thread were sampled under the patches)
    assert [s for s in run.of(ev.Stall) if s.reason == "stall"]
    assert [e for e in run.of(ev.LockEvent) if e.kind == "filelock"]
