"""One test: its phases, fixtures, worker, failure text, and the tests that ran before it on
the same worker (the usual suspects when it passes alone and fails in the suite)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from testmon_live.plugin import events as ev
from testmon_live.plugin.state import RunState
from testmon_live.plugin.words import exit_words
from testmon_live.tui.reports.formatting import (
    between_phases_words,
    fmt_duration,
    plural,
    rerun_words,
)


def describe(test: ev.TestFinished, state: RunState) -> Text:
    text = Text()
    text.append(f"{test.nodeid}\n", style="bold")
    text.append(f"outcome {test.outcome}  on {test.w}  took {fmt_duration(test.duration)}")
    between = between_phases_words(ev.test_span(test), test.duration)
    if between is not None:  # its worker was busy with it that much longer
        text.append(f", and {between} (pytest making their reports)")
    if test.crashed:
        view = state.workers.get(test.w)
        crash = view.crash if view is not None else None
        how = f": {exit_words(crash)}" if crash is not None else ""
        then = f"; {view.replaced_by} replaced it" if view is not None and view.replaced_by else ""
        text.append(f"  (the worker crashed while running it{how}{then})")
    text.append("\n\nphases\n", style="bold")
    for phase in test.phases:
        offset = phase.start - state.started
        text.append(
            f"  {phase.when:<9} {phase.outcome:<8} {fmt_duration(phase.dur):>8}"
            f"  at +{offset:.2f}s\n"
        )
    text.append("\nfixtures\n", style="bold")
    wide = [
        f
        for f in state.fixture_events
        if isinstance(f, ev.FixtureSetup) and f.test == test.nodeid and f.w == test.w
    ]
    for fx in wide:
        text.append(f"  {fx.name:<24} {fx.scope:<8} setup {fmt_duration(fx.dur)}\n")
    for run in test.fixtures:
        text.append(
            f"  {run.name:<24} function setup {fmt_duration(run.setup_dur)}"
            f" teardown {fmt_duration(run.teardown_dur)}"
            + (f"  {run.error}" if run.error else "")
            + "\n"
        )
    if not wide and not test.fixtures:
        text.append("  (none recorded)\n")
    if state.fixture_detail > 0:
        text.append(
            f"  (fixtures quicker than {fmt_duration(state.fixture_detail)} are counted in the "
            "run's fixture totals, not listed here)\n",
            style="dim",
        )
    waits = [
        lock
        for lock in state.lock_events
        if lock.w == test.w and lock.test == test.nodeid and lock.action == "acquired"
    ]
    if waits:
        text.append("\nlocks\n", style="bold")
        for lock in waits:
            text.append(f"  {lock.kind} {lock.key} waited {fmt_duration(lock.waited or 0.0)}\n")
    if test.longrepr or test.message:
        text.append("\nfailure\n", style="bold")
        text.append((test.longrepr or test.message or "") + "\n")
    if test.reruns > 0:
        text.append("\nrerun\n", style="bold")
        text.append(rerun_words(test.reruns, test.rerun_when, test.rerun_time) + "\n")
        if test.rerun_message:
            text.append(test.rerun_message + "\n")
    before = [t for t in state.tests if t.w == test.w and t.ts < test.ts]
    text.append(f"\nran before it on {test.w} ({plural(len(before), 'test')})\n", style="bold")
    for prior in before:  # all of them: the first are as likely polluters as the last
        text.append(f"  {prior.outcome:<8} {prior.nodeid}\n")
    return text


class TestDetailScreen(ModalScreen[None]):
    """A test in detail, over the dashboard; escape closes it."""

    __test__ = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "close"),
        Binding("question_mark,f1", "app.help", "keys", key_display="?"),
    ]

    def __init__(self, test: ev.TestFinished, state: RunState) -> None:
        super().__init__()
        self.test = test
        self.body = describe(test, state)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(self.body, id="detail-text")
        yield Footer()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
