"""One lane a worker, time across: tests as bars coloured by outcome, with setup, lock waits
and container waits drawn with characters of their own (so they differ without colour too).

Keys: ←/→ select the previous/next test of the lane, ↑/↓ another lane, enter opens the
selected test, +/- zoom, shift+←/→ scroll, 0 fits the whole run, end follows the edge.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from testmon_live.plugin import events as ev
from testmon_live.plugin.state import RunState, worker_order
from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.keys import grouped
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour, outcome_style, state_style
from testmon_live.tui.dashboard.widgets.workers_table import short_test
from testmon_live.tui.reports.formatting import between_phases_words, fmt_duration

LABEL = 7
CALL, SETUP, TEARDOWN, LOCK, CONTAINER, STALL, FAILED = "█", "▒", "░", "≈", "▚", "!", "×"
LEGEND = (
    f"{CALL} call  {SETUP} setup  {TEARDOWN} teardown  {FAILED} failed  {LOCK} lock wait  "
    f"{CONTAINER} container wait  {STALL} stall"
)
LEGEND_SHORT = (
    f"{CALL} call {SETUP} setup {TEARDOWN} teardown {FAILED} failed {LOCK} lock "
    f"{CONTAINER} container {STALL} stall"
)
"""The legend on a narrow screen (it stays one line: the lanes have the rest)."""
LANE_MAX = 6
"""Rows a lane grows to at most when the panel has room: its bars, a row naming its tests
wide enough to be named, and a blank row between lanes."""
CHROME = 3
"""Rows that are not lanes: the axis, the selected test's line, the legend."""
AXIS_GAP = 10
"""Columns between two axis labels at least."""
NICE_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
"""Seconds between axis labels: the first that leaves :data:`AXIS_GAP` columns."""


def test_start(test: ev.TestFinished) -> float:
    if test.phases:
        return test.phases[0].start
    return test.ts - test.duration


PHASE_CHAR = {"setup": SETUP, "call": CALL, "teardown": TEARDOWN}
PHASE_CHARS = (SETUP, CALL, TEARDOWN)
PHASE_INDEX = {"setup": 0, "call": 1, "teardown": 2}
PHASE_OF = {SETUP: "setup", CALL: "call", TEARDOWN: "teardown"}


def running(state: RunState, wid: str, now: float) -> list[tuple[float, float, str]]:
    """What ``wid`` is in the middle of at ``now``, as (start, end, character) spans: its
    test's phases so far (:meth:`WorkerView.open_phases`, the one place they are worked
    out), and a lock or container wait going on (drawn over its setup)."""
    view = state.workers.get(wid)
    if view is None:
        return []
    spans = [(a, b, PHASE_CHAR[phase]) for phase, a, b in view.open_phases(now)]
    if view.down or view.crash is not None:
        return spans
    spans += [
        (wait.ts, max(wait.ts, now), LOCK)
        for stats in state.locks.values()
        for wait in stats.waiting.values()
        if wait.w == wid
    ]
    for box in state.containers.values():
        starting = box.ready is None and box.state in ("created", "running")
        if box.owner == wid and box.created is not None and starting:
            spans.append((box.created, max(box.created, now), CONTAINER))
    return spans


def axis_step(scale: float) -> float:
    """Seconds between two axis labels for ``scale`` seconds a cell: a round number."""
    for step in NICE_STEPS:
        if step >= scale * AXIS_GAP:
            return step
    return NICE_STEPS[-1] * max(1, round(scale * AXIS_GAP / NICE_STEPS[-1] + 0.5))


def lane_height(rows: int, lanes: int) -> int:
    """Rows a lane gets: as many as fit (up to :data:`LANE_MAX`), one when they do not."""
    if lanes <= 0:
        return 1
    return max(1, min(LANE_MAX, rows // lanes))


class Cells:
    """What fills each cell of a lane: seconds of each (character, style) in it. A cell
    shows what filled most of it, whatever the zoom; a failure shows in every cell it
    touches, and the selected test in every cell it has a share of."""

    def __init__(self, t0: float, scale: float, cols: int) -> None:
        self.t0, self.scale, self.cols = t0, scale, cols
        self.fill: list[dict[tuple[str, str], float]] = [{} for _ in range(cols)]
        self.marks: dict[int, tuple[str, str]] = {}
        """Cells drawn whatever else fills them (failures, the selection, stalls)."""

    def span(self, a: float, b: float) -> range:
        """The cells ``a``..``b`` touches (a moment touches one)."""
        x0 = (a - self.t0) / self.scale
        x1 = (b - self.t0) / self.scale
        if x1 < 0 or x0 >= self.cols:
            return range(0)
        lo = max(0, int(x0))
        hi = min(self.cols, max(lo + 1, int(x1) + (1 if x1 > int(x1) else 0)))
        return range(lo, hi)

    def add(self, a: float, b: float, key: tuple[str, str]) -> None:
        x0 = (a - self.t0) / self.scale
        x1 = (b - self.t0) / self.scale
        for c in self.span(a, b):
            seconds = max(1e-9, min(x1, c + 1) - max(x0, c))
            cell = self.fill[c]
            cell[key] = cell.get(key, 0.0) + seconds

    def take(self, a: float, b: float, amount_of: str) -> None:
        """Take a wait's time out of the setup it happened in (the waits are drawn)."""
        x0 = (a - self.t0) / self.scale
        x1 = (b - self.t0) / self.scale
        for c in self.span(a, b):
            seconds = max(0.0, min(x1, c + 1) - max(x0, c))
            cell = self.fill[c]
            for key in [k for k in cell if k[0] == amount_of]:
                cell[key] = max(1e-9, cell[key] - seconds)

    def add_sums(self, sums: list[float], style: str) -> None:
        """Seconds of setup, call and teardown per cell (three a cell), in ``style``."""
        per_second = 1.0 / self.scale
        for c, cell in enumerate(self.fill):
            for k, char in enumerate(PHASE_CHARS):
                seconds = sums[3 * c + k]
                if seconds:
                    key = (char, style)
                    cell[key] = cell.get(key, 0.0) + seconds * per_second

    def mark(self, a: float, b: float, key: tuple[str, str]) -> None:
        for c in self.span(a, b):
            self.marks[c] = key

    def text(self) -> Text:
        out = Text()
        for c, cell in enumerate(self.fill):
            key = self.marks.get(c)
            if key is None and cell:
                chosen = [
                    kv for kv in cell.items() if kv[0][1].startswith(SELECTED)
                ] or cell.items()
                key = max(chosen, key=lambda kv: kv[1])[0]
            if key is None:
                out.append(" ")
            else:
                out.append(key[0], style=key[1] or None)
        return out


SELECTED = "reverse "
"""The style prefix of the selected test's cells."""


@dataclass
class Lane:
    """A worker's tests in the order they ended, with their end times for bisecting."""

    tests: list[ev.TestFinished] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    waits: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, end, LOCK or CONTAINER)."""


SELECT = grouped("select", compact=True)
ZOOM = grouped("zoom", compact=True)
SCROLL = grouped("scroll")


class Timeline(Widget, can_focus=True):
    """The run as lanes of bars; posts :class:`Timeline.TestSelected` on enter or click."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    BINDINGS: ClassVar[list[BindingType]] = [  # the groups: one footer entry each
        Binding("left", "select(-1)", "prev test", **SELECT),
        Binding("right", "select(1)", "next test", **SELECT),
        Binding("up", "lane(-1)", "lane up", show=False),
        Binding("down", "lane(1)", "lane down", show=False),
        Binding("enter", "open", "open test", show=False),  # (in the help: room for ? at 80)
        Binding("plus,equals_sign", "zoom(0.5)", "zoom in", **ZOOM),
        Binding("minus", "zoom(2)", "zoom out", **ZOOM),
        Binding("shift+left", "scroll_time(-0.25)", "scroll back", key_display="⇧←", **SCROLL),
        Binding("shift+right", "scroll_time(0.25)", "scroll on", key_display="⇧→", **SCROLL),
        Binding("0", "fit", "fit", show=False),
        Binding("end", "follow", "follow"),
    ]

    class TestSelected(Message):
        """The user picked a test on the timeline."""

        def __init__(self, test: ev.TestFinished) -> None:
            super().__init__()
            self.test = test

    zoom: reactive[float] = reactive(1.0, layout=False)
    """Seconds a cell stands for (when not fitting the run)."""
    start_at: reactive[float] = reactive(0.0)
    """Run seconds at the left edge."""
    fit = reactive(True)
    """Zoom so the whole run fits the width."""
    follow = reactive(False)
    """Keep the newest edge in view (live runs)."""

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
        self._generation = -1
        self._seen_tests = 0
        self._seen_locks = 0
        self._seen_containers = 0
        self.lanes: dict[str, Lane] = {}
        self.lane_index = 0
        self.first_lane = 0
        """The lane at the top: lanes scroll when there are more workers than rows."""
        self.selected: ev.TestFinished | None = None
        self._drawn: dict[str, tuple[object, Text]] = {}
        """Lane -> (what it was drawn from, its bar)."""

    # ------------------------------------------------------------------ data

    def refresh_from(self, ingest: Ingest) -> None:
        self.ingest = ingest
        if ingest.generation != self._generation:
            self._generation = ingest.generation
            self.lanes = {}
            self._seen_tests = self._seen_locks = self._seen_containers = 0
            self.selected = None
            self._drawn = {}
        self._index(ingest.state)
        self.refresh()

    def _index(self, state: RunState) -> None:
        tests = state.tests
        for test in tests[self._seen_tests :]:
            lane = self.lanes.setdefault(test.w, Lane())
            lane.tests.append(test)
            lane.ends.append(test.ts)
        self._seen_tests = len(tests)
        locks = state.lock_events
        for lock in locks[self._seen_locks :]:
            if lock.action in ("acquired", "failed") and lock.waited:
                lane = self.lanes.setdefault(lock.w, Lane())
                lane.waits.append((lock.ts - lock.waited, lock.ts, LOCK))
        self._seen_locks = len(locks)
        for view in state.containers.values():
            # a container's start..ready is a wait for every worker that needed it
            if view.ready is not None and view.created is not None and view.owner:
                lane = self.lanes.setdefault(view.owner, Lane())
                wait = (view.created, view.ready, CONTAINER)
                if wait not in lane.waits:
                    lane.waits.append(wait)

    def lane_ids(self) -> list[str]:
        if self.ingest is None:
            return []
        ids = {w.id for w in self.ingest.state.active_workers()} | set(self.lanes)
        return sorted(ids, key=worker_order)

    def window(self, lanes: int) -> tuple[int, int, int]:
        """(first lane shown, lanes shown, rows a lane) for ``lanes`` lanes: lanes grow
        with the room (:func:`lane_height`) and scroll when there are more than rows."""
        rows = max(1, self.size.height - CHROME)
        height = lane_height(rows, lanes)
        shown = max(1, rows // height)
        return max(0, min(self.first_lane, lanes - shown)), shown, height

    # -------------------------------------------------------------- geometry

    def _span(self) -> tuple[float, float]:
        """Run start and the time shown as 'now'."""
        if self.ingest is None:
            return 0.0, 0.0
        state = self.ingest.state
        start = state.started
        return start, max(start, self.ingest.now())

    def scale(self) -> float:
        cols = max(1, self.size.width - LABEL)
        start, now = self._span()
        if self.fit:
            return max(0.01, (now - start) / cols * 1.02)
        return self.zoom

    def left_edge(self) -> float:
        start, now = self._span()
        cols = max(1, self.size.width - LABEL)
        if self.fit:
            return 0.0
        if self.follow:
            return max(0.0, now - start - cols * self.zoom * 0.9)
        return self.start_at

    # ---------------------------------------------------------------- render

    def render(self) -> Text:
        if self.ingest is None:
            return Text("no run yet")
        with self.ingest.lock:
            return self._draw()

    def _draw(self) -> Text:
        width = max(LABEL + 10, self.size.width)
        cols = width - LABEL
        scale = self.scale()
        start, _ = self._span()
        t0 = start + self.left_edge()
        muted = colour(self, "foreground-muted")
        out = Text(no_wrap=True, overflow="crop")
        out.append(" " * LABEL)
        out.append(self._axis(t0 - start, scale, cols), style=muted)
        out.append("\n")
        ids = self.lane_ids()
        first, shown, height = self.window(len(ids))
        for wid in ids[first : first + shown]:
            selected_lane = ids and wid == ids[min(self.lane_index, len(ids) - 1)]
            label = f"{wid:<{LABEL - 1}} "[:LABEL]
            lane = self.lanes.get(wid, Lane())
            bar = self._lane(wid, lane, t0, scale, cols)
            bars = max(1, height - 1 if height == 2 else height - 2)
            for row in range(bars):
                shown_label = label if row == 0 else " " * LABEL
                out.append(shown_label, style="bold" if selected_lane else muted)
                out.append_text(bar)
                out.append("\n")
            if height >= 2:
                out.append(" " * LABEL)
                out.append(self._names(lane, t0, scale, cols), style=muted)
                out.append("\n")
            if height >= 3:
                out.append("\n")
        if not ids:
            out.append("no tests have finished yet\n", style=muted)
        out.append_text(self._selected_line(width))
        out.append("\n")
        mode = "fit" if self.fit else f"{scale:.2g}s/cell" + (" follow" if self.follow else "")
        tail = f"  [{mode}]"
        if len(ids) > shown:
            last = min(first + shown, len(ids))
            tail += f"  lanes {first + 1}-{last} of {len(ids)}"
            if len(LEGEND_SHORT) + len(tail) + 12 <= width:
                tail += " (↑↓, wheel)"
        # the legend gives way first: which lanes are shown matters more
        legend = LEGEND if len(LEGEND) + len(tail) <= width else LEGEND_SHORT
        out.append(legend[: max(0, width - len(tail))] + tail, style=muted)
        return out

    @staticmethod
    def _axis(left: float, scale: float, cols: int) -> str:
        """Labels at every multiple of one round step (:func:`axis_step`), each at the
        column of its time, all in the same precision."""
        step = axis_step(scale)
        decimals = 0 if step >= 1 else 1
        axis = [" "] * cols
        k = int(left // step)
        while True:
            t = k * step
            k += 1
            c = round((t - left) / scale)
            if c >= cols:
                break
            if c < 0:
                continue
            label = f"|{_fmt_offset(t, decimals)}"
            if c + len(label) <= cols:  # a cut label reads as another time
                axis[c : c + len(label)] = label
        return "".join(axis)

    def _names(self, lane: Lane, t0: float, scale: float, cols: int) -> str:
        """Under a tall lane's bars, each test wide enough to be named, by its own name."""
        row = [" "] * cols
        t1 = t0 + cols * scale
        i = bisect.bisect_left(lane.ends, t0)
        least = 5 * scale  # a name needs 4 cells and a blank
        for test in lane.tests[i:]:
            phases = test.phases
            begin = phases[0].start if phases else test.ts - test.duration
            if begin > t1 or test.ts - begin < least:
                continue
            lo = max(0, int((begin - t0) / scale))
            hi = min(cols, round((test.ts - t0) / scale))
            name = test.nodeid.rpartition("::")[2]
            room = hi - lo - 1
            if room >= 4 and all(ch == " " for ch in row[lo : lo + 1]):
                text = name if len(name) <= room else short_test(test.nodeid, room)
                row[lo : lo + len(text)] = text
        return "".join(row)

    def _selected_line(self, width: int) -> Text:
        """The selected test named under the lanes: its name, worker, outcome, start, and
        the time of each phase."""
        muted = colour(self, "foreground-muted")
        test = self.selected
        line = Text(no_wrap=True, overflow="ellipsis")
        if test is None:
            line.append("←/→ select a test, ↑/↓ a lane, enter opens it", style=muted)
            return line
        start, _ = self._span()
        line.append("▶ ", style=muted)
        line.append(test.outcome, style=f"bold {outcome_style(self, test.outcome)}")
        line.append(f"  {test.w}  at {_fmt_offset(test_start(test) - start, 1)}  ")
        phases = "  ".join(f"{p.when} {fmt_duration(p.dur)}" for p in test.phases)
        between = between_phases_words(ev.test_span(test), test.duration)
        if between is not None:
            phases += f"  {between}"
        tail = f"  {phases}" if phases else f"  {fmt_duration(test.duration)}"
        room = width - len(line.plain) - len(tail)
        line.append(Text(short_test(test.nodeid, max(10, room)), style="bold"))
        line.append(tail, style=muted)
        return line

    def _lane(self, wid: str, lane: Lane, t0: float, scale: float, cols: int) -> Text:
        """The lane's bar; drawn again only when what it shows changed (a finished run,
        a paused replay or a view not scrolled redraw from the cache)."""
        going_on: list[tuple[float, float, str]] = []
        stalls = 0
        if self.ingest is not None:
            going_on = running(self.ingest.state, wid, self._span()[1])
            stalls = len(self.ingest.state.stalls)
        selected = self.selected if self.selected is not None and self.selected.w == wid else None
        key = (
            t0,
            scale,
            cols,
            len(lane.tests),
            len(lane.waits),
            id(selected),
            stalls,
            self.app.theme,
        )
        cached = self._drawn.get(wid)
        if cached is not None and cached[0] == (key, going_on):
            return cached[1]
        bar = self._draw_lane(wid, lane, t0, scale, cols, going_on)
        self._drawn[wid] = ((key, going_on), bar)
        return bar

    def _draw_lane(
        self,
        wid: str,
        lane: Lane,
        t0: float,
        scale: float,
        cols: int,
        going_on: list[tuple[float, float, str]],
    ) -> Text:
        cells = Cells(t0, scale, cols)
        t1 = t0 + cols * scale
        i = bisect.bisect_left(lane.ends, t0)
        failed_style = f"bold {outcome_style(self, 'failed')}"
        styles: dict[str, str] = {}
        quick: dict[str, list[float]] = {}
        """outcome -> seconds of setup, call, teardown per cell, of the tests inside a cell."""
        index = PHASE_INDEX
        failing = ev.FAILING
        chosen = self.selected
        per_second = 1.0 / scale
        for test in lane.tests[i:]:
            phases = test.phases
            begin = phases[0].start if phases else test.ts - test.duration
            if begin > t1:
                continue
            outcome = test.outcome
            if phases and test is not chosen and outcome not in failing and begin >= t0:
                # zoomed out, most tests fill part of one cell: their phases are summed per
                # cell in a flat list (the general path below costs several times as much,
                # at 100,000s of tests a redraw)
                c = int((begin - t0) * per_second)
                if c < cols and int((test.ts - t0) * per_second) == c:
                    sums = quick.get(outcome)
                    if sums is None:
                        sums = quick[outcome] = [0.0] * (3 * cols)
                    c *= 3
                    # (the time between its phases left out: a passing test's reports take
                    # microseconds; a failing one's, which may take long, is drawn below)
                    for phase in phases:
                        sums[c + index.get(phase.when, 1)] += phase.dur + 1e-9
                    continue
            style = styles.get(outcome)
            if style is None:
                style = styles[outcome] = outcome_style(self, outcome)
            selected = test is chosen
            if selected:
                style = SELECTED + style
            if not phases:
                cells.add(begin, test.ts, (CALL, style))
            last = len(phases) - 1
            for p, phase in enumerate(phases):
                end = phase.start + phase.dur
                if p < last and phases[p + 1].start > end:
                    # until the next phase: pytest making this one's report (a failure's
                    # text) is the test's time, drawn as the phase it reports
                    end = phases[p + 1].start
                if phase.outcome in ev.FAILING:
                    key = (FAILED, SELECTED + failed_style if selected else failed_style)
                    cells.add(phase.start, end, key)
                    cells.mark(phase.start, end, key)
                else:
                    cells.add(phase.start, end, (PHASE_CHAR.get(phase.when, CALL), style))
        for outcome, sums in quick.items():
            cells.add_sums(sums, outcome_style(self, outcome))
        wait_style = {LOCK: colour(self, "warning"), CONTAINER: colour(self, "accent")}
        # the test in progress, under the waits (they happen in its setup)
        for a, b, kind in going_on:
            if kind in PHASE_OF and b >= t0 and a <= t1:
                cells.add(a, b, (kind, state_style(self, PHASE_OF[kind])))
        for a, b, kind in lane.waits + [span for span in going_on if span[2] in wait_style]:
            if b >= t0 and a <= t1:
                cells.take(a, b, SETUP)
                cells.add(a, b, (kind, wait_style[kind]))
        if self.ingest is not None:
            for stall in self.ingest.state.stalls:
                if stall.reason == "stall" and stall.sample == 1 and t0 <= stall.ts <= t1:
                    if stall.w != wid:
                        continue
                    cells.mark(stall.ts, stall.ts, (STALL, f"bold {colour(self, 'error')}"))
        return cells.text()

    # --------------------------------------------------------------- actions

    def _lane_tests(self) -> list[ev.TestFinished]:
        ids = self.lane_ids()
        if not ids:
            return []
        self.lane_index = max(0, min(self.lane_index, len(ids) - 1))
        return self.lanes.get(ids[self.lane_index], Lane()).tests

    def action_select(self, delta: int) -> None:
        tests = self._lane_tests()
        if not tests:
            return
        if self.selected in tests:
            index = tests.index(self.selected) + delta
        else:
            index = 0 if delta > 0 else len(tests) - 1
        self.selected = tests[max(0, min(index, len(tests) - 1))]
        self._keep_visible(self.selected)
        self.refresh()

    def action_lane(self, delta: int) -> None:
        ids = self.lane_ids()
        if not ids:
            return
        when = test_start(self.selected) if self.selected else None
        self.lane_index = max(0, min(self.lane_index + delta, len(ids) - 1))
        first, shown, _ = self.window(len(ids))
        if self.lane_index < first:
            self.first_lane = self.lane_index
        elif self.lane_index >= first + shown:
            self.first_lane = self.lane_index - shown + 1
        else:
            self.first_lane = first
        tests = self._lane_tests()
        if tests and when is not None:
            starts = [test_start(t) for t in tests]
            self.selected = tests[min(range(len(tests)), key=lambda k: abs(starts[k] - when))]
        elif tests:
            self.selected = tests[0]
        self.refresh()

    def action_open(self) -> None:
        if self.selected is not None:
            self.post_message(self.TestSelected(self.selected))

    def action_zoom(self, factor: float) -> None:
        scale = self.scale()
        if self.fit:
            self.start_at = 0.0
        self.fit = False
        self.zoom = max(0.005, scale * factor)
        if self.selected is not None:
            self._keep_visible(self.selected)
        self.refresh()

    def action_scroll_time(self, share: float) -> None:
        if self.fit:
            self.fit = False
            self.zoom = self.scale()
        self.follow = False
        cols = max(1, self.size.width - LABEL)
        self.start_at = max(0.0, self.start_at + share * cols * self.zoom)
        self.refresh()

    def action_fit(self) -> None:
        self.fit = True
        self.follow = False
        self.refresh()

    def action_follow(self) -> None:
        if self.fit:
            self.zoom = self.scale()
        self.fit = False
        self.follow = True
        self.refresh()

    def _keep_visible(self, test: ev.TestFinished) -> None:
        if self.fit:
            return
        start, _ = self._span()
        cols = max(1, self.size.width - LABEL)
        left = test_start(test) - start
        if not self.start_at <= left <= self.start_at + cols * self.zoom * 0.9:
            self.follow = False
            self.start_at = max(0.0, left - cols * self.zoom * 0.2)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self._scroll_lanes(1)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._scroll_lanes(-1)

    def _scroll_lanes(self, delta: int) -> None:
        first, _, _ = self.window(len(self.lane_ids()))
        self.first_lane = max(0, first + delta)
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        x, y = event.x, event.y
        ids = self.lane_ids()
        first, _, height = self.window(len(ids))
        lane_at = first + (y - 1) // height if y >= 1 else -1
        if not 0 <= lane_at < len(ids) or x < LABEL:
            return
        self.lane_index = lane_at
        start, _ = self._span()
        when = start + self.left_edge() + (x - LABEL) * self.scale()
        for test in self.lanes.get(ids[lane_at], Lane()).tests:
            if test_start(test) <= when <= test.ts:
                self.selected = test
                self.post_message(self.TestSelected(test))
                break
        self.refresh()


def _fmt_offset(seconds: float, decimals: int = 0) -> str:
    """Seconds into the run, all labels of one axis in the same precision."""
    if seconds < 60:
        return f"{seconds:.{decimals}f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}"
