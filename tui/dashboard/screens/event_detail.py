"""One event's full record (enter in the Events view): its time, and its JSON as the log
holds it, indented."""

from __future__ import annotations

from typing import ClassVar

import msgspec
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from testmon_live.plugin import events as ev
from testmon_live.tui.dashboard.event_summary import summary, tag
from testmon_live.tui.reports.document import printable
from testmon_live.tui.reports.values import iso_time


def record_text(event: ev.Event, started: float) -> Text:
    text = Text()
    text.append(f"{tag(event)} on {event.w or 'the controller'}", style="bold")
    text.append(f"  +{event.ts - started:.3f}s  ({iso_time(event.ts)})\n")
    text.append(f"{summary(event)}\n\n")
    text.append(printable(msgspec.json.format(ev.encode(event), indent=2).decode()))
    return text


class EventDetailScreen(ModalScreen[None]):
    """An event in full, over the dashboard; escape closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,enter", "dismiss", "close", key_display="esc"),
        Binding("question_mark,f1", "app.help", "keys", key_display="?"),
    ]

    def __init__(self, event: ev.Event, started: float) -> None:
        super().__init__()
        self.event = event
        self.body = record_text(event, started)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="event-detail"):
            yield Static(self.body, id="event-detail-text")
        yield Footer()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
