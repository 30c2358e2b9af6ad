"""Failed and errored tests: a table, and the failure text of the highlighted one."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from testmon_live.plugin import events as ev
from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.palette import TONE_CLASSES, outcome_style
from testmon_live.tui.reports.formatting import first_line, rerun_words, shorten_path

EMPTY = "no failures"
TEST_WIDTH = 50
"""The test column at least: the path before the test's name is cut to fit, never the
name; a wider panel gives the room the other columns leave."""
MESSAGE_WIDTH = 60
OTHER_COLUMNS = 6 + 7 + MESSAGE_WIDTH + 4 * 2 + 2
"""Worker, outcome and message columns, each column's padding, the scroll bar."""


class FailuresTable(DataTable[Text | str]):
    """The failures; enter opens the test (in the footer and the help)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "open test"),
    ]


class FailuresPanel(Vertical):
    """The failures table over the text of the one the cursor is on."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.failures: list[ev.TestFinished] = []
        self._generation = -1
        self._test_width = TEST_WIDTH

    def compose(self) -> ComposeResult:
        table = FailuresTable(cursor_type="row", id="failures-table")
        yield table
        with VerticalScroll(id="failure-text-scroll"):
            yield Static(EMPTY, id="failure-text")

    def on_mount(self) -> None:
        _add_columns(self.query_one(DataTable))

    def refresh_from(self, ingest: Ingest) -> None:
        table: DataTable[Text | str] = self.query_one(DataTable)
        if ingest.generation != self._generation:
            self._generation = ingest.generation
            self.failures = []
            table.clear()
            self.query_one("#failure-text", Static).update(EMPTY)
        fresh = ingest.state.failures[len(self.failures) :]
        for test in fresh:
            self._add_row(table, test, len(self.failures))
            self.failures.append(test)
        if fresh and len(self.failures) == len(fresh):
            self.show(0)

    def _add_row(self, table: DataTable[Text | str], test: ev.TestFinished, index: int) -> None:
        table.add_row(
            test.w,
            Text(test.outcome, style=outcome_style(self, test.outcome)),
            # the test's own name whole, its path cut (Text: [brackets] are not markup)
            Text(shorten_path(test.nodeid, self._test_width)),
            Text(first_line(test.message)[:MESSAGE_WIDTH]),
            key=str(index),
        )

    def on_resize(self) -> None:
        """The test column takes the room the panel has (rows made before, anew)."""
        width = max(TEST_WIDTH, self.size.width - OTHER_COLUMNS)
        if width == self._test_width:
            return
        self._test_width = width
        if not self.failures:
            return
        table: DataTable[Text | str] = self.query_one(DataTable)
        row = table.cursor_row
        table.clear(columns=True)  # a column keeps the widest content it had otherwise
        _add_columns(table)
        for index, test in enumerate(self.failures):
            self._add_row(table, test, index)
        table.move_cursor(row=row, animate=False)

    def show(self, index: int) -> None:
        if not 0 <= index < len(self.failures):
            return
        test = self.failures[index]
        body = Text()
        body.append(f"{test.nodeid}\n", style="bold")
        body.append(f"{test.outcome} in {test.failed_when or '?'} on {test.w}\n")
        if test.reruns > 0:
            body.append(rerun_words(test.reruns, test.rerun_when, test.rerun_time) + "\n")
        body.append("\n")
        body.append(test.longrepr or test.message or "(no failure text recorded)")
        self.query_one("#failure-text", Static).update(body)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.show(int(event.row_key.value))

    def selected(self) -> ev.TestFinished | None:
        table: DataTable[Text | str] = self.query_one(DataTable)
        if 0 <= table.cursor_row < len(self.failures):
            return self.failures[table.cursor_row]
        return None


def _add_columns(table: DataTable[Text | str]) -> None:
    for key in ("worker", "outcome", "test", "message"):
        table.add_column(key, key=key)
