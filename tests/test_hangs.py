"""Hangs: real hung suites under `pytest -n 2 --monitor --monitor-stall=1`.

Every hang in the inner suite ends by itself (a timeout of HANG seconds), but for the
native code that holds the GIL: it holds it until the test has seen what it checks and
opens a gate (a file; ``gate.py`` of tests/conftest.py), so these runs are bounded and no
duration is calibrated. One monitored run and
one plain run of the same suite are shared by the tests of this module; each test then
checks one scenario: reported within stall + 2 s, with the right test, phase, user frame
and verdict, and with the outcomes the plain run had.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.notices import status_lines
from testmon_live.plugin.probes.stacks import Sample, classify, frame_text, parse_faulthandler
from testmon_live.plugin.probes.unresponsive import read_dump
from testmon_live.plugin.runlog import MonitorDir, RunLogError, live_runs
from testmon_live.plugin.state import RunState
from testmon_live.tui.cli import main
from testmon_live.tui.forensics.dump import stall_text
from testmon_live.tui.reports.logs import LoadedRun
from testmon_live.tui.reports.model import build_report

from .conftest import (
    HOLD_THE_GIL,
    Recorded,
    only_run,
    open_gate,
    panel_text,
    read_recorded,
    write_gate_module,
)

STALL = 1.0
HANG = 3.0
"""Seconds every inner hang lasts before its own timeout ends it."""
REPORTED_WITHIN = STALL + 2.0
RUN_TIMEOUT = 180
PYTEST = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly")

CONFTEST = """
import queue, threading, time, pytest

@pytest.fixture(scope="session")
def warehouse():
    time.sleep(HANG)  # slow session setup before the first test using it
    yield "stock"

@pytest.fixture
def stuck_setup():
    ready = threading.Event()
    ready.wait(HANG)  # nobody sets it
    yield

@pytest.fixture
def stuck_teardown():
    yield
    inbox = queue.Queue()
    try:
        inbox.get(timeout=HANG)  # nobody puts
    except queue.Empty:
        pass
""".replace("HANG", repr(HANG))

SUITE = """
import asyncio, os, re, threading, time
from gate import GateOpened, alarm_at_the_gate

HANG = {hang!r}

def test_missed_wakeup():
    cond = threading.Condition()
    with cond:
        cond.notify()  # the notify comes before anyone waits
    with cond:
        woken = cond.wait(timeout=HANG)
    assert not woken

def test_abba_deadlock():
    lock_a, lock_b = threading.Lock(), threading.Lock()
    both = threading.Barrier(2)

    def first():
        with lock_a:
            both.wait()
            if lock_b.acquire(timeout=HANG):
                lock_b.release()

    def second():
        with lock_b:
            both.wait()
            if lock_a.acquire(timeout=HANG):
                lock_a.release()

    threads = [threading.Thread(target=first, name="first"),
               threading.Thread(target=second, name="second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

def test_consumer_never_woken():
    cond = threading.Condition()
    items = []

    def consume():
        with cond:
            cond.wait_for(lambda: items, timeout=HANG)  # the producer never notifies

    consumer = threading.Thread(target=consume, name="consumer")
    consumer.start()
    consumer.join()

def test_setup_hangs(stuck_setup):
    pass

def test_teardown_hangs(stuck_teardown):
    pass

def test_session_setup(warehouse):
    assert warehouse == "stock"

def test_regex_holds_the_gil():
    waiter = alarm_at_the_gate(os.environ["GATE"])
    try:
        {hold}
    except GateOpened:
        pass
    finally:
        waiter.wait()

def test_future_never_completes():
    async def main():
        never = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(never, timeout=HANG)
        except asyncio.TimeoutError:
            return "timed out"
    assert asyncio.run(main()) == "timed out"

def test_slow_but_in_time():
    time.sleep(0.4)

def test_fails_as_usual():
    assert 1 == 2
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTEST_ADDOPTS", "TESTMON_DIR", "TESTMON_LIVE_QUEUE", "PYTEST_PLUGINS"):
        env.pop(name, None)
    return env


def _pytest(
    root: Path, *args: str, timeout: float = RUN_TIMEOUT, gate: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYTEST, *args],
        cwd=root,
        env=dict(_env(), GATE=str(gate or root / "gate")),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _outcomes(report_log: Path) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for line in report_log.read_text().splitlines():
        data = json.loads(line)
        if data.get("$report_type") == "TestReport":
            out[(data["nodeid"], data["when"])] = data["outcome"]
    return out


@dataclass
class HungRun:
    root: Path
    run: Recorded
    state: RunState
    stdout: str
    monitored: dict[tuple[str, str], str]
    plain: dict[tuple[str, str], str]

    def test(self, name: str) -> ev.TestFinished:
        (record,) = [t for t in self.run.of(ev.TestFinished) if t.nodeid.endswith("::" + name)]
        return record

    def stalls(self, name: str, reason: str = "stall") -> list[ev.Stall]:
        return [
            s
            for s in self.run.of(ev.Stall)
            if s.reason == reason and s.sample == 1 and (s.test or "").endswith("::" + name)
        ]

    def phase_start(self, name: str, when: str) -> float:
        (phase,) = [p for p in self.test(name).phases if p.when == when]
        return phase.start


GIL_TEST = "test_regex_holds_the_gil"
HUNG_TESTS = (
    "test_missed_wakeup",
    "test_consumer_never_woken",
    "test_abba_deadlock",
    "test_setup_hangs",
    "test_teardown_hangs",
    "test_session_setup",
    "test_future_never_completes",
)
"""The tests whose hang (HANG seconds) the watchdog reports as a stall."""


def _frozen_stacks_taken(events: list[ev.Event]) -> bool:
    """The hub took the stacks of the worker frozen in :data:`GIL_TEST`."""
    return any(
        isinstance(e, ev.Stall) and e.reason == "unresponsive" and (e.test or "").endswith(GIL_TEST)
        for e in events
    )


@pytest.fixture(scope="module")
def hung(tmp_path_factory: pytest.TempPathFactory) -> HungRun:
    root = tmp_path_factory.mktemp("hung")
    (root / "conftest.py").write_text(CONFTEST)
    (root / "test_hung.py").write_text(SUITE.format(hang=HANG, hold=HOLD_THE_GIL))
    write_gate_module(root)
    args = ("-n", "2", "-q")
    opened = root / "open-gate"
    open_gate(opened)
    _pytest(root, *args, "--report-log=plain.jsonl", gate=opened)
    # The monitored run in the background: the GIL is held until the hub took the stacks.
    gate = root / "gate"
    proc = subprocess.Popen(
        [*PYTEST, *args, "--monitor", f"--monitor-stall={STALL}", "--report-log=monitored.jsonl"],
        cwd=root,
        env=dict(_env(), GATE=str(gate)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        mdir = MonitorDir(root / ".testmon")
        while proc.poll() is None and time.monotonic() < deadline:
            logs = mdir.logs()
            try:
                if logs and _frozen_stacks_taken(read_recorded(logs[0]).events):
                    break
            except RunLogError:  # the hub has only just created it
                pass
            time.sleep(0.1)
        open_gate(gate)  # (also when it never came: the test that checks it says so)
        stdout, _ = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (log,) = MonitorDir(root / ".testmon").logs()
    run = read_recorded(log)
    return HungRun(
        root,
        run,
        run.state,
        stdout,
        _outcomes(root / "monitored.jsonl"),
        _outcomes(root / "plain.jsonl"),
    )


def line_of(source: str, needle: str) -> int:
    """Line number (1-based) of the one line of ``source`` that contains ``needle``."""
    (number,) = [i for i, line in enumerate(source.splitlines(), 1) if needle in line]
    return number


def _thread(stall: ev.Stall, name: str) -> ev.ThreadStack:
    (thread,) = [t for t in stall.threads if t.name == name]
    return thread


def _assert_in_time(stall: ev.Stall) -> None:
    assert STALL <= stall.elapsed <= REPORTED_WITHIN, stall.elapsed


def test_outcomes_are_what_they_are_without_the_monitor(hung: HungRun) -> None:
    assert hung.monitored == hung.plain
    assert hung.monitored[("test_hung.py::test_fails_as_usual", "call")] == "failed"
    assert len({nodeid for nodeid, _ in hung.monitored}) == 10
    assert not hung.run.problems, list(hung.run.problems)


def test_missed_wakeup_on_a_condition(hung: HungRun) -> None:
    (stall,) = hung.stalls("test_missed_wakeup")
    _assert_in_time(stall)
    assert stall.phase == "call"
    assert stall.location == f"test_hung.py:{line_of(SUITE, 'cond.wait(')} in test_missed_wakeup"
    main = _thread(stall, "MainThread")
    assert main.verdict == "condition"
    assert main.detail == "threading.Condition.wait"
    assert stall.threads[0] is main  # the test's thread comes first


def test_abba_deadlock_of_two_locks(hung: HungRun) -> None:
    (stall,) = hung.stalls("test_abba_deadlock")
    _assert_in_time(stall)
    assert stall.phase == "call"
    # not the main thread's t.join(): one of the threads it waits for, stuck on a lock
    assert stall.location in (
        f"test_hung.py:{line_of(SUITE, 'lock_b.acquire(')} in test_abba_deadlock.<locals>.first",
        f"test_hung.py:{line_of(SUITE, 'lock_a.acquire(')} in test_abba_deadlock.<locals>.second",
    ), stall.location
    first, second = _thread(stall, "first"), _thread(stall, "second")
    assert (first.verdict, second.verdict) == ("lock", "lock")
    assert first.detail == "if lock_b.acquire(timeout=HANG):"
    assert second.detail == "if lock_a.acquire(timeout=HANG):"
    assert first.frames[-1].user
    assert first.frames[-1].line == line_of(SUITE, "lock_b.acquire(")
    assert second.frames[-1].user
    assert second.frames[-1].line == line_of(SUITE, "lock_a.acquire(")
    assert _thread(stall, "MainThread").detail == "threading.Thread.join"


def test_a_consumer_waiting_on_its_condition_is_where_the_stall_is(hung: HungRun) -> None:
    """The main thread joins the consumer; the stall's location is the consumer's wait."""
    (stall,) = hung.stalls("test_consumer_never_woken")
    _assert_in_time(stall)
    where = f"test_hung.py:{line_of(SUITE, 'cond.wait_for(')}"
    assert stall.location == f"{where} in test_consumer_never_woken.<locals>.consume"
    assert _thread(stall, "consumer").verdict == "condition"
    assert _thread(stall, "MainThread").detail == "threading.Thread.join"
    # the live notice names it too, with the consumer's verdict
    notice = "test_hung.py::test_consumer_never_woken (call)"
    (line,) = [ln for ln in hung.stdout.splitlines() if "STALL" in ln and notice in ln]
    assert f"at {where} in test_consumer_never_woken.<locals>.consume (consumer " in line


def test_hang_in_fixture_setup(hung: HungRun) -> None:
    (stall,) = hung.stalls("test_setup_hangs")
    _assert_in_time(stall)
    assert (stall.phase, stall.fixture) == ("setup", "stuck_setup")
    assert stall.location == f"conftest.py:{line_of(CONFTEST, 'ready.wait(')} in stuck_setup"
    assert _thread(stall, "MainThread").verdict == "event"


def test_hang_in_fixture_teardown(hung: HungRun) -> None:
    (stall,) = hung.stalls("test_teardown_hangs")
    _assert_in_time(stall)
    assert (stall.phase, stall.fixture) == ("teardown", "stuck_teardown")
    assert stall.location == f"conftest.py:{line_of(CONFTEST, 'inbox.get(')} in stuck_teardown"
    main = _thread(stall, "MainThread")
    assert main.verdict == "queue"
    assert main.detail == "queue.Queue.get"


def test_slow_session_setup_before_its_first_test(hung: HungRun) -> None:
    (stall,) = hung.stalls("test_session_setup")
    _assert_in_time(stall)
    assert (stall.phase, stall.fixture) == ("setup", "warehouse")
    assert stall.location == f"conftest.py:{line_of(CONFTEST, 'time.sleep(')} in warehouse"
    assert _thread(stall, "MainThread").verdict == "sleep"


def test_asyncio_task_awaiting_a_future_forever(hung: HungRun) -> None:
    (stall,) = hung.stalls("test_future_never_completes")
    _assert_in_time(stall)
    assert stall.phase == "call"
    where = line_of(SUITE, "await asyncio.wait_for(")
    assert stall.location == f"test_hung.py:{where} in test_future_never_completes.<locals>.main"
    main = _thread(stall, "MainThread")
    assert main.verdict == "future"
    (task,) = main.tasks
    assert task.coro == "test_future_never_completes.<locals>.main"
    assert [f.func for f in task.frames][:2] == [
        "test_future_never_completes.<locals>.main",
        "wait_for",
    ]
    assert task.awaiting is not None
    assert "Future pending" in task.awaiting


def test_regex_holding_the_gil_is_seen_from_outside(hung: HungRun) -> None:
    name = GIL_TEST
    (silent,) = [
        u
        for u in hung.run.of(ev.Unresponsive)
        if not u.recovered and (u.test or "").endswith("::" + name)
    ]
    (stall,) = hung.stalls(name, reason="unresponsive")
    assert stall.w == silent.w
    assert stall.phase == "call"
    took = stall.ts - hung.phase_start(name, "call")
    print(f"stacks of the frozen worker taken {took:.2f}s into the call")
    assert took > 0  # (how soon is the hub's cadence and the machine's load: not asserted)
    where = line_of(SUITE, "{hold}")
    assert stall.location == f"test_hung.py:{where} in {name}"
    main = _thread(stall, "MainThread")
    assert main.verdict == "busy"
    assert main.detail is not None
    assert "re.match" in main.detail
    # ...and it came back: the worker was not harmed by the signal
    assert [u for u in hung.run.of(ev.Unresponsive) if u.recovered and u.w == silent.w]
    assert not hung.run.of(ev.WorkerCrashed)


def test_a_slow_test_within_the_threshold_records_no_stall(hung: HungRun) -> None:
    assert hung.test("test_slow_but_in_time").duration >= 0.4
    assert not hung.stalls("test_slow_but_in_time")
    assert not hung.stalls("test_fails_as_usual")


def test_each_stall_ends_and_the_fold_keeps_it(hung: HungRun) -> None:
    state = hung.state
    records = [r for r in state.stall_records if r.reason == "stall"]
    assert len(records) == 7
    for record in records:
        assert record.duration is not None
        assert record.duration >= HANG - 0.5, record
        assert record.threads
    assert all(w.current_stall is None for w in state.workers.values())
    assert state.stall_count() == 7
    end = hung.run.events[-1]
    assert isinstance(end, ev.RunFinished)
    assert end.stalls == 7


def test_summary_lists_the_stalls(hung: HungRun) -> None:
    out = hung.stdout
    assert "stalls: 7" in out
    assert re.search(
        r"stall: gw\d test_hung.py::test_missed_wakeup \(call\) 3\.\d\ds at test_hung.py:", out
    )
    assert "threads: MainThread condition" in out
    assert "threads: MainThread lock, first lock, second lock" in out
    assert re.search(rf"unresponsive: gw\d test_hung.py::{GIL_TEST} \(call\)", out)


# ------------------------------------------------------------- live: dump, kill


GATED = """
import os, re, threading, time
from gate import GateOpened, alarm_at_the_gate

def test_waits_for_the_gate():
    waiter = alarm_at_the_gate(os.environ["GATE"])
    try:
        time.sleep(300)  # one blocking call, until the gate opens
    except GateOpened:
        pass
    finally:
        waiter.wait()

def test_holds_the_gil_while_threads_churn():
    gate = os.environ["GATE"]
    deadline = time.monotonic() + 60
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            threads = [threading.Thread(target=lambda: sum(range(20000))) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    helpers = [threading.Thread(target=churn) for _ in range(3)]
    for t in helpers:
        t.start()
    try:
        while not os.path.exists(gate):
            assert time.monotonic() < deadline, "nobody opened the gate"
            re.match(r"(a+)+$", "a" * 22 + "b")  # holds the GIL a while, again and again
    finally:
        stop.set()
        for t in helpers:
            t.join()
"""


class Background:
    """A monitored `pytest -n 2` in the background; its tests wait for a gate file."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.gate = root / "gate"
        self.mdir = MonitorDir(root / ".testmon")
        self.proc = subprocess.Popen(
            [*PYTEST, "-q", "-n", "2", "--monitor", *args],
            cwd=root,
            env=dict(_env(), GATE=str(self.gate)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def events(self) -> list[ev.Event]:
        logs = self.mdir.logs()
        try:
            return read_recorded(logs[0]).events if logs else []
        except RunLogError:  # the log is there, its header not yet: nothing to see so far
            return []

    def wait_for(
        self, what: str, found: Callable[[list[ev.Event]], object], timeout: float = 30
    ) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = found(self.events())
            if value:
                return value
            assert self.proc.poll() is None, f"the run ended before {what}"
            time.sleep(0.05)
        raise AssertionError(f"never saw {what}")

    def running(self, name: str) -> ev.WorkerStarted:
        """The worker running test ``name`` (once its watchdog reported it)."""

        def find(events: list[ev.Event]) -> ev.WorkerStarted | None:
            for e in events:
                if isinstance(e, ev.Activity) and (e.test or "").endswith("::" + name):
                    return next(s for s in events if isinstance(s, ev.WorkerStarted) and s.w == e.w)
            return None

        started = self.wait_for(f"{name} running", find)
        assert isinstance(started, ev.WorkerStarted)
        return started

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        self.gate.write_text("go")
        code = self.proc.wait(timeout)
        assert self.proc.stdout is not None
        return code, self.proc.stdout.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Callable[..., Background]]:
    started: list[Background] = []

    def start(suite: str, *args: str, conftest: str = "") -> Background:
        (tmp_path / "test_gated.py").write_text(suite)
        write_gate_module(tmp_path)
        if conftest:
            (tmp_path / "conftest.py").write_text(conftest)
        run = Background(tmp_path, *args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def test_dump_asks_a_live_worker_for_its_stacks(
    background: Callable[..., Background], capsys: pytest.CaptureFixture[str]
) -> None:
    run = background(GATED)
    worker = run.running("test_waits_for_the_gate").w
    other = run.running("test_holds_the_gil_while_threads_churn").w
    assert worker != other
    (live,) = live_runs(run.mdir)

    code = main(["dump", live.run_id, worker, "--dir", str(run.mdir.root)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{worker}  test_gated.py::test_waits_for_the_gate  (call" in out
    assert "MainThread: sleep - time.sleep(300)" in out
    assert f"> test_gated.py:{line_of(GATED, 'time.sleep(300)')} in test_waits_for_the_gate" in out

    # the run's id may be left out; an unknown worker is one line on stderr
    assert main(["dump", other, "--dir", str(run.mdir.root)]) == 0
    assert "test_gated.py::test_holds_the_gil_while_threads_churn" in capsys.readouterr().out
    assert main(["dump", "latest", "gw9", "--dir", str(run.mdir.root)]) == 1
    assert "no live worker 'gw9'" in capsys.readouterr().err

    code, output = run.finish()
    assert code == 0, output
    dumps = [s for s in read_recorded(run.mdir.logs()[0]).of(ev.Stall) if s.reason == "dump"]
    assert len(dumps) == 2
    assert all(d.request for d in dumps)


def test_faulthandler_signal_does_not_harm_a_busy_worker(
    background: Callable[..., Background],
) -> None:
    """The hub's way into a frozen worker, 40 times into one that holds the GIL in C while
    other threads wait to start and end (sent to a worker whose threads *run*, it can
    crash it: the hub only signals silent workers, see frozen_check)."""
    run = background(GATED)
    started = run.running("test_holds_the_gil_while_threads_churn")
    assert started.dump_signal == signal.SIGUSR2
    assert started.dump_file is not None
    assert started.main_thread is not None
    texts = [read_dump(started.pid, started.dump_signal, started.dump_file) for _ in range(40)]
    assert all(texts), "faulthandler wrote nothing"
    threads = parse_faulthandler(texts[-1] or "", main_ident=started.main_thread)
    mains = [t for t in threads if t.name == "MainThread"]
    assert len(mains) == 1, texts[-1]
    assert any(f.func == "test_holds_the_gil_while_threads_churn" for f in mains[0].frames)
    code, output = run.finish()
    assert code == 0, output
    assert "2 passed" in output
    assert not read_recorded(run.mdir.logs()[0]).of(ev.WorkerCrashed)


KILLED = """
import signal, time

def test_sleeps_past_its_timeout():
    time.sleep(60)

def test_user_handler_is_kept():
    assert signal.getsignal(signal.SIGUSR2) is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2).__name__ == "users_own"
"""

KILLED_CONFTEST = """
import signal

def pytest_configure(config):
    def users_own(signum, frame):
        pass
    signal.signal(signal.SIGUSR2, users_own)
"""


def test_worker_killed_by_pytest_timeout_leaves_its_stall(tmp_path: Path) -> None:
    (tmp_path / "test_killed.py").write_text(KILLED)
    (tmp_path / "conftest.py").write_text(KILLED_CONFTEST)
    args: tuple[str, ...] = ("-n", "2", "-q", "--timeout=4", "--timeout-method=thread")
    args += ("-o", "faulthandler_timeout=2")
    _pytest(tmp_path, *args, "--report-log=plain.jsonl", timeout=60)
    result = _pytest(
        tmp_path, *args, "--monitor", "--monitor-stall=1", "--report-log=mon.jsonl", timeout=60
    )
    assert _outcomes(tmp_path / "mon.jsonl") == _outcomes(tmp_path / "plain.jsonl")
    assert "Timeout" in result.stdout + result.stderr  # pytest-timeout still did its job
    (log,) = MonitorDir(tmp_path / ".testmon").logs()
    run = read_recorded(log)
    (crash,) = run.of(ev.WorkerCrashed)
    (stall,) = [s for s in run.of(ev.Stall) if s.w == crash.w]
    assert (stall.test or "").endswith("::test_sleeps_past_its_timeout")
    assert stall.elapsed <= REPORTED_WITHIN
    assert stall.threads[0].verdict == "sleep"
    assert (
        stall.location
        == f"test_killed.py:{line_of(KILLED, 'time.sleep(60)')} in test_sleeps_past_its_timeout"
    )
    # the user's SIGUSR2 handler was left alone: the workers armed SIGUSR1
    assert {s.dump_signal for s in run.of(ev.WorkerStarted)} == {signal.SIGUSR1}
    # the killed worker could not remove its dump file: the hub did
    files = [s.dump_file for s in run.of(ev.WorkerStarted)]
    assert files
    assert not [f for f in files if f and os.path.exists(f)]
    state = run.state
    (record,) = state.stall_records
    assert record.duration is None  # never ended: the worker was killed in it
    assert state.workers[crash.w].current_stall is record


@pytest.mark.compat
def test_faulthandler_text_parses_into_threads(tmp_path: Path) -> None:
    import faulthandler
    import threading

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, name="helper", daemon=True)
    helper.start()
    try:
        with (tmp_path / "dump.txt").open("w+") as handle:
            faulthandler.dump_traceback(handle, all_threads=True)
            handle.seek(0)
            text = handle.read()
    finally:
        stop.set()
        helper.join()
    threads = parse_faulthandler(text, main_ident=threading.main_thread().ident)
    names = {t.name for t in threads}
    assert "MainThread" in names
    assert f"thread {helper.ident:#x}" in names
    (waiting,) = [t for t in threads if t.ident == helper.ident]
    assert waiting.verdict == "condition"  # Event.wait: faulthandler names no classes
    (main_thread,) = [t for t in threads if t.name == "MainThread"]
    assert main_thread.frames[-1].func == "test_faulthandler_text_parses_into_threads"
    assert main_thread.frames[-1].user


def test_verdicts_from_frames() -> None:
    def frame(file: str, func: str, user: bool = False) -> ev.Frame:
        return ev.Frame(file, 1, func, user)

    import queue as queue_module
    import threading

    test = frame("/project/test_x.py", "test_it", True)
    queue_py = frame(queue_module.__file__, "Queue.get")
    cond = frame(threading.__file__, "Condition.wait")
    assert classify([test, queue_py, cond]) == ("queue", "queue.Queue.get")
    assert classify([test, cond]) == ("condition", "threading.Condition.wait")
    driver = frame("/venv/lib/python3.11/site-packages/psycopg/cursor.py", "execute")
    assert classify([test, driver, cond])[0] == "database"
    assert classify([test], syscall="lock")[0] == "lock"
    assert classify([test], busy=True)[0] == "busy"
    assert classify([test], moved=True)[0] == "busy"
    assert classify([test])[0] == "unknown"


def _worker_main_frames(*inner: tuple[str, str]) -> list[ev.Frame]:
    """An xdist worker's main thread as recorded (execnet runs xdist's remote module, which
    runs pytest), with ``inner`` (module, function) frames below pytest's main loop."""
    import importlib

    def frame(module: str, func: str) -> ev.Frame:
        file = importlib.import_module(module).__file__
        assert file is not None
        return ev.Frame(file, 1, func, False)

    return [
        ev.Frame("<string>", 8, "<module>", False),
        frame("execnet.gateway_base", "WorkerGateway.serve"),
        frame("execnet.gateway_base", "WorkerPool.integrate_as_primary_thread"),
        frame("execnet.gateway_base", "Reply.run"),
        frame("execnet.gateway_base", "WorkerGateway.executetask"),
        frame("xdist.remote", "<module>"),
        frame("pluggy._callers", "_multicall"),
        frame("_pytest.main", "pytest_cmdline_main"),
        frame("_pytest.main", "_main"),
        *(frame(module, func) for module, func in inner),
    ]


def test_a_worker_collecting_in_pytest_code_is_not_idle() -> None:
    """A stall during collection: the worker's main thread builds test items in pytest's
    own code (no user frame, execnet and xdist further out). That is work, not a wait."""
    collecting = _worker_main_frames(
        ("_pytest.main", "Session.perform_collect"),
        ("_pytest.python", "Class.collect"),
        ("_pytest.python", "Function.__init__"),
    )
    assert classify(collecting, busy=True) == ("busy", "Function.__init__")
    assert classify(collecting)[0] == "unknown"
    # Waiting in xdist for the controller's next test: that is the runner being idle.
    waiting = _worker_main_frames(
        ("xdist.remote", "WorkerInteractor.pytest_runtestloop"),
        ("xdist.remote", "TestQueue.get"),
        ("queue", "Queue.get"),
        ("threading", "Condition.wait"),
    )
    assert classify(waiting, busy=True) == ("idle", "Condition.wait (test-runner thread)")


def test_a_stall_in_collection_reads_the_same_in_summary_and_report() -> None:
    """The terminal summary and `testmon report` name the same busy main thread; execnet's
    reader is idle in both (the summary leaves idle threads out)."""
    from execnet.gateway_base import Popen2IO

    from testmon_live.plugin.state.workers import StallRecord
    from testmon_live.plugin.summary import stall_lines

    collecting = _worker_main_frames(("_pytest.python", "Function.__init__"))
    reader_file = Popen2IO.read.__code__.co_filename
    reader = [ev.Frame(reader_file, 1, f, False) for f in ("Reply.run", "Popen2IO.read")]
    threads = []
    for ident, name, frames in ((1, "MainThread", collecting), (2, "thread 0x2", reader)):
        verdict, detail = classify(frames, busy=True)
        threads.append(ev.ThreadStack(name, ident, verdict=verdict, detail=detail, frames=frames))
    stall = ev.Stall(w="gw0", test=None, phase="collect", threads=threads)
    record = StallRecord(w="gw0", reason="stall", first=stall)
    assert stall_lines(record)[1] == "    threads: MainThread busy"
    state = RunState().apply_all(
        [ev.RunStarted(schema=ev.SCHEMA_VERSION, run_id="r", rootdir="/project"), stall]
    )
    (row,) = build_report(LoadedRun(Path("r.jsonl"), state, "finished"))["stalls"]
    assert [(t["name"], t["verdict"], t["detail"]) for t in row["threads"]] == [
        ("MainThread", "busy", "Function.__init__"),
        ("thread 0x2", "idle", "Popen2IO.read (execnet thread)"),
    ]


@pytest.fixture
def execnet_pool() -> Iterator[Callable[..., object]]:
    """Spawns functions on execnet's own (unnamed) threads, as a worker's gateway does."""
    from execnet.gateway_base import WorkerPool, get_execmodel

    pool = WorkerPool(get_execmodel("thread"))
    yield pool.spawn
    pool.waitall(timeout=10)


def _sampled(pred: Callable[[ev.ThreadStack], bool]) -> ev.ThreadStack:
    """The one thread of this process ``pred`` picks, once it is there (a real sample)."""
    deadline = time.monotonic() + 10
    while True:
        found = [t for t in Sample(time.perf_counter()).stacks() if pred(t)]
        if found or time.monotonic() > deadline:
            (thread,) = found
            return thread
        time.sleep(0.01)


def test_pytest_code_on_an_execnet_thread_is_judged_by_what_it_waits_on(
    execnet_pool: Callable[..., object],
) -> None:
    """Real frames: pytest's code run on an execnet thread (as xdist's worker runs it),
    waiting on an event. Its wait is the verdict, not idle machinery of the runner."""
    from _pytest.runner import CallInfo

    gate = threading.Event()
    execnet_pool(CallInfo.from_call, gate.wait, "collect")
    try:
        thread = _sampled(
            lambda t: (
                t.frames[0].func == "WorkerPool._perform_spawn"
                and any(f.func == "CallInfo.from_call" for f in t.frames)
            )
        )
    finally:
        gate.set()
    assert not any(f.user for f in thread.frames)
    assert (thread.verdict, thread.detail) == ("event", "threading.Event.wait")


def test_execnet_channel_reader_is_idle_and_not_the_test_runner(
    execnet_pool: Callable[..., object],
) -> None:
    """Real frames: execnet's reader (``Popen2IO.read`` on a pipe, on one of execnet's
    threads) waits for the controller. Idle, and named for execnet, not the test runner."""
    from execnet.gateway_base import Popen2IO, get_execmodel

    readable, writable = os.pipe()
    with os.fdopen(readable, "rb") as infile, open(os.devnull, "wb") as outfile:
        io = Popen2IO(outfile, infile, get_execmodel("thread"))
        execnet_pool(io.read, 1)
        try:
            thread = _sampled(lambda t: bool(t.frames) and t.frames[-1].func == "Popen2IO.read")
        finally:
            os.write(writable, b"x")
            os.close(writable)
    assert thread.name.startswith("thread 0x")  # execnet starts raw threads, unnamed
    assert (thread.verdict, thread.detail) == ("idle", "Popen2IO.read (execnet thread)")


def test_one_frame_text_for_the_plugin_the_report_and_dump() -> None:
    """Frames read the same wherever they are shown: below the rootdir (given with or
    without its slash) relative to it, a sibling directory sharing its prefix not."""
    inside = ev.Frame("/project/tests/test_x.py", 7, "test_it", True)
    sibling = ev.Frame("/project2/test_y.py", 3, "helper", False)
    for root in ("/project", "/project/"):
        assert frame_text(inside, root) == "tests/test_x.py:7 in test_it"
        assert frame_text(sibling, root) == "/project2/test_y.py:3 in helper"
    assert frame_text(inside) == "/project/tests/test_x.py:7 in test_it"
    thread = ev.ThreadStack(ident=1, name="MainThread", frames=[inside, sibling], verdict="busy")
    stall = ev.Stall(w="gw0", test="tests/test_x.py::test_it", phase="call", threads=[thread])
    assert stall_text(stall, "/project/").splitlines()[-2:] == [
        "    > tests/test_x.py:7 in test_it",
        "      /project2/test_y.py:3 in helper",
    ]
    state = RunState().apply_all(
        [ev.RunStarted(schema=ev.SCHEMA_VERSION, run_id="r", rootdir="/project"), stall]
    )
    (row,) = build_report(LoadedRun(Path("r.jsonl"), state, "finished"))["stalls"]
    assert row["threads"][0]["where"] == "tests/test_x.py:7 in test_it"


def test_filelock_polling_is_a_lock_wait_not_a_sleep() -> None:
    """filelock polls: between attempts its thread sits in nanosleep, yet it waits on a lock."""
    site = "/venv/lib/python3.11/site-packages/filelock/_api.py"
    frames = [
        ev.Frame("/project/conftest.py", 31, "migrate", True),
        ev.Frame(site, 1037, "BaseFileLock.acquire", False),
        ev.Frame(site, 1177, "BaseFileLock._poll_until_acquired", False),
    ]
    assert classify(frames, syscall="sleep") == ("lock", "filelock: BaseFileLock.acquire")
    assert classify(frames, busy=True)[0] == "lock"
    # the monitor's own wrapper (plugin/probes/filelock.py) is not the package
    ours = ev.Frame("/src/testmon_live/plugin/probes/filelock.py", 87, "acquire", False)
    assert classify([frames[0], ours], syscall="sleep")[0] == "sleep"


def test_report_lists_stalls_with_verdicts_and_durations(
    hung: HungRun, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(hung.run.path), "-f", "json"]) == 0
    model = json.loads(capsys.readouterr().out)
    stalls = model["stalls"]
    by_test = {s["test"].split("::")[-1]: s for s in stalls if s["reason"] == "stall"}
    assert sorted(by_test) == sorted(HUNG_TESTS)
    # (on a loaded machine another worker may look silent for a moment too)
    frozen = [s for s in stalls if s["reason"] == "unresponsive" and s["test"].endswith(GIL_TEST)]
    assert len(frozen) == 1
    wakeup = by_test["test_missed_wakeup"]
    assert wakeup["phase"] == "call"
    assert wakeup["duration"] >= HANG - 0.5
    assert wakeup["threads"][0]["verdict"] == "condition"
    assert wakeup["location"].startswith("test_hung.py:")
    abba = by_test["test_abba_deadlock"]
    assert [t["verdict"] for t in abba["threads"] if t["name"] in ("first", "second")] == [
        "lock",
        "lock",
    ]
    (task,) = by_test["test_future_never_completes"]["threads"][0]["tasks"]
    assert task["where"].startswith("test_hung.py:")
    assert frozen[0]["threads"][0]["verdict"] == "busy"

    assert main(["report", str(hung.run.path)]) == 0
    text = capsys.readouterr().out
    # the heading counts the stalls as the summary does; the spells' stacks are said apart
    spells = sum(1 for s in stalls if s["reason"] == "unresponsive")
    stalled = sum(1 for s in stalls if s["reason"] == "stall")
    title = f"Stalls ({stalled}), and stacks of {spells} unresponsive spell"
    assert title + ("s\n" if spells != 1 else "\n") in text
    assert re.search(
        r"stalled after \d\.\d\ds in teardown, fixture stuck_teardown, \d\.\d\ds in all", text
    )


@pytest.mark.compat
def test_stall_without_xdist(pytester: pytest.Pytester) -> None:
    """The single process records itself as `main` and watches itself the same way."""
    pytester.makepyfile(
        test_alone="""
        import threading

        def test_missed_wakeup():
            cond = threading.Condition()
            with cond:
                cond.notify()
            with cond:
                assert not cond.wait(timeout=2.5)

        def test_quick():
            pass
        """
    )
    result = pytester.runpytest_subprocess("--monitor", "--monitor-stall=1", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    stalls = run.of(ev.Stall)  # the first sample, then re-samples when a thread moved
    assert {(s.w, s.test) for s in stalls} == {("main", "test_alone.py::test_missed_wakeup")}
    stall = stalls[0]
    assert stall.w == "main"
    assert stall.test == "test_alone.py::test_missed_wakeup"
    assert STALL <= stall.elapsed <= REPORTED_WITHIN
    assert stall.threads[0].verdict == "condition"
    assert stall.location is not None
    assert stall.location.startswith("test_alone.py:")
    (end,) = run.of(ev.StallEnded)
    assert end.duration == pytest.approx(2.5, abs=0.5)
    assert not run.of(ev.Unresponsive)  # no silence watcher without xdist


@pytest.mark.compat
def test_fold_keeps_the_current_stall_of_each_worker_with_merged_samples() -> None:
    """What a stuck-threads panel reads: WorkerView.current_stall, every thread as last seen."""

    def thread(ident: int, verdict: str, line: int) -> ev.ThreadStack:
        frame = ev.Frame("/p/test_x.py", line, "test_x", True)
        return ev.ThreadStack(name=f"t{ident}", ident=ident, verdict=verdict, frames=[frame])

    first = ev.Stall(
        w="gw0",
        ts=10.0,
        test="t::x",
        phase="call",
        elapsed=1.2,
        sample=1,
        threads=[thread(1, "lock", 5), thread(2, "sleep", 9)],
    )
    later = ev.Stall(
        w="gw0",
        ts=11.0,
        test="t::x",
        phase="call",
        elapsed=2.2,
        sample=2,
        threads=[thread(2, "busy", 12)],
    )
    state = RunState().apply_all([first, later])
    current = state.workers["gw0"].current_stall
    assert current is not None
    assert state.workers["gw0"].state == "stalled"
    assert [(t.ident, t.verdict) for t in current.thread_list] == [(1, "lock"), (2, "busy")]
    assert (current.samples, current.elapsed) == (2, 2.2)
    assert state.stall_count() == 1
    state.apply(ev.StallEnded(w="gw0", ts=12.0, test="t::x", duration=3.1))
    assert state.workers["gw0"].current_stall is None
    assert state.workers["gw0"].state != "stalled"
    assert state.stall_records[0].duration == 3.1
    # a dump asked for is no stall
    state.apply(
        ev.Stall(w="gw0", ts=13.0, reason="dump", request=7, threads=[thread(1, "idle", 1)])
    )
    assert len(state.stall_records) == 1
    assert state.workers["gw0"].current_stall is None


FROZEN = f"""
import os, re
from gate import GateOpened, alarm_at_the_gate

def test_frozen():
    waiter = alarm_at_the_gate(os.environ["GATE"])
    try:
        {HOLD_THE_GIL}
    except GateOpened:
        pass
    finally:
        waiter.wait()
"""


@pytest.mark.compat
def test_dump_of_a_frozen_worker_is_taken_by_the_hub(
    background: Callable[..., Background], capsys: pytest.CaptureFixture[str]
) -> None:
    run = background(FROZEN, "--monitor-stall=1")  # frozen until run.finish() opens the gate

    def silent(events: list[ev.Event]) -> ev.Unresponsive | None:
        found = [e for e in events if isinstance(e, ev.Unresponsive) and not e.recovered]
        return found[0] if found else None

    flagged = run.wait_for("the worker going silent", silent)
    assert isinstance(flagged, ev.Unresponsive)
    code = main(["dump", flagged.w, "--dir", str(run.mdir.root)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "MainThread: busy - native code holding the GIL" in out
    assert f"> test_gated.py:{line_of(FROZEN, HOLD_THE_GIL)} in test_frozen" in out
    code, output = run.finish()
    assert code == 0, output
    dumps = [s for s in read_recorded(run.mdir.logs()[0]).of(ev.Stall) if s.reason == "dump"]
    assert len(dumps) == 1
    assert dumps[0].request


# ------------------------------------------------------- a GIL held: one episode

GIL_EPISODE = """
import os, re, time
import pytest
from gate import GateOpened, alarm_at_the_gate

@pytest.fixture
def alarm():
    waiter = alarm_at_the_gate(os.environ["GATE"])
    yield
    waiter.wait()

def test_quick():
    pass

def test_holds_the_gil(alarm):
    try:
        HOLD
    except GateOpened:
        pass
    # the GIL is free again, the phase goes on until the outer test has seen the
    # worker's watchdog sample it
    while not os.path.exists(os.environ["GATE"] + "-2"):
        time.sleep(0.05)
""".replace("HOLD", HOLD_THE_GIL)


def test_a_gil_held_is_one_episode_with_its_test_and_its_length(
    background: Callable[..., Background], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Native code holds the GIL: the hub notes the silence and takes the stacks; the worker
    comes back and its watchdog finds the call still running. One episode, one row, in the
    summary, the reports and the dashboard, with its test and how long it lasted."""
    from testmon_live.tui.dashboard.widgets.stuck_panel import StuckPanel

    from .test_tui_recorded import SIZE, app_on, rows, until

    run = background(GIL_EPISODE, f"--monitor-stall={STALL}")
    name = "test_gated.py::test_holds_the_gil"
    taken = run.wait_for(
        "the stacks of the frozen worker",
        lambda es: next(
            (e for e in es if isinstance(e, ev.Stall) and e.reason == "unresponsive"), None
        ),
    )
    assert isinstance(taken, ev.Stall)
    assert taken.test == name
    # asked for now, the frozen worker's stacks come from outside, labelled with its test
    assert main(["dump", "latest", taken.w, "--dir", str(run.mdir.root)]) == 0
    dumped = capsys.readouterr().out
    assert f"{taken.w}  {name}  (call" in dumped, dumped
    assert "(no test)" not in dumped
    open_gate(run.gate)
    run.wait_for(
        "the watchdog's sample after the silence",
        lambda es: any(isinstance(e, ev.Stall) and e.reason == "stall" for e in es),
    )
    open_gate(Path(f"{run.gate}-2"))
    code, output = run.finish()
    assert code == 0, output
    recorded = read_recorded(run.mdir.logs()[0])
    state = recorded.state
    w = taken.w

    # the fold: one record, ended, as long as the call ran; one spell, recovered, named
    (record,) = state.stall_records
    assert (record.reason, record.w, record.test, record.watched) == ("unresponsive", w, name, True)
    (finished,) = [t for t in recorded.of(ev.TestFinished) if t.nodeid == name]
    (call,) = [p for p in finished.phases if p.when == "call"]
    assert record.duration is not None
    assert abs(record.duration - call.dur) < 0.5, (record.duration, call.dur)
    assert state.stall_count() == 0
    (spell,) = state.spells
    assert (spell.w, spell.test) == (w, name)
    assert spell.recovered is not None
    assert [u.test for u in recorded.of(ev.Unresponsive)] == [name, name]

    # the summary: one line, its length, no "never ended", no second (stall) line
    lines = [line for line in output.splitlines() if re.match(r"  (unresponsive|stall): ", line)]
    assert len(lines) == 1, output
    assert re.fullmatch(
        rf"  unresponsive: {w} {name} \(call\) \d+\.\d\ds at test_gated\.py:\d+ in "
        "test_holds_the_gil",
        lines[0],
    ), lines[0]
    assert "never ended" not in output
    assert "stalls:" not in output

    # the reports: text and JSON say the same
    import io
    from contextlib import redirect_stdout

    def report(*args: str) -> str:
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["report", "latest", "--dir", str(run.mdir.root), *args]) == 0
        return out.getvalue()

    text_report = report()
    assert "never ended" not in text_report
    assert f"{w} stacks (unresponsive) after " in text_report
    (row,) = [ln for ln in text_report.splitlines() if ln.strip().startswith(w) and "yes" in ln]
    assert name in row
    data = json.loads(report("--format", "json"))
    (stall_row,) = [row for row in data["stalls"] if row["reason"] != "dump"]
    assert stall_row["test"] == name
    assert stall_row["duration"] is not None
    (silent_row,) = data["unresponsive"]
    assert (silent_row["test"], silent_row["recovered"]) == (name, True)

    # the dashboard: live, the silent worker's row names its test; at the end one episode
    import asyncio

    async def dashboard() -> None:
        silent = next(e for e in recorded.of(ev.Unresponsive) if not e.recovered)
        app = app_on(tmp_path / "live", until(recorded.events, silent))
        async with app.run_test(size=SIZE) as pilot:
            from testmon_live.tui.dashboard.screenshots import settle

            await settle(app, pilot)
            row = rows(app)[w]
            assert row[1] == "unresponsive"
            assert "test_holds_the_gil" in row[5]
        app = app_on(tmp_path / "end", recorded.events)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            stuck = await panel_text(app, pilot, "6", StuckPanel)
            assert f"unresponsive {w} call of {name} ran " in stuck
            assert "never ended" not in stuck
            assert stuck.count(f"recovered {w}: no heartbeat for ") == 1
            assert f"during {name}" in stuck

    asyncio.run(dashboard())


@pytest.mark.compat
def test_a_silent_worker_is_shown_in_the_test_the_hub_knows() -> None:
    """The worker's own record of entering the call is queued behind the silence: the
    hub's Unresponsive (the test from xdist's reports) names the test for the live view,
    and the spell's end names it too."""
    name = "test_x.py::test_regex"
    state = RunState(detail=True)
    for event in (
        ev.WorkerStarted(w="gw1", ts=1.0, schema=ev.SCHEMA_VERSION, pid=1),
        ev.WorkerCollected(w="gw1", ts=1.1, count=2),
        ev.Unresponsive(w="gw1", ts=4.0, silent=2.0, test=name, phase="call", since=1.5),
    ):
        state.apply(event)
    view = state.workers["gw1"]
    assert (view.state, view.test, view.phase, view.call_started) == (
        "unresponsive",
        name,
        "call",
        1.5,
    )
    state.apply(ev.Activity(w="gw1", ts=9.0, test=name, phase="call", since=1.5))
    state.apply(ev.Unresponsive(w="gw1", ts=9.1, silent=7.4, test=name, recovered=True))
    (spell,) = state.spells
    assert (spell.test, spell.silent, spell.recovered) == (name, 7.4, 9.1)
    assert view.state == "call"


GIL_IN_SETUP = """
import os, re
import pytest
from gate import GateOpened, alarm_at_the_gate

@pytest.fixture
def frozen_setup():
    waiter = alarm_at_the_gate(os.environ["GATE"])
    try:
        HOLD
    except GateOpened:
        pass
    finally:
        waiter.wait()
    yield

def test_quick():
    pass

def test_frozen_in_setup(frozen_setup):
    pass
""".replace("HOLD", HOLD_THE_GIL)


def test_a_worker_frozen_in_a_setup_is_named_with_its_test(
    background: Callable[..., Background],
) -> None:
    """No report of the test yet (its setup never ended): the test comes from xdist's
    scheduler (what it would name if the worker crashed), in its setup phase."""
    run = background(GIL_IN_SETUP, f"--monitor-stall={STALL}")
    name = "test_gated.py::test_frozen_in_setup"
    silent = run.wait_for(
        "the silence of the frozen worker",
        lambda es: next((e for e in es if isinstance(e, ev.Unresponsive)), None),
    )
    assert isinstance(silent, ev.Unresponsive)
    assert (silent.test, silent.phase) == (name, "setup")
    code, output = run.finish()
    assert code == 0, output
    state = read_recorded(run.mdir.logs()[0]).state
    (spell,) = state.spells
    assert (spell.test, spell.recovered is not None) == (name, True)


MOVING_STALL = """
import glob, json, threading, time

def watch(moved, done):
    # The run's own log: the stall's first sample moves the test on; once a later sample
    # found it at its second place, it stays there longer than it can have been at its first.
    while True:
        samples = []
        for path in glob.glob(".testmon/runs/*.jsonl"):
            with open(path) as log:
                for line in log:
                    event = json.loads(line)
                    if event.get("t") == "stall" and event.get("test", "").endswith("waiter"):
                        samples.append(event["elapsed"])
        if samples:
            moved.set()
        if len(samples) >= 2:
            time.sleep(samples[1] + 1.0)
            done.set()
            return
        time.sleep(0.05)

def test_waiter():
    moved, done = threading.Event(), threading.Event()
    threading.Thread(target=watch, args=(moved, done), daemon=True).start()
    while not moved.is_set():
        time.sleep(0.05)  # FIRST
    assert done.wait(60)  # SPENT
"""


def _line_of(source: str, mark: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if line.endswith(mark))


@pytest.mark.compat
def test_a_stall_is_told_where_the_test_spent_it(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test that sleeps past the threshold, then blocks: its stall is told at the block
    (summary, report, the status of a quiet run), the sleep mentioned as its first place."""
    source = pytester.makepyfile(test_moving=MOVING_STALL).read_text()
    result = pytester.runpytest_subprocess(
        "-n", "2", "--monitor", "--monitor-stall=1", "-p", "no:randomly", timeout=RUN_TIMEOUT
    )
    result.assert_outcomes(passed=1)
    first, spent = _line_of(source, "# FIRST"), _line_of(source, "# SPENT")
    place = f"test_moving.py:{spent} in test_waiter"
    out = result.stdout.str()
    assert f"at {place} (first at line {first})\n" in out
    # and the watching thread; the first sample finds the loop in its sleep or between two
    # (Python 3.13 read it "busy" in CI)
    assert re.search(r"^    threads: MainThread event \(first (sleep|busy)\), ", out, re.M), out

    run = only_run(pytester)
    capsys.readouterr()
    assert main(["report", str(run.path), "-f", "json"]) == 0
    (stall,) = json.loads(capsys.readouterr().out)["stalls"]
    assert (stall["location"], stall["first_location"]) == (
        place,
        f"test_moving.py:{first} in test_waiter",
    )
    assert stall["threads"][0]["verdict"] == "event"
    assert main(["report", str(run.path)]) == 0
    assert f"at {place} (first at line {first})" in capsys.readouterr().out

    # While it went on, the status block named where the latest sample found it.
    last = max(i for i, e in enumerate(run.events) if isinstance(e, ev.Stall))
    state = RunState().apply_all(run.events[: last + 1])
    status = "\n".join(status_lines(state, run.events[last].ts, "quiet"))
    assert f"at {place} (MainThread waiting on" in status


@pytest.mark.compat
def test_a_stall_is_told_where_it_stayed_though_resampling_backed_off() -> None:
    """Samples that find the stall unmoved come further and further apart: a place is left
    halfway from the last of them to the sample that found the next place, not halfway
    from the sample that found the place it left."""
    from testmon_live.plugin.summary import stall_lines

    def sample(elapsed: float, n: int, line: int | None = None) -> ev.Stall:
        frame = ev.Frame("/p/test_x.py", line or 0, "test_x", True)
        thread = ev.ThreadStack(name="MainThread", ident=1, verdict="sleep", frames=[frame])
        return ev.Stall(
            w="gw0",
            ts=1000.0 + elapsed,
            test="test_x.py::test_x",
            phase="call",
            elapsed=elapsed,
            location=f"test_x.py:{line} in test_x" if line else None,
            threads=[thread] if line else [],  # an unmoved thread is not sent again
            sample=n,
        )

    def told(end: float) -> tuple[str | None, str | None, str]:
        # at line 10 from 0 s to 60 s (confirmed at 2 ... 32 s, unchanged threads not
        # re-sent), then at line 20, found there at 62 s, until the end
        events: list[ev.Event] = [sample(1, 1, 10)]
        events += [sample(t, n) for n, t in enumerate((2, 4, 8, 16, 32), 2)]
        events += [
            sample(62, 7, 20),
            ev.StallEnded(w="gw0", ts=1000.0 + end, test="test_x.py::test_x", duration=end),
        ]
        (record,) = RunState().apply_all(events).stall_records
        return record.at_place.location, record.left_from, stall_lines(record)[0]

    head = "  stall: gw0 test_x.py::test_x (call)"
    assert told(70) == (  # >= 32 s at line 10, <= 38 s at line 20
        "test_x.py:10 in test_x",
        None,
        f"{head} 70.0s at test_x.py:10 in test_x",
    )
    assert told(120) == (  # >= 73 s at line 20
        "test_x.py:20 in test_x",
        "test_x.py:10 in test_x",
        f"{head} 2.0 min at test_x.py:20 in test_x (first at line 10)",
    )


LOCK_STALL = {
    "test_holder": """
import time
import pytest
from filelock import FileLock

def stalled():
    # pytest's own output (pytester writes it to ./stdout): has the waiter's STALL line come?
    try:
        with open("stdout") as out:
            return any("STALL" in line and "test_waiter" in line for line in out)
    except FileNotFoundError:
        return False

@pytest.fixture(scope="session")
def shared_lock():
    with FileLock("shared.lock"):
        open("held", "w").close()
        yield

def test_holder(shared_lock):
    deadline = time.monotonic() + 60
    while not stalled() and time.monotonic() < deadline:
        time.sleep(0.05)
""",
    "test_waiter": """
import os, time
from filelock import FileLock

def test_waiter():
    while not os.path.exists("held"):
        time.sleep(0.02)
    with FileLock("shared.lock", timeout=60):
        pass
""",
}


def test_the_live_stall_line_names_the_lock_and_who_holds_it(pytester: pytest.Pytester) -> None:
    """A test stalled on a lock another worker's session fixture holds: its STALL line in
    pytest's output says which lock and who holds it (the django-reversion trial's said
    "waiting on the database" and left whom to the dashboard)."""
    pytester.makepyfile(**LOCK_STALL)
    result = pytester.runpytest_subprocess(
        "-n",
        "2",
        "--dist",
        "loadfile",
        "--monitor",
        "--monitor-stall=1",
        "-p",
        "no:randomly",
        timeout=RUN_TIMEOUT,
    )
    result.assert_outcomes(passed=2)
    lines = [x for x in result.stdout.str().splitlines() if "STALL" in x and "test_waiter" in x]
    assert lines, result.stdout.str()
    match = re.search(r"; waiting on (\S+) held by (gw\d) \(fixture shared_lock\)$", lines[0])
    assert match is not None, lines[0]
    assert "shared.lock" in match[1]
    waiter = re.search(r"STALL (gw\d) ", lines[0])
    assert waiter is not None
    assert waiter[1] != match[2]
