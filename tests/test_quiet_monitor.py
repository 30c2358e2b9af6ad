"""What ``--monitor`` leaves out of a run that does not need it (issue 18): threads that
would wake up to look for nothing, modules it would import for nothing."""

from __future__ import annotations

import gc
import json

import pytest

from .conftest import only_run

# The controller's own conftest hook: what runs in it at the end of the session.
SPY = """
import json, os, sys, threading

def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    with open(os.environ["SPY_OUT"], "w") as out:
        json.dump({
            "threads": sorted(t.name for t in threading.enumerate()),
            "modules": sorted(m for m in sys.modules if m.startswith("testmon_live")),
        }, out)
"""


def test_a_run_without_containers_has_no_engine_watch(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("docker")  # without the SDK there never was a watch
    out = pytester.path / "spy.json"
    monkeypatch.setenv("SPY_OUT", str(out))
    pytester.makeconftest(SPY)
    pytester.makepyfile(test_x="def test_a(): pass\ndef test_b(): pass\n")
    result = pytester.runpytest_subprocess("--monitor", "-n", "2")
    result.assert_outcomes(passed=2)
    seen = json.loads(out.read_text())
    assert "testmon-live-silence" in seen["threads"]  # the spy sees the monitor's threads
    assert "testmon-engine" not in seen["threads"]
    assert "testmon_live.plugin.probes.container_engine" not in seen["modules"]
    assert only_run(pytester).tests_by_id().keys() == {"test_x.py::test_a", "test_x.py::test_b"}


def test_an_idle_sender_sleeps_until_the_next_event() -> None:
    """A worker in a long test sends nothing: its sender does not wake up every interval
    to find nothing, and the first event after the quiet spell still goes out."""
    import threading

    from testmon_live.plugin import events as ev
    from testmon_live.plugin.sender import Sender

    shipped: list[ev.Event] = []
    arrived = threading.Event()

    def ship(_data: bytes, batch: list[ev.Event]) -> None:
        shipped.extend(batch)
        arrived.set()

    class CountingEvent(threading.Event):
        waits = 0

        def wait(self, timeout: float | None = None) -> bool:
            CountingEvent.waits += 1
            return super().wait(timeout)

    sender = Sender("gw0", ship, interval=0.01)
    sender._wake = CountingEvent()
    sender.start()
    try:
        sender.emit(ev.Notice(msg="first"))
        assert arrived.wait(30)
        settled = CountingEvent.waits
        # 50 intervals of nothing to send: a polling sender wakes up ~50 times meanwhile
        assert not threading.Event().wait(0.5)
        assert CountingEvent.waits - settled <= 3
        arrived.clear()
        sender.emit(ev.Notice(msg="after the quiet spell"))
        assert arrived.wait(30)
        assert [e.msg for e in shipped if isinstance(e, ev.Notice)] == [
            "first",
            "after the quiet spell",
        ]
    finally:
        assert sender.close()


# Where each process stands on the collector's frozen generation, as tests run and after.
FREEZE_SPY = """
import gc, json, os

seen = {"controller": [], "tests": []}

def pytest_configure(config):
    if os.environ.get("SPY_FREEZE") and not hasattr(config, "workerinput"):
        gc.freeze()  # the process's own, which the monitor must leave as it is
        seen["configure"] = gc.get_freeze_count()

def pytest_runtest_logreport(report):
    if not hasattr(report, "node"):  # the controller sees xdist's copy of each report
        return
    seen["controller"].append(gc.get_freeze_count())

def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        seen["sessionfinish"] = gc.get_freeze_count()

def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):
        return
    seen["after"] = gc.get_freeze_count()
    if os.environ.get("SPY_FREEZE"):
        gc.unfreeze()
    with open(os.environ["SPY_OUT"], "w") as out:
        json.dump(seen, out)
"""


@pytest.mark.parametrize("case", ["xdist", "no xdist", "process froze", "in process"])
def test_an_xdist_controller_is_frozen_for_the_collector_and_no_test_process_is(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    out = pytester.path / "spy.json"
    monkeypatch.setenv("SPY_OUT", str(out))
    if case == "process froze":
        monkeypatch.setenv("SPY_FREEZE", "1")
    pytester.makeconftest(FREEZE_SPY)
    # Each test says whether its own process froze anything: it must not have.
    pytester.makepyfile(
        test_x="import gc\n"
        + "".join(f"def test_{i}():\n    assert gc.get_freeze_count() == 0\n" for i in range(4))
    )
    if case == "no xdist":
        result = pytester.runpytest_subprocess("--monitor", "-p", "no:xdist")
    elif case == "in process":
        # pytest run inside this test's process: this process runs tests, never frozen.
        # (The dashboard freezes what it folded: a dashboard test run before this one in
        # the same process leaves objects frozen, which would hide a freeze of the run's.)
        gc.unfreeze()
        result = pytester.runpytest_inprocess("--monitor", "-n", "2")
    else:
        result = pytester.runpytest_subprocess("--monitor", "-n", "2")
    seen = json.loads(out.read_text())
    if case == "process froze":
        # Its own freeze stays exactly as it made it (its tests run in the workers)
        result.assert_outcomes(passed=4)
        # (objects freed leave the frozen generation: the count can only fall)
        counts = [*seen["controller"], seen["sessionfinish"], seen["after"]]
        assert len(counts) == 14
        assert all(0 < count <= seen["configure"] for count in counts)
        return
    result.assert_outcomes(passed=4)
    if case == "xdist":
        assert len(seen["controller"]) == 12  # three phases of four tests
        assert all(count > 0 for count in seen["controller"])
    elif case == "in process":
        assert seen["controller"] == [0] * 12
    else:  # no xdist: the spy's check is each test's own assertion (no report has .node)
        assert seen["controller"] == []
    assert seen["sessionfinish"] == 0  # a user's session cleanup runs unfrozen
    assert seen["after"] == 0


# The controller's conftest: after each report xdist hands to the hooks, what the
# controller says that worker is running, and who else implements the report hook.
REPORT_SPY = """
import json, os

from testmon_live.plugin.session import controller_key

seen = {"running": [], "implementers": set()}

def pytest_runtest_logreport(report):
    node = getattr(report, "node", None)
    if node is None:
        return
    config = node.config
    controller = config.stash[controller_key]
    seen["running"].append(
        [report.nodeid, report.when, list(controller.running(node.gateway.id) or [])]
    )
    seen["implementers"].update(
        config.pluginmanager.get_name(impl.plugin) or "?"
        for impl in config.hook.pytest_runtest_logreport.get_hookimpls()
    )

def pytest_unconfigure(config):
    if hasattr(config, "workerinput"):
        return
    dsession = config.pluginmanager.get_plugin("dsession")
    seen["wrapped after"] = "worker_testreport" in vars(dsession)
    seen["implementers"] = sorted(seen["implementers"])
    with open(os.environ["SPY_OUT"], "w") as out:
        json.dump(seen, out)
"""


def test_the_controller_keeps_each_workers_last_report_without_a_hook_of_its_own(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What :meth:`ControllerRecorder.running` answers comes from xdist's reports, taken
    on xdist's ``worker_testreport`` for the loop only: no ``pytest_runtest_logreport`` of
    the monitor is dispatched three times a test."""
    out = pytester.path / "spy.json"
    monkeypatch.setenv("SPY_OUT", str(out))
    pytester.makeconftest(REPORT_SPY)
    pytester.makepyfile(test_x="def test_a(): pass\ndef test_b(): pass\ndef test_c(): pass\n")
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "--monitor-stall=30")
    result.assert_outcomes(passed=3)
    seen = json.loads(out.read_text())
    assert not any("testmon" in name for name in seen["implementers"]), seen["implementers"]
    assert seen["wrapped after"] is False
    said = {(nodeid, when): tuple(running[:2]) for nodeid, when, running in seen["running"]}
    assert len(said) == 9
    for test in ("test_x.py::test_a", "test_x.py::test_b", "test_x.py::test_c"):
        # past its setup a worker is in the test's call; past its call, in its teardown
        assert said[test, "setup"] == (test, "call")
        assert said[test, "call"] == (test, "teardown")


def test_an_xdist_without_the_expected_report_method_gets_the_hook_instead() -> None:
    from types import SimpleNamespace
    from typing import Any

    from testmon_live.plugin.controller import ControllerRecorder

    class OtherDSession:
        def worker_testreport(self, node: Any, report: Any) -> None:  # another signature
            pass

    registered: dict[str, Any] = {}
    dsession = OtherDSession()
    config: Any = SimpleNamespace(
        pluginmanager=SimpleNamespace(
            get_plugin=lambda name: dsession if name == "dsession" else None,
            has_plugin=lambda name: name in registered,
            register=lambda plugin, name: registered.setdefault(name, plugin),
        )
    )
    recorder = ControllerRecorder(None, config)  # type: ignore[arg-type]
    assert recorder._watch_reports() is None
    assert "worker_testreport" not in vars(dsession)  # left alone
    (watch,) = registered.values()

    class Node:  # xdist's WorkerController: hashed by identity
        gateway = SimpleNamespace(id="gw3")

    node = Node()
    report = pytest.TestReport("t.py::test_a", ("t.py", 0, "test_a"), {}, "passed", None, "setup")
    report.node = node  # type: ignore[attr-defined]
    watch.pytest_runtest_logreport(report)
    assert recorder.running("gw3") == ("t.py::test_a", "call", report.stop)
