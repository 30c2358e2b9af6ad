"""One line of words per event, for the Events view: what happened, without its JSON.

:func:`summary` is the one place an event becomes a line; the full record stays a key
press away (enter, :mod:`.screens.event_detail`). Text from a log is untrusted: the line
goes through :func:`~testmon_live.tui.reports.document.printable`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testmon_live.plugin import events as ev
from testmon_live.plugin.words import exit_words
from testmon_live.tui.reports.document import printable
from testmon_live.tui.reports.formatting import first_line, fmt_duration, plural

MB = 1024 * 1024


def _run(e: ev.RunStarted) -> str:
    args = " ".join(e.args)
    return f"run {e.run_id} started: {e.workers} workers, pytest {args}".rstrip()


def _end(e: ev.RunFinished) -> str:
    counts = ", ".join(f"{n} {name}" for name, n in e.counts.items() if n)
    return f"run {e.status}: {e.tests} tests in {fmt_duration(e.duration)}" + (
        f" ({counts})" if counts else ""
    )


def _worker_up(e: ev.WorkerStarted) -> str:
    where = f" on {e.host}" if e.host else ""
    return f"worker up, pid {e.pid}{where}"


def _collected(e: ev.WorkerCollected) -> str:
    errors = f", {e.errors} errors" if e.errors else ""
    return f"collected {e.count} tests in {fmt_duration(e.duration)}{errors}"


def _collect_report(e: ev.CollectionReport) -> str:
    said = first_line(e.message)
    what = "failed to collect" if e.outcome == "error" else e.outcome
    return f"{e.nodeid} {what}" + (f": {said}" if said else "")


def _crash(e: ev.WorkerCrashed) -> str:
    running = f" running {e.test}" if e.test else ""
    return f"worker crashed ({exit_words(e)}){running}"


def _test(e: ev.TestFinished) -> str:
    said = first_line(e.message)
    return f"{e.outcome} {e.nodeid} in {fmt_duration(e.duration)}" + (
        f": {said}" if said and e.outcome != "passed" else ""
    )


def _activity(e: ev.Activity) -> str:
    line = f"{e.phase} {e.test or ''}".rstrip()
    if e.fixture:
        line += f" (fixture {e.fixture})"
    if e.waiting:
        line += f", waiting on {e.waiting}"
    return line


def _heartbeat(e: ev.Heartbeat) -> str:
    doing = f"{e.phase} {e.test}" if e.test else e.phase
    return (
        f"heartbeat: {doing} for {fmt_duration(e.elapsed)}, RSS {e.rss // MB}M, "
        f"CPU {e.cpu:.1f}s, {e.threads} threads"
    )


def _fixture(verb: str) -> Callable[[ev.FixtureSetup | ev.FixtureTeardown], str]:
    def words(e: ev.FixtureSetup | ev.FixtureTeardown) -> str:
        error = f": {first_line(e.error)}" if e.error else ""
        return f"{e.scope} fixture {e.name} {verb} in {fmt_duration(e.dur)}{error}"

    return words


def _totals(e: ev.FixtureTotals) -> str:
    count = sum(row.count for row in e.fixtures)
    setup = sum(row.setup_total + row.teardown_total for row in e.fixtures)
    return (
        f"quick fixtures counted: {plural(count, 'execution')} of "
        f"{plural(len(e.fixtures), 'fixture')}, {fmt_duration(setup)} in all"
    )


def _stall(e: ev.Stall) -> str:
    where = f" at {e.location}" if e.location else ""
    return f"{e.reason}: {e.phase} of {e.test or '?'} for {fmt_duration(e.elapsed)}{where}"


def _stall_end(e: ev.StallEnded) -> str:
    return f"stall over after {fmt_duration(e.duration)}: {e.test or '?'}"


def _unresponsive(e: ev.Unresponsive) -> str:
    if e.recovered:
        return f"answers again after {fmt_duration(e.silent)} of silence"
    return f"silent for {fmt_duration(e.silent)}" + (f" in {e.test}" if e.test else "")


def _holder(holder: ev.Holder | None) -> str:
    if holder is None:
        return ""
    who = holder.w or (f"pid {holder.pid}" if holder.pid else holder.detail or "?")
    return f", held by {who}"


def _lock(e: ev.LockEvent) -> str:
    line = f"{e.kind} {e.key}: {e.action}"
    if e.waited is not None:
        line += f" after {fmt_duration(e.waited)}"
    if e.held is not None:
        line += f", held {fmt_duration(e.held)}"
    return line + _holder(e.holder) + (f" ({e.reason})" if e.reason else "")


def _db_wait(e: ev.DbWait) -> str:
    return f"{e.dialect} waited {fmt_duration(e.waited)}{_holder(e.blocked_by)}: " + first_line(
        e.statement
    )


def _migration(e: ev.Migration) -> str:
    revs = f" {e.from_rev or '∅'} → {e.to_rev}" if e.to_rev else ""
    took = f" in {fmt_duration(e.duration)}" if e.duration is not None else ""
    error = f": {first_line(e.error)}" if e.error else ""
    return f"{e.tool} {e.op} {e.action}{revs}{took}{error}"


def _deadlock(e: ev.Deadlock) -> str:
    return "deadlock: " + (
        first_line(e.text) or " → ".join(f"{edge.w} waits for {edge.waits_for}" for edge in e.cycle)
    )


def _container(e: ev.ContainerEvent) -> str:
    line = f"container {e.cid[:12]} {e.action}"
    if e.image:
        line += f" {e.image}"
    if e.dur is not None:
        line += f" in {fmt_duration(e.dur)}"
    if e.exit_code is not None:
        line += f", exit code {e.exit_code}"
    if e.error:
        line += f": {first_line(e.error)}"
    return line


SUMMARIES: dict[type[ev.Event], Callable[[Any], str]] = {
    ev.RunStarted: _run,
    ev.RunFinished: _end,
    ev.WorkerStarted: _worker_up,
    ev.WorkerCollected: _collected,
    ev.CollectionReport: _collect_report,
    ev.WorkerFinished: lambda e: f"worker finished, {e.sent} events sent",
    ev.WorkerDown: lambda e: "worker down",
    ev.WorkerCrashed: _crash,
    ev.WorkerReplaced: lambda e: f"started in place of {e.replaces}",
    ev.TestFinished: _test,
    ev.Activity: _activity,
    ev.Heartbeat: _heartbeat,
    ev.FixtureSetup: _fixture("set up"),
    ev.FixtureTeardown: _fixture("torn down"),
    ev.FixtureTotals: _totals,
    ev.Stall: _stall,
    ev.StallEnded: _stall_end,
    ev.Unresponsive: _unresponsive,
    ev.LockEvent: _lock,
    ev.DbWait: _db_wait,
    ev.Migration: _migration,
    ev.Deadlock: _deadlock,
    ev.DbConnected: lambda e: f"{e.dialect} connection, backend {e.backend}",
    ev.ContainerEvent: _container,
    ev.Notice: lambda e: f"{e.level}: {first_line(e.msg)}",
    ev.CommandReply: lambda e: f"reply to {e.cmd}: " + ("ok" if e.ok else e.error or "failed"),
}
"""Event type -> its line (every type of the catalogue; a test checks none is missing)."""


def tag(event: ev.Event) -> str:
    """The event's type as the log names it (``test``, ``lock``, ``hb``...)."""
    return str(type(event).__struct_config__.tag)


def summary(event: ev.Event) -> str:
    words = SUMMARIES.get(type(event))
    line = words(event) if words is not None else tag(event)
    return printable(" ".join(line.split()))
