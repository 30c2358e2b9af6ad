"""The top of the dashboard: run, status, elapsed, progress with counts, ETA, source line."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import events
from textual.widgets import Static

from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.palette import (
    LEVEL_VARIABLE,
    STATUS_VARIABLE,
    TONE_CLASSES,
    colour,
    outcome_style,
)
from testmon_live.tui.dashboard.widgets.fit_lines import fit_lines
from testmon_live.tui.reports.formatting import fmt_duration

COUNTED = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


class RunHeader(Static):
    """Three lines: what run and how it stands; the progress bar; what the source says
    (on more lines when it needs them: it is never cut)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    _ingest: Ingest | None = None
    """The ingest last drawn from (a resize draws it again)."""

    def refresh_from(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self.update(self.build(ingest, max(20, self.size.width or 80)))

    def on_resize(self, event: events.Resize) -> None:
        """The bar is as wide as the screen: redrawn also when nothing else changes."""
        if self._ingest is not None:
            with self._ingest.lock:
                self.refresh_from(self._ingest)

    def build(self, ingest: Ingest, width: int) -> Text:
        state = ingest.state
        status = ingest.run_status()
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(state.run_id or ingest.label or "no run", style="bold")
        text.append("  ")
        text.append(f" {status} ", style=f"bold reverse {colour(self, STATUS_VARIABLE[status])}")
        elapsed = state.wall(ingest.now()) if state.header else 0.0
        text.append(f"  elapsed {fmt_duration(elapsed)}")
        workers = len(state.active_workers())
        text.append(f"  workers {workers}")
        eta = ingest.eta()
        if eta is not None:
            text.append(f"  ETA ~{fmt_duration(eta)}")
        if ingest.replay_now is not None and ingest.path is not None and status == "running":
            text.append("  (replay)")
        text.append("\n")
        text.append_text(self._progress(ingest, width))
        text.append("\n")
        level = ingest.status_level
        tone = colour(self, LEVEL_VARIABLE.get(level, "foreground"))
        said = Text(ingest.status_text, style=tone)
        text.append_text(fit_lines(said, width - 2))  # whole, in phrases: the header grows
        return text

    def _progress(self, ingest: Ingest, width: int) -> Text:
        state = ingest.state
        outcomes = state.outcomes
        done = state.tests_done
        expected = max((w.collected or 0 for w in state.workers.values()), default=0)
        if state.header is not None and state.header.dist == "each":
            expected *= max(1, len(state.active_workers()))
        if ingest.run_status() == "finished":
            expected = done  # what ran is the run; an interrupted one shows what it left
        total = max(expected, done, 1)
        counts = Text()
        for name in COUNTED:
            n = outcomes.get(name, 0)
            if n or name in ("passed", "failed"):
                counts.append(f" {n} {name}", style=outcome_style(self, name))
        counts.append(f"  {done}/{expected or '?'}")
        cells = max(10, width - len(counts.plain) - 2)
        bar = Text()
        used = 0
        counted = 0
        for name in COUNTED:
            n = outcomes.get(name, 0)
            if not n:
                continue
            counted += n
            upto = max(used + 1, round(cells * counted / total))  # every outcome seen shows
            upto = min(upto, cells)
            bar.append("█" * (upto - used), style=outcome_style(self, name))
            used = upto
        bar.append("░" * max(0, cells - used), style=colour(self, "foreground-muted"))
        return bar + counts
