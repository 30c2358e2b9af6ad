"""The short section the controller prints at the end of a recorded run."""

from __future__ import annotations

import os
from pathlib import Path

from . import events as ev
from . import findings
from .findings import FIX, dur, first_at_words, race_parts, setup_words, tail_parts
from .state import RunState, SetupRace, StallRecord, lock_label, worker_order
from .words import death_words, exit_words

STALLS_SHOWN = 10
"""Stalls listed in the summary without ``-v``."""


_PLURALS = {
    "test": "tests",
    "wait": "waits",
    "error": "errors",
    "migration": "migrations",
    "app": "apps",
}
"""Words that take an s after any count but 1 (pytest's passed, failed... never do)."""


def _count(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else _PLURALS.get(word, word)}"


_dur = dur


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _race_line(state: RunState, place: str, racing: set[str], names: str) -> str:
    """Racing migrations; schema changes of hand-written runners with their statements;
    and how many migrations failed while the race lasted (likely its doing)."""
    during = [m for m in state.migrations if m.action == "end" and state.race_of(m) == place]
    spans = [m for m in during if m.w in racing]
    failed = sum(1 for m in during if m.error is not None and not state.caught(m))
    meanwhile = f"; {_count(failed, 'migration')} failed meanwhile" if failed else ""
    where = state.race_where(place)
    if not spans or any(m.tool != "ddl" for m in spans):
        return f"concurrent migrations: {names} migrated {where} at once{meanwhile}"
    statements = sorted({m.to_rev for m in spans if m.to_rev})
    return (
        f"concurrent schema changes: {names} on {where} at once "
        f"({'; '.join(statements[:3])}){meanwhile}"
    )


def _test_database_lines(state: RunState) -> list[str]:
    """Django's test databases, created and migrated on every worker: one line for all.
    Each worker's databases (one per alias) and the migrations of each database; a
    ``--reuse-db`` that found nothing to keep counts as the creation it was."""
    created: dict[str, float] = {}
    databases: dict[str, int] = {}
    migrated: dict[str, float] = {}
    most: list[ev.MigrationStep] = []
    reuses = {(m.w, m.url) for m in state.migrations if m.op == "reuse_test_db"}
    reused_made = False
    for m in state.migrations:
        if m.action != "end" or m.tool != "django" or m.error:
            continue
        if m.op == "create_test_db":
            created[m.w] = created.get(m.w, 0.0) + (m.duration or 0.0)
            databases[m.w] = databases.get(m.w, 0) + 1
            reused_made = reused_made or (m.w, m.url) in reuses
        elif m.op == "migrate":
            migrated[m.w] = migrated.get(m.w, 0.0) + (m.duration or 0.0)
            if len(m.steps or ()) > len(most):  # one database's migrations, not summed
                most = list(m.steps or ())
    if len(created) < 2:
        return []
    workers = len(created)
    each = max(databases.values())
    total = sum(created.values())
    if each == 1:
        line = f"test databases: created on each of {workers} workers, {_dur(total / workers)} each"
    else:
        line = (
            f"test databases: {each} created on each of {workers} workers, "
            f"{_dur(total / workers)} per worker"
        )
    line += f" ({_dur(total)} in all)"
    if migrated:
        apps = {step.name.split(".", 1)[0] for step in most}
        per = "each" if each == 1 else "per worker"
        line += f", of which {_dur(sum(migrated.values()) / len(migrated))} {per} migrating"
        if most:
            line += f" ({_count(len(most), 'migration')} of {_count(len(apps), 'app')}"
            line += ")" if each == 1 else " per database)"
    return [line + "; " + _test_database_remedies(state, reused_made)]


def _test_database_remedies(state: RunState, reused_made: bool) -> str:
    """What makes them cheaper: --reuse-db, unless the run used it; then why it created."""
    rest = "--nomigrations, a template database"
    if reused_made:
        return f"--reuse-db found none to keep (kept now for the next run); remedies: {rest}"
    header = state.header
    words = list(header.args) if header is not None else []
    if header is not None:
        words += header.env.get("PYTEST_ADDOPTS", "").split()
    if "--reuse-db" in words and "--create-db" in words:
        return f"--create-db made --reuse-db recreate them (without it kept); remedies: {rest}"
    return f"remedies: --reuse-db, {rest}"


COLLECTION_ERROR = "collection error"
"""The summary line naming a module that failed to collect (pytest counts it an error)."""
COLLECTION_ERRORS_NAMED = 3
"""At most this many of them named (the report lists them all)."""

PASSED_ON_RERUN = "passed on a rerun"
"""The summary line naming the tests that failed and then passed when pytest-rerunfailures
ran them again: the flaky ones."""
FLAKY_NAMED = 3
"""At most this many of them named (the report lists them all)."""


def _mostly_setup(test: ev.TestFinished) -> str:
    """``, 12.5s of it setup`` for a test slow by its setup (a session fixture it happened to
    set up for its worker, pytest-django's test database), else nothing."""
    setup = sum(p.dur for p in test.phases if p.when == "setup")
    return f", {_dur(setup)} of it setup" if setup > 0.5 * test.duration > 0 else ""


def summary_lines(state: RunState, log: Path, problems: list[str], verbosity: int = 0) -> list[str]:
    """A few lines; the last one is the command that opens the run (or says there is no
    log to open: it was deleted while the run wrote it)."""
    lines: list[str] = []
    workers = state.active_workers()
    counts = ", ".join(_count(n, k) for k, n in sorted(state.counts.items()) if n)
    wall = state.wall()
    lines.append(
        f"run {state.run_id}: {_count(state.tests_done, 'test')} on {len(workers)} worker"
        f"{'s' if len(workers) != 1 else ''} in {_dur(wall)}"
        + (f" ({counts})" if counts else "")
        + (f", parallel efficiency {state.efficiency():.0%}" if state.slots() > 1 else "")
    )
    errors = state.collection_errors
    for error in errors[:COLLECTION_ERRORS_NAMED]:
        said = (error.message or "").strip().split("\n", 1)[0]
        lines.append(f"{COLLECTION_ERROR}: {error.nodeid}" + (f": {said}" if said else ""))
    if len(errors) > COLLECTION_ERRORS_NAMED:
        left = len(errors) - COLLECTION_ERRORS_NAMED
        lines.append(f"{COLLECTION_ERROR}s: {left} more (see `testmon report {state.run_id}`)")
    slowest = state.slowest(3 if verbosity > 0 else 1)
    lines.extend(
        f"slowest: {test.nodeid} {_dur(test.duration)} ({test.w}{_mostly_setup(test)})"
        for test in slowest
        if test.duration >= 0.1
    )
    flaky = [test.nodeid for test in state.rerun if test.outcome == "passed"]
    if flaky:  # pytest-rerunfailures: failed, then passed on a rerun
        more = f" and {len(flaky) - FLAKY_NAMED} more" if len(flaky) > FLAKY_NAMED else ""
        lines.append(f"{PASSED_ON_RERUN}: {', '.join(flaky[:FLAKY_NAMED])}{more}")
    for fx in state.fixtures_by_cost()[:3]:
        if not fx.costly_duplicate or (fx.name, fx.scope, fx.baseid) in state.setup_races:
            continue  # a racing setup is said below
        story = state.setup_story((fx.name, fx.scope, fx.baseid), fx.setup_total)
        lines.append(setup_words(fx.scope, fx.name, fx.count, len(fx.workers), story))
    for race in state.setup_races.values():
        lines.append(f"racing setup: {race_line(race)}")
        lines.append(f"  {FIX}")
    for crash in state.crashes:
        how = exit_words(crash)
        view = state.workers.get(crash.w)
        then = f"; {view.replaced_by} replaced it" if view and view.replaced_by else ""
        lines.append(
            f"crash: {crash.w} while running {crash.test or '(between tests)'} ({how}){then}"
        )
    lines.extend(f"deadlock: {d.text}" for d in state.deadlocks[:3])
    if len(state.deadlocks) > 3:
        lines.append(f"deadlocks: {len(state.deadlocks) - 3} more (see the report)")
    contended = sorted(
        (s for s in state.locks.values() if s.waits), key=lambda s: s.total_wait, reverse=True
    )
    if contended:
        top = contended[0]
        waits = sum(s.waits for s in contended)
        lines.append(
            f"lock contention: {len(contended)} lock{'s' if len(contended) != 1 else ''} waited "
            f"on, {_count(waits, 'wait')}, {_dur(sum(s.total_wait for s in contended))} in all; "
            f"most: {lock_label(top.kind, top.key)} "
            f"({_count(top.waits, 'wait')}, {_dur(top.total_wait)})"
        )
    raced = state.races_said_as_setup()
    for place, racing in state.migration_races.items():
        if place in raced:
            continue  # said with the racing setup
        names = ", ".join(sorted(racing, key=worker_order))
        lines.append(_race_line(state, place, racing, names))
    lines.extend(_test_database_lines(state))
    stalls = state.stall_count()
    if stalls:
        lines.append(f"stalls: {stalls} (see `testmon report {state.run_id}`)")
    records = state.stall_records
    shown = records if verbosity > 0 else records[:STALLS_SHOWN]
    for record in shown:
        lines.extend(stall_lines(record))
    if len(records) > len(shown):
        lines.append(f"  ... {len(records) - len(shown)} more (-v lists them all)")
    tail = state.tail()
    if tail is not None:
        lines.append("tail: " + "; ".join(tail_parts(tail)))
    dropped = state.dropped_total()
    if dropped:
        lines.append(f"dropped events: {dropped} (the log says which kinds)")
    lines.extend(container_lines(state))
    lines.extend(f"monitor problem: {p}" for p in problems)
    if log.is_file():
        lines.append(f"log: {_rel(log)}")
        lines.append(f"open: testmon tui {state.run_id}")
    else:  # someone deleted it (or all of .testmon) while the run wrote it
        lines.append(f"no log to open: {_rel(log)} was deleted during the run")
    return lines


def race_line(race: SetupRace) -> str:
    """A racing setup in the terminal's words (the summary's line, the live notice's)."""
    return findings.race_line(race_parts(race))


def container_lines(state: RunState) -> list[str]:
    """Images started on several workers, deaths, shared containers stopped under their
    users, unhealthy ones, and leaks (with the command to clean up)."""
    lines = [
        f"container {img.image} started {img.starts}x on {len(img.workers)} workers, "
        f"{_dur(img.startup_total)} of startup in all"
        for img in state.container_images()[:3]
        if img.per_worker
    ]
    for view in state.dead_containers():
        how = death_words(view.state, view.exit_code)
        running = ", ".join(f"{w} in {t}" for w, t in sorted(view.during.items()))
        lines.append(
            f"container {view.name or view.cid} ({view.image}) died: {how}, without anyone of "
            "this run asking"
            + (f", started by {view.owner}" if view.owner else "")
            + (f"; running then: {running}" if running else "")
        )
    shared = [
        v for v in state.containers.values() if v.shared or (v.stopped_by or v.owner) != v.owner
    ]
    lines.extend(f"container {v.name or v.cid} ({v.image}): {v.story()}" for v in shared[:3])
    for view in state.containers.values():
        if view.stopped_while_used:
            lines.append(
                f"container {view.name or view.cid} ({view.image}) stopped by "
                f"{view.stopped_by or view.owner} "
                f"while {', '.join(view.stopped_while_used)} still ran tests that used it"
            )
        if view.health == "unhealthy":
            lines.append(
                f"container {view.name or view.cid} ({view.image}) unhealthy"
                + (f", started by {view.owner}" if view.owner else "")
            )
    leaks = state.leaked_containers()
    if leaks:
        lines.append(
            f"leaked containers: {len(leaks)} still there at the end: "
            + "; ".join(
                f"{c.name or c.cid} ({c.image}) started by {c.owner or '?'} in "
                f"{c.test or '(no test)'}"
                for c in leaks[:3]
            )
            + (f" and {len(leaks) - 3} more" if len(leaks) > 3 else "")
        )
        label = f"testmon.run={state.run_id}"
        lines.append(f"  remove them: docker rm -f $(docker ps -aq --filter label={label})")
    return lines


def stall_lines(record: StallRecord) -> list[str]:
    """Two lines per stall: where it spent its time and how long; each thread's verdict."""
    first = record.first
    place = record.at_place
    what = "stall" if record.reason == "stall" else "unresponsive"
    took = (
        _dur(record.duration)
        if record.duration is not None
        else f"{_dur(record.elapsed)}+ (never ended)"
    )
    phase = first.phase + (f", fixture {first.fixture}" if first.fixture else "")
    head = f"  {what}: {record.w} {first.test or '(no test)'} ({phase}) {took}"
    if place.location:
        head += f" at {place.location}"
        left = record.left_from
        if left:
            head += f" ({first_at_words(left, place.location)})"
    # Verdicts of the sample that found it there, the moment the location was taken; a
    # thread that did something else at the first sample or by the last one says so.
    began = {thread.ident: thread for thread in first.threads}
    verdicts = []
    for thread in place.threads:
        if thread.verdict == "idle":
            continue
        text = f"{thread.name} {thread.verdict}"
        before = began.get(thread.ident)
        if place is not first and before is not None and before.verdict != thread.verdict:
            text += f" (first {before.verdict})"
        last = record.threads.get(thread.ident)
        if last is not None and last.verdict != thread.verdict:
            text += f" (later {last.verdict})"
        verdicts.append(text)
    return [head, f"    threads: {', '.join(verdicts) or '(none but the runner)'}"]
