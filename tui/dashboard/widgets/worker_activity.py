"""Under the workers table: each worker's recent tests as a strip of pytest's letters, what
the table had no room for, and the run's problems now (stalls, silent workers, lock and
container waits, crashes, failures so far)."""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.widgets import Static

from testmon_live.plugin import events as ev
from testmon_live.plugin.state import RunState, Spell, StallRecord, WorkerView, lock_label
from testmon_live.plugin.words import exit_words
from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.palette import TONE_CLASSES, colour, outcome_style
from testmon_live.tui.dashboard.widgets.fit_lines import fit_lines
from testmon_live.tui.dashboard.widgets.locks_panel import holder_words
from testmon_live.tui.reports.formatting import fmt_duration, shorten_path

LETTER = {
    "passed": ".",
    "failed": "F",
    "error": "E",
    "skipped": "s",
    "xfailed": "x",
    "xpassed": "X",
}
"""A test's outcome as pytest prints it in its progress line (readable without colour)."""
RECENT_KEPT = 400
"""Recent tests kept per worker: more than the widest strip."""
LABEL = 7
FAILURES_NAMED = 3


class WorkerActivity(Static):
    """Recent tests per worker and the run's problems now; keeps its own per-worker index
    of recent tests (built incrementally, never by walking every test at each redraw)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(TONE_CLASSES)

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._ingest: Ingest | None = None
        self._generation = -1
        self._seen = 0
        self.recent: dict[str, deque[ev.TestFinished]] = {}
        self.extra: dict[str, str] = {}
        """Worker -> what the table had no room for (fixture, CPU, RSS at 80 columns)."""

    def refresh_from(self, ingest: Ingest, extra: dict[str, str] | None = None) -> None:
        self._ingest = ingest
        if extra is not None:
            self.extra = extra
        if ingest.generation != self._generation:
            self._generation = ingest.generation
            self.recent = {}
            self._seen = 0
        tests = ingest.state.tests
        for test in tests[self._seen :]:
            lane = self.recent.get(test.w)
            if lane is None:
                lane = self.recent[test.w] = deque(maxlen=RECENT_KEPT)
            lane.append(test)
        self._seen = len(tests)
        width = max(30, self.content_size.width or 80)
        self.update(fit_lines(self.build(ingest, width), width))

    def on_resize(self, event: events.Resize) -> None:
        if self._ingest is not None:
            with self._ingest.lock:
                self.refresh_from(self._ingest)

    def build(self, ingest: Ingest, width: int) -> Text:
        state = ingest.state
        muted = colour(self, "foreground-muted")
        text = Text(no_wrap=True, overflow="ellipsis")
        workers = state.active_workers()
        text.append("recent tests, newest last", style="bold")
        seen = [f"{LETTER[o]} {o}" for o in LETTER if state.outcomes.get(o)]
        text.append(("  " + "  ".join(seen) if seen else "") + "\n", style=muted)
        extra_width = max((len(e) + 2 for e in self.extra.values()), default=0)
        room = max(4, width - LABEL - extra_width)
        for view in workers:
            text.append(f"{view.id:<{LABEL - 1}} "[:LABEL], style=muted)
            if extra_width:
                text.append(f"{self.extra.get(view.id, ''):<{extra_width}}", style=muted)
            for test in list(self.recent.get(view.id, ()))[-room:]:
                text.append(LETTER.get(test.outcome, "?"), style=outcome_style(self, test.outcome))
            text.append("\n")
        text.append("\n")
        self._problems(text, state, ingest.now(), width)
        return text

    def _problems(self, text: Text, state: RunState, now: float, width: int) -> None:
        """The run's problems now, worst first; one line each (of a finished run: what
        it ended with)."""
        err = colour(self, "error")
        warn = colour(self, "warning")
        muted = colour(self, "foreground-muted")
        lines: list[tuple[str, str, str]] = []  # (word, style, what)
        views = {v.id: v for v in state.active_workers()}
        for view in views.values():
            record = view.current_stall
            if record is None:
                continue
            first = record.first
            word = "UNRESPONSIVE" if record.reason == "unresponsive" else "STALLED"
            since = max(record.elapsed, now - (first.ts - first.elapsed))
            at = record.at_place.location  # where its latest sample found it
            where = f" at {at}" if at else ""
            test = first.test or "?"
            lines.append(
                (word, err, f"{view.id} {first.phase} of {test} for {fmt_duration(since)}{where}")
            )
        for lock in state.locks.values():
            for place, wait in enumerate(state.lock_queue(lock.kind, lock.key), 1):
                held = holder_words(state.holder(wait))
                lines.append(
                    (
                        "WAITING",
                        warn,
                        f"{wait.w} on {lock_label(lock.kind, lock.key)} (#{place}) for "
                        f"{fmt_duration(max(0.0, now - wait.ts))}, held by {held}",
                    )
                )
        for view in views.values():
            if view.waiting and view.waiting.startswith("container") and view.crash is None:
                what = view.waiting.partition(":")[2] or "a container"
                lines.append(
                    (
                        "WAITING",
                        warn,
                        f"{view.id} on container {what} for "
                        f"{fmt_duration(max(0.0, now - view.since))}",
                    )
                )
        for crash in state.crashes:
            what = f"{crash.w} while running {crash.test}" if crash.test else crash.w
            replaced = _replaced(state.workers.get(crash.w))
            lines.append(("CRASHED", err, f"{what} ({exit_words(crash)}){replaced}"))
        finished = state.end is not None
        if finished:  # those that ended are the run's problems too (those now are above)
            stalls = [r for r in state.stall_records if r.reason == "stall"]
            if stalls:
                lines.append(("STALLED", warn, _stalls_in_all(stalls)))
            if state.spells:  # every spell, stacks taken or not
                lines.append(("UNRESPONSIVE", warn, _spells_in_all(state.spells)))
        failures = state.failures
        if failures:
            named = ", ".join(_name(t.nodeid, 40) for t in failures[-FAILURES_NAMED:])
            more = f" and {len(failures) - FAILURES_NAMED} more" if len(failures) > 3 else ""
            count = f"{len(failures)} {'in all' if finished else 'so far'}"
            lines.append(("FAILED", err, f"{count}: {named}{more} (7 shows them)"))
        text.append("problems of the finished run" if finished else "problems now", style="bold")
        if not lines:
            text.append("  none: no stalls, waits, crashes or failures\n", style=muted)
            return
        text.append("\n")
        for word, style, what in lines:
            text.append(f"{word:<13}", style=f"bold {style}")
            text.append(f"{what}\n")


def _stalls_in_all(records: list[StallRecord]) -> str:
    """``5 in all, the longest gw2 call of test_x 12.0s (6 shows them)``."""
    r = max(records, key=lambda r: r.duration or r.elapsed)
    longest = f"{r.w} {r.first.phase} of {_name(r.test or '?', 60)}"
    return (
        f"{len(records)} in all, the longest {longest} {fmt_duration(r.duration or r.elapsed)}"
        " (6 shows them)"
    )


def _spells_in_all(spells: list[Spell]) -> str:
    """``2 in all, the longest gw1 silent 5.00s in test_x (6 shows them)``."""
    spell = max(spells, key=lambda s: s.silent)
    where = f" in {_name(spell.test, 60)}" if spell.test else ""
    return (
        f"{len(spells)} in all, the longest {spell.w} silent {fmt_duration(spell.silent)}"
        f"{where} (6 shows them)"
    )


def _name(nodeid: str, width: int) -> str:
    return shorten_path(nodeid, width)


def _replaced(view: WorkerView | None) -> str:
    return f", {view.replaced_by} replaced it" if view is not None and view.replaced_by else ""
