"""Per-test cost of testmon-live's hot paths, timed in-process (no xdist, no subprocesses).

The end-to-end benchmark (overhead.py) says *how much* ``--monitor`` costs, but on a
shared 2-core machine its spread is several percent. This times the pieces directly, each
the best of several repeats, so they can be compared with the per-test budget (a trivial
test costs pytest + xdist roughly 1-1.5 ms of CPU in total):

worker   ``LifecycleProbe`` hooks for one passing test (logstart + 3 x logreport)
worker   ``Sender.flush`` per event (stamp, encode a batch, hand it to a no-op ship)
ctl      ``Hub.ingest`` per event (decode, validate, append to the log, fold the state),
         in batches of the size a worker ships every 50 ms in the trivial suite
ctl      ``ControllerRecorder.pytest_runtest_logreport``: xdist's 3 reports of a test noted
         for the silence watcher
ctl      pytest-reportlog's per-test work for comparison (3 reports serialized to JSON)
worker   ``StallDetector.check`` on a watchdog tick while nothing stalls (4 ticks a second,
         not per test), and one stall sample of all threads (only while a phase stalls)

    .venv/bin/python benchmarks/_hotpath.py
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.activity import WorkerActivity
from testmon_live.plugin.clock import now
from testmon_live.plugin.controller import ControllerRecorder
from testmon_live.plugin.hub import Hub
from testmon_live.plugin.probes.lifecycle import LifecycleProbe
from testmon_live.plugin.probes.stacks import Sample
from testmon_live.plugin.probes.stalls import StallDetector
from testmon_live.plugin.runlog import MonitorDir
from testmon_live.plugin.sender import Sender

TESTS = 20_000
REPEATS = 5
BATCH = 25
"""Events per shipped batch: a worker runs ~500 trivial tests/s, and ships every 50 ms."""
NODEID = "test_trivial_007.py::test_123"


def best(repeats: int, body: Callable[[], float]) -> float:
    return min(body() for _ in range(repeats))


def reports(nodeid: str) -> list[pytest.TestReport]:
    location = ("test_trivial_007.py", 122, "test_123")
    return [
        pytest.TestReport(nodeid, location, {}, "passed", None, when, duration=0.0008)
        for when in ("setup", "call", "teardown")
    ]


def worker_hooks() -> float:
    """Seconds per test spent in the lifecycle hooks (and the emit of its one event)."""
    sender = Sender("gw0", lambda data, events: None)
    probe = LifecycleProbe(sender.emit, WorkerActivity(now()))
    phases = reports(NODEID)
    logstart, logreport = probe.pytest_runtest_logstart, probe.pytest_runtest_logreport
    location = phases[0].location

    def body() -> float:
        start = time.perf_counter()
        for _ in range(TESTS):
            logstart(NODEID, location)
            for report in phases:
                logreport(report)
        elapsed = time.perf_counter() - start
        sender._queue.clear()
        return elapsed / TESTS

    return best(REPEATS, body)


class _Node:
    """Stands for xdist's WorkerController (hashed by identity, as that one is)."""

    gateway = SimpleNamespace(id="gw0")


class _DSession:
    """Stands for xdist's DSession: the method the recorder wraps, doing nothing."""

    def worker_testreport(self, node: Any, rep: pytest.TestReport) -> None:
        pass


def controller_reports() -> float:
    """Seconds per test the controller spends noting xdist's 3 reports of a test (its
    wrapper around DSession.worker_testreport, less the wrapped method's own call)."""
    hub: Any = None
    dsession = _DSession()
    config: Any = SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=lambda name: dsession))
    recorder = ControllerRecorder(hub, config)
    phases = reports(NODEID)
    node = _Node()
    unwatch = recorder._watch_reports()
    assert unwatch is not None, "the recorder did not wrap worker_testreport"
    wrapped = dsession.worker_testreport
    unwatch()
    plain = dsession.worker_testreport

    def per_test(call: Callable[..., object]) -> float:
        start = time.perf_counter()
        for _ in range(TESTS):
            for report in phases:
                call(node=node, rep=report)
        return (time.perf_counter() - start) / TESTS

    def body() -> float:
        return per_test(wrapped) - per_test(plain)

    return best(REPEATS, body)


def finished_events(count: int, worker: str = "gw0") -> list[ev.Event]:
    t = now()
    return [
        ev.TestFinished(
            w=worker,
            ts=t,
            seq=i + 1,
            nodeid=f"test_trivial_{i // 500:03d}.py::test_{i % 500}",
            outcome="passed",
            phases=[
                ev.Phase("setup", t, 0.0009, "passed"),
                ev.Phase("call", t, 0.0008, "passed"),
                ev.Phase("teardown", t, 0.0007, "passed"),
            ],
            duration=0.0024,
        )
        for i in range(count)
    ]


def sender_flush() -> float:
    """Seconds per event for the sender thread: stamp, encode, ship (no-op)."""
    events = finished_events(TESTS)
    sender = Sender("gw0", lambda data, evs: None, capacity=TESTS + 1)

    def body() -> float:
        elapsed = 0.0
        for i in range(0, TESTS, BATCH):
            for event in events[i : i + BATCH]:
                sender.emit(event)
            start = time.perf_counter()
            sender.flush()  # one batch, as the thread ships it every 50 ms
            elapsed += time.perf_counter() - start
        return elapsed / TESTS

    return best(REPEATS, body)


def hub_ingest(folder: Path) -> float:
    """Seconds per event for the controller: Hub.ingest of batches from one worker."""
    events = finished_events(TESTS)
    batches = [ev.encode_lines(events[i : i + BATCH]) for i in range(0, TESTS, BATCH)]
    header = ev.RunStarted(schema=ev.SCHEMA_VERSION, run_id="bench", rootdir=str(folder), ts=now())
    hub = Hub(MonitorDir(folder / ".testmon"), header)
    hub.start()
    up = ev.WorkerStarted(w="gw0", ts=now(), seq=0, schema=ev.SCHEMA_VERSION, pid=1)
    hub.ingest("gw0", ev.encode_lines([up]))
    try:

        def body() -> float:
            start = time.perf_counter()
            for batch in batches:
                hub.ingest("gw0", batch)
            return (time.perf_counter() - start) / TESTS

        return best(REPEATS, body)
    finally:
        hub.close(0)


def reportlog_per_test(folder: Path) -> float:
    """Seconds per test for what pytest-reportlog does in the controller (3 reports)."""
    config = pytest.Config.fromdictargs({}, [])
    hook = config.hook
    phases = reports(NODEID)
    path = folder / "reportlog.jsonl"

    def body() -> float:
        with path.open("w") as handle:
            start = time.perf_counter()
            for _ in range(TESTS // 4):
                for report in phases:
                    data = hook.pytest_report_to_serializable(config=config, report=report)
                    handle.write(json.dumps(data) + "\n")
                    handle.flush()  # reportlog flushes every line
            return (time.perf_counter() - start) / (TESTS // 4)

    return best(REPEATS, body)


def stall_check() -> float:
    """Seconds per watchdog tick spent in stall detection while nothing stalls."""
    activity = WorkerActivity(now())
    activity.phase = "call"
    detector = StallDetector(activity, lambda event: None, 30.0)
    check = detector.check

    def body() -> float:
        t = now()
        start = time.perf_counter()
        for _ in range(TESTS):
            check(t)
        return (time.perf_counter() - start) / TESTS

    return best(REPEATS, body)


def stall_sample() -> float:
    """Seconds for one sample of every thread with verdicts (while a phase stalls)."""

    def body() -> float:
        start = time.perf_counter()
        first = Sample(time.perf_counter())
        Sample(time.perf_counter()).stacks(first)
        return (time.perf_counter() - start) / 2

    return best(REPEATS * 4, body)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="testmon-hotpath-") as tmp:
        folder = Path(tmp)
        rows = [
            ("worker", "lifecycle hooks, one passing test", worker_hooks()),
            ("worker", "sender flush, per event", sender_flush()),
            ("controller", "Hub.ingest, per event", hub_ingest(folder)),
            ("controller", "xdist reports noted, per test (3 reports)", controller_reports()),
            ("controller", "pytest-reportlog, per test (3 reports)", reportlog_per_test(folder)),
            ("worker", "stall check, per watchdog tick", stall_check()),
            ("worker", "stall sample of all threads (stalled only)", stall_sample()),
        ]
    print(f"best of {REPEATS} x {TESTS} tests")
    for side, what, seconds in rows:
        print(f"{side:<10} {what:<42} {seconds * 1e6:7.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
