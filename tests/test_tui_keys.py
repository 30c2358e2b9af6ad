"""The dashboard's keys, help and the views issue 16 made readable: through App.run_test()
and the pilot, on recorded runs."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from textual.command import CommandPalette
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent

from testmon_live.plugin import events as ev
from testmon_live.tui.dashboard.app import MonitorApp, make_app
from testmon_live.tui.dashboard.event_summary import SUMMARIES, summary
from testmon_live.tui.dashboard.find import EXACT, find_tests
from testmon_live.tui.dashboard.screens.event_detail import EventDetailScreen
from testmon_live.tui.dashboard.screens.help_screen import HelpScreen
from testmon_live.tui.dashboard.screens.test_detail import describe
from testmon_live.tui.dashboard.screenshots import settle
from testmon_live.tui.dashboard.sources import ReplaySource
from testmon_live.tui.dashboard.widgets.containers_panel import ContainersPanel
from testmon_live.tui.dashboard.widgets.event_log import SHOWN, EventLog
from testmon_live.tui.dashboard.widgets.failures_panel import FailuresPanel
from testmon_live.tui.dashboard.widgets.run_header import RunHeader
from testmon_live.tui.dashboard.widgets.workers_table import WorkersTable
from testmon_live.tui.reports.logs import STATUSES
from testmon_live.tui.testing import sample_runs

from .conftest import panel_text, shown

SIZE = (120, 36)


def log(tmp_path: Path, events: list[ev.Event]) -> Path:
    return sample_runs.write_log(
        tmp_path / ".testmon" / "runs" / f"{sample_runs.RUN_ID}.jsonl", events
    )


def app_on(path: Path, live: bool | None = None) -> MonitorApp:
    return make_app(ReplaySource(path, live=live), clock=lambda: sample_runs.T0)


def footer_text(app: MonitorApp) -> str:
    """What the footer shows: each key and its words."""
    footer = app.screen.query_one(Footer)
    return " ".join(shown(child) for child in footer.query("FooterKey, FooterLabel"))


# ------------------------------------------------------------------------ keys


def on_help(app: MonitorApp) -> bool:
    return isinstance(app.screen, HelpScreen)


async def test_ctrl_p_and_slash_both_open_the_palette(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for key in ("ctrl+p", "slash"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, CommandPalette), key
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, CommandPalette)


@pytest.mark.parametrize("key", ["question_mark", "f1"])
async def test_help_lists_every_key_of_the_view_and_of_the_app(tmp_path: Path, key: str) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("2", key)
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = shown(app.screen.query_one("#help-text", Static))
        view, everywhere = text.split("\neverywhere\n")
        assert "the Timeline view" in view
        for words in ("prev test", "next test", "zoom in", "zoom out", "scroll back", "follow"):
            assert words in view, words
        for words in ("find", "show Workers", "show Events", "play/pause", "seek"):
            assert words in everywhere, words
        keys = {line.split()[-1]: line.split()[:-1] for line in everywhere.splitlines() if line}
        assert {"^c", "q"} <= set(keys["quit"])  # ctrl+c quits as q does
        assert {"/", "^p"} <= set(keys["find"])  # both open the palette
        await pilot.press("escape")
        await pilot.pause()
        assert not on_help(app)
        await pilot.press("8", key)
        await pilot.pause()
        assert "filter" in shown(app.screen.query_one("#help-text", Static))


async def test_the_palette_offers_the_help_not_textuals_keys_panel(tmp_path: Path) -> None:
    """Textual's Keys panel cut the header's progress line with a broken character and
    escape did not close it: the palette's Keys command opens the help screen instead."""
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        commands = [c for c in app.get_system_commands(app.screen) if c.title == "Keys"]
        assert len(commands) == 1
        commands[0].callback()
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert not app.screen.query("HelpPanel")
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main


async def test_ctrl_c_quits_without_a_toast(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("8", "x")  # even from the events' filter
        await pilot.pause()
        assert isinstance(app.focused, Input)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not app._notifications, "no 'press ctrl+q' toast"
        assert app._exit, "ctrl+c quits"


async def test_arrows_move_in_the_view_shown_from_the_start(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        table = app.main.query_one(WorkersTable)
        assert app.focused is table
        await pilot.press(*["right"] * 6, "down")
        await pilot.pause()
        assert app.main.query_one(TabbedContent).active == "workers"
        assert table.cursor_row == 1


async def test_each_view_shows_its_own_keys_in_the_footer(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        await pilot.pause(0.2)
        timeline = footer_text(app)
        for words in ("select", "zoom", "scroll", "follow", "? keys", "space play/pause"):
            assert words in timeline, (words, timeline)
        await pilot.press("8")
        await pilot.pause(0.2)
        events = footer_text(app)
        assert "a-z filter" in events
        assert "zoom" not in events


# ---------------------------------------------------------------------- events


async def test_events_read_as_time_worker_type_and_words_enter_shows_the_record(
    tmp_path: Path,
) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("8")
        await pilot.pause()
        view = app.main.query_one(EventLog)
        assert app.focused is view.table
        rows = [[str(c) for c in view.table.get_row_at(i)] for i in range(view.table.row_count)]
        assert all(row[0].startswith(("+", "-")) and row[0].endswith("s") for row in rows)
        assert not any("{" in row[3] or '"t":' in row[3] for row in rows), "no raw JSON"
        time, worker, kind, what = next(r for r in rows if r[2] == "test" and "failed" in r[3])
        assert worker.startswith("gw")
        assert "test_refund_rounding" in what
        assert float(time.removesuffix("s")) > 0  # seconds since the start, not an epoch
        view.table.move_cursor(row=rows.index([time, worker, kind, what]))
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, EventDetailScreen)
        record = shown(app.screen.query_one("#event-detail-text", Static))
        assert '"t": "test"' in record
        assert '"longrepr":' in record  # the whole record, failure text too
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main


async def test_typing_a_letter_in_the_events_starts_the_filter(tmp_path: Path) -> None:
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("8")
        await pilot.pause()
        await pilot.press(*"stall")
        await pilot.pause()
        field = app.main.query_one("#event-filter", Input)
        assert field.value == "stall"
        assert app.focused is field
        view = app.main.query_one(EventLog)
        assert 0 < view.matched < len(view.encoded.entries)
        await pilot.press("enter", "1")  # the keys back to the events, then a view's number
        await pilot.pause()
        assert app.main.query_one(TabbedContent).active == "workers"


def test_every_event_type_has_its_words() -> None:
    types = typing.get_args(ev.AnyEvent)
    assert types
    assert set(types) <= set(SUMMARIES)
    totals = ev.FixtureTotals(
        w="gw0",
        ts=sample_runs.T0,
        fixtures=[ev.FixtureTally("db", "function", "", 3, 0.002, 0.001, 0.0)] * 2,
    )
    for event in (*sample_runs.demo_run(), totals):
        line = summary(event)
        assert line
        assert "\n" not in line
        assert "{" not in line
    assert summary(totals) == "quick fixtures counted: 6 executions of 2 fixtures, 4ms in all"


# ---------------------------------------------------------------------- search


def test_exact_matches_come_first_and_are_never_cut() -> None:
    """SQLAlchemy's 28 test_lockmode tests were missed: the first 30 fuzzy hits were kept
    in log order, and fuzzy hits came first."""
    nodeids = [f"test/orm/test_locking_{i}.py::test_lock_mode_{i}" for i in range(400)]
    nodeids += [f"test/sql/test_lockmode.py::LockModeTest::test_case_{i}" for i in range(28)]
    nodeids += [f"test/orm/test_query.py::test_lockmode_{i}" for i in range(5)]
    nodeids += ["test/base/test_utils.py::test_lockmodes_other"]
    found = find_tests("test_lockmode", nodeids, lambda nodeid: 0.9, limit=30)
    exact = [f.nodeid for f in found if f.rank == EXACT]
    assert len(exact) == 28
    assert [f.nodeid for f in found[:28]] == exact
    assert found[28].nodeid.startswith("test/orm/test_query.py::test_lockmode_")
    scores = [f.score for f in found]
    assert scores == sorted(scores, reverse=True), "the palette sorts by score"
    assert find_tests("LockModeTest", nodeids, lambda n: 0.0)[0].rank == EXACT


async def test_find_lists_exact_matches_before_fuzzy_ones_in_the_palette(tmp_path: Path) -> None:
    events = sample_runs.demo_run()
    app = app_on(log(tmp_path, events))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("slash", *"test_export")
        await pilot.pause(0.5)
        palette = app.screen
        assert isinstance(palette, CommandPalette)
        options = palette.query_one("CommandList")
        first = str(options.get_option_at_index(0).prompt)  # type: ignore[attr-defined]
        assert "test_export[" in first


# ------------------------------------------------------------------ the views


def test_test_detail_lists_every_test_that_ran_before_it() -> None:
    events = sample_runs.demo_run()
    from testmon_live.plugin.state import RunState

    state = RunState()
    for event in events:
        state.apply(event)
    last = {t.w: t for t in state.tests}
    test = max(last.values(), key=lambda t: sum(1 for p in state.tests if p.w == t.w))
    before = [t.nodeid for t in state.tests if t.w == test.w and t.ts < test.ts]
    assert len(before) > 15  # more than the 15 it once showed
    text = describe(test, state).plain
    assert f"ran before it on {test.w} ({len(before)} tests)" in text
    listed = text.split("ran before it on", 1)[1].splitlines()[1:]
    assert [line.split(maxsplit=1)[1] for line in listed] == before


async def test_failures_keep_each_tests_own_name_whole(tmp_path: Path) -> None:
    events = sample_runs.demo_run()
    base = next(e for e in events if isinstance(e, ev.TestFinished) and e.outcome == "failed")
    folder = "tests/integration/very/deep/folder/of/the/suite/customers"
    names = [f"test_profile_of_a_customer_{k}_with_a_long_name_and_params[case]" for k in "ab"]
    failed = [
        ev.TestFinished(
            w=base.w, ts=base.ts, nodeid=f"{folder}/test_customers.py::{name}", outcome="failed"
        )
        for name in names
    ]
    end = events.index(base)
    app = app_on(log(tmp_path, [*events[:end], *failed, *events[end:]]))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("7")
        await pilot.pause()
        table = app.main.query_one(FailuresPanel).query_one(DataTable)
        cells = [str(table.get_row_at(i)[2]) for i in range(table.row_count)]
        for name in names:
            assert any(cell.endswith(f"::{name}") for cell in cells), cells
        assert len(set(cells)) == len(cells)


async def test_a_killed_run_is_incomplete_with_done_of_collected(tmp_path: Path) -> None:
    """The word of `testmon runs` and `report`, and the progress of what was collected."""
    events = sample_runs.cut(sample_runs.demo_run(), 6.0)
    app = app_on(log(tmp_path, events), live=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        status = app.ingest.run_status()
        assert status == "incomplete"
        assert status in STATUSES
        done = app.ingest.state.tests_done
        assert f"{done}/59" in shown(app.main.query_one(RunHeader))


async def test_an_interrupted_run_shows_done_of_collected(tmp_path: Path) -> None:
    events = sample_runs.cut(sample_runs.demo_run(), 6.0)
    events.append(ev.RunFinished(ts=events[-1].ts, exitstatus=2, status="interrupted", duration=6))
    app = app_on(log(tmp_path, events))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.ingest.run_status() == "interrupted"
        done = app.ingest.state.tests_done
        assert 0 < done < 59
        assert f"{done}/59" in shown(app.main.query_one(RunHeader))


async def test_containers_without_an_engine_say_so_and_how_to_get_one(tmp_path: Path) -> None:
    events = [e for e in sample_runs.demo_run() if not isinstance(e, ev.ContainerEvent)]
    base = next(e for e in events if isinstance(e, ev.TestFinished))
    skipped = ev.TestFinished(
        w=base.w,
        ts=base.ts,
        nodeid="test_containers.py::test_shared_web_server[index.html]",
        outcome="skipped",
        message="Skipped: no container engine with localhost/testmon-bb:latest: DockerException",
    )
    events.insert(events.index(base) + 1, skipped)
    app = app_on(log(tmp_path, events))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        text = await panel_text(app, pilot, "5", ContainersPanel)
        assert "no container engine" in text
        assert "1 test skipped" in text
        assert "scripts/podman-setup" in text


@pytest.mark.parametrize("step", [7, 450])
async def test_events_follow_a_fast_run_without_gaps(tmp_path: Path, step: int) -> None:
    """Rows are added as events arrive and the oldest dropped in batches (a DataTable
    removes one row in linear time): whatever the rate, the rows are the newest events,
    consecutive, newest last, and the cursor follows them."""
    app = app_on(log(tmp_path, sample_runs.demo_run()))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("8")
        await pilot.pause()
        view = app.main.query_one(EventLog)
        ingest = app.ingest
        ingest.reset("big", None)  # a new run in the same dashboard
        events = list(sample_runs.synthetic_run(3000))
        for start in range(0, len(events), step):
            ingest.events(events[start : start + step])
            view.refresh_from(ingest)
            keys = [int(str(row.key.value)) for row in view.table.ordered_rows]
            assert keys == list(range(keys[0], len(ingest.raw))), "the newest, no gap"
            assert SHOWN <= len(keys) <= 2 * SHOWN or keys[0] == 0
            assert view.table.cursor_row == len(keys) - 1
