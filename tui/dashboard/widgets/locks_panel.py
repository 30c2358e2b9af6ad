"""Locks: who holds what, who waits, how long waits and holds took; migrations, database
statements that waited on a lock, and deadlocks across workers."""

from __future__ import annotations

from collections import defaultdict
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.widgets import Static

from testmon_live.plugin import events as ev
from testmon_live.plugin.dburl import display_url
from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour
from testmon_live.tui.dashboard.widgets.fit_lines import fit_lines
from testmon_live.tui.reports.formatting import first_line, fmt_duration, plural

WAITS_SHOWN = 8
"""Past waits listed per lock (the latest)."""
STEPS_SHOWN = 10
"""Migration steps listed (the slowest of any worker)."""
EMPTY = "no lock events in this run (lock probes record filelock, advisory locks, monitor.lock)"


def holder_words(holder: ev.Holder | None) -> str:
    if holder is None:
        return "unknown holder"
    who = holder.w or (f"pid {holder.pid}" if holder.pid else "another process")
    where = holder.test or holder.fixture or holder.detail
    return f"{who} ({where})" if where else who


class LocksPanel(Static):
    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    _ingest: Ingest | None = None
    """The ingest last drawn from (a resize draws it again)."""

    def refresh_from(self, ingest: Ingest) -> None:
        self._ingest = ingest
        self.update(fit_lines(self.build(ingest), self.content_size.width or 80))

    def on_resize(self, event: events.Resize) -> None:
        """Long lines break in phrases at this width: drawn again when it changes."""
        if self._ingest is not None:
            with self._ingest.lock:
                self.refresh_from(self._ingest)

    def build(self, ingest: Ingest) -> Text:
        state = ingest.state
        warn = colour(self, "warning")
        err = colour(self, "error")
        muted = colour(self, "foreground-muted")
        now = ingest.now()
        text = Text(no_wrap=True, overflow="ellipsis")
        if not (state.locks or state.migrations or state.db_waits or state.deadlocks):
            text.append(EMPTY, style=muted)
            return text
        waited: defaultdict[tuple[str, str], list[ev.LockEvent]] = defaultdict(list)
        for event in state.lock_events:
            if event.action == "failed" or (event.action == "acquired" and event.waited):
                waited[(event.kind, event.key)].append(event)
        for lock in sorted(state.locks.values(), key=lambda s: -s.total_wait):
            text.append(f"{lock.kind} ", style=muted)
            text.append(lock.key, style="bold")
            text.append(
                f"  {lock.acquisitions} acquired, {lock.contended} contended, "
                f"{lock.waits} wait{'s' if lock.waits != 1 else ''} "
                f"({fmt_duration(lock.total_wait)}, max {fmt_duration(lock.max_wait)}), "
                f"longest hold {fmt_duration(lock.longest_hold)}"
            )
            if lock.failures:
                text.append(f", {lock.failures} failed", style=err)
            text.append("\n")
            if lock.holders:
                holders = ", ".join(
                    f"{w} x{n} held {fmt_duration(lock.held_for.get(w, 0.0))}"
                    for w, n in lock.holders.most_common()
                )
                text.append(f"    acquired by {holders}", style=muted)
                if lock.waited_on:
                    blockers = ", ".join(f"{w} x{n}" for w, n in lock.waited_on.most_common())
                    text.append(f"; waited for {blockers}", style=muted)
                text.append("\n")
            for held in lock.held_by.values():
                text.append("    HELD now by ", style=warn)
                text.append(
                    f"{held.w} for {fmt_duration(now - held.ts)}"
                    f" ({held.test or held.fixture or ''})\n"
                )
            queue = state.lock_queue(lock.kind, lock.key)
            for place, wait in enumerate(queue, 1):
                text.append(f"    WAITING #{place} ", style=f"bold {warn}")
                text.append(
                    f"{wait.w} for {fmt_duration(now - wait.ts)} "
                    f"({wait.test or wait.fixture or ''}), "
                    f"held by {holder_words(state.holder(wait))}\n"
                )
            waits = waited[(lock.kind, lock.key)]
            for past in waits[-WAITS_SHOWN:]:
                text.append(f"    {past.w:<6} ", style=muted)
                if past.action == "failed":
                    if past.waited:
                        text.append(f"waited {fmt_duration(past.waited)}, then ")
                    text.append(f"failed: {past.error or '?'}", style=err)
                else:
                    text.append(f"waited {fmt_duration(past.waited or 0.0)}")
                    text.append(f" for {holder_words(state.holder(past))}", style=muted)
                if past.fixture:
                    text.append(f" in {past.fixture}", style=muted)
                text.append("\n")
            if len(waits) > WAITS_SHOWN:
                text.append(f"    ... and {len(waits) - WAITS_SHOWN} earlier waits\n", style=muted)
        groups = state.migration_groups()
        if groups:
            text.append("\nmigrations\n", style="bold")
        unfinished = "running" if state.end is None else "unfinished"
        for group in groups:
            m = group.first
            text.append(f"  {m.w:<6} {m.tool} {m.op}")
            if group.count == 1:
                text.append(f" {m.from_rev or '∅'} → {m.to_rev or '∅'}")
                if not m.finished:
                    text.append(f" {unfinished}")
                elif m.duration is not None:
                    text.append(f" {fmt_duration(m.duration)}")
            else:  # the same one again and again: a schema built per test
                if m.from_rev or m.to_rev:
                    text.append(f" {m.from_rev or '∅'} → {m.to_rev or '∅'}")
                text.append(
                    f" ×{group.count} {fmt_duration(group.total)} in all, "
                    f"max {fmt_duration(group.longest)}"
                )
                if group.errors:
                    text.append(f", {plural(group.errors, 'error')}", style=err)
                if group.caught_errors:
                    text.append(f", {group.caught_errors} caught", style=muted)
                if group.unfinished:
                    text.append(f", {group.unfinished} {unfinished}")
            if m.url:
                schema = f" (schema {m.schema})" if m.schema is not None else ""
                text.append(f"  {display_url(m.url)}{schema}", style=muted)
            # its first error (a group's on lines of their own, under it, their first lines)
            failed = next((r.error for r in group.runs if r.error and not r.caught), None)
            caught = next((r.error for r in group.runs if r.error and r.caught), None)
            gap = "  " if group.count == 1 else "\n" + " " * 9
            if group.count > 1:
                failed = first_line(failed) if failed is not None else None
                caught = first_line(caught) if caught is not None else None
            if failed is not None:
                text.append(gap)
                text.append(failed, style=err)
            if caught is not None and (group.count > 1 or failed is None):
                text.append(gap)  # provoked on purpose: no problem
                text.append(f"{caught} (caught: its test passed)", style=muted)
            text.append("\n")
        steps, more = state.costliest_steps(STEPS_SHOWN)
        if steps:
            text.append("\nslowest migration steps\n", style="bold")
            for step in steps:
                text.append(f"  {step.w:<6} {fmt_duration(step.duration):>8}  ")
                text.append(step.name, style="bold")
                back = ", backwards" if step.backwards else ""
                text.append(f"  ({step.tool} {step.op}{back})\n", style=muted)
            if more:
                text.append(f"  ... and {more} faster steps\n", style=muted)
        if state.db_waits:
            text.append("\ndatabase statements that waited on a lock\n", style="bold")
            for d in state.db_waits[-20:]:
                text.append(f"  {d.w:<6} waited {fmt_duration(d.waited)} {d.dialect}: ")
                text.append(" ".join(d.statement.split()))  # as the driver got it: one line
                blocked_by = state.blocked_by(d)
                if blocked_by is not None:
                    text.append(f"  blocked by {holder_words(blocked_by)}", style=warn)
                text.append("\n")
        for dead in state.deadlocks:
            text.append("\nDEADLOCK ", style=f"bold {err}")
            text.append(
                " → ".join(f"{e.w} holds {e.holds}, waits for {e.waits_for}" for e in dead.cycle)
            )
            text.append("\n")
        return text
