"""The dashboard's views use the room they get and show numbers that hold while the run
goes on (issue 16): App.run_test + pilot on recorded runs, asserting what is drawn."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from rich.text import Text

from testmon_live.plugin import events as ev
from testmon_live.plugin.probes.stacks import framework_frame, short_file
from testmon_live.plugin.runlog import MonitorDir
from testmon_live.tui.dashboard.app import MonitorApp, make_app
from testmon_live.tui.dashboard.screenshots import (
    STALLED_AT,
    WAITING_AT,
    Scene,
    scene_app,
    settle,
)
from testmon_live.tui.dashboard.sources import LiveSource, ReplaySource
from testmon_live.tui.dashboard.widgets.fit_lines import fit_lines
from testmon_live.tui.dashboard.widgets.locks_panel import LocksPanel
from testmon_live.tui.dashboard.widgets.parallelism import ParallelismPanel
from testmon_live.tui.dashboard.widgets.run_header import RunHeader
from testmon_live.tui.dashboard.widgets.stuck_panel import StuckPanel
from testmon_live.tui.dashboard.widgets.timeline import (
    CALL,
    FAILED,
    SETUP,
    TEARDOWN,
    Timeline,
)
from testmon_live.tui.dashboard.widgets.worker_activity import WorkerActivity
from testmon_live.tui.dashboard.widgets.workers_table import WorkersTable, short_test
from testmon_live.tui.reports.formatting import fmt_duration
from testmon_live.tui.testing import sample_runs

from .conftest import panel_text, shown

BIG = (160, 50)
SMALL = (80, 24)


def log(tmp_path: Path, events: list[ev.Event], name: str = sample_runs.RUN_ID) -> Path:
    return sample_runs.write_log(tmp_path / ".testmon" / "runs" / f"{name}.jsonl", events)


def app_on(path: Path, live: bool | None = None) -> MonitorApp:
    return make_app(ReplaySource(path, live=live), clock=lambda: sample_runs.T0)


def demo_at(tmp_path: Path, seconds: float | None) -> MonitorApp:
    """The recorded demo run as it looked ``seconds`` in (None: its end)."""
    return scene_app(Scene("at", "at", (), seconds), tmp_path)


def lane_rows(timeline: Timeline) -> dict[str, list[str]]:
    """Lane -> its rows (the label's row and the unlabelled ones under it), bars only."""
    rows: dict[str, list[str]] = {}
    current = ""
    for line in shown(timeline).splitlines()[1:]:
        label = line[:7].strip()
        if label.startswith("gw"):
            current = label
        elif label or not current:
            break
        rows.setdefault(current, []).append(line[7:])
    return rows


# ------------------------------------------------------------------ parallelism


async def test_parallelism_counts_the_running_test_up_to_now(tmp_path: Path) -> None:
    """STALLED_AT, gw1 has been in the call of test_report_waits_for_renderer for seconds:
    its call time and busy share count that call up to now, not only finished tests."""
    app = demo_at(tmp_path, STALLED_AT)
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await pilot.pause()
        with app.ingest.lock:
            now = app.ingest.now()
            gw1 = app.ingest.state.workers["gw1"]
            assert gw1.phase == "call"
            assert now - gw1.since > 2.0
            call = gw1.call_time + (now - gw1.since)
            share = app.ingest.state.busy_share(gw1, now)
            finished_only = gw1.busy / app.ingest.state.wall(now)
        line = next(
            line
            for line in shown(app.main.query_one(ParallelismPanel)).splitlines()
            if line.startswith("gw1")
        )
        assert f"call {fmt_duration(call)}" in line
        assert re.search(rf"busy +{round(share * 100)}%", line), line
        assert share > finished_only + 0.1


async def test_the_time_between_a_tests_phases_is_busy_and_drawn(tmp_path: Path) -> None:
    """Failing tests whose phases take 1 ms and whose failure reports 0.5 s: the Parallelism
    view counts the workers busy, shows that time as reports, and the timeline draws it as
    the failed call it reports (not as an idle gap inside the test)."""
    events = sample_runs.slow_reports_run(tests=8, workers=2, report=0.5)
    app = app_on(log(tmp_path, events, name="20261117-070640-reports"))
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        await pilot.pause()
        panel = shown(app.main.query_one(ParallelismPanel))
        assert "parallel efficiency 71%" in panel
        assert "▓ reports" in panel
        for line in panel.splitlines():
            if line.startswith("gw"):
                assert "busy  71%" in line, line
                bar = line[8:].split(" busy")[0]
                assert bar.count("▓") > bar.count("·") > 0, line
        await pilot.press("2")
        await pilot.pause()
        for wid, rows in lane_rows(app.main.query_one(Timeline)).items():
            drawn = rows[0].strip()  # from its first test's start to its last one's end
            assert " " not in drawn, (wid, drawn)
            assert drawn.count(FAILED) > 0.9 * len(drawn), (wid, drawn)
        timeline = app.main.query_one(Timeline)
        timeline.focus()
        await pilot.press("right")
        assert "500ms between phases" in shown(timeline).splitlines()[-2]


# --------------------------------------------------------------------- timeline


async def test_timeline_names_the_selected_test_under_the_lanes(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        timeline = app.main.query_one(Timeline)
        timeline.focus()
        await pilot.pause()
        assert "←/→ select a test" in shown(timeline)
        await pilot.press("down", "down", "down", "right")
        test = timeline.selected
        assert test is not None
        line = shown(timeline).splitlines()[-2]
        assert test.nodeid in line
        assert test.w in line
        assert test.outcome in line
        for phase in test.phases:
            assert f"{phase.when} {fmt_duration(phase.dur)}" in line


async def test_timeline_axis_labels_are_evenly_spaced(tmp_path: Path) -> None:
    app = demo_at(tmp_path, None)
    for size in (BIG, SMALL, (113, 30)):
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            axis = (await panel_text(app, pilot, "2", Timeline)).splitlines()[0]
            marks = [(m.start(), float(m.group(1))) for m in re.finditer(r"\|([\d.]+)s", axis)]
            assert len(marks) >= 4, axis
            steps = {round(b[1] - a[1], 3) for a, b in itertools.pairwise(marks)}
            assert len(steps) == 1, axis
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(marks)]
            assert max(gaps) - min(gaps) <= 1, axis
            app = demo_at(tmp_path / str(size), None)


async def test_timeline_draws_a_failed_test_with_its_own_character(tmp_path: Path) -> None:
    """Under NO_COLOR only characters tell: the failure is `×`, whatever the zoom."""
    app = demo_at(tmp_path, None)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        (failure,) = app.ingest.state.failures
        lanes = lane_rows(app.main.query_one(Timeline))
        assert FAILED in lanes[failure.w][0]
        assert all(FAILED not in rows[0] for w, rows in lanes.items() if w != failure.w)
        assert f"{FAILED} failed" in shown(app.main.query_one(Timeline))


async def test_timeline_lanes_grow_with_the_room_and_shrink_for_many_workers(
    tmp_path: Path,
) -> None:
    app = demo_at(tmp_path, None)
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        timeline = app.main.query_one(Timeline)
        lanes = lane_rows(timeline)
        assert list(lanes) == ["gw0", "gw1", "gw2", "gw3"]
        assert all(len(rows) >= 4 for rows in lanes.values()), lanes
        bars = [row for row in lanes["gw2"] if CALL in row]
        assert len(bars) >= 3, "the bar is drawn over several rows"
        assert any("test_quarterly_report" in row for row in lanes["gw2"]), "tests named"
    app = app_on(log(tmp_path / "big", list(sample_runs.synthetic_run(6000, workers=64))))
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        timeline = app.main.query_one(Timeline)
        _first, shown_lanes, height = timeline.window(64)
        assert height == 1
        assert shown_lanes == timeline.size.height - 3
        assert all(len(rows) == 1 for rows in lane_rows(timeline).values())


def _short_tests_run() -> list[ev.Event]:
    """One worker, 60 tests of 0.02 s setup, 0.3 s call, 0.05 s teardown: call dominates."""
    t0 = sample_runs.T0
    events: list[ev.Event] = [
        ev.RunStarted(ts=t0, schema=ev.SCHEMA_VERSION, run_id="r", rootdir="/p", workers=1),
        ev.WorkerStarted(w="gw0", ts=t0, schema=ev.SCHEMA_VERSION, pid=1),
    ]
    now = t0 + 0.1
    for k in range(60):
        phases = [
            ev.Phase("setup", now, 0.02, "passed"),
            ev.Phase("call", now + 0.02, 0.3, "passed"),
            ev.Phase("teardown", now + 0.32, 0.05, "passed"),
        ]
        events.append(
            ev.TestFinished(
                w="gw0", ts=now + 0.37, nodeid=f"t.py::test_{k}", outcome="passed",
                phases=phases, duration=0.37,
            )
        )  # fmt: skip
        now += 0.37
    events.append(ev.RunFinished(ts=now, exitstatus=0, status="passed", duration=now - t0))
    return events


async def test_timeline_cells_show_the_phase_that_filled_most_of_them(tmp_path: Path) -> None:
    """At fit zoom a cell holds about one test: it is call, not the teardown drawn last."""
    app = app_on(log(tmp_path, _short_tests_run()))
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause()
        timeline = app.main.query_one(Timeline)
        assert 0.2 < timeline.scale() < 0.6
        bar = lane_rows(timeline)["gw0"][0]
        assert bar.count(CALL) > 5 * (bar.count(TEARDOWN) + bar.count(SETUP)), bar
        await pilot.press("plus", "plus", "plus", "plus", "plus")  # a cell is 1/50 s
        bar = lane_rows(timeline)["gw0"][0]
        assert bar.count(CALL) > bar.count(TEARDOWN) > bar.count(SETUP) > 0, bar


# ------------------------------------------------------------------------ stuck


async def test_stuck_folds_framework_frames_and_shortens_paths(tmp_path: Path) -> None:
    """pluggy, _pytest, xdist, execnet, threading and the monitor's own frames are folded
    until `f`; paths read from the rootdir, site-packages/ or <stdlib>/, never whole."""
    app = demo_at(tmp_path, STALLED_AT)
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        text = await panel_text(app, pilot, "6", StuckPanel)
        panel = app.main.query_one(StuckPanel)
        assert "test_reports.py:34 in test_report_waits_for_renderer" in text
        assert "site-packages/filelock/_core/_lock.py:195 in BaseFileLock.acquire" in text
        for hidden in ("pluggy", "_pytest", "execnet", "xdist", "threading.py", "plugin/probes"):
            assert hidden not in text.replace("threading.Event", ""), hidden
        assert "more frames of pytest, libraries and the monitor: f shows them" in text
        assert "/.venv/" not in text
        assert "/lib/python" not in text
        await pilot.press("f")
        await pilot.pause()
        text = shown(panel)
        assert "site-packages/pluggy/_execution.py:147 in _multicall" in text
        assert "<stdlib>/threading.py:629 in Event.wait" in text
        assert "/.venv/" not in text
        await pilot.press("f")
        await pilot.pause()
        assert "pluggy" not in shown(panel)


async def test_stuck_names_an_unnamed_thread_once(tmp_path: Path) -> None:
    """execnet's reader has no Python name: its recorded name (``thread 0x...``) already says
    it is a thread, so its row does not say so twice; a named thread reads as the summary,
    the report and `testmon dump` write it."""
    app = demo_at(tmp_path, STALLED_AT)
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        text = await panel_text(app, pilot, "6", StuckPanel)
        assert "  thread 0x7f99667f26c0 idle: Popen2IO.read" in text
        assert "thread thread" not in text
        assert "  MainThread event: threading.Event.wait" in text


async def test_stuck_tells_a_stall_where_it_spent_its_time(tmp_path: Path) -> None:
    """A stall that moved is told where it spent its time, its threads as sampled there,
    its first place after it, as the summary and the report tell it; a thread that did
    something else by the latest sample says so under it."""
    t0 = sample_runs.T0

    def main(verdict: str, *frames: ev.Frame) -> ev.ThreadStack:
        return ev.ThreadStack(name="MainThread", ident=1, verdict=verdict, frames=list(frames))

    def at(line: int) -> ev.Frame:
        return ev.Frame("/p/test_x.py", line, "test_x", True)

    def sample(elapsed: float, n: int, *threads: ev.ThreadStack) -> ev.Stall:
        return ev.Stall(
            w="gw0",
            ts=t0 + elapsed,
            test="test_x.py::test_x",
            phase="call",
            elapsed=elapsed,
            location="test_x.py:10 in test_x" if n == 1 else None,
            threads=list(threads),
            sample=n,
        )

    lock = ev.Frame("/p/.venv/lib/python3.12/site-packages/filelock/_api.py", 5, "acquire", False)
    events: list[ev.Event] = [
        ev.RunStarted(ts=t0, schema=ev.SCHEMA_VERSION, run_id="r", rootdir="/p", workers=1),
        ev.WorkerStarted(w="gw0", ts=t0, schema=ev.SCHEMA_VERSION, pid=1),
        sample(1, 1, main("sleep", at(10))),  # at line 10 till about 3 s
        sample(5, 2, main("event", at(20))),  # at line 20 from then: where it spent it
        sample(60, 3, main("lock", at(20), lock)),  # still at line 20, in a lock by now
        ev.StallEnded(w="gw0", ts=t0 + 90, test="test_x.py::test_x", duration=90),
    ]
    app = app_on(log(tmp_path, events))
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        text = await panel_text(app, pilot, "6", StuckPanel)
        assert "    at test_x.py:20 in test_x (first at line 10)\n" in text, text
        assert "  MainThread event\n" in text
        assert "      later: lock\n" in text
        assert "MainThread sleep" not in text


def test_frame_paths_read_from_site_packages_or_the_standard_library() -> None:
    venv = "/home/me/.venv/lib/python3.12/site-packages"
    assert short_file(f"{venv}/pluggy/_hooks.py") == "site-packages/pluggy/_hooks.py"
    assert short_file("/usr/lib/python3.11/threading.py") == "<stdlib>/threading.py"
    assert short_file("C:\\Python311\\Lib\\queue.py") == "<stdlib>/queue.py"
    assert short_file("/p/tests/t.py", "/p") == "tests/t.py"
    assert short_file("/elsewhere/lib/t.py", "/p") == "/elsewhere/lib/t.py"
    ours = ev.Frame("/src/testmon-live/plugin/probes/filelock.py", 87, "acquire", False)
    assert framework_frame(ours)
    assert framework_frame(ev.Frame(f"{venv}/_pytest/runner.py", 1, "f", False))
    assert not framework_frame(ev.Frame(f"{venv}/filelock/_api.py", 1, "f", False))
    assert not framework_frame(ev.Frame("/p/plugin/probes/x.py", 1, "f", True)), "user code"


# ---------------------------------------------------------------------- workers


def activity_of(app: MonitorApp) -> str:
    return shown(app.main.query_one(WorkerActivity))


async def test_workers_view_shows_recent_tests_and_the_problems_now(tmp_path: Path) -> None:
    """At 160x50 the table's 5 rows are not all: under them each worker's recent tests and
    what is wrong now, named."""
    app = demo_at(tmp_path, STALLED_AT)
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        room = app.main.query_one("#worker-activity-scroll")
        assert room.size.height >= 30, "the room under the table is the activity's"
        text = activity_of(app)
        strips = {line.split()[0]: line.split()[-1] for line in text.splitlines()[1:5]}
        with app.ingest.lock:
            for view in app.ingest.state.active_workers():
                assert len(strips[view.id]) == view.tests, strips
                assert strips[view.id].count("F") == view.failures
        assert (
            "STALLED      gw1 call of test_reports.py::test_report_waits_for_renderer for 3.53s"
            in text
        )
        assert "STALLED      gw2 call of test_reports.py::test_quarterly_report" in text
        assert "FAILED       1 so far: test_orders.py::test_refund_rounding" in text
    app = demo_at(tmp_path / "early", WAITING_AT)
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        text = activity_of(app)
        waits = [line for line in text.splitlines() if line.startswith("WAITING")]
        assert len(waits) == 3, text
        assert any("on migrations.lock (#1)" in w and "held by gw3 (" in w for w in waits)
        assert any("on container" in w for w in waits)
        assert "…" not in text, "nothing cut at 160 columns"


async def test_workers_view_of_a_finished_run_says_what_it_ended_with(tmp_path: Path) -> None:
    """A finished run (a replay to its end) has no "now" and nothing "so far"."""
    app = demo_at(tmp_path, None)
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        text = activity_of(app)
        assert "problems of the finished run" in text
        assert "FAILED       1 in all: test_orders.py::test_refund_rounding" in text
        # the stalls it had, though none is one now (the Stuck view lists them)
        (stalled,) = [line for line in text.splitlines() if line.startswith("STALLED")]
        with app.ingest.lock:
            count = app.ingest.state.stall_count()
        assert count > 0
        assert stalled.startswith(
            f"STALLED      {count} in all, the longest gw2 call of "
            "test_reports.py::test_quarterly_report "
        )
        assert stalled.endswith("s (6 shows them)")
        assert "so far" not in text
        assert "problems now" not in text


async def test_workers_at_80_columns_keep_the_test_name_and_show_what_does_not_fit(
    tmp_path: Path,
) -> None:
    app = demo_at(tmp_path, WAITING_AT)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        table = app.main.query_one(WorkersTable)
        labels = [str(column.label) for column in table.columns.values()]
        assert "fixture" not in labels
        assert "CPU s" not in labels
        tests = [str(table.get_row(row.key)[5]) for row in table.ordered_rows]
        assert "test_customer_profile[9]" in tests, tests
        assert not any(test.startswith("…est") for test in tests)
        text = activity_of(app)
        assert re.search(r"fixture database  CPU \d+\.\ds  RSS \d+M", text), text
        assert "fixture shared_web" in text
        width = app.main.query_one(WorkerActivity).content_size.width
        assert all(len(line) <= width for line in text.splitlines())


def test_a_test_keeps_its_own_name_before_its_path() -> None:
    nodeid = "tests/integration/test_customers.py::test_customer_profile[24]"
    assert short_test(nodeid, 80) == nodeid
    assert short_test(nodeid, 40) == "…customers.py::test_customer_profile[24]"
    assert short_test(nodeid, 25) == "test_customer_profile[24]"
    assert short_test(nodeid, 16) == "test_custom…[24]", "the case it is stays readable"


# ------------------------------------------------------------- lines that fit


async def test_locks_name_holders_whole_and_break_in_phrases_when_narrow(tmp_path: Path) -> None:
    app = demo_at(tmp_path, WAITING_AT)
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        text = await panel_text(app, pilot, "4", LocksPanel)
        assert "held by gw3 (test_customers.py::test_customer_profile[9])" in text
        assert "…" not in text
    app = demo_at(tmp_path / "small", WAITING_AT)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        text = await panel_text(app, pilot, "4", LocksPanel)
        lines = text.splitlines()
        width = app.main.query_one(LocksPanel).content_size.width
        assert all(len(line) <= width for line in lines), lines
        waits = [k for k, line in enumerate(lines) if "WAITING #" in line]
        assert waits
        for k in waits:  # the rest of the wait goes on under it, indented, from a phrase
            assert lines[k].rstrip().endswith(",")
            assert lines[k + 1].startswith("        held by gw3 (")
        assert "…" not in text


def test_fit_lines_breaks_at_phrases_and_leaves_short_lines_alone() -> None:
    text = Text("  acquired by gw2 x1 held 3.10s, gw0 x1 held 1.5s, gw1 x1 held 1.2s\nshort")
    assert fit_lines(text, 80) is text
    lines = fit_lines(text, 40).plain.splitlines()
    assert lines == [
        "  acquired by gw2 x1 held 3.10s,",
        "      gw0 x1 held 1.5s, gw1 x1 held 1.2s",
        "short",
    ]
    labelled = Text("WAITING      gw3 on migrations.lock (#1) for 1.89s, held by gw2 (t.py::t)")
    assert fit_lines(labelled, 60).plain.splitlines() == [
        "WAITING      gw3 on migrations.lock (#1) for 1.89s,",
        "             held by gw2 (t.py::t)",
    ], "continued under the text after the label"


async def test_the_waiting_status_line_is_never_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the last recorded run shown, the line says where it waits; at 160 and at 80
    columns it is whole (on two lines when it must), the folder as the user reads it."""
    log(tmp_path, sample_runs.demo_run())
    monkeypatch.chdir(tmp_path)
    for size in (BIG, SMALL):
        app = make_app(LiveSource(MonitorDir(tmp_path / ".testmon")), clock=lambda: 0.0)
        async with app.run_test(size=size) as pilot:
            for _ in range(100):
                await pilot.pause(0.02)
                if "no live run" in app.ingest.status_text:
                    break
            app.redraw(force=True)
            await pilot.pause()
            said = app.ingest.status_text
            assert said.endswith("(monitor folder .testmon)"), said
            top = shown(app.main.query_one(RunHeader))
            assert " ".join(top.split()).endswith(" ".join(said.split()))
            assert "…" not in top


async def test_workers_problems_name_a_crash_and_who_replaced_the_worker(tmp_path: Path) -> None:
    events = sample_runs.cut(sample_runs.demo_run(), 9.0)
    last = events[-1].ts
    events += [
        ev.WorkerCrashed(
            w="gw1", ts=last + 0.1, error="worker 'gw1' crashed", signal="SIGKILL",
            test="test_orders.py::test_order_total[3]",
        ),
        ev.WorkerReplaced(w="gw4", ts=last + 0.2, replaces="gw1"),
    ]  # fmt: skip
    app = app_on(log(tmp_path, events), live=True)
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        crashed = [line for line in activity_of(app).splitlines() if line.startswith("CRASHED")]
        assert crashed == [
            "CRASHED      gw1 while running test_orders.py::test_order_total[3] "
            "(signal SIGKILL), gw4 replaced it"
        ], crashed


async def test_the_failures_table_gives_the_test_column_the_room_it_has(tmp_path: Path) -> None:
    """At 160 columns a long test id is shown whole; at 80 its path is cut, never its
    name (the panel is sized only once shown: its rows are made again then)."""
    import msgspec
    from textual.widgets import DataTable

    from testmon_live.tui.dashboard.widgets.failures_panel import FailuresPanel

    long_id = "tests/test_converters_and_more.py::TestPipeline::test_wrapped_annotation"
    events = [
        msgspec.structs.replace(e, nodeid=long_id)
        if isinstance(e, ev.TestFinished) and e.outcome == "failed"
        else e
        for e in sample_runs.demo_run()
    ]
    path = log(tmp_path, events)

    def test_cell(table: DataTable[object]) -> str:
        cells = [str(table.get_row_at(i)[2]) for i in range(table.row_count)]
        (cell,) = [c for c in cells if c.endswith("::test_wrapped_annotation")]
        return cell

    for size, whole in ((BIG, True), (SMALL, False)):
        app = app_on(path, live=False)
        async with app.run_test(size=size) as pilot:
            await pilot.press("7")
            await pilot.pause()
            table = app.main.query_one(FailuresPanel).query_one(DataTable)
            assert (test_cell(table) == long_id) is whole, (size, test_cell(table))
            if whole:  # made narrower: the column narrows with its cells
                await pilot.resize_terminal(*SMALL)
                await pilot.pause()
                assert test_cell(table) != long_id
                (column,) = [c for c in table.columns.values() if c.key.value == "test"]
                assert column.content_width <= len(test_cell(table)) + 1


async def test_the_failures_view_says_how_often_a_failure_was_rerun(tmp_path: Path) -> None:
    """A test pytest-rerunfailures ran again before its last attempt failed too: the
    failure text under the table and the test's detail say so, and why it first failed."""
    import msgspec

    from testmon_live.tui.dashboard.screens.test_detail import describe
    from testmon_live.tui.dashboard.widgets.failures_panel import FailuresPanel

    events = [
        msgspec.structs.replace(
            e, reruns=2, rerun_when="setup", rerun_message="OperationalError: no database yet"
        )
        if isinstance(e, ev.TestFinished) and e.outcome == "failed"
        else e
        for e in sample_runs.demo_run()
    ]
    app = app_on(log(tmp_path, events), live=False)
    async with app.run_test(size=BIG) as pilot:
        await pilot.press("7")
        await pilot.pause()
        text = shown(app.main.query_one(FailuresPanel).query_one("#failure-text"))
        assert "rerun twice: the first attempt failed in setup" in text
        (failure,) = app.ingest.state.failures
        detail = describe(failure, app.ingest.state).plain
        assert "rerun twice: the first attempt failed in setup" in detail
        assert "OperationalError: no database yet" in detail


async def test_a_finished_runs_unresponsive_spells_are_counted_stacks_or_not(
    tmp_path: Path,
) -> None:
    """A spell whose stacks could not be taken (a remote worker) is a spell all the same."""
    *events, end = sample_runs.demo_run()
    spell = ev.Unresponsive(w="gw1", ts=end.ts - 1.0, silent=5.0, test="test_x.py::test_frozen")
    app = app_on(log(tmp_path, [*events, spell, end]), live=False)
    async with app.run_test(size=BIG) as pilot:
        await settle(app, pilot)
        text = activity_of(app)
        (line,) = [x for x in text.splitlines() if x.startswith("UNRESPONSIVE")]
        assert line == (
            "UNRESPONSIVE 1 in all, the longest gw1 silent 5.00s in test_x.py::test_frozen "
            "(6 shows them)"
        )
