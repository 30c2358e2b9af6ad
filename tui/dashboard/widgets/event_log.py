"""The raw events, newest last, filtered by what is typed (matched against each event's
JSON, so ``gw1``, ``lock``, ``test_refund`` or ``"t":"stall"`` all work).

Each event kept is encoded once, when a redraw first finds it (:class:`EncodedEvents`);
a redraw then only searches the text already made: redrawing ten times a second under
a fast run costs the events that arrived, not the 20,000 kept."""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Input, Static

from testmon_live.plugin import events as ev
from testmon_live.tui.dashboard.ingest import RAW_KEPT, Ingest
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour

SHOWN = 300
"""Matching events shown (the newest)."""


class EncodedEvents:
    """The JSON text of the events :attr:`Ingest.raw` keeps, in the same order, made once
    per event: kept in step through :attr:`Ingest.raw_total` and the reset generation."""

    def __init__(self) -> None:
        self.lines: deque[tuple[str, str]] = deque(maxlen=RAW_KEPT)
        """(the event's JSON, the same in lower case), oldest first."""
        self.generation = -1
        self.total = 0

    def sync(self, ingest: Ingest) -> None:
        """Encode what arrived since the last call (the caller holds the ingest's lock)."""
        if ingest.generation != self.generation:
            self.lines.clear()
            self.generation = ingest.generation
            self.total = 0
        raw = ingest.raw
        new = min(ingest.raw_total - self.total, len(raw))
        if new > 0:
            fresh = list(islice(reversed(raw), new))
            encode = ev.encode
            for event in reversed(fresh):
                line = encode(event).decode()
                self.lines.append((line, line.lower()))
        self.total = ingest.raw_total


class EventLog(Vertical):
    """The filter over the events; escape or enter in the filter gives the keys back to
    the events (so the number keys, q and ctrl+p work again)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave_filter", "leave filter", show=False),
    ]

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
        self.matched = 0
        self.encoded = EncodedEvents()

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter events (text in the event's JSON)", id="event-filter")
        with VerticalScroll(id="event-scroll"):
            yield Static("", id="event-lines")

    def action_leave_filter(self) -> None:
        self.query_one("#event-scroll", VerticalScroll).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_leave_filter()

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.ingest is not None:
            self.refresh_from(self.ingest)

    def refresh_from(self, ingest: Ingest) -> None:
        self.ingest = ingest
        needle = self.query_one(Input).value.strip().lower()
        version = (ingest.generation, ingest.version, needle)
        if version == self.shown_version:
            return
        self.shown_version = version
        with ingest.lock:
            self.encoded.sync(ingest)
        muted = colour(self, "foreground-muted")
        lines: list[str] = []
        for line, lower in reversed(self.encoded.lines):
            if needle and needle not in lower:
                continue
            lines.append(line)
            if len(lines) >= SHOWN:
                break
        self.matched = len(lines)
        text = Text(no_wrap=True, overflow="ellipsis")
        held = len(self.encoded.lines)
        kept = f"the newest {RAW_KEPT}" if held >= RAW_KEPT else f"all {held}"
        what = f"matching {needle!r}" if needle else "events"
        text.append(f"{len(lines)} {what} shown, newest last (of {kept} kept)\n", style=muted)
        for line in reversed(lines):
            text.append(line + "\n")
        self.query_one("#event-lines", Static).update(text)
        self.query_one("#event-scroll", VerticalScroll).scroll_end(animate=False)
