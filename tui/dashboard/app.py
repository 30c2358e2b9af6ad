"""The dashboard: a thin Textual app over a :class:`~.sources.Source`.

:func:`make_app` is the one way to build it, for ``testmon tui``, the tests and the
screenshots alike. The source runs in a thread worker that folds events
(:mod:`.ingest`); the UI only renders the folded state, at most ten times a second, and
only the tab in view.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import ClassVar

from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Tab, TabbedContent, TabPane

from testmon_live.plugin import events as ev

from .find import FindProvider
from .ingest import Ingest, RunReset, StateChanged, StatusChanged, StreamStateChanged
from .screens.event_detail import EventDetailScreen
from .screens.help_screen import HelpScreen, key_sections
from .screens.test_detail import TestDetailScreen
from .sources import Source
from .widgets.containers_panel import ContainersPanel
from .widgets.event_log import EventLog
from .widgets.failures_panel import FailuresPanel
from .widgets.locks_panel import LocksPanel
from .widgets.parallelism import ParallelismPanel
from .widgets.run_header import RunHeader
from .widgets.stuck_panel import StuckPanel, StuckScroll
from .widgets.timeline import Timeline
from .widgets.workers_table import WorkersTable
from .widgets.workers_view import WorkersView

Panel = (
    WorkersView
    | Timeline
    | ParallelismPanel
    | LocksPanel
    | ContainersPanel
    | StuckPanel
    | FailuresPanel
    | EventLog
)
"""The view of a tab: each renders the folded state with ``refresh_from(ingest)``."""
PANELS = (
    WorkersView,
    Timeline,
    ParallelismPanel,
    LocksPanel,
    ContainersPanel,
    StuckPanel,
    FailuresPanel,
    EventLog,
)

TICK = 0.25
"""Seconds between redraws driven by the clock (elapsed times move without events)."""
SEEK_STEP = 10.0
STEP = 1.0

TABS: tuple[tuple[str, str, str], ...] = (
    ("workers", "1 Workers", "workers: state, current test, time in phase"),
    ("timeline", "2 Timeline", "timeline: one lane a worker"),
    ("parallelism", "3 Parallelism", "parallelism: busy workers, efficiency, time breakdown"),
    ("locks", "4 Locks", "locks, migrations, database lock waits"),
    ("containers", "5 Containers", "containers: who started, who waited"),
    ("stuck", "6 Stuck", "stalls with stacks, unresponsive and crashed workers"),
    ("failures", "7 Failures", "failures with their text"),
    ("events", "8 Events", "every event: time, worker, type, what; type to filter"),
)


NARROW_LABELS = {"parallelism": "3 Parallel", "containers": "5 Contain."}
"""Shorter labels for screens too narrow for the full ones (with tighter padding, see
``#tabs.-narrow`` in app.tcss), so all eight tabs show at 80 columns."""
NARROW_BELOW = sum(len(label) + 2 for _, label, _ in TABS) + 2
"""Screens narrower than this (the full labels with their padding) use the narrow ones."""

VIEW_FOCUS: dict[str, str] = {
    "workers": "#workers-table",
    "timeline": "#timeline-view",
    "parallelism": "VerticalScroll",
    "locks": "VerticalScroll",
    "containers": "VerticalScroll",
    "stuck": "VerticalScroll",
    "failures": "#failures-table",
    "events": "#event-table",
}
"""Tab -> the widget (within its pane) that takes the keys when the tab is shown: a
number key or a click on a tab goes there, so ←/→ move in the view, not along the tabs."""


class MonitorApp(App[None]):
    """testmon's dashboard. Build it with :func:`make_app`."""

    CSS_PATH = "app.tcss"
    TITLE = "testmon"
    COMMANDS = App.COMMANDS | {FindProvider}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),  # a monitor: ^c quits
        Binding("slash", "command_palette", "find"),
        Binding("ctrl+p", "command_palette", "find", show=False, priority=True),
        Binding("question_mark,f1", "help", "keys", key_display="?"),
        *(
            Binding(label.split()[0], f"show_tab('{tab}')", f"show {label.split()[1]}", show=False)
            for tab, label, _ in TABS
        ),
        Binding("space", "play_pause", "play/pause"),
        Binding("full_stop", f"step({STEP})", "step"),
        Binding("comma", f"step({-STEP})", "step back", show=False),
        Binding("right_square_bracket", f"seek({SEEK_STEP})", "seek +10s"),
        Binding("left_square_bracket", f"seek({-SEEK_STEP})", "seek -10s", show=False),
        # priority: the views' own home (top of a table) must not hide it in a replay
        Binding("home", "seek_start", "start", show=False, priority=True),
    ]

    def __init__(self, source: Source, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.source = source
        self.ingest = Ingest(self.post_message, clock)
        self._stop = threading.Event()
        self._drawn = (-1, -1)
        self._focus_view_next = False

    # ---------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with TabbedContent(id="tabs"):
            with TabPane(TABS[0][1], id="workers"):
                yield WorkersView(id="workers-view")
            with TabPane(TABS[1][1], id="timeline"):
                yield Timeline(id="timeline-view")
            with TabPane(TABS[2][1], id="parallelism"), VerticalScroll():
                yield ParallelismPanel(id="parallelism-view")
            with TabPane(TABS[3][1], id="locks"), VerticalScroll():
                yield LocksPanel(id="locks-view")
            with TabPane(TABS[4][1], id="containers"), VerticalScroll():
                yield ContainersPanel(id="containers-view")
            with TabPane(TABS[5][1], id="stuck"), StuckScroll():
                yield StuckPanel(id="stuck-view")
            with TabPane(TABS[6][1], id="failures"):
                yield FailuresPanel(id="failures-view")
            with TabPane(TABS[7][1], id="events"):
                yield EventLog(id="events-view")
        yield Footer(show_command_palette=False)  # `/ find` says it, ^p is in the help

    @property
    def main(self) -> Screen[object]:
        """The dashboard's own screen (queries must not land in a detail screen on top)."""
        return self.screen_stack[0]

    def on_mount(self) -> None:
        self.header = self.query_one(RunHeader)
        self.panels: dict[str, Panel] = {tab: self._panel(tab) for tab, _, _ in TABS}
        self.ingest_events()
        self.set_interval(TICK, self._tick)
        self._fit_tabs(self.size.width)
        self.focus_view()  # arrows move in the view shown from the start, not along the tabs

    def _panel(self, tab: str) -> Panel:
        widget = self.query_one(f"#{tab}-view")
        assert isinstance(widget, PANELS), f"the {tab} tab holds a {type(widget).__name__}"
        return widget

    def on_resize(self, event: events.Resize) -> None:
        self._fit_tabs(event.size.width)

    def _fit_tabs(self, width: int) -> None:
        """Full tab labels where they fit, the narrow ones (and less padding) where not."""
        tabs = self.main.query(TabbedContent)
        if not tabs:
            return
        content = tabs.first()
        narrow = width < NARROW_BELOW
        if narrow == content.has_class("-narrow") and content.has_class("-fitted"):
            return
        content.set_class(narrow, "-narrow")
        content.add_class("-fitted")
        for tab, label, _ in TABS:
            content.get_tab(tab).label = NARROW_LABELS.get(tab, label) if narrow else label

    @work(thread=True, exclusive=True, exit_on_error=False, name="ingest")
    def ingest_events(self) -> None:
        """Runs the source in this thread; every problem ends up on screen, not as a trace."""
        try:
            self.source.run(self.ingest, self._stop)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the dashboard stays up
            self.ingest.status(f"the source stopped: {type(exc).__name__}: {exc}", "error")

    def on_unmount(self) -> None:
        self._stop.set()

    # -------------------------------------------------------------- messages

    def on_state_changed(self, message: StateChanged) -> None:
        self.ingest.taken()
        self.redraw()

    def on_status_changed(self, message: StatusChanged) -> None:
        self.redraw(force=True)

    def on_stream_state_changed(self, message: StreamStateChanged) -> None:
        self.redraw(force=True)

    def on_run_reset(self, message: RunReset) -> None:
        self.redraw(force=True)

    def _tick(self) -> None:
        running = self.ingest.state.end is None and not self.ingest.lost
        self.redraw(force=running and self.ingest.replay_now is None)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if self._focus_view_next:
            self._focus_view_next = False
            self.focus_view()
        self.redraw(force=True)

    def on_click(self, event: events.Click) -> None:
        """A click on a tab: its view takes the keys once the tab is activated."""
        if isinstance(event.widget, Tab):
            self._focus_view_next = True

    def focus_view(self, tab: str | None = None) -> None:
        """Give the keys to the main content of ``tab`` (default: the tab shown)."""
        tabs = self.main.query_one(TabbedContent)
        tab = tab or tabs.active
        if tab in VIEW_FOCUS:
            tabs.query_one(f"#{tab}", TabPane).query_one(VIEW_FOCUS[tab]).focus()

    def redraw(self, force: bool = False) -> None:
        ingest = self.ingest
        drawn = (ingest.generation, ingest.version)
        if (drawn == self._drawn and not force) or not self.screen_stack:
            return
        self._drawn = drawn
        panel = self.current_panel()
        if not (self.header.is_attached and panel.is_attached):
            return  # shutting down
        with ingest.lock:
            self.header.refresh_from(ingest)
            panel.refresh_from(ingest)

    def current_panel(self) -> Panel:
        tabs = self.main.query(TabbedContent)
        active = (tabs.first().active if tabs else "") or "workers"
        return self.panels[active]

    # --------------------------------------------------------------- actions

    def action_show_tab(self, tab: str) -> None:
        self.main.query_one(TabbedContent).active = tab
        self.focus_view(tab)
        self.redraw(force=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "seek_start" and isinstance(self.focused, Input):
            return False  # home in a text field is its own
        if action in ("play_pause", "step", "seek", "seek_start"):
            return self.source.replay
        return True

    def action_play_pause(self) -> None:
        self.ingest.status(self.source.play_pause())

    def action_step(self, seconds: float) -> None:
        self.ingest.status(self.source.step(seconds))

    def action_seek(self, delta: float) -> None:
        position = max(0.0, self.replay_position() + delta)
        self.ingest.status(self.source.seek(position))

    def action_seek_start(self) -> None:
        self.ingest.status(self.source.seek(0.0))

    def replay_position(self) -> float:
        now = self.ingest.replay_now
        return 0.0 if now is None else max(0.0, now - self.ingest.state.started)

    def show_worker(self, wid: str) -> None:
        self.action_show_tab("workers")
        table = self.main.query_one(WorkersTable)
        if wid in table.rows:
            table.move_cursor(row=table.get_row_index(wid))
        table.focus()

    def open_test(self, test: ev.TestFinished) -> None:
        with self.ingest.lock:
            self.push_screen(TestDetailScreen(test, self.ingest.state))

    def on_event_log_event_chosen(self, message: EventLog.EventChosen) -> None:
        self.push_screen(EventDetailScreen(message.event, self.ingest.state.started))

    def on_timeline_test_selected(self, message: Timeline.TestSelected) -> None:
        self.open_test(message.test)

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        """Enter on a worker opens the last test it finished; on a failure, that test."""
        if message.data_table.id == "workers-table":
            wid = message.row_key.value
            with self.ingest.lock:
                done = [t for t in self.ingest.state.tests if t.w == wid]
            if done:
                self.open_test(done[-1])
        elif message.data_table.id == "failures-table":
            test = self.main.query_one(FailuresPanel).selected()
            if test is not None:
                self.open_test(test)

    def action_help(self) -> None:
        """The keys of the view shown and of the app (what the footer has no room for)."""
        if isinstance(self.screen, HelpScreen):
            return
        active = self.screen.active_bindings.values()
        if self.screen is self.main:
            tab = self.main.query_one(TabbedContent).active or "workers"
            label, about = next((label, about) for t, label, about in TABS if t == tab)
            title = f"the {label.split()[1]} view"
        else:
            title, about = "this screen", "keys"
        self.push_screen(HelpScreen(key_sections(active, title, self.get_key_display), about))

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.title != "Keys":  # Textual's panel: the help screen says more
                yield command
        yield SystemCommand("Keys", "every key of the view shown and of the app", self.action_help)
        for tab, label, help_text in TABS:
            name = label.split()[1]
            yield SystemCommand(f"Show {name}", help_text, partial(self.action_show_tab, tab))
        if self.source.replay:
            yield SystemCommand("Play / pause replay", "replay", self.action_play_pause)
            yield SystemCommand("Replay from the start", "replay", self.action_seek_start)


def make_app(source: Source, clock: Callable[[], float] = time.time) -> MonitorApp:
    """The dashboard on ``source``: what ``testmon tui``, the tests and screenshots run."""
    return MonitorApp(source, clock=clock)
