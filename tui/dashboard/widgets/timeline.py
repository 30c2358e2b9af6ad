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
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour, outcome_style, state_style

LABEL = 7
CALL, SETUP, TEARDOWN, LOCK, CONTAINER, STALL = "█", "▒", "░", "≈", "▚", "!"
LEGEND = (
    f"{CALL} call  {SETUP} setup  {TEARDOWN} teardown  {LOCK} lock wait  "
    f"{CONTAINER} container wait  {STALL} stall"
)


def test_start(test: ev.TestFinished) -> float:
    if test.phases:
        return test.phases[0].start
    return test.ts - test.duration


PHASE_OF = {SETUP: "setup", CALL: "call", TEARDOWN: "teardown"}


def running(state: RunState, wid: str, now: float) -> list[tuple[float, float, str]]:
    """What ``wid`` is in the middle of at ``now``, as (start, end, character) spans: its
    test's phases so far, and a lock or container wait going on (drawn over its setup)."""
    view = state.workers.get(wid)
    if view is None or view.down or view.crash is not None or view.test_started is None:
        return []
    spans: list[tuple[float, float, str]] = []
    begin = view.test_started
    call = view.call_started
    if view.phase == "setup":
        spans.append((begin, now, SETUP))
    elif view.phase == "call":
        spans += [(begin, view.since, SETUP), (view.since, now, CALL)]
    elif view.phase == "teardown":
        if call is not None:
            spans += [(begin, call, SETUP), (call, view.since, CALL)]
        else:
            spans.append((begin, view.since, SETUP))
        spans.append((view.since, now, TEARDOWN))
    for stats in state.locks.values():
        for wait in stats.waiting.values():
            if wait.w == wid:
                spans.append((wait.ts, now, LOCK))
    for box in state.containers.values():
        starting = box.ready is None and box.state in ("created", "running")
        if box.owner == wid and box.created is not None and starting:
            spans.append((box.created, now, CONTAINER))
    return [(a, max(a, b), ch) for a, b, ch in spans if b > a or b == now]


@dataclass
class Lane:
    """A worker's tests in the order they ended, with their end times for bisecting."""

    tests: list[ev.TestFinished] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    waits: list[tuple[float, float, str]] = field(default_factory=list)
    """(start, end, LOCK or CONTAINER)."""


class Timeline(Widget, can_focus=True):
    """The run as lanes of bars; posts :class:`Timeline.TestSelected` on enter or click."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "select(-1)", "prev test", show=False),
        Binding("right", "select(1)", "next test", show=False),
        Binding("up", "lane(-1)", "lane up", show=False),
        Binding("down", "lane(1)", "lane down", show=False),
        Binding("enter", "open", "open test"),
        Binding("plus,equals_sign", "zoom(0.5)", "zoom in"),
        Binding("minus", "zoom(2)", "zoom out"),
        Binding("shift+left", "scroll_time(-0.25)", "scroll", show=False),
        Binding("shift+right", "scroll_time(0.25)", "scroll", show=False),
        Binding("0", "fit", "fit"),
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

    # ------------------------------------------------------------------ data

    def refresh_from(self, ingest: Ingest) -> None:
        self.ingest = ingest
        if ingest.generation != self._generation:
            self._generation = ingest.generation
            self.lanes = {}
            self._seen_tests = self._seen_locks = self._seen_containers = 0
            self.selected = None
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

    def window(self, lanes: int) -> tuple[int, int]:
        """(first lane shown, rows for lanes) for ``lanes`` lanes."""
        rows = max(1, self.size.height - 3)
        return max(0, min(self.first_lane, lanes - rows)), rows

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
        axis = [" "] * cols
        step = max(8, cols // 6)
        for c in range(0, cols, step):
            label = f"|{_fmt_offset(t0 - start + c * scale)}"
            if c + len(label) <= cols:  # a cut label reads as another time
                axis[c : c + len(label)] = label
        out.append("".join(axis), style=muted)
        out.append("\n")
        ids = self.lane_ids()
        first, rows = self.window(len(ids))
        for wid in ids[first : first + rows]:
            selected_lane = ids and wid == ids[min(self.lane_index, len(ids) - 1)]
            out.append(f"{wid:<{LABEL - 1}} "[:LABEL], style="bold" if selected_lane else muted)
            out.append_text(self._lane(wid, self.lanes.get(wid, Lane()), t0, scale, cols))
            out.append("\n")
        if not ids:
            out.append("no tests have finished yet\n", style=muted)
        out.append(LEGEND, style=muted)
        mode = "fit" if self.fit else f"{scale:.2g}s/cell" + (" follow" if self.follow else "")
        out.append(f"  [{mode}]", style=muted)
        if len(ids) > rows:
            last = min(first + rows, len(ids))
            out.append(f"  lanes {first + 1}-{last} of {len(ids)} (↑↓, wheel)", style=muted)
        return out

    def _lane(self, wid: str, lane: Lane, t0: float, scale: float, cols: int) -> Text:
        chars = [" "] * cols
        styles = [""] * cols
        t1 = t0 + cols * scale

        def paint(a: float, b: float, ch: str, style: str) -> None:
            lo = max(0, int((a - t0) / scale))
            hi = min(cols, max(lo + 1, int((b - t0) / scale + 0.5)))
            for c in range(lo, hi):
                chars[c] = ch
                styles[c] = style

        i = bisect.bisect_left(lane.ends, t0)
        for test in lane.tests[i:]:
            begin = test_start(test)
            if begin > t1:
                continue
            if test.ts - begin < scale and test is not self.selected:
                cell = int((begin - t0) / scale)
                if 0 <= cell < cols and chars[cell] != " " and test.outcome == "passed":
                    continue  # zoomed out: a short passing test adds nothing to a drawn cell
            style = outcome_style(self, test.outcome)
            if test is self.selected:
                style = f"reverse {style}"
            if not test.phases:
                paint(begin, test.ts, CALL, style)
            for phase in test.phases:
                ch = CALL if phase.when == "call" else SETUP if phase.when == "setup" else TEARDOWN
                paint(phase.start, phase.start + phase.dur, ch, style)
        wait_style = {LOCK: colour(self, "warning"), CONTAINER: colour(self, "accent")}
        going_on: list[tuple[float, float, str]] = []
        if self.ingest is not None:
            going_on = running(self.ingest.state, wid, self._span()[1])
        # the test in progress, under the waits (they happen in its setup)
        for a, b, kind in going_on:
            if kind in PHASE_OF and b >= t0 and a <= t1:
                paint(a, b, kind, state_style(self, PHASE_OF[kind]))
        for a, b, kind in lane.waits + [span for span in going_on if span[2] in wait_style]:
            if b >= t0 and a <= t1:
                paint(a, b, kind, wait_style[kind])
        if self.ingest is not None:
            for stall in self.ingest.state.stalls:
                if stall.reason == "stall" and stall.sample == 1 and t0 <= stall.ts <= t1:
                    if stall.w != wid:
                        continue
                    paint(stall.ts, stall.ts, STALL, f"bold {colour(self, 'error')}")
        text = Text()
        for ch, style in zip(chars, styles, strict=True):
            text.append(ch, style=style or None)
        return text

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
        first, rows = self.window(len(ids))
        if self.lane_index < first:
            self.first_lane = self.lane_index
        elif self.lane_index >= first + rows:
            self.first_lane = self.lane_index - rows + 1
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
        first, _ = self.window(len(self.lane_ids()))
        self.first_lane = max(0, first + delta)
        self.refresh()

    def on_click(self, event: events.Click) -> None:
        x, y = event.x, event.y
        ids = self.lane_ids()
        first, _ = self.window(len(ids))
        lane_at = first + y - 1
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


def _fmt_offset(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or seconds == 0 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}"
