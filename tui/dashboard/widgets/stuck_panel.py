"""Stuck threads: stalls with every thread's stack and verdict, unresponsive workers, and
crashes with the test that was running.

The frames of the machinery every stack runs through (pytest, pluggy, xdist, execnet, the
standard library's threading, the monitor's own: :func:`framework_frame`) are folded; `f`
shows every frame. Paths read from the rootdir, ``site-packages/`` or ``<stdlib>/``.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from testmon_live.plugin import events as ev
from testmon_live.plugin.findings import first_at_words
from testmon_live.plugin.probes.stacks import frame_text, framework_frame
from testmon_live.plugin.state import RunState, StallRecord
from testmon_live.plugin.words import exit_words
from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour
from testmon_live.tui.dashboard.widgets.fit_lines import fit_lines
from testmon_live.tui.reports.formatting import fmt_duration
from testmon_live.tui.reports.model import frame_root

EMPTY = "nothing stuck: no stalls, unresponsive workers or crashes in this run"
FRAMES_SHOWN = 6
INNER_FRAMES = 3
"""Innermost frames shown whoever's code they are; further out, only the project's own."""


class StuckScroll(VerticalScroll):
    """The Stuck tab's scroller: it has the keys while the tab is shown."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "all_frames", "all frames"),
    ]

    def action_all_frames(self) -> None:
        panel = self.query_one(StuckPanel)
        panel.all_frames = not panel.all_frames


class StuckPanel(Static):
    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    all_frames = reactive(False)
    """Show every frame, the framework's too, and every frame of a long stack."""

    _root = ""
    """The run's rootdir: frames are shown relative to it (never to the viewer's cwd)."""
    _ingest: Ingest | None = None

    def refresh_from(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self.update(fit_lines(self.build(ingest), self.content_size.width or 80))

    def on_resize(self, event: events.Resize) -> None:
        """Long lines break in phrases at this width: drawn again when it changes."""
        if self._ingest is not None:
            with self._ingest.lock:
                self.refresh_from(self._ingest)

    def watch_all_frames(self) -> None:
        if self._ingest is not None:
            with self._ingest.lock:
                self.refresh_from(self._ingest)

    def build(self, ingest: Ingest) -> Text:
        state = ingest.state
        self._root = frame_root(state)
        err = colour(self, "error")
        muted = colour(self, "foreground-muted")
        text = Text(no_wrap=True, overflow="ellipsis")
        records = state.stall_records
        dumps = [s for s in state.stalls if s.reason == "dump"]
        if not (records or dumps or state.unresponsive or state.crashes):
            text.append(EMPTY, style=muted)
            return text
        now_stuck = [r for r in records if r.duration is None and _current(state, r)]
        stuck_ids = {id(r) for r in now_stuck}
        over = [r for r in reversed(records) if id(r) not in stuck_ids]
        for record in now_stuck + over:
            self._record(text, record, id(record) in stuck_ids, ingest.now(), err, muted)
        for dump in dumps:
            text.append("stacks of ", style=f"bold {err}")
            text.append(f"{dump.w} ", style="bold")
            text.append(f"asked for during {dump.phase} of {dump.test or '?'}\n")
            for thread in dump.threads:
                self._thread(text, thread, muted)
        for spell in state.spells:
            word = "recovered" if spell.recovered is not None else "UNRESPONSIVE"
            text.append(f"{word} ", style=f"bold {err}")
            text.append(
                f"{spell.w}: no heartbeat for {fmt_duration(spell.silent)}"
                f" during {spell.test or '?'}\n"
            )
        for crash in state.crashes:
            text.append("CRASHED ", style=f"bold {err}")
            text.append(f"{crash.w}: {crash.error}")
            if crash.test:
                text.append(f" while running {crash.test}")
            text.append(f" ({exit_words(crash)})")
            view = state.workers.get(crash.w)
            if view is not None and view.replaced_by:
                text.append(f"; {view.replaced_by} replaced it")
            text.append("\n")
        return text

    def _record(
        self, text: Text, record: StallRecord, now: bool, clock: float, err: str, muted: str
    ) -> None:
        first = record.first
        word = "STALLED NOW " if now else "stalled "
        if record.reason == "unresponsive":
            word = "UNRESPONSIVE NOW " if now else "unresponsive "
        text.append(word, style=f"bold {err}")
        text.append(f"{record.w} ", style="bold")
        if record.duration is not None:
            total, at = fmt_duration(record.duration), fmt_duration(first.elapsed)
            took = f"ran {total} in all (stalled at {at})"
        else:
            elapsed = record.elapsed
            if now:  # the phase goes on: its time so far, not at the latest sample
                elapsed = max(elapsed, clock - (first.ts - first.elapsed))
            took = f"for {fmt_duration(elapsed)}" + ("" if now else " (never ended)")
        text.append(
            f"{first.phase} of {first.test or '?'} {took}"
            + (f" (fixture {first.fixture})" if first.fixture else "")
            + "\n"
        )
        # where it spent its time, as the summary and the report tell it (while it goes on,
        # where the latest sample found it), its first place after it when that differs
        place = record.at_place
        if place.location:
            left = record.left_from
            text.append(f"    at {place.location}")
            text.append(f" ({first_at_words(left, place.location)})\n" if left else "\n")
        latest = record.threads
        for thread in place.threads:  # as sampled there: what the location line says
            self._thread(text, thread, muted)
            later = latest.get(thread.ident)
            if later is not None and later.frames[-1:] != thread.frames[-1:]:
                then = later.verdict + (f": {later.detail}" if later.detail else "")
                text.append(f"      later: {then}\n", style=muted)

    def _thread(self, text: Text, thread: ev.ThreadStack, muted: str) -> None:
        verdict = thread.verdict + (f": {thread.detail}" if thread.detail else "")
        # the name as every view shows it: an unnamed one already reads "thread 0x..."
        text.append(f"  {thread.name} ", style="bold")
        if thread.verdict == "idle":  # a pool or reader thread waiting for work
            text.append(f"{verdict}\n", style=muted)
            return
        text.append(f"{verdict}\n", style=colour(self, "warning"))
        frames = thread.frames
        if self.all_frames:
            shown = list(frames)
        else:
            own = [f for f in frames if not framework_frame(f)]
            inner = len(own) - INNER_FRAMES
            shown = [f for i, f in enumerate(own) if f.user or i >= inner][-FRAMES_SHOWN:]
        for frame in shown:
            where = f"      {frame_text(frame, self._root)}\n"
            text.append(where, style="" if frame.user else muted)
        folded = len(frames) - len(shown)
        if folded:
            text.append(f"      ({folded} more frames of pytest, libraries and the monitor: ")
            text.append("f", style="bold")
            text.append(" shows them)\n", style=muted)
        for task in thread.tasks:
            text.append(f"    task {task.name} {task.coro}", style=muted)
            if task.awaiting:
                text.append(f" awaiting {task.awaiting}", style=muted)
            text.append("\n")


def _current(state: RunState, record: StallRecord) -> bool:
    view = state.workers.get(record.w)
    return view is not None and view.current_stall is record
