"""The events, newest last: a row each with its time since the start, worker, type and a
line of words (:mod:`..event_summary`); enter opens the full record. Typing a letter
starts a filter (matched against the row and the event's JSON, so ``gw1``, ``lock``,
``test_refund`` or ``"t":"stall"`` all work); escape or enter gives the keys back.

Each event kept is encoded and worded once, when a redraw first finds it
(:class:`EncodedEvents`); a redraw then only searches the text already made and adds the
rows that arrived: redrawing ten times a second under a fast run costs the events that
arrived, not the 20,000 kept."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from testmon_live.plugin import events as ev
from testmon_live.tui.dashboard.event_summary import summary, tag
from testmon_live.tui.dashboard.ingest import RAW_KEPT, Ingest
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour

SHOWN = 300
"""Matching events shown (the newest): at least these, at most twice as many."""
NOT_A_FILTER = frozenset("q")
"""Letters that keep their meaning in the Events view (q quits everywhere)."""


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    """Its place in the run's events (0 the first), the row's key."""
    event: ev.Event
    kind: str
    words: str
    searched: str
    """Its JSON and its words, lower case: what a filter is matched against."""


class EncodedEvents:
    """The events :attr:`Ingest.raw` keeps, in the same order, each encoded and worded once:
    kept in step through :attr:`Ingest.raw_total` and the reset generation."""

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque(maxlen=RAW_KEPT)
        self.generation = -1
        self.total = 0

    def sync(self, ingest: Ingest) -> None:
        """Encode what arrived since the last call (the caller holds the ingest's lock)."""
        if ingest.generation != self.generation:
            self.entries.clear()
            self.generation = ingest.generation
            self.total = 0
        raw = ingest.raw
        new = min(ingest.raw_total - self.total, len(raw))
        if new > 0:
            fresh = list(islice(reversed(raw), new))
            encode = ev.encode
            index = ingest.raw_total - new
            for event in reversed(fresh):
                words = summary(event)
                line = encode(event).decode()
                searched = f"{event.w} {tag(event)} {words}\n{line}".lower()
                self.entries.append(Entry(index, event, tag(event), words, searched))
                index += 1
        self.total = ingest.raw_total


class EventTable(DataTable[Text | str]):
    """The events' rows; enter opens the full record (in the footer and the help)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "full record"),
    ]


class EventLog(Vertical):
    """The filter over the events' table."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    BINDINGS: ClassVar[list[BindingType]] = [
        # typing a letter starts the filter (on_key); this binding puts it in the footer
        Binding("f", "filter", "filter", key_display="a-z"),
        Binding("escape", "leave_filter", "leave filter", show=False),
    ]

    class EventChosen(Message):
        """Enter on an event: the app shows its full record."""

        def __init__(self, event: ev.Event) -> None:
            super().__init__()
            self.event = event

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.ingest: Ingest | None = None
        self.shown_version = (-1, -1, "")
        self.shown: deque[Entry] = deque()
        """The rows of the table, oldest first."""
        self.encoded = EncodedEvents()
        self._filter_pending = False
        """A letter started the filter, which has not got the focus yet."""

    @property
    def matched(self) -> int:
        return len(self.shown)

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="filter: type a letter in the events, or here",
            id="event-filter",
            select_on_focus=False,  # the letter that started the filter stays, typing goes on
        )
        yield Static("", id="event-status")
        table = EventTable(cursor_type="row", id="event-table")
        table.add_column("time", key="time")
        table.add_column("worker", key="worker")
        table.add_column("type", key="type")
        table.add_column("what", key="what")
        yield table

    @property
    def table(self) -> DataTable[Text | str]:
        table: DataTable[Text | str] = self.query_one("#event-table", DataTable)
        return table

    def action_filter(self, start: str = "") -> None:
        field = self.query_one(Input)
        if start:
            # the letters typed before the filter has the focus belong to it too
            field.value = field.value + start if self._filter_pending else start
            self._filter_pending = True
        field.focus()
        field.cursor_position = len(field.value)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        self._filter_pending = False

    def action_leave_filter(self) -> None:
        self.table.focus()

    def on_key(self, event: events.Key) -> None:
        """A letter typed in the events starts a new filter with it."""
        char = event.character
        if (
            self.app.focused is self.table
            and char is not None
            and len(char) == 1
            and char.isalpha()
            and char not in NOT_A_FILTER
        ):
            event.stop()
            event.prevent_default()
            self.action_filter(char)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_leave_filter()

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.ingest is not None:
            self.refresh_from(self.ingest)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value
        chosen = next((e for e in self.shown if str(e.index) == key), None)
        if chosen is not None:
            self.post_message(self.EventChosen(chosen.event))

    def refresh_from(self, ingest: Ingest) -> None:
        self.ingest = ingest
        needle = self.query_one(Input).value.strip().lower()
        version = (ingest.generation, ingest.version, needle)
        if version == self.shown_version:
            return
        again = version[0] != self.shown_version[0] or needle != self.shown_version[2]
        self.shown_version = version
        with ingest.lock:
            self.encoded.sync(ingest)
            started = ingest.state.started
        table = self.table
        following = table.cursor_row >= table.row_count - 1
        if again:
            self.shown.clear()
            table.clear()
            newer = -1
        else:
            newer = self.shown[-1].index if self.shown else -1
        fresh: list[Entry] = []
        for entry in reversed(self.encoded.entries):
            if entry.index <= newer:
                break
            if len(fresh) >= SHOWN:  # more arrived than are shown: the newest, anew
                self.shown.clear()
                table.clear()
                break
            if not needle or needle in entry.searched:
                fresh.append(entry)
        fresh.reverse()
        self.shown.extend(fresh)
        if len(self.shown) > 2 * SHOWN:
            # a DataTable removes a row in time linear in its rows: rather than drop the
            # oldest at each redraw, let them run to twice the number, then draw anew
            while len(self.shown) > SHOWN:
                self.shown.popleft()
            table.clear()
            fresh = list(self.shown)
        muted = colour(self, "foreground-muted")
        for entry in fresh:
            table.add_row(
                Text(f"{entry.event.ts - started:+.2f}s", style=muted),
                entry.event.w or "-",
                entry.kind,
                Text(entry.words),  # Text: [brackets] are not markup
                key=str(entry.index),
            )
        if (fresh and following) or again:
            table.move_cursor(row=table.row_count - 1, animate=False)
        self._status(needle, len(self.encoded.entries))

    def _status(self, needle: str, held: int) -> None:
        kept = f"the newest {RAW_KEPT}" if held >= RAW_KEPT else f"all {held}"
        what = f"matching {needle!r}" if needle else "events"
        text = Text(no_wrap=True, overflow="ellipsis", style=colour(self, "foreground-muted"))
        text.append(f"{self.matched} {what} shown, newest last (of {kept} kept)")
        self.query_one("#event-status", Static).update(text)
