"""The dashboard on logs recorded by real runs (not hand-written events): what the probes
emit is what the panels must show. Each test records a small suite under ``-n 2``, then
opens the log at its end and at moments cut from it (how it looked live then)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.tui.dashboard.app import MonitorApp, make_app
from testmon_live.tui.dashboard.screenshots import settle
from testmon_live.tui.dashboard.sources import ReplaySource
from testmon_live.tui.dashboard.widgets.containers_panel import ContainersPanel
from testmon_live.tui.dashboard.widgets.locks_panel import LocksPanel
from testmon_live.tui.dashboard.widgets.stuck_panel import StuckPanel
from testmon_live.tui.dashboard.widgets.timeline import Timeline
from testmon_live.tui.dashboard.widgets.workers_table import WorkersTable
from testmon_live.tui.testing import sample_runs

from .conftest import Recorded, only_run, panel_text, read_recorded, shown
from .test_containers import IMAGE, WEB, _cleanup

pytestmark = pytest.mark.slow

SIZE = (160, 40)
INNER_TIMEOUT = 120
MIGRATION = 2.5
"""Seconds the first worker holds the migration lock: the other starts within it."""

MIGRATING_CONFTEST = f"""
import time
import pytest
from filelock import FileLock

@pytest.fixture(scope="session")
def migrated(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if base.name.startswith("popen-gw") else base
    with FileLock(str(shared / "migrations.lock")):
        done = shared / "schema-version"
        if not done.exists():
            time.sleep({MIGRATION})
            done.write_text("1")
"""

STALLING_TESTS = """
import threading

def test_first(migrated):
    pass

def test_second(migrated):
    pass

def test_missed_wakeup(migrated):
    assert not threading.Event().wait(2.5)
"""


def record(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Recorded]:
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "-p", "no:cacheprovider", *args, timeout=INNER_TIMEOUT
    )
    return result, only_run(pytester)


def until(events: list[ev.Event], last: ev.Event) -> list[ev.Event]:
    """The log as it stood when ``last`` arrived (how a live viewer saw the run then)."""
    return events[: events.index(last) + 1]


def app_on(folder: Path, events: list[ev.Event]) -> MonitorApp:
    path = sample_runs.write_log(folder / "runs" / "cut.jsonl", events)
    return make_app(ReplaySource(path, live=True), clock=lambda: events[-1].ts)


def rows(app: MonitorApp) -> dict[str, list[str]]:
    table = app.main.query_one(WorkersTable)
    return {
        str(row.key.value): [str(cell) for cell in table.get_row(row.key)]
        for row in table.ordered_rows
    }


@pytest.mark.compat
async def test_lock_wait_and_stall_of_a_real_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(MIGRATING_CONFTEST)
    pytester.makepyfile(test_stuck=STALLING_TESTS)
    result, recorded = record(pytester, "--monitor-stall=1")
    assert result.ret == 0, result.stdout.str()
    events = recorded.events
    locks = recorded.of(ev.LockEvent)
    contended = [e for e in locks if e.action == "acquired" and e.waited]
    assert len(contended) == 1, f"the second worker should have waited: {locks}"
    waiter = contended[0].w
    holder = next(e.w for e in locks if e.action == "acquired" and not e.waited)
    assert waiter != holder

    # Live, while the second worker waits: its row says so, with the lock's file name.
    # The two workers' batches interleave in the log: the holder's "acquired" may be
    # logged after the waiter's "waiting" (both before the waiter's own "acquired"), so
    # the moment shown is the later of the two.
    waiting = next(
        e
        for e in recorded.of(ev.Activity)
        if e.w == waiter and (e.waiting or "").startswith("lock:")
    )
    held = next(e for e in locks if e.action == "acquired" and not e.waited)
    moment = max(waiting, held, key=events.index)
    assert events.index(moment) < events.index(contended[0])
    app = app_on(pytester.path / "waiting", until(events, moment))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        row = rows(app)[waiter]
        assert row[1] == "waiting on lock"
        assert "[migrations.lock]" in row[5]
        panel = await panel_text(app, pilot, "4", LocksPanel)
        assert "WAITING #1 " + waiter in panel
        assert f"held by {holder} (" in panel
        assert "HELD now by " + holder in panel

    # Live, during the missed wake-up: that worker is stalled, its stack on the Stuck tab.
    stall = next(
        e
        for e in recorded.of(ev.Stall)
        if e.test == "test_stuck.py::test_missed_wakeup" and e.phase == "call"
    )
    app = app_on(pytester.path / "stalled", until(events, stall))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        row = rows(app)[stall.w]
        assert row[1] == "stalled"
        assert "test_missed_wakeup" in row[5]
        stuck = await panel_text(app, pilot, "6", StuckPanel)
        assert f"STALLED NOW {stall.w} call of test_stuck.py::test_missed_wakeup for" in stuck
        assert "  MainThread event: threading.Event.wait" in stuck
        assert "test_stuck.py:" in stuck
        assert " in test_missed_wakeup\n" in stuck
        # the worker that migrated slept under the lock (before 3.11 a select: still a sleep)
        assert f"  MainThread sleep: time.sleep({MIGRATION})" in stuck

    # The test ended: its worker is no longer stalled, even before the stall's end arrives.
    finished = next(
        e for e in recorded.of(ev.TestFinished) if e.nodeid == "test_stuck.py::test_missed_wakeup"
    )
    app = app_on(pytester.path / "moved-on", until(events, finished))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert rows(app)[stall.w][1] != "stalled"

    # At the end: the lock's history, the stall that ended, both drawn on the timeline.
    app = app_on(pytester.path / "end", events)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert {row[1] for row in rows(app).values()} == {"done"}
        panel = await panel_text(app, pilot, "4", LocksPanel)
        assert "filelock" in panel
        assert "migrations.lock  2 acquired, 1 contended" in panel
        assert f"waited for {holder} x1" in panel
        assert f"{waiter:<6} waited " in panel
        assert f"for {holder} (test_stuck.py::" in panel
        assert "WAITING" not in panel
        assert "HELD now" not in panel
        stuck = await panel_text(app, pilot, "6", StuckPanel)
        assert "STALLED NOW" not in stuck
        assert f"stalled {stall.w} call of test_stuck.py::test_missed_wakeup ran 2.5" in stuck
        lanes = await panel_text(app, pilot, "2", Timeline)
        assert "≈" in lanes, "the lock wait is drawn"
        assert "!" in lanes.split("█ call")[0], "the stall is marked"


CONTAINER_CONFTEST = (
    WEB
    + """
@pytest.fixture(scope="session")
def web():
    container = web_container("2").start()
    yield container
    container.stop()
"""
)


@pytest.mark.usefixtures("engine")
@pytest.mark.engine
async def test_container_of_a_real_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONTAINER_CONFTEST)
    pytester.makepyfile(test_web="def test_uses_web(web):\n    assert web.get_exposed_port(8080)\n")
    result, recorded = record(pytester)
    try:
        assert result.ret == 0, result.stdout.str()
        events = recorded.events
        wait = next(
            e for e in recorded.of(ev.Activity) if (e.waiting or "").startswith("container:")
        )
        app = app_on(pytester.path / "waiting", until(events, wait))
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            row = rows(app)[wait.w]
            assert row[1] == "waiting on container"
            assert "[testmon-bb:latest]" in row[5]

        app = app_on(pytester.path / "end", events)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            panel = await panel_text(app, pilot, "5", ContainersPanel)
            assert IMAGE in panel
            assert f"started by {wait.w} (fixture web" in panel
            assert "ready after" in panel
            assert "LogMessageWaitStrategy('serving'" in panel
            assert "▚" in await panel_text(app, pilot, "2", Timeline), "the container wait is drawn"
    finally:
        _cleanup(recorded)


STRAGGLER_LAST = """
import time, pytest

@pytest.mark.parametrize("n", range(10))
def test_quick(n):
    time.sleep(0.3)

def test_zz_straggler():  # collected last: one worker runs it alone at the end
    time.sleep(3)
"""


async def test_eta_follows_the_run_with_history_and_says_nothing_without(
    pytester: pytest.Pytester,
) -> None:
    """The second of two runs of the same suite: at every finished test the ETA is within
    20 % (or a second) of the time the run really had left, straggler included; the first
    run, with no earlier one, shows none."""
    from testmon_live.tui.dashboard.ingest import Ingest
    from testmon_live.tui.dashboard.widgets.run_header import RunHeader

    pytester.makepyfile(test_eta=STRAGGLER_LAST)
    for _ in range(2):
        result = pytester.runpytest_subprocess(
            "--monitor", "-n", "2", "-p", "no:cacheprovider", "-p", "no:randomly",
            timeout=INNER_TIMEOUT,
        )  # fmt: skip
        result.assert_outcomes(passed=11)
    first, second = sorted((pytester.path / ".testmon" / "runs").glob("*.jsonl"))
    runs = pytester.path / "eta" / "runs"
    runs.mkdir(parents=True)
    shutil.copy(first, runs / first.name)
    events = read_recorded(second).events
    end = events[-1]
    assert isinstance(end, ev.RunFinished)

    def eta_at(moment: ev.Event, history: bool = True) -> float | None:
        cut = until(events, moment)
        folder = runs if history else pytester.path / "alone" / "runs"
        path = sample_runs.write_log(folder / "cut.jsonl", cut)
        ingest = Ingest(lambda message: None, clock=lambda: moment.ts)
        ingest.reset("cut", path)
        ingest.events(cut)
        return ingest.eta()

    finished = [e for e in events if isinstance(e, ev.TestFinished)]
    misses = []
    for moment in finished[1:-1]:
        left = end.ts - moment.ts
        eta = eta_at(moment)
        assert eta is not None
        if abs(eta - left) > max(0.2 * left, 1.0):
            misses.append(f"{moment.nodeid}: ETA {eta:.2f}s, {left:.2f}s left")
    assert not misses, misses
    assert eta_at(finished[3], history=False) is None  # no earlier run: no guess

    middle = finished[len(finished) // 2]
    app = app_on(pytester.path / "eta", until(events, middle))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "ETA ~" in shown(app.query_one(RunHeader))
    app = app_on(pytester.path / "no-history", until(events, middle))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "ETA" not in shown(app.query_one(RunHeader))
