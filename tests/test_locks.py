"""File locks, the monitor's own lock and run-once helper, and deadlocks between workers,
through real pytest sessions with several xdist workers.

Placement: tests that need two workers at once run under ``--dist each`` (every worker runs
every test, so each knows its part from ``PYTEST_XDIST_WORKER``) and meet at a file barrier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin import monitor
from testmon_live.plugin.probes import locking
from testmon_live.plugin.state import RunState
from testmon_live.tui.testing import sample_runs

from .conftest import only_run, run_logs

TIMEOUT = 90.0
"""Seconds an inner pytest session may take (a hung inner suite fails the test)."""

BARRIER = '''
import os, time
from pathlib import Path

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def barrier(name, parties, timeout=15.0):
    """Every worker waits here until `parties` workers arrived (placement check)."""
    where = Path(__file__).parent / "barriers" / name
    where.mkdir(parents=True, exist_ok=True)
    (where / WORKER).touch()
    deadline = time.monotonic() + timeout
    while len(list(where.iterdir())) < parties:
        assert time.monotonic() < deadline, f"only {sorted(os.listdir(where))} met at {name}"
        time.sleep(0.01)
'''


def lock_events(state: RunState, kind: str) -> list[ev.LockEvent]:
    return [e for e in state.lock_events if e.kind == kind]


# ------------------------------------------------------------------ filelock


FILELOCK_SUITE = {
    "barrier.py": BARRIER,
    "test_shared.py": """
import time
from pathlib import Path
from filelock import FileLock
from barrier import barrier, WORKER

LOCK = str(Path(__file__).parent / "setup.lock")

def test_setup_under_filelock():
    barrier("start", 2)
    if WORKER == "gw1":
        time.sleep(0.3)  # gw0 goes first and holds the lock for a while
    with FileLock(LOCK, timeout=20):
        time.sleep(1.0)

def test_uncontended():
    for _ in range(5):
        with FileLock(LOCK + "." + WORKER):
            pass
""",
}


@pytest.mark.compat
def test_filelock_wait_recorded_with_holder_and_waiter(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**FILELOCK_SUITE)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", "-p", "no:randomly", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=4)
    run = only_run(pytester)
    state = run.state
    shared = str(pytester.path / "setup.lock")
    stats = state.locks[("filelock", shared)]
    assert stats.acquisitions == 2
    assert stats.contended == 1
    assert 0.4 < stats.total_wait < 5.0  # gw1 waited for the rest of gw0's 1 s hold
    assert stats.longest_hold >= 0.9
    assert set(stats.holders) == {"gw0", "gw1"}
    assert stats.waited_on == {"gw0": 1}
    (wait,) = [e for e in lock_events(state, "filelock") if e.action == "wait"]
    assert wait.w == "gw1"
    assert wait.test == "test_shared.py::test_setup_under_filelock"
    holder = state.holder(wait)
    assert holder is not None
    assert holder.w == "gw0"
    assert holder.test == "test_shared.py::test_setup_under_filelock"
    (got,) = [e for e in lock_events(state, "filelock") if e.action == "acquired" and e.waited]
    assert got.w == "gw1"
    holder = state.holder(got)
    assert holder is not None
    assert holder.w == "gw0"
    # uncontended acquisitions: acquired + released each, never a wait
    for worker in ("gw0", "gw1"):
        own = [e for e in lock_events(state, "filelock") if e.key == f"{shared}.{worker}"]
        assert [e.action for e in own] == ["acquired", "released"] * 5
    assert state.deadlocks == []


def test_filelock_without_monitor_is_untouched(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**FILELOCK_SUITE)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each", timeout=TIMEOUT)
    result.assert_outcomes(passed=4)
    assert run_logs(pytester.path) == []


@pytest.mark.isolated  # the probe patches filelock for good
def test_filelock_patch_is_transparent_in_process(tmp_path: Path) -> None:
    """Re-entrancy, try-locks and timeouts behave as unpatched while a reporter records."""
    import filelock

    from testmon_live.plugin.activity import WorkerActivity
    from testmon_live.plugin.probes import filelock as probe

    got: list[ev.Event] = []
    reporter = locking.LockReporter(got.append, WorkerActivity(0.0))
    probe.install()
    locking.activate(reporter)
    try:
        path = str(tmp_path / "x.lock")
        outer = filelock.FileLock(path)
        with outer, outer:  # re-entrant: one acquisition
            other = filelock.FileLock(path, is_singleton=False)
            with pytest.raises(filelock.Timeout):
                other.acquire(timeout=0.05)
            with pytest.raises(filelock.Timeout):
                other.acquire(blocking=False)
        assert not outer.is_locked
    finally:
        locking.activate(None)
    actions = [
        (e.action, e.waited is not None, e.reason) for e in got if isinstance(e, ev.LockEvent)
    ]
    assert actions == [
        ("acquired", False, None),
        ("wait", False, None),
        ("failed", True, "timeout"),  # a wait that gave up
        ("released", False, None),
    ]


# ------------------------------------------------------------------ deadlocks


ABBA_FILELOCK = {
    "barrier.py": BARRIER,
    "test_abba.py": """
import time
from pathlib import Path
import filelock
from barrier import barrier, WORKER

HERE = Path(__file__).parent
A, B = str(HERE / "a.lock"), str(HERE / "b.lock")

def test_abba():
    first, second = (A, B) if WORKER == "gw0" else (B, A)
    with filelock.FileLock(first):
        barrier("both-hold-one", 2)
        try:
            with filelock.FileLock(second, timeout=4):
                pass
        except filelock.Timeout:
            pass  # the deadlock ends when one side gives up
""",
}


def test_abba_on_file_locks_reported_as_deadlock(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**ABBA_FILELOCK)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=2)
    run = only_run(pytester)
    deadlocks = run.of(ev.Deadlock)
    assert len(deadlocks) == 1, deadlocks
    (deadlock,) = deadlocks
    by_worker = {edge.w: edge for edge in deadlock.cycle}
    assert set(by_worker) == {"gw0", "gw1"}
    assert (by_worker["gw0"].holds, by_worker["gw0"].waits_for) == ("a.lock", "b.lock")
    assert (by_worker["gw1"].holds, by_worker["gw1"].waits_for) == ("b.lock", "a.lock")
    assert "gw0 holds a.lock, waits for b.lock" in deadlock.text
    assert "gw1 holds b.lock, waits for a.lock" in deadlock.text
    waits = [e for e in run.of(ev.LockEvent) if e.action == "wait"]
    # found live: within a couple of seconds of the second wait, well before the timeouts
    assert deadlock.ts - max(w.ts for w in waits) < 2.0
    assert "deadlock" in result.stdout.str()


ABBA_MONITOR = {
    "barrier.py": BARRIER,
    "test_abba.py": """
from testmon_live.plugin import monitor
from barrier import barrier, WORKER

def test_abba():
    first, second = ("alpha", "beta") if WORKER == "gw0" else ("beta", "alpha")
    with monitor.lock(first):
        barrier("both-hold-one", 2)
        try:
            with monitor.lock(second, timeout=4):
                pass
        except monitor.LockTimeout:
            pass
""",
}


def test_abba_on_monitor_locks_reported_as_deadlock(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**ABBA_MONITOR)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--dist", "each", timeout=TIMEOUT
    )
    result.assert_outcomes(passed=2)
    (deadlock,) = only_run(pytester).of(ev.Deadlock)
    assert {e.w for e in deadlock.cycle} == {"gw0", "gw1"}
    assert {(e.holds, e.waits_for) for e in deadlock.cycle} == {
        ("alpha", "beta"),
        ("beta", "alpha"),
    }


# ---------------------------------------------------------- monitor.lock / run_once


RUN_ONCE_SUITE = {
    "conftest.py": """
import json, os, time
from pathlib import Path
import pytest
from testmon_live.plugin import monitor

HERE = Path(__file__).parent

def migrate():
    with open(HERE / "migrations.log", "a") as log:
        log.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
    time.sleep(0.5)
    return {"schema": 4}

@pytest.fixture(scope="session")
def schema():
    return monitor.run_once("schema", migrate)

@pytest.fixture(scope="session")
def broken():
    def fail():
        raise RuntimeError("table users already exists")
    return monitor.run_once("broken", fail)
""",
    "test_db.py": """
import pytest
from testmon_live.plugin import monitor

@pytest.mark.parametrize("n", range(4))
def test_uses_schema(schema, n):
    assert schema == {"schema": 4}
    with monitor.lock("counter"):
        pass

def test_broken_setup_fails_everywhere(broken):
    pass
""",
}


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--monitor", "-n", "4", "--dist", "each"], id="monitor-n4"),
        pytest.param(["-n", "4", "--dist", "each"], id="unmonitored-n4"),
        pytest.param(["--monitor", "-p", "no:xdist"], id="monitor-single"),
    ],
)
@pytest.mark.compat
def test_run_once_runs_once_and_propagates_failure(
    pytester: pytest.Pytester, args: list[str]
) -> None:
    pytester.makepyfile(**RUN_ONCE_SUITE)
    result = pytester.runpytest_subprocess(*args, timeout=TIMEOUT)
    workers = 4 if "-n" in args else 1
    result.assert_outcomes(passed=4 * workers, errors=workers)
    ran = (pytester.path / "migrations.log").read_text().split()
    assert len(ran) == 1, ran
    out = result.stdout.str()
    assert "RuntimeError: table users already exists" in out
    if workers > 1:
        assert "RunOnceFailed: run_once('broken') failed on gw" in out
    if "--monitor" not in args:
        assert run_logs(pytester.path) == []
        return
    state = only_run(pytester).state
    once = state.locks[("run_once", "schema")]
    assert once.acquisitions == workers
    assert once.holders[ran[0]] == 1
    if workers > 1:
        assert once.contended >= 1  # the others waited while the first one migrated
        assert once.max_wait > 0.2
        assert once.waited_on[ran[0]] >= 1
    counter = state.locks[("monitor", "counter")]
    assert counter.acquisitions == 4 * workers


def test_monitor_api_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(monitor.LOCK_DIR_ENV, str(tmp_path))
    calls: list[int] = []

    def work() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    assert monitor.run_once("x", work) == {"n": 1}
    assert monitor.run_once("x", work) == {"n": 1}
    assert calls == [1]
    from testmon_live.plugin.activity import WorkerActivity

    got: list[ev.Event] = []
    locking.activate(locking.LockReporter(got.append, WorkerActivity(0.0)))
    try:
        with monitor.lock("a"):
            import threading

            failures: list[BaseException] = []

            def contend() -> None:
                try:
                    with monitor.lock("a", timeout=0.1):
                        pass
                except monitor.LockTimeout as exc:
                    failures.append(exc)

            thread = threading.Thread(target=contend)
            thread.start()
            thread.join(5)
    finally:
        locking.activate(None)
    failed = [e for e in got if isinstance(e, ev.LockEvent) and e.action == "failed"]
    assert [(e.key, e.reason) for e in failed] == [("a", "timeout")]
    assert len(failures) == 1
    assert "not acquired within 0.1s" in str(failures[0])
    record = json.loads(next(tmp_path.glob("x-*.once.json")).read_text())
    assert record["ok"] is True


@pytest.mark.isolated  # the hook stays in sys.meta_path
def test_import_hook_keeps_the_module_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module patched on import still has its source (tracebacks) and its resources."""
    import importlib.resources
    import inspect
    import sys
    import types

    from testmon_live.plugin.probes.imports import when_imported

    package = tmp_path / "tm_fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("def hello():\n    return 'hi'\n")
    (package / "data.txt").write_text("payload")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[types.ModuleType] = []
    when_imported("tm_fakepkg", seen.append)
    try:
        import tm_fakepkg  # type: ignore[import-not-found]

        assert seen == [tm_fakepkg]
        assert "return 'hi'" in inspect.getsource(tm_fakepkg.hello)
        assert (importlib.resources.files("tm_fakepkg") / "data.txt").read_text() == "payload"
    finally:
        sys.modules.pop("tm_fakepkg", None)


def _lock_event(w: str, action: str, key: str, lock_id: str, ts: float) -> ev.LockEvent:
    return ev.LockEvent(w=w, ts=ts, action=action, kind="monitor", key=key, lock_id=lock_id)  # type: ignore[arg-type]


@pytest.mark.compat
def test_wait_for_graph_cycle_found_once_and_not_through_dead_workers() -> None:
    state = RunState(detail=False)
    state.apply_all(
        [
            _lock_event("gw1", "acquired", "A", "1", 1.0),
            _lock_event("gw3", "acquired", "B", "1", 1.1),
            _lock_event("gw1", "wait", "B", "2", 1.2),
        ]
    )
    assert state.new_deadlocks() == []
    assert state.wait_edges() == [("gw1", "B", "gw3", None)]
    state.apply(_lock_event("gw3", "wait", "A", "2", 1.3))
    (found,) = state.new_deadlocks()
    assert found.text == "gw1 holds A, waits for B; gw3 holds B, waits for A"
    state.apply(found)
    assert state.new_deadlocks() == []  # once per cycle
    # the same shape with a crashed worker in it is no deadlock
    other = RunState(detail=False)
    other.apply_all(
        [
            _lock_event("gw1", "acquired", "A", "1", 1.0),
            _lock_event("gw3", "acquired", "B", "1", 1.1),
            _lock_event("gw1", "wait", "B", "2", 1.2),
            ev.WorkerCrashed(w="gw3", ts=1.25, error="killed"),
            _lock_event("gw3", "wait", "A", "2", 1.3),
        ]
    )
    assert other.new_deadlocks() == []
    assert other.lock_holders("monitor", "B")[0].w == "gw3"
    assert [w.w for w in other.lock_queue("monitor", "B")] == ["gw1"]


def _lock(
    w: str,
    action: Literal["wait", "acquired", "released", "failed"],
    lid: str,
    ts: float,
    key: str = "42",
) -> ev.LockEvent:
    return ev.LockEvent(w=w, ts=ts, action=action, kind="pg_advisory", key=key, lock_id=lid)


def _db_wait(ts: float, blocked_by: ev.Holder | None = None) -> ev.DbWait:
    return ev.DbWait(
        w="gw1",
        ts=ts,
        dialect="postgresql",
        url="pg://db",
        statement="SELECT 1",
        waited=0.5,
        lock="pg_advisory:42",
        blocked_by=blocked_by,
    )


@pytest.mark.parametrize("detail", [True, False], ids=["detail", "aggregates"])
def test_the_fold_names_holders_without_changing_the_events(detail: bool) -> None:
    """Every way the fold works out a holder (a server's connection id, the lock's holder
    now, a wait's holder passed to its acquisition, a wait that arrived first, a database
    wait after a contended acquisition) is kept in the state; each event encodes to the
    same bytes after the fold as before."""
    held = _lock("gw0", "acquired", "a", 1.1)
    held.test = "t.py::test_a"
    by_backend = _lock("gw1", "wait", "b", 1.2)
    by_backend.holder = ev.Holder(backend=77)
    now_held = _lock("gw2", "wait", "c", 1.3)
    known_pid = _lock("gw3", "wait", "d", 1.35)
    known_pid.holder = ev.Holder(pid=5)
    released = _lock("gw0", "released", "a", 1.4)
    acquired = _lock("gw1", "acquired", "b", 1.5)
    acquired.waited = 0.3
    early = _lock("gw4", "wait", "e", 1.6, key="43")
    first = _lock("gw5", "acquired", "f", 1.7, key="43")
    told, after = _db_wait(1.8, ev.Holder(backend=77)), _db_wait(1.9)
    connected = ev.DbConnected(w="gw0", ts=1.0, dialect="postgresql", url="pg://db", backend=77)
    events: list[ev.Event] = [connected, held, by_backend, now_held, known_pid, released]
    events += [acquired, early, first, told, after]
    before = [ev.encode(e) for e in events]
    state = RunState(detail=detail).apply_all(events)
    assert [ev.encode(e) for e in events] == before
    if detail:  # a wait that ended is asked about only where the events are kept
        assert (state.holder(by_backend) or ev.Holder()).w == "gw0"
    assert (state.holder(now_held) or ev.Holder()).test == "t.py::test_a"
    pid = state.holder(known_pid) or ev.Holder()
    assert (pid.w, pid.pid) == ("gw0", 5)
    assert (state.holder(acquired) or ev.Holder()).w == "gw0"
    assert (state.holder(early) or ev.Holder()).w == "gw5"
    assert state.locks[("pg_advisory", "42")].waited_on == {"gw0": 1}
    assert [(state.blocked_by(d) or ev.Holder()).w for d in (told, after)] == ["gw0", "gw0"]


@pytest.mark.parametrize("detail", [True, False], ids=["detail", "aggregates"])
def test_folding_a_whole_run_changes_no_event(detail: bool) -> None:
    """Every kind of event of the sample run (tests, fixtures, locks, database waits,
    containers, stalls, crashes...) encodes to the same bytes after the fold as before."""
    events = sample_runs.demo_run()
    before = [ev.encode(e) for e in events]
    RunState(detail=detail).apply_all(events)
    assert [ev.encode(e) for e in events] == before


def test_each_run_has_its_own_run_once_even_inside_another_xdist_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pytest started from an xdist worker inherits PYTEST_XDIST_TESTRUNUID: the inner
    run must not find the outer (or a sibling) run's run_once results and locks."""
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "stale-outer-run")
    monkeypatch.delenv(monitor.LOCK_DIR_ENV, raising=False)
    pytester.makepyfile(
        test_once="""
from pathlib import Path
from testmon_live.plugin import monitor

def test_once():
    def migrate():
        with Path("ran.log").open("a") as f:
            f.write("x")
        return 1
    assert monitor.run_once("schema-for-nested-runs", migrate) == 1
"""
    )
    for _ in range(2):
        pytester.runpytest_subprocess("-p", "no:xdist", timeout=TIMEOUT).assert_outcomes(passed=1)
    assert (pytester.path / "ran.log").read_text() == "xx"
