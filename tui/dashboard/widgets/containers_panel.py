"""Containers: who started each, who used it, how long start-up and readiness took, how it
ended (or that it leaked)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.widgets import Static

from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour
from testmon_live.tui.reports.formatting import first_line, fmt_duration, plural

EMPTY = "no container events in this run (the containers probe records testcontainers, podman)"
ENGINE_WORDS = ("container engine", "docker", "podman", "testcontainers")
"""A skip reason with one of these says the test wanted a container engine."""
GET_ONE = (
    "to get one: `scripts/podman-setup` in a testmon-live checkout (Podman serving the "
    'Docker API), then `eval "$(scripts/podman-setup --env)"` before the run; '
    "or start Docker"
)
BAD = frozenset({"exited", "oom-killed", "failed", "leaked"})


class ContainersPanel(Static):
    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    def refresh_from(self, ingest: Ingest) -> None:
        self.update(self.build(ingest))

    def build(self, ingest: Ingest) -> Text:
        state = ingest.state
        muted = colour(self, "foreground-muted")
        if not state.containers:
            text = Text()  # wrapped: words, not a table
            text.append(EMPTY, style=muted)
            self._no_engine(ingest, text)
            return text
        text = Text(no_wrap=True, overflow="ellipsis")
        for view in state.containers.values():
            bad = view.state in BAD
            text.append(f"{view.cid[:12]:<12} ", style="bold")
            text.append(view.image or "?")
            if view.name:
                text.append(f" ({view.name})", style=muted)
            state_style = colour(self, "error" if bad else "success")
            text.append(f"  {view.state}", style=f"bold {state_style}")
            text.append("\n")
            text.append(f"    {view.story()}\n", style=muted)
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

    def _no_engine(self, ingest: Ingest, text: Text) -> None:
        """Tests skipped for want of a container engine: say so, and how to get one."""
        skipped = [
            t
            for t in ingest.state.tests
            if t.outcome == "skipped" and any(w in (t.message or "").lower() for w in ENGINE_WORDS)
        ]
        if not skipped:
            return
        warn = colour(self, "warning")
        text.append("\n\nno container engine: ", style=f"bold {warn}")
        text.append(f"{plural(len(skipped), 'test')} skipped for want of one, e.g. ")
        text.append(f"{skipped[0].nodeid}\n", style="bold")
        text.append(f"  {first_line(skipped[0].message)}\n", style=colour(self, "foreground-muted"))
        text.append(GET_ONE)
