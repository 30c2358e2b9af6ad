"""How parallel the run was: busy workers over time, utilisation, parallel efficiency, and
per worker where the time went (call, setup, teardown, reports, lock wait, container wait,
idle),
and, once the run is over, its tail in words (below full width, who held it, the idle
worker-seconds, the wall time had the straggler started first)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.widgets import Static

from testmon_live.plugin.findings import tail_parts
from testmon_live.plugin.state import RunState
from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour
from testmon_live.tui.dashboard.widgets.fit_lines import fit_lines
from testmon_live.tui.dashboard.widgets.timeline import test_start
from testmon_live.tui.predict.whatif import next_run_line
from testmon_live.tui.reports.formatting import fmt_duration, fmt_percent

BLOCKS = " ▁▂▃▄▅▆▇█"
CHART_ROWS = 4
PARTS = (
    ("call", "█", "success"),
    ("setup", "▒", "primary"),
    ("teardown", "░", "primary"),
    ("reports", "▓", "secondary"),
    ("lock wait", "≈", "warning"),
    ("container wait", "▚", "accent"),
    ("idle", "·", "foreground-muted"),
)
REPORTS_SHOWN = 0.005
"""Share of the workers' time from which the time between a test's phases (pytest making a
phase's report: a failure's text) is a part of its own in the breakdown."""


def busy_over_time(state: RunState, start: float, end: float, buckets: int) -> list[float]:
    """Average number of workers running a test in each of ``buckets`` slices of the run
    (the tests in progress up to ``end`` while the run goes on)."""
    span = max(1e-9, end - start)
    width = span / buckets
    busy = [0.0] * buckets
    spans = [(test_start(test), test.ts) for test in state.tests]
    if state.end is None:
        for view in state.workers.values():
            going = view.open_phases(end)
            if going:
                spans.append((going[0][1], going[-1][2]))
    for begin, finish in spans:
        a = max(start, begin)
        b = min(end, finish)
        if b <= a:
            continue
        first = int((a - start) / width)
        last = min(buckets - 1, int((b - start) / width))
        for k in range(first, last + 1):
            lo = start + k * width
            overlap = min(b, lo + width) - max(a, lo)
            if overlap > 0:
                busy[k] += overlap / width
    return busy


def breakdown(
    state: RunState, wall: float, now: float | None = None
) -> dict[str, dict[str, float]]:
    """worker -> part -> seconds, the parts of the run's ``wall`` time: a worker's idle
    time includes the time before it started and after xdist shut it down; ``reports``
    the time between its finished tests' phases (pytest making a phase's report). With
    ``now``, while the run goes on, the test in progress counts up to now (a wait going on,
    too)."""
    if state.end is not None:
        now = None
    waits: dict[str, dict[str, float]] = {}
    for event in state.lock_events:
        if event.action != "wait" and event.waited:  # granted or not, a wait is a wait
            parts = waits.setdefault(event.w, {})
            parts["lock wait"] = parts.get("lock wait", 0.0) + event.waited
    for box in state.containers.values():
        if box.owner and box.ready is not None and box.created is not None:
            parts = waits.setdefault(box.owner, {})
            parts["container wait"] = parts.get("container wait", 0.0) + box.ready - box.created
    if now is not None:
        for stats in state.locks.values():
            for wait in stats.waiting.values():
                parts = waits.setdefault(wait.w, {})
                parts["lock wait"] = parts.get("lock wait", 0.0) + max(0.0, now - wait.ts)
        for box in state.containers.values():
            starting = box.ready is None and box.state in ("created", "running")
            if box.owner and box.created is not None and starting:
                parts = waits.setdefault(box.owner, {})
                waited = max(0.0, now - box.created)
                parts["container wait"] = parts.get("container wait", 0.0) + waited
    out: dict[str, dict[str, float]] = {}
    for worker in state.active_workers():
        extra = waits.get(worker.id, {})
        locked = extra.get("lock wait", 0.0)
        contained = extra.get("container wait", 0.0)
        going = worker.open_time(now) if now is not None else {}
        # waits happen inside setup: take them out of it so the parts add up
        setup = max(0.0, worker.setup_time + going.get("setup", 0.0) - locked - contained)
        idle = max(0.0, wall - worker.busy_at(now))
        out[worker.id] = {
            "call": worker.call_time + going.get("call", 0.0),
            "setup": setup,
            "teardown": worker.teardown_time + going.get("teardown", 0.0),
            "reports": worker.reporting_time,
            "lock wait": locked,
            "container wait": contained,
            "idle": idle,
        }
    return out


class ParallelismPanel(Static):
    """Busy workers over time, utilisation, efficiency and per-worker time breakdown."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    _ingest: Ingest | None = None
    """The ingest last drawn from (a resize draws it again)."""

    def refresh_from(self, ingest: Ingest) -> None:
        self._ingest = ingest
        width = max(40, self.content_size.width or 80)
        self.update(fit_lines(self.build(ingest, width), width))

    def on_resize(self, event: events.Resize) -> None:
        """The chart is as wide as the panel: drawn again once the panel has its size (a tab
        is drawn before it is laid out) and whenever the screen is resized."""
        if self._ingest is not None:
            with self._ingest.lock:
                self.refresh_from(self._ingest)

    def build(self, ingest: Ingest, width: int) -> Text:
        state = ingest.state
        muted = colour(self, "foreground-muted")
        now = ingest.now()
        wall = state.wall(now)
        slots = state.slots()
        text = Text(no_wrap=True, overflow="ellipsis")
        busy_sum = state.test_time_at(now)
        utilisation = busy_sum / (slots * wall) if wall > 0 else 0.0
        text.append("utilisation ", style="bold")
        text.append(fmt_percent(min(1.0, utilisation)))
        text.append("   parallel efficiency ", style="bold")
        text.append(fmt_percent(state.efficiency(now)))
        text.append(f"   {slots} worker slots, wall {fmt_duration(wall)}", style=muted)
        text.append(f", test time {fmt_duration(busy_sum)}\n", style=muted)
        cols = max(10, width - 8)
        if wall > 0:
            series = busy_over_time(state, state.started, state.started + wall, cols)
            text.append(f"busy workers over time (max {slots})\n", style=muted)
            for row in range(CHART_ROWS, 0, -1):
                label = f"{slots * row / CHART_ROWS:>5.1f} " if row in (CHART_ROWS, 1) else " " * 6
                text.append(label, style=muted)
                line = []
                for value in series:
                    level = value / slots * CHART_ROWS - (row - 1)
                    line.append(BLOCKS[max(0, min(8, round(level * 8)))])
                text.append("".join(line), style=colour(self, "primary"))
                text.append("\n")
            text.append(" " * 6 + "0" + " " * (cols - 1 - len(fmt_duration(wall))))
            text.append(fmt_duration(wall) + "\n", style=muted)
        text.append("\nwhere each worker's time went\n", style="bold")
        split = breakdown(state, wall, now)
        # the time between phases as a part of its own only where it is worth a glance
        reports = sum(parts["reports"] for parts in split.values())
        worth = reports >= REPORTS_SHOWN * slots * wall
        shown = [part for part in PARTS if part[0] != "reports" or worth]
        legend = Text("        ")
        for name, ch, variable in shown:
            legend.append(f"{ch} {name}  ", style=colour(self, variable))
        text.append_text(legend)
        text.append("\n")
        bar_cells = max(10, width - 34)
        for wid, parts in split.items():
            view = state.workers[wid]
            total = sum(parts[name] for name, _ch, _variable in shown) or 1.0
            text.append(f"{wid:<7} ")
            used = 0
            for name, ch, variable in shown:
                cells = round(bar_cells * parts[name] / total)
                cells = min(cells, bar_cells - used)
                text.append(ch * cells, style=colour(self, variable))
                used += cells
            text.append(" " * (bar_cells - used))
            busy = state.busy_share(view, now)
            text.append(f" busy {fmt_percent(busy):>4}", style=muted)
            text.append(f" call {fmt_duration(parts['call'])}\n", style=muted)
        tail = state.tail()
        if tail is not None:
            text.append("\nthe tail: ", style="bold")
            said = tail_parts(tail, fmt_duration)
            text.append(";\n  ".join(said) + "\n", style=colour(self, "warning"))
        next_run = next_run_line(state, ingest.path)
        if next_run is not None:
            text.append(f"\n{next_run}\n", style=muted)
        return text
