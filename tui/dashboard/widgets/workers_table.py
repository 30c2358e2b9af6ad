"""One row a worker: state in colour, current test and fixture, time in phase, counts."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from testmon_live.plugin.state import WorkerView, worker_order
from testmon_live.plugin.words import exit_words
from testmon_live.tui.dashboard.ingest import NO_END, Ingest
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour, state_style
from testmon_live.tui.reports.formatting import fmt_duration, shorten_path

COLUMNS = (
    ("worker", "worker", 6),
    ("state", "state", 20),
    ("phase", "in phase", 8),
    ("done", "done", 5),
    ("fail", "fail", 4),
    ("test", "test", 0),
    ("fixture", "fixture", 16),
    ("cpu", "CPU s", 5),
    ("rss", "RSS", 5),
)
"""(key, label, width): most telling first. The test takes the width that is left (0
here); fixed widths elsewhere, so a column never jumps or cuts a value that grew. The state
(``waiting on container`` is the longest) is never cut."""
PADDING = 2
"""Cells a column spends on padding (one each side)."""
TEST_MIN = 24
"""Below this the fixture, then CPU and RSS, give their room to the test."""
FIXTURE_MIN = 8
DROPPED_FIRST = ("rss", "cpu", "fixture")
"""Columns left out, in this order, on screens too narrow for all of them."""
WAIT_ROOM = 10
"""Cells the test keeps beside what it waits on; with less, the wait gives way."""
ENDED = frozenset({"done", "crashed", NO_END})
"""States without a time in phase (nothing is going on, or nothing known)."""
BUSY_STATES = frozenset({"setup", "call", "teardown", "waiting on lock", "waiting on container"})


def fmt_bytes(n: int) -> str:
    if n <= 0:
        return "-"
    if n < 1024 * 1024:
        return f"{n // 1024}K"
    if n < 1024**3:
        return f"{n / 1024 / 1024:.0f}M"
    return f"{n / 1024**3:.1f}G"


def layout(width: int) -> dict[str, int]:
    """Column key -> width for a table ``width`` cells wide, columns left out omitted.

    The fixture gives up room first (down to :data:`FIXTURE_MIN`), then RSS, CPU and the
    fixture leave, until the test has :data:`TEST_MIN`; the test gets all that is left.
    """
    widths = {key: w for key, _, w in COLUMNS}

    def rest() -> int:
        return width - sum(w + PADDING for k, w in widths.items() if k != "test") - PADDING

    share = rest() + widths["fixture"]  # what test and fixture have between them
    widths["fixture"] = max(FIXTURE_MIN, min(widths["fixture"], share // 3, share - TEST_MIN))
    for key in DROPPED_FIRST:
        if rest() >= TEST_MIN:
            break
        del widths[key]
    widths["test"] = max(8, rest())
    return widths


class WorkersTable(DataTable[Text | str]):
    """The workers of the run, in id order; the cursor row survives refreshes; the test
    column takes the width the others leave, recomputed when the table is resized."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(
            cursor_type="row",
            zebra_stripes=True,
            name=name,
            id=id,
            classes=classes,
            disabled=disabled,
        )
        self._generation = -1
        self._widths: dict[str, int] = {}
        self._ingest: Ingest | None = None

    def on_mount(self) -> None:
        self._relayout(self.size.width)

    def on_resize(self, event: events.Resize) -> None:
        if self._relayout(event.size.width) and self._ingest is not None:
            with self._ingest.lock:
                self.refresh_from(self._ingest)

    def _relayout(self, width: int) -> bool:
        """Rebuild the columns for ``width``; True when they changed (rows must be re-added)."""
        widths = layout(max(width, 40) - self._scrollbar_room())
        if widths == self._widths:
            return False
        cursor = self.cursor_row
        self.clear(columns=True)
        self._widths = widths
        self._generation = -1
        for key, label, _ in COLUMNS:
            if key in widths:
                self.add_column(label, key=key, width=widths[key])
        self.move_cursor(row=cursor)
        return True

    def _scrollbar_room(self) -> int:
        """Cells a vertical scrollbar takes once there are more workers than rows."""
        return self.styles.scrollbar_size_vertical if self.row_count > self.size.height - 1 else 0

    def refresh_from(self, ingest: Ingest) -> None:
        self._ingest = ingest
        if ingest.generation != self._generation:
            self._generation = ingest.generation
            cursor = self.cursor_row
            self.clear()
            self.move_cursor(row=cursor)
        now = ingest.now()
        views = ingest.state.active_workers() or list(ingest.state.workers.values())
        ordered = sorted((v for v in views if v.id), key=lambda v: worker_order(v.id))
        shown = [key.value for key in self.rows]
        if shown != [v.id for v in ordered][: len(shown)]:  # gw0 came up after gw1
            cursor = self.cursor_row
            self.clear()
            self.move_cursor(row=cursor)
        for view in ordered:
            cells = self.cells(view, now, ingest.worker_state(view))
            if view.id in self.rows:
                for key, value in cells.items():
                    self.update_cell(view.id, key, value)
            else:
                self.add_row(*cells.values(), key=view.id)

    def cells(
        self, view: WorkerView, now: float, state: str | None = None
    ) -> dict[str, Text | str]:
        """Column key -> cell, for the columns shown; ``state`` overrides the view's."""
        state = view.state if state is None else state
        test = view.test or ""
        if view.crash is not None:
            # what the Stuck view says too: the test, how it ended, who took its place
            test = f"{view.crash.test or '(between tests)'} ({exit_words(view.crash)})"
            if view.replaced_by:
                test += f", {view.replaced_by} replaced it"
        elif view.replaces and not test:
            test = f"(replaced {view.replaces})"
        in_phase = ""
        if state not in ENDED and view.since:
            in_phase = fmt_duration(max(0.0, now - view.since))
        if view.waiting and state not in ENDED:  # also when it stalls waiting
            waiting = short_waiting(view.waiting)
            test = f"{test} [{waiting}]" if test else waiting
        failures = Text(str(view.failures))
        if view.failures:
            failures.stylize(colour(self, "error"))
        widths = self._widths or layout(110)
        every: dict[str, Text | str] = {
            "worker": view.id,
            "state": Text(state, style=f"bold {state_style(self, state)}"),
            "phase": in_phase,
            "done": str(view.tests),
            "fail": failures,
            # Text: node ids hold [brackets], not markup
            "test": Text(_cut_test(test, widths["test"])),
            "fixture": Text(_cut_end(view.fixture or "", widths.get("fixture", 0))),
            "cpu": f"{view.cpu:.1f}" if view.cpu else "-",
            "rss": fmt_bytes(view.rss),
        }
        return {key: value for key, value in every.items() if key in widths}

    def dropped(self, ingest: Ingest) -> dict[str, str]:
        """Worker -> the columns the table has no room for, in words (``fixture database
        CPU 0.6s RSS 59M``): the view shows them beside the worker's recent tests."""
        widths = self._widths or layout(110)
        out: dict[str, str] = {}
        for view in ingest.state.active_workers():
            parts = []
            if "fixture" not in widths and view.fixture and view.state not in ENDED:
                parts.append(f"fixture {view.fixture}")
            if "cpu" not in widths and view.cpu:
                parts.append(f"CPU {view.cpu:.1f}s")
            if "rss" not in widths and view.rss > 0:
                parts.append(f"RSS {fmt_bytes(view.rss)}")
            if parts:
                out[view.id] = "  ".join(parts)
        return out


def short_waiting(waiting: str) -> str:
    """``lock:/tmp/pytest-of-x/pytest-7/migrations.lock`` -> ``migrations.lock``: the state
    column already says lock or container; a path is named by its last part."""
    _, sep, key = waiting.partition(":")
    key = key if sep else waiting
    return key.rstrip("/").rsplit("/", 1)[-1] or waiting


def short_test(nodeid: str, width: int) -> str:
    """A test in ``width`` cells, its own name first: the path gives way (``…/x.py::``), then
    goes, then the name is cut in its middle, keeping its parameters (``[24]`` tells the
    cases apart)."""
    shown = shorten_path(nodeid, width)
    if len(shown) <= width:
        return shown
    name = nodeid.rpartition("::")[2]
    if len(name) <= width:
        return name
    base, bracket, params = name.partition("[")
    params = bracket + params
    if params and len(params) <= width // 2:
        return base[: max(0, width - len(params) - 1)] + "…" + params
    return _cut_end(name, width)


def _cut_end(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _cut_test(text: str, width: int) -> str:
    """Keep a trailing ``[what it waits on]`` whole where the test's own name keeps
    :data:`WAIT_ROOM` cells beside it; on a narrower screen the test's name comes first."""
    if not text.endswith("]") or " [" not in text:
        return short_test(text, width)
    test, _, waiting = text.rpartition(" [")
    room = width - len(waiting) - 2
    if room >= WAIT_ROOM or (room >= 6 and len(test) <= room):
        return f"{short_test(test, room)} [{waiting}"
    if test:  # the state says it waits, the problems under the table on what: the test first
        return short_test(test, width)
    return _cut_end(f"[{waiting}", width)
