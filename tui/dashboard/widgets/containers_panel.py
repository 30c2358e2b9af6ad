"""Containers: who started each, who used it, how long start-up and readiness took, how it
ended (or that it leaked)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.widgets import Static

from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour
from testmon_live.tui.reports.formatting import fmt_duration

EMPTY = "no container events in this run (the containers probe records testcontainers, podman)"
BAD = frozenset({"exited", "oom-killed", "failed", "leaked"})


class ContainersPanel(Static):
    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    def refresh_from(self, ingest: Ingest) -> None:
        self.update(self.build(ingest))

    def build(self, ingest: Ingest) -> Text:
        state = ingest.state
        muted = colour(self, "foreground-muted")
        text = Text(no_wrap=True, overflow="ellipsis")
        if not state.containers:
            text.append(EMPTY, style=muted)
            return text
        for view in state.containers.values():
            bad = view.state in BAD
            text.append(f"{view.cid[:12]:<12} ", style="bold")
            text.append(view.image or "?")
            if view.name:
                text.append(f" ({view.name})", style=muted)
            state_style = colour(self, "error" if bad else "success")
            text.append(f"  {view.state}", style=f"bold {state_style}")
            text.append("\n")
            owner = view.owner or "?"
            users = ", ".join(sorted(view.users - {owner}))
            text.append(f"    started by {owner}", style=muted)
            if view.fixture or view.test:
                text.append(f" in {view.fixture or view.test}", style=muted)
            if users:
                text.append("; also used by ", style=muted)
                text.append(users, style="bold")
            else:
                text.append("; no other worker used it", style=muted)
            text.append("\n")
            if view.phases:
                steps = ", ".join(f"{k} {fmt_duration(v)}" for k, v in view.phases.items())
                text.append(f"    {steps}")
                if view.ready is not None and view.created is not None:
                    text.append(f"; ready after {fmt_duration(view.ready - view.created)}")
                text.append("\n")
            if view.ports:
                ports = ", ".join(f"{k}→{v}" for k, v in view.ports.items())
                text.append(f"    ports {ports}\n", style=muted)
            if view.wait:
                text.append(f"    waited for: {view.wait}\n", style=muted)
            if view.error or view.exit_code not in (None, 0):
                text.append(
                    f"    {view.error or ''} exit code {view.exit_code}\n",
                    style=colour(self, "error"),
                )
        return text
