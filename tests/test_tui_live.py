"""The dashboard on live runs: real `pytest --monitor` runs, the real hub socket."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testmon_live.plugin.runlog import MonitorDir
from testmon_live.plugin.state import RunState
from testmon_live.tui.dashboard.app import MonitorApp, make_app
from testmon_live.tui.dashboard.sources import LiveSource
from testmon_live.tui.dashboard.widgets.run_header import RunHeader
from testmon_live.tui.dashboard.widgets.workers_table import WorkersTable
from testmon_live.tui.testing import sample_runs

from .conftest import shown
from .test_live import GATED_SUITE, GatedRun

pytestmark = pytest.mark.slow
SIZE = (120, 36)
EARLY_TESTS = 5
"""test_first and the four test_early run before the gate."""
ALL_TESTS = 12


@pytest.fixture
def gated(pytester: pytest.Pytester) -> Iterator[Callable[[list[str]], GatedRun]]:
    pytester.makepyfile(test_gated=GATED_SUITE)
    started: list[GatedRun] = []

    def start(extra: list[str]) -> GatedRun:
        run = GatedRun(pytester.path, extra)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def header(app: MonitorApp) -> str:
    return shown(app.main.query_one(RunHeader))


async def until(pilot: object, check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


@pytest.mark.compat
async def test_attach_mid_run_then_follow_to_the_end(
    gated: Callable[[list[str]], GatedRun],
) -> None:
    run = gated(["-n", "2"])
    live = run.live()
    run.wait_in_log(b"test_gate")  # the early tests are done, the gate test is running
    app = make_app(LiveSource(run.mdir))
    async with app.run_test(size=SIZE) as pilot:

        def state() -> RunState:
            return app.ingest.state

        await until(pilot, lambda: state().tests_done >= EARLY_TESTS, "the backlog")
        assert app.ingest.label == live.run_id
        assert state().end is None
        # (the header is drawn on its own refresh, after the fold has the backlog)
        await until(pilot, lambda: "running" in header(app), "the header")
        await until(pilot, lambda: len(app.main.query_one(WorkersTable).rows) == 2, "2 rows")
        run.open_gate()
        await until(pilot, lambda: state().end is not None, "the end of the run")
        await pilot.pause(0.3)
        top = header(app)
        assert "finished" in top
        assert f"{ALL_TESTS} passed" in top
        assert "ended (run finished)" in top
        assert {r.value for r in app.main.query_one(WorkersTable).rows} == {"gw0", "gw1"}
    assert run.proc.wait(30) == 0


async def test_hub_disappearing_mid_run_keeps_what_it_had(
    gated: Callable[[list[str]], GatedRun],
) -> None:
    run = gated(["-n", "2"])
    run.live()
    run.wait_in_log(b"test_gate")
    app = make_app(LiveSource(run.mdir))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ingest.state.tests_done >= EARLY_TESTS, "the backlog")
        os.killpg(run.proc.pid, signal.SIGKILL)  # controller, hub and workers, no goodbye
        run.proc.wait(10)
        await until(pilot, lambda: app.ingest.lost, "the source to notice")
        await pilot.pause(0.3)
        top = header(app)
        assert "incomplete" in top  # as `testmon runs` and `report` word it
        assert "ended unexpectedly" in top
        assert "showing what was received" in top
        assert app.ingest.state.tests_done >= EARLY_TESTS
        assert len(app.main.query_one(WorkersTable).rows) == 2


async def test_no_live_run_shows_the_last_one_then_switches_to_a_new_run(
    gated: Callable[[list[str]], GatedRun], pytester: pytest.Pytester
) -> None:
    mdir = MonitorDir(pytester.path / ".testmon")
    sample_runs.write_log(mdir.runs / f"{sample_runs.RUN_ID}.jsonl", sample_runs.demo_run())
    app = make_app(LiveSource(mdir))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.ingest.state.end is not None, "the recorded run")
        await pilot.pause(0.2)
        top = header(app)
        assert f"no live run: showing the last recorded run {sample_runs.RUN_ID}" in top
        assert "start `pytest --monitor`" in top
        assert "56 passed" in top
        run = gated(["-n", "2"])
        live = run.live()
        await until(pilot, lambda: app.ingest.label == live.run_id, "the switch")
        await until(pilot, lambda: app.ingest.state.tests_done >= EARLY_TESTS, "new events")
        assert "56 passed" not in header(app)
        run.open_gate()
        await until(pilot, lambda: app.ingest.state.end is not None, "the end of the new run")
        assert app.ingest.state.tests_done == ALL_TESTS
    assert run.proc.wait(30) == 0


async def test_no_runs_at_all_says_how_to_start_one(tmp_path: Path) -> None:
    app = make_app(LiveSource(MonitorDir(tmp_path / ".testmon")))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: bool(app.ingest.status_text), "a status line", 10)
        await pilot.pause(0.1)
        assert "no live run and none recorded" in header(app)
        assert app.ingest.status_level == "warning"
        assert " waiting " in header(app)  # not "running": nothing runs yet
        assert "running" not in header(app)
