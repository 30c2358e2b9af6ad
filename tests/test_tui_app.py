"""The dashboard on recorded logs: App.run_test + pilot, asserting what the widgets hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.events import MouseScrollUp
from textual.widgets import DataTable, Input, Static, TabbedContent
from textual.widgets._tabbed_content import ContentTab

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir
from testmon_live.tui.dashboard.app import TABS, MonitorApp, make_app
from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.palette import TONES, colour
from testmon_live.tui.dashboard.screens.test_detail import TestDetailScreen
from testmon_live.tui.dashboard.screenshots import settle
from testmon_live.tui.dashboard.sources import LiveSource, ReplaySource, StreamState
from testmon_live.tui.dashboard.widgets.containers_panel import ContainersPanel
from testmon_live.tui.dashboard.widgets.event_log import EncodedEvents, EventLog
from testmon_live.tui.dashboard.widgets.locks_panel import LocksPanel
from testmon_live.tui.dashboard.widgets.parallelism import ParallelismPanel
from testmon_live.tui.dashboard.widgets.run_header import RunHeader
from testmon_live.tui.dashboard.widgets.stuck_panel import StuckPanel
from testmon_live.tui.dashboard.widgets.timeline import Timeline
from testmon_live.tui.dashboard.widgets.worker_activity import WorkerActivity
from testmon_live.tui.dashboard.widgets.workers_table import WorkersTable
from testmon_live.tui.dashboard.widgets.workers_view import WorkersView
from testmon_live.tui.reports.formatting import fmt_percent
from testmon_live.tui.reports.logs import load_run
from testmon_live.tui.reports.model import build_report
from testmon_live.tui.reports.run_list import build_runs, list_runs
from testmon_live.tui.testing import sample_runs

from .conftest import panel_text, shown

SIZE = (120, 36)


def log(tmp_path: Path, events: list[ev.Event], name: str = sample_runs.RUN_ID) -> Path:
    return sample_runs.write_log(tmp_path / ".testmon" / "runs" / f"{name}.jsonl", events)


def app_on(path: Path, speed: float | None = None, live: bool | None = None) -> MonitorApp:
    """``live``: the log is still written (a cut log shows a moment of a live run)."""
    return make_app(ReplaySource(path, speed=speed, live=live), clock=lambda: sample_runs.T0)


def header(app: MonitorApp) -> str:
    return shown(app.main.query_one(RunHeader))


def header_words(app: MonitorApp) -> str:
    """The header's words on one line: a message wraps where the log's path (tmp_path,
    longer on CI) puts it."""
    return " ".join(header(app).split())


def worker_states(app: MonitorApp) -> dict[str, str]:
    table = app.main.query_one(WorkersTable)
    states = {}
    for row in table.ordered_rows:
        cells = table.get_row(row.key)
        states[str(cells[0])] = str(cells[1])
    return states


@pytest.mark.compat
async def test_end_state_of_a_recorded_run(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        top = header(app)
        assert sample_runs.RUN_ID in top
        assert "finished" in top
        assert "56 passed" in top
        assert "1 failed" in top
        assert "1 skipped" in top
        assert "59/59" in top
        assert "elapsed 18.0s" in top
        assert worker_states(app) == {w: "done" for w in sample_runs.WORKERS}


async def test_workers_mid_run_show_lock_waits_then_a_stall(tmp_path: Path) -> None:
    events = sample_runs.demo_run()
    app = app_on(log(tmp_path, sample_runs.cut(events, 3.0)), live=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        states = worker_states(app)
        assert "running" in header(app)
        assert sorted(states.values()) == ["setup"] + ["waiting on lock"] * 3
        table = app.main.query_one(WorkersTable)
        waiting = [str(table.get_row(r.key)[5]) for r in table.ordered_rows]
        assert sum("[migrations.lock]" in cell for cell in waiting) == 3
        screen = app.export_screenshot()
        assert screen.count("[migrations.lock]") == 3, "drawn, not taken for markup"
    app = app_on(log(tmp_path, sample_runs.cut(events, 9.0), "later"), live=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert sorted(worker_states(app).values()) == ["call", "call", "call", "stalled"]


async def locks_view(tmp_path: Path, *added: tuple[ev.TestFinished, ev.Event]) -> str:
    """The Locks view (key 4) of the demo run, each added event logged just before its
    test's end."""
    events = sample_runs.demo_run()
    for test, event in added:
        events.insert(events.index(test), event)
    app = app_on(log(tmp_path, events))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        return await panel_text(app, pilot, "4", LocksPanel)


def demo_test(outcome: str) -> ev.TestFinished:
    """The demo run's first test that ended so (the demo run is the same every time)."""
    events = sample_runs.demo_run()
    return next(e for e in events if isinstance(e, ev.TestFinished) and e.outcome == outcome)


async def test_locks_panel_says_a_migration_error_a_passing_test_caught(tmp_path: Path) -> None:
    """An error the suite provokes on purpose (pytest.raises) is said as caught, not as a
    problem; an error in a failing test stays one."""
    added = [
        (test, ev.Migration(
            w=test.w, ts=test.ts - 0.001, action="end", tool="alembic", op="upgrade",
            url="sqlite://", duration=0.001, error=error, test=test.nodeid,
        ))
        for test, error in (
            (demo_test("passed"), "CommandError: expected"),
            (demo_test("failed"), "CommandError: real"),
        )
    ]  # fmt: skip
    locks = await locks_view(tmp_path, *added)
    assert "CommandError: expected (caught: its test passed)" in locks
    assert "CommandError: real\n" in locks


async def test_locks_panel_shows_a_waiting_statement_on_one_line(tmp_path: Path) -> None:
    """A runner's SQL written in a triple-quoted string reaches the log as the driver got it,
    newlines and all: the panel shows it on one line (a newline would start a row of its own
    under the next lock's)."""
    test = demo_test("passed")
    wait = ev.DbWait(
        w=test.w, ts=test.ts - 0.001, dialect="sqlite", url="sqlite:///app.db", waited=1.5,
        statement="\n    CREATE TABLE accounts (\n        id INTEGER PRIMARY KEY\n    )\n",
        test=test.nodeid,
    )  # fmt: skip
    locks = await locks_view(tmp_path, (test, wait))
    assert "sqlite: CREATE TABLE accounts ( id INTEGER PRIMARY KEY )" in locks


async def test_panels_render_locks_containers_stalls_and_failures(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        locks = await panel_text(app, pilot, "4", LocksPanel)
        assert "migrations.lock" in locks
        assert "4 acquired, 3 contended" in locks
        assert "alembic upgrade" in locks
        assert "blocked by gw0" in locks
        containers = await panel_text(app, pilot, "5", ContainersPanel)
        assert "postgres:16" in containers
        assert "started by gw0" in containers
        assert "used by gw1, gw2, gw3" in containers
        stuck = await panel_text(app, pilot, "6", StuckPanel)
        assert "test_report_waits_for_renderer" in stuck
        assert "event: threading.Event.wait" in stuck
        assert "test_reports.py:29 in test_report_waits_for_renderer" in stuck
        await pilot.press("7")
        await pilot.pause()
        text = shown(app.main.query_one("#failure-text", Static))
        assert "refunds lose a cent" in text
        assert "assert 100.0 == 100.01" in text
        parallel = await panel_text(app, pilot, "3", ParallelismPanel)
        assert "parallel efficiency 70%" in parallel
        assert "gw3" in parallel
        assert "lock wait" in parallel


async def test_header_report_and_runs_count_the_same_workers_when_one_crashed(
    tmp_path: Path,
) -> None:
    """A worker that crashed before it started took no part: the dashboard's header,
    ``testmon report`` and ``testmon runs`` (folding a log with no end) count the same
    workers, and the crash is still reported."""
    events = sample_runs.cut(sample_runs.demo_run(), 9.0)
    at = events[-1].ts
    events.append(ev.WorkerCrashed(w="gw9", ts=at, error="node down: Not properly terminated"))
    path = log(tmp_path, events)
    mdir = MonitorDir(tmp_path / ".testmon")
    report = build_report(load_run(path, mdir))
    assert [c["worker"] for c in report["crashes"]] == ["gw9"]
    workers = [w["id"] for w in report["workers"]]
    assert workers == list(sample_runs.WORKERS)
    (row,) = build_runs(list_runs(mdir))["runs"]
    assert row["workers"] == len(workers)
    app = app_on(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        shown_workers = header(app).split("  workers ")[1].split()[0]
        assert shown_workers == str(len(workers))


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
async def test_parallelism_shares_are_of_the_run_wall_and_the_chart_fills_the_width(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    """A worker's busy share is of the run's wall time, as in ``testmon report``: xdist
    shuts workers down when the queue empties, the wait for the straggler is idle too."""
    path = log(tmp_path, sample_runs.demo_run())
    report = build_report(load_run(path, MonitorDir(tmp_path / ".testmon")))
    app = app_on(path)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        lines = (await panel_text(app, pilot, "3", ParallelismPanel)).splitlines()
        busy = {
            line.split()[0]: line.split(" busy ")[1].split()[0]
            for line in lines
            if " busy " in line
        }
        expected = {w["id"]: fmt_percent(w["busy_share"]) for w in report["workers"]}
        assert busy == expected
        assert busy["gw0"] != "93%", "not of the worker's own life"
        chart = [
            line for line in lines if "█" in line and not line.startswith(("gw", " " * 8 + "█"))
        ]
        assert chart
        width = app.main.query_one(ParallelismPanel).content_size.width
        assert max(len(line.rstrip()) for line in chart) >= width - 4


@pytest.mark.compat
async def test_timeline_selects_a_bar_and_opens_the_test(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        timeline = app.main.query_one(Timeline)
        timeline.focus()
        await pilot.pause()
        lanes = shown_timeline(timeline)
        assert lanes.count("≈") > 10, "lock waits are drawn"
        assert "█" in lanes
        assert "▒" in lanes
        await pilot.press("down", "down", "down", "right")
        assert timeline.selected is not None
        assert timeline.selected.nodeid == "test_reports.py::test_quarterly_report"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TestDetailScreen)
        detail = shown(app.screen.query_one("#detail-text", Static))
        assert "test_quarterly_report" in detail
        assert "ran before it on gw3 (0 tests)" in detail
        assert "database" in detail
        assert "session" in detail
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ != "TestDetailScreen"
        await pilot.press("plus", "plus")
        assert not timeline.fit
        assert timeline.zoom < timeline.scale() * 1.01


def shown_timeline(timeline: Timeline) -> str:
    return shown(timeline)


async def test_timeline_draws_the_test_still_running_up_to_now(tmp_path: Path) -> None:
    """9 s in, gw3's straggler has run since 1.2 s (setup, then call from 5.7 s): its bar
    reaches the present, so the test being hunted is visible, not a gap."""
    app = app_on(log(tmp_path, sample_runs.cut(sample_runs.demo_run(), 9.0)), live=True)
    async with app.run_test(size=(100, 20)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        timeline = app.main.query_one(Timeline)
        lanes = {line[:7].strip(): line[7:] for line in shown_timeline(timeline).splitlines()}
        gw3 = lanes["gw3"].rstrip()
        assert len(gw3) >= len(lanes["gw3"]) - 3, "drawn up to now (fit leaves 2% spare)"
        assert gw3.endswith("█" * 20), "in its call"
        assert "≈▒" in gw3, "its lock wait, then the rest of its setup"
        assert " " not in gw3.strip(), "no gap"
        ids = list(lanes)[1:5]
        assert all(lanes[w].rstrip().endswith("█") for w in ids), "every worker is in a call"


async def test_raw_events_filter(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("8")
        await pilot.pause()
        app.main.query_one(Input).focus()
        await pilot.press(*"stall")
        await pilot.pause()
        view = app.main.query_one(EventLog)
        kinds = {str(view.table.get_row_at(i)[2]) for i in range(view.table.row_count)}
        assert {"stall", "stall_end"} <= kinds  # (the run's header and end name stalls too)
        assert all("stall" in entry.searched for entry in view.shown)
        assert view.matched == view.table.row_count > 0


def test_the_event_view_encodes_each_event_once_not_at_every_redraw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[ev.Event] = []
    real = ev.encode

    def counting(event: ev.Event | ev.Control) -> bytes:
        assert isinstance(event, ev.Event)
        encoded.append(event)
        return real(event)

    monkeypatch.setattr(ev, "encode", counting)
    ingest = Ingest(lambda message: None)
    ingest.reset("run", None)
    events = sample_runs.demo_run()
    cache = EncodedEvents()
    ingest.events(events[:100])
    cache.sync(ingest)
    cache.sync(ingest)  # a redraw with nothing new encodes nothing
    assert encoded == events[:100]
    ingest.events(events[100:103])
    cache.sync(ingest)
    assert encoded == events[:103], "only what arrived"
    assert [e.event for e in cache.entries] == list(ingest.raw)
    ingest.reset("again", None)
    ingest.events(events[:2])
    cache.sync(ingest)
    assert [e.event for e in cache.entries] == events[:2]
    assert [e.index for e in cache.entries] == [0, 1]


async def test_panels_draw_in_the_theme_through_their_component_classes(
    tmp_path: Path,
) -> None:
    """Every panel's tones are its theme's variables (alpha dropped), and follow a change
    of theme: no colour is kept from another app or another theme."""
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        panels = [p for p in app.panels.values() if not isinstance(p, WorkersView)]
        workers = [app.main.query_one(WorkersTable), app.main.query_one(WorkerActivity)]
        widgets = [app.main.query_one(RunHeader), *panels, *workers]
        for theme in ("textual-dark", "textual-light"):
            app.theme = theme
            await pilot.pause()
            variables = app.get_css_variables()
            for widget in widgets:  # (a tone a widget does not declare raises KeyError)
                drawn = {v: colour(widget, v) for v in TONES}
                assert drawn == {v: variables[v][:7].upper() for v in TONES}, theme


async def test_escape_leaves_the_event_filter_and_keys_work_again(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("8")
        await pilot.pause()
        await pilot.press("shift+tab")  # from the events to their filter (or type a letter)
        await pilot.pause()
        field = app.main.query_one("#event-filter", Input)
        assert app.focused is field
        await pilot.press(*"stall")
        await pilot.press("escape")
        await pilot.pause()
        assert app.focused is not field
        await pilot.press("1")
        await pilot.pause()
        assert field.value == "stall"
        assert app.main.query_one(TabbedContent).active == "workers"
        await pilot.press("8")
        await pilot.pause()
        field.focus()
        await pilot.press("end", "x", "enter")  # enter also hands the keys back
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        assert field.value == "stallx"
        assert app.main.query_one(TabbedContent).active == "timeline"


@pytest.mark.parametrize(
    ("key", "tab", "view"),
    [("1", "workers", WorkersTable), ("2", "timeline", Timeline), ("7", "failures", DataTable)],
)
async def test_a_number_key_gives_the_keys_to_the_view(
    tmp_path: Path, key: str, tab: str, view: type
) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("3")  # from another tab
        await pilot.press(key)
        await pilot.pause()
        assert app.main.query_one(TabbedContent).active == tab
        assert isinstance(app.focused, view)


async def test_right_arrow_moves_along_the_timeline_not_the_tabs(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        await pilot.press("right")
        await pilot.pause()
        assert app.main.query_one(TabbedContent).active == "timeline"
        assert app.main.query_one(Timeline).selected is not None


async def test_clicking_a_tab_gives_the_keys_to_its_view(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.click("#--content-tab-timeline")
        await pilot.pause()
        await pilot.pause()
        assert app.main.query_one(TabbedContent).active == "timeline"
        assert isinstance(app.focused, Timeline)


async def test_find_a_test_by_part_of_its_name(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("slash")
        await pilot.pause()
        await pilot.press(*"refund_roun")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, TestDetailScreen)
        assert app.screen.test.nodeid == "test_orders.py::test_refund_rounding"


async def test_find_a_worker(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2", "slash")
        await pilot.pause()
        await pilot.press(*"gw2")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause(0.2)
        table = app.main.query_one(WorkersTable)
        assert table.is_mounted
        assert table.display
        assert str(table.get_row_at(table.cursor_row)[0]) == "gw2"


@pytest.mark.compat
async def test_replay_plays_pauses_steps_and_seeks(tmp_path: Path) -> None:
    source_log = log(tmp_path, sample_runs.demo_run())
    app = app_on(source_log, speed=20.0)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if app.ingest.state.tests_done > 5:
                break
        assert 5 < app.ingest.state.tests_done < 59, "it plays from the start"
        await pilot.press("space")  # pause
        await pilot.pause(0.2)
        paused_at = app.replay_position()
        await pilot.pause(0.3)
        assert app.replay_position() == pytest.approx(paused_at)
        await pilot.press("full_stop")  # step one second
        await pilot.pause(0.2)
        assert app.replay_position() == pytest.approx(paused_at + 1.0, abs=0.01)
        await pilot.press("home")  # back to the start: folded again from nothing
        await pilot.pause(0.2)
        assert app.replay_position() == 0.0
        assert app.ingest.state.tests_done == 0
        await pilot.press("right_square_bracket")
        await pilot.pause(0.2)
        assert app.replay_position() == pytest.approx(10.0)
        assert "running" in header(app)
        done_at_10 = app.ingest.state.tests_done
        assert 0 < done_at_10 < 59


async def test_replay_of_a_killed_run_ends_incomplete_not_running(tmp_path: Path) -> None:
    """A log without the run's end that no pytest writes any more: killed or crashed."""
    events = sample_runs.demo_run()
    log(tmp_path, events, "20261117-060000-earlier")  # so an ETA could be given
    app = app_on(log(tmp_path, sample_runs.cut(events, 9.0)))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.pause(0.1)
        app.redraw(force=True)
        top = header(app)
        assert " incomplete " in top
        assert "running" not in top
        assert "ETA" not in top
        assert "(replay)" not in top
        assert "elapsed 9.00s" in top
        assert "without the run's end record" in top
        states = worker_states(app)
        assert "call" not in states.values()
        assert "stalled" not in states.values()
        assert "no end recorded" in states.values()


async def test_replay_played_to_the_end_of_a_killed_run_ends_incomplete(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.cut(sample_runs.demo_run(), 2.0)), speed=20.0)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(200):
            await pilot.pause(0.05)
            # "waiting" until the replay has read its first events (a loaded machine)
            if app.ingest.run_status() not in ("waiting", "running"):
                break
        assert app.ingest.run_status() == "incomplete"
        await pilot.press("home")  # back to the start: running again, until the end
        await pilot.pause(0.2)
        assert app.ingest.run_status() == "running"


async def test_last_recorded_run_shown_while_waiting_is_incomplete_if_killed(
    tmp_path: Path,
) -> None:
    log(tmp_path, sample_runs.cut(sample_runs.demo_run(), 9.0))
    app = make_app(LiveSource(MonitorDir(tmp_path / ".testmon")), clock=lambda: sample_runs.T0)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.02)
            if "no live run" in app.ingest.status_text:
                break
        app.redraw(force=True)
        await pilot.pause()
        assert " incomplete " in header(app)
        assert "running" not in header(app)


def test_elapsed_does_not_go_back_when_a_live_hub_vanishes() -> None:
    wall = [sample_runs.T0 + 5.0]
    ingest = Ingest(lambda message: None, clock=lambda: wall[0])
    ingest.reset("live", None)
    ingest.events(sample_runs.cut(sample_runs.demo_run(), 3.0))
    before = ingest.state.wall(ingest.now())
    assert before == pytest.approx(5.0)
    ingest.stream_state(StreamState.LOST, "run x ended unexpectedly: the hub went away")
    wall[0] += 10.0
    assert ingest.run_status() == "incomplete"  # the word of `testmon runs` and `report`
    assert ingest.state.wall(ingest.now()) >= before
    assert ingest.eta() is None


REPLAY_ACTIONS = {"play_pause", "step", "seek", "seek_start"}


def shown_actions(app: MonitorApp) -> set[str]:
    """The actions of the bindings the screen shows now (without their arguments)."""
    return {b.binding.action.split("(")[0] for b in app.screen.active_bindings.values()}


async def test_replay_only_bindings_hidden_from_live_sources(tmp_path: Path) -> None:
    """Play, step and seek mean nothing on a live run: hidden there, shown on a replay."""
    live = make_app(LiveSource(MonitorDir(tmp_path / ".testmon")), clock=lambda: sample_runs.T0)
    async with live.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert "quit" in shown_actions(live)
        assert not shown_actions(live) & REPLAY_ACTIONS
        assert all(live.check_action(action, ()) is False for action in REPLAY_ACTIONS)
    replay = app_on(log(tmp_path, sample_runs.demo_run()))
    async with replay.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert shown_actions(replay) >= REPLAY_ACTIONS


async def test_torn_log_shows_what_it_has_and_says_so(tmp_path: Path) -> None:
    path = log(tmp_path, sample_runs.cut(sample_runs.demo_run(), 9.0))
    data = path.read_bytes()
    path.write_bytes(data + b'{"t":"test","w":"gw1","ts":17950000')
    app = app_on(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        top = header_words(app)
        assert "the last line (line 227) is torn" in top
        assert "35/59" in top, "what the log holds is shown"
        assert len(worker_states(app)) == 4


async def test_log_of_an_unknown_schema_says_upgrade(tmp_path: Path) -> None:
    events = sample_runs.demo_run()
    path = log(tmp_path, events)
    lines = path.read_bytes().split(b"\n")
    first = json.loads(lines[0])
    first["schema"] = ev.SCHEMA_VERSION + 98
    first["new_field_of_the_future"] = [1, 2]
    path.write_bytes(json.dumps(first).encode() + b"\n" + b"\n".join(lines[1:]))
    app = app_on(path)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(50):
            await pilot.pause(0.02)
            if app.ingest.status_text:
                break
        await pilot.pause()
        top = header_words(app)
        assert f"schema {ev.SCHEMA_VERSION + 98}" in top
        assert "upgrade testmon-live" in top
        assert app.ingest.status_level == "error"


async def test_not_a_run_log(tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_text("hello, world\n")
    app = app_on(path)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(50):
            await pilot.pause(0.02)
            if app.ingest.status_text:
                break
        await pilot.pause()
        assert "is not a testmon-live run log" in header_words(app)


async def test_eta_from_earlier_runs_of_the_same_tests(tmp_path: Path) -> None:
    events = sample_runs.demo_run()
    log(tmp_path, events, "20261117-060000-earlier")
    app = app_on(log(tmp_path, sample_runs.cut(events, 9.0)), live=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "ETA ~" in header(app)
        eta = app.ingest.eta()
        assert eta is not None
        assert 1.0 < eta < 20.0


async def test_usable_at_80x24_and_without_colour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = app_on(log(tmp_path, sample_runs.cut(sample_runs.demo_run(), 9.0)), live=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert app.no_color
        states = worker_states(app)
        assert "stalled" in states.values()
        table = app.main.query_one(WorkersTable)
        assert table.size.height >= 5, "the four worker rows fit"
        svg = app.export_screenshot()
        # states are words, so they survive without colour; the filter greys everything
        assert "stalled" in svg
        assert "call" in svg
    monkeypatch.delenv("NO_COLOR")
    app = app_on(log(tmp_path, sample_runs.demo_run(), "colour"))
    async with app.run_test(size=(80, 24)):
        assert not app.no_color


async def test_all_eight_tabs_show_at_80_columns(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.pause()

        def tabs() -> list[tuple[str, int]]:
            return [(t.label_text, t.region.right) for t in app.main.query(ContentTab)]

        shown_tabs = tabs()
        assert [label.split()[0] for label, _ in shown_tabs] == [str(n) for n in range(1, 9)]
        assert all(right <= 80 for _, right in shown_tabs), shown_tabs
        assert "8&#160;Events" in app.export_screenshot()
        await pilot.resize_terminal(140, 30)
        await pilot.pause()
        assert [label for label, _ in tabs()] == [label for _, label, _ in TABS]
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert all(right <= 80 for _, right in tabs())


def test_state_is_folded_off_the_ui_thread(tmp_path: Path) -> None:
    """The fold runs in the ingest thread: RunState.apply is never called on the UI thread."""
    import asyncio
    import threading

    from testmon_live.plugin.state import RunState

    threads: set[str] = set()
    original = RunState.apply

    def spy(self: RunState, event: ev.Event) -> None:
        threads.add(threading.current_thread().name)
        original(self, event)

    app = app_on(log(tmp_path, sample_runs.demo_run()))

    async def go() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)

    RunState.apply = spy  # type: ignore[method-assign]
    try:
        asyncio.run(go())
    finally:
        RunState.apply = original  # type: ignore[method-assign]
    assert threads
    assert threading.main_thread().name not in threads


async def test_enter_on_a_worker_opens_the_last_test_it_finished(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("1")
        table = app.main.query_one(WorkersTable)
        table.focus()
        table.move_cursor(row=table.get_row_index("gw2"))
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, TestDetailScreen)
        last = [t for t in app.ingest.state.tests if t.w == "gw2"][-1]
        assert app.screen.test.nodeid == last.nodeid
        assert last.nodeid != app.ingest.state.tests[-1].nodeid, "not just the run's last test"


@pytest.mark.compat
@pytest.mark.parametrize("width", [80, 110, 160])
async def test_workers_table_fits_the_screen(tmp_path: Path, width: int) -> None:
    """No horizontal scrolling: the test column takes what the others leave, also after a
    resize; the state is never cut; CPU and RSS show from 110 columns on."""
    app = app_on(log(tmp_path, sample_runs.cut(sample_runs.demo_run(), 3.0)), live=True)
    async with app.run_test(size=(width + 30, 30)) as pilot:
        await settle(app, pilot)
        await pilot.resize_terminal(width, 30)
        await pilot.pause()
        await pilot.pause()
        table = app.main.query_one(WorkersTable)
        assert table.size.width == width
        bar = header(app).splitlines()[1]
        room = app.main.query_one(RunHeader).content_size.width
        assert room - 2 <= len(bar) <= room, "the progress bar is redrawn for the new width"
        assert table.virtual_size.width <= width
        assert not table.show_horizontal_scrollbar
        labels = [str(column.label) for column in table.columns.values()]
        assert ("CPU s" in labels and "RSS" in labels) == (width >= 110)
        columns = {str(column.label): column for column in table.columns.values()}
        assert columns["state"].width >= len("waiting on container")
        assert "waiting on lock" in worker_states(app).values()
        cells = [str(table.get_row(row.key)[5]) for row in table.ordered_rows]
        if width >= 160:
            assert any(cell.endswith(" [migrations.lock]") for cell in cells), cells
        else:  # the test's own name first; the state and the problems under it say the lock
            assert "test_customer_profile[0]" in cells, cells
        assert all(len(cell) <= columns["test"].width for cell in cells)


async def test_timeline_lanes_scroll_when_workers_outnumber_rows(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, list(sample_runs.synthetic_run(3000, workers=16))))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        timeline = app.main.query_one(Timeline)
        timeline.focus()
        await pilot.pause()
        first, rows, height = timeline.window(16)
        assert (first, rows, height) == (0, timeline.size.height - 3, 1)
        assert rows < 16
        lanes = [line.split()[0] for line in shown_timeline(timeline).splitlines()[1:-2]]
        assert lanes == [f"gw{k}" for k in range(rows)], "in worker order, gw2 before gw10"
        assert f"lanes 1-{rows} of 16" in shown_timeline(timeline)
        await pilot.press(*["down"] * 15)
        text = shown_timeline(timeline)
        assert "gw15" in text
        assert "gw0 " not in text
        assert f"lanes {17 - rows}-16 of 16" in text
        await pilot.press("up")
        assert timeline.window(16)[0] == 16 - rows, "moving inside the window does not scroll"
        timeline.post_message(MouseScrollUp(timeline, 20, 5, 0, -1, 0, False, False, False))
        await pilot.pause()
        assert timeline.window(16)[0] == 15 - rows


async def test_workers_stay_in_id_order_when_they_come_up_out_of_order(tmp_path: Path) -> None:
    def up(w: str) -> ev.WorkerStarted:
        return ev.WorkerStarted(w=w, ts=sample_runs.T0 + 0.1, schema=ev.SCHEMA_VERSION, pid=1)

    events = [e for e in sample_runs.cut(sample_runs.demo_run(), 0.05)] + [up("gw10"), up("gw1")]
    app = app_on(log(tmp_path, events))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert list(worker_states(app)) == ["gw1", "gw10"]
        with app.ingest.lock:
            app.ingest.state.apply(up("gw2"))
            app.ingest.state.apply(up("gw0"))
        app.redraw(force=True)
        await pilot.pause()
        assert list(worker_states(app)) == ["gw0", "gw1", "gw2", "gw10"]
