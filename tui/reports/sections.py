"""What ``testmon report`` and ``testmon runs`` say, in text, markdown and JSON.

The content is decided once, in :func:`~.model.build_report` (the report model, a plain
dict documented in ``docs/report-json.md``) and :func:`~.run_list.build_runs`. JSON
prints that dict as it is. Text and markdown are rendered from the same dict through one
list of :class:`~.document.Section` (prose lines, bullet lists, tables): :func:`sections`
decides *what* is said and in which order, :func:`~.render_text.render_text` and
:func:`~.render_markdown.render_markdown` only decide how a line, a list or a table looks.
So the three formats cannot disagree.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from testmon_live.plugin.findings import (
    FIX,
    first_at_words,
    holder_words,
    race_parts,
    setup_words,
    tail_parts,
    wait_words,
)
from testmon_live.plugin.state import (
    DUPLICATE_WORTH,
    PER_WORKER_BY_DESIGN,
    Resource,
    SetupRace,
    SetupStory,
    worker_order,
)
from testmon_live.plugin.words import death_words, how_it_ended
from testmon_live.tui.predict.whatif import next_run_words

from .document import Block, Bullets, Code, Column, Line, Prose, Section, Table
from .formatting import (
    first_line,
    fmt_duration,
    fmt_percent,
    fmt_time,
    plural,
    share_bar,
    short_path,
    shorten_nodeid,
)
from .logs import INCOMPLETE
from .model import (
    MIN_SHOWN,
    ContainerRow,
    CrashRow,
    FixtureRow,
    LockRow,
    MigrationErrorRow,
    MigrationRow,
    Report,
    RunInfo,
    SetupRaceRow,
    StallRow,
    pytest_summary,
)
from .run_list import PROBLEMS_FIRST, RunRow, RunsModel

REPORTS_WORTH = 0.05
"""Share of the workers' busy time between test phases from which the Workers section says
so (busy counts it; the phase columns do not)."""

# ------------------------------------------------------------ report sections


def _status_words(run: RunInfo) -> str:
    status = run["status"]
    if status == INCOMPLETE:
        return (
            "incomplete (no end record: pytest was killed or crashed, "
            "or its log could not be written to the end)"
        )
    name = run["exit_name"]
    if name is None:
        return status
    if name == status:
        return f"{status} (exit {run['exit_status']})"
    return f"{status} ({name}, exit {run['exit_status']})"


def _overview(report: Report) -> Section:
    run, totals = report["run"], report["totals"]
    workers = len(report["workers"])
    dist = f", --dist {run['dist']}" if run["dist"] else ""
    lines: list[Line] = [
        (f"{plural(totals['tests'], 'test')}: {totals['summary']}",),
        (
            f"started {fmt_time(run['started'])} · wall {fmt_duration(run['wall'])} · "
            f"{plural(workers, 'worker')}{dist}",
        ),
        (
            f"parallel efficiency {fmt_percent(totals['efficiency'])}: "
            f"{fmt_duration(totals['test_time'])} of test time on "
            f"{plural(totals['slots'], 'worker slot')} × {fmt_duration(run['wall'])} wall",
        ),
    ]
    nxt = report["next_run"]
    if nxt is not None:
        words = next_run_words(
            nxt["workers"],
            nxt["dist"],
            nxt["order"],
            nxt["wall"],
            nxt["recorded_wall"],
            nxt["accounted"],
        )
        lines.append((words,))
    where: list[str] = ["rootdir ", Code(run["rootdir"])]
    if run["git_branch"] or run["git_commit"]:
        commit = (run["git_commit"] or "")[:10]
        where += [" · git ", Code(" @ ".join(p for p in (run["git_branch"], commit) if p))]
    lines.append(tuple(where))
    lines.append(("log ", Code(short_path(run["log"]))))
    title: Line = ("testmon-live run ", Code(run["id"]), f": {_status_words(run)}")
    return Section(title, [Prose(lines)])


_WORKER_COLUMNS = (
    Column("worker", code=True),
    Column("tests", right=True),
    Column("failed", right=True),
    Column("busy", right=True),
    Column("busy share"),
    Column("setup", right=True),
    Column("call", right=True),
    Column("teardown", right=True),
    Column("state"),
)


def _workers_section(report: Report) -> Section | None:
    rows = [
        (
            w["id"],
            str(w["tests"]),
            str(w["failures"]),
            fmt_duration(w["busy"]),
            share_bar(w["busy_share"]),
            fmt_duration(w["setup"]),
            fmt_duration(w["call"]),
            fmt_duration(w["teardown"]),
            w["state"],
        )
        for w in report["workers"]
    ]
    if not rows:
        return None
    note: Line = ("busy share: seconds in tests / wall time of the run",)
    notes = [note]
    busy = sum(w["busy"] for w in report["workers"])
    reports = sum(w["reports"] for w in report["workers"])
    if busy > 0 and reports >= REPORTS_WORTH * busy:
        notes.append(
            (
                f"busy counts each test from its first phase's start to its last one's end: "
                f"{fmt_duration(reports)} of it ({fmt_percent(reports / busy)}) was between "
                "phases, in none: pytest making a phase's report (a failure's text)",
            )
        )
    return Section(("Workers",), [Table(_WORKER_COLUMNS, rows), Prose(notes)])


def _slowest_section(report: Report) -> Section | None:
    columns = (
        Column("duration", right=True),
        Column("setup", right=True),
        Column("call", right=True),
        Column("worker", code=True),
        Column("outcome"),
        Column("test", squeeze="end", code=True),
    )
    # setup apart: a test that set up its worker's session fixtures (pytest-django's
    # test database) is slow by them, not by itself
    rows = [
        (
            fmt_duration(t["duration"]),
            fmt_duration(t["setup"]),
            fmt_duration(t["call"]),
            t["worker"],
            t["outcome"],
            t["nodeid"],
        )
        for t in report["slowest"]
    ]
    return Section(("Slowest tests",), [Table(columns, rows)]) if rows else None


def _fixture_note(fixture: FixtureRow) -> str:
    notes = ["once per worker"] if fixture["duplicated"] else []
    if fixture["errors"]:
        notes.append(plural(fixture["errors"], "error"))
    return ", ".join(notes)


def defined_in(baseid: str) -> str:
    """Where a fixture is defined, from pytest's ``baseid``: a module or a class as it is,
    a folder's ``conftest.py``; none is the rootdir's ``conftest.py`` or a plugin."""
    if not baseid:
        return "conftest.py or a plugin"
    if "::" in baseid or baseid.endswith(".py"):
        return baseid
    return f"{baseid}/conftest.py"


def _fixtures_section(report: Report) -> Section | None:
    fixtures = report["fixtures"]
    if not fixtures:
        return None
    columns: tuple[Column, ...] = (
        Column("fixture", squeeze="start", code=True),
        Column("scope"),
        Column("runs", right=True),
        Column("workers", right=True),
        Column("setup total", right=True),
        Column("max", right=True),
        Column("teardown", right=True),
        Column("note"),
    )
    rows: list[tuple[str, ...]] = [
        (
            f["name"],
            f["scope"],
            str(f["count"]),
            str(len(f["workers"])),
            fmt_duration(f["setup_total"]),
            fmt_duration(f["setup_max"]),
            fmt_duration(f["teardown_total"]),
            _fixture_note(f),
        )
        for f in fixtures
    ]
    if any(f["namesakes"] for f in fixtures):  # two fixtures of one name: which is which
        columns += (Column("defined in", squeeze="end", code=True),)
        rows = [
            (*row, defined_in(f["baseid"]) if f["namesakes"] else "")
            for row, f in zip(rows, fixtures, strict=True)
        ]
    blocks: list[Block] = [Table(columns, rows)]
    raced = {(r["fixture"], r["scope"], r["baseid"]) for r in report["setup_races"]}
    duplicated: list[Line] = [
        (_setup_words(f),)
        for f in fixtures
        if f["duplicated"]
        and f["setup_total"] >= DUPLICATE_WORTH
        and f["name"] not in PER_WORKER_BY_DESIGN  # each worker's own: no duplicate
        and (f["name"], f["scope"], f["baseid"]) not in raced  # said under racing setup
    ]
    if duplicated:
        blocks.append(Bullets(duplicated, warn=True))
    blocks.extend(_omitted(report["omitted"]["fixtures"], "fixture"))
    quick = report["omitted"]["quick_fixtures"]
    if quick:
        under = fmt_duration(MIN_SHOWN)
        blocks.append(
            Prose([(f"{plural(quick, 'fixture')} under {under} of setup in all not shown",)])
        )
    return Section(("Fixtures by setup time",), blocks)


def _setup_words(f: FixtureRow) -> str:
    story = SetupStory(
        work=f["work_total"],
        waited=f["lock_wait_total"],
        lock=f["lock"],
        ran_once_on=f["ran_once_on"],
        once_work=f["once_work"],
        waiters=f["waiters"],
    )
    return setup_words(f["scope"], f["name"], f["count"], len(f["workers"]), story, fmt_duration)


def _omitted(n: int, what: str) -> list[Block]:
    """The line that counts what ``--top`` left out."""
    if n <= 0:
        return []
    return [Prose([(f"{plural(n, what)} more not shown (--top N shows more)",)])]


def _top_table(
    columns: tuple[Column, ...], rows: Sequence[Sequence[str]], left_out: int, what: str
) -> list[Block]:
    """The ``--top`` costliest as a table, and the line that counts the rest."""
    return [Table(columns, rows), *_omitted(left_out, what)]


def _collection_errors_section(report: Report) -> Section | None:
    """Modules that failed to collect: pytest counts each as an error, runs none of its
    tests, and (without ``--continue-on-collection-errors``) stops before any test."""
    errors = report["collection_errors"]
    if not errors:
        return None
    columns = (Column("collector", squeeze="end", code=True), Column("message", below=True))
    rows = [(e["nodeid"] or "(the session)", first_line(e["message"])) for e in errors]
    return Section((f"Collection errors ({len(errors)})",), [Table(columns, rows)])


def _failures_section(report: Report) -> Section | None:
    failures = report["failures"]
    if not failures:
        return None
    columns = (
        Column("outcome"),
        Column("test", squeeze="end", code=True),
        Column("worker", code=True),
        Column("phase"),
        Column("message", below=True),
    )
    rows = [
        (
            "CRASHED" if f["crashed"] else f["outcome"].upper(),
            f["nodeid"],
            f["worker"],
            _phase_words(f["phase"], f["reruns"]),
            first_line(f["message"]),
        )
        for f in failures
    ]
    failing = report["totals"]["failing"]
    count = f"{len(failures)} of {failing}" if failing > len(failures) else str(len(failures))
    return Section((f"Failures ({count})",), [Table(columns, rows)])


def _phase_words(phase: str | None, reruns: int) -> str:
    """A failure's phase, and how many attempts before it were run again (``call, 2 reruns``)."""
    if not reruns:
        return phase or ""
    again = f"{reruns} rerun" + ("s" if reruns != 1 else "")
    return f"{phase}, {again}" if phase else again


def _reruns_section(report: Report) -> Section | None:
    """Tests pytest-rerunfailures ran again; those that then passed first (flaky)."""
    reruns = report["reruns"]
    if not reruns:
        return None
    columns = (
        Column("result"),
        Column("test", squeeze="end", code=True),
        Column("worker", code=True),
        Column("reruns", right=True),
        Column("first failure"),
        Column("message", below=True),
    )
    ordered = sorted(reruns, key=lambda r: r["outcome"] != "passed")  # stable: finish order
    rows = [
        (
            "PASSED on rerun" if r["outcome"] == "passed" else r["outcome"].upper(),
            r["nodeid"],
            r["worker"],
            str(r["reruns"]),
            r["phase"] or "",
            first_line(r["message"]),
        )
        for r in ordered
    ]
    flaky = sum(1 for r in reruns if r["outcome"] == "passed")
    title = f"Rerun ({len(reruns)}: {flaky} passed on a rerun)"
    return Section((title,), [Table(columns, rows)])


def _exit_words(crash: CrashRow) -> str:
    """The exit column: the error has a column of its own."""
    return how_it_ended(crash["signal"], crash["exit_code"]) or crash["note"] or "exit unknown"


def _crashes_section(report: Report) -> Section | None:
    columns = (
        Column("worker", code=True),
        Column("test", squeeze="end", code=True),
        Column("exit"),
        Column("replaced by", code=True),
        Column("error", below=True),
    )
    rows = [
        (
            c["worker"],
            c["test"] or "(between tests)",
            _exit_words(c),
            c["replaced_by"] or "-",
            first_line(c["error"]),
        )
        for c in report["crashes"]
    ]
    return Section((f"Worker crashes ({len(rows)})",), [Table(columns, rows)]) if rows else None


def _stall_lines(stall: StallRow) -> list[Line]:
    what = "stalled" if stall["reason"] == "stall" else f"stacks ({stall['reason']})"
    first: list[str] = [Code(stall["worker"]), f" {what} after {fmt_duration(stall['elapsed'])}"]
    if stall["phase"]:
        first.append(f" in {stall['phase']}")
    if stall["fixture"]:
        first += [", fixture ", Code(stall["fixture"])]
    if stall["duration"] is not None:
        first.append(f", {fmt_duration(stall['duration'])} in all")
    lines: list[Line] = [tuple(first)]
    if stall["test"]:
        lines.append(("test ", Code(stall["test"])))
    if stall["location"]:
        at: list[str] = ["at ", Code(stall["location"])]
        if stall["first_location"]:  # a later sample found it where it spent its time
            at.append(f" ({first_at_words(stall['first_location'], stall['location'])})")
        lines.append(tuple(at))
    return lines


_THREAD_COLUMNS = (
    Column("thread", code=True),
    Column("verdict"),
    Column("blocked in", squeeze="start", code=True),
    Column("where", squeeze="start", code=True),
)


def _stalls_section(report: Report) -> Section | None:
    stalls = report["stalls"]
    if not stalls:
        return None
    blocks: list[Block] = []
    for stall in stalls:
        blocks.append(Prose(_stall_lines(stall)))
        rows = [
            (t["name"], t["verdict"], t["detail"] or "", t["where"] or "") for t in stall["threads"]
        ]
        rows += [
            (f"  task {k['name']}", "await", k["awaiting"] or "", k["where"] or "")
            for t in stall["threads"]
            for k in t["tasks"]
        ]
        if rows:
            blocks.append(Table(_THREAD_COLUMNS, rows))
    return Section((_stalls_title(stalls),), blocks)


def _stalls_title(stalls: list[StallRow]) -> str:
    """``Stalls (24)``: the count the summary and the runs list give; stacks taken for
    another reason (an unresponsive spell, a dump on demand) are said apart."""
    reasons = Counter(stall["reason"] for stall in stalls)
    title = f"Stalls ({reasons.pop('stall', 0)})"
    if reasons:
        title += ", and stacks of " + ", ".join(
            f"{n} {_OTHER_STACKS.get(reason, reason)}{'s' if n != 1 else ''}"
            for reason, n in sorted(reasons.items())
        )
    return title


_OTHER_STACKS = {"unresponsive": "unresponsive spell", "dump": "dump"}


def _unresponsive_section(report: Report) -> Section | None:
    columns = (
        Column("worker", code=True),
        Column("silent for", right=True),
        Column("test", squeeze="end", code=True),
        Column("recovered"),
    )
    rows = [
        (u["worker"], fmt_duration(u["silent"]), u["test"] or "", "yes" if u["recovered"] else "no")
        for u in report["unresponsive"]
    ]
    if not rows:
        return None
    return Section(("Unresponsive workers (no heartbeat)",), [Table(columns, rows)])


def _fail_words(lock: LockRow) -> str:
    """Failed acquisitions, with how many were timed-out waits and refused try-locks."""
    if not lock["failures"]:
        return ""
    parts = [f"{n} {what}" for n, what in ((lock["timeouts"], "timed out"),
             (lock["refused"], "refused")) if n]  # fmt: skip
    return f"{lock['failures']} ({', '.join(parts)})" if parts else str(lock["failures"])


def _holders_words(lock: LockRow) -> str:
    return ", ".join(
        holder_words(h["worker"], h["count"], h["held"], fmt_duration) for h in lock["holders"]
    )


def _locks_section(report: Report) -> Section | None:
    locks = report["locks"]
    if not locks:
        return None
    columns = (
        Column("lock", squeeze="end", code=True),
        Column("taken", right=True),
        Column("waited", right=True),
        Column("wait total", right=True),
        Column("wait max", right=True),
        Column("max hold", right=True),
        Column("fail", right=True),
        Column("top holders: time held", squeeze="start"),
    )
    rows = [
        (
            f"{lock['kind']}:{lock['key']}",
            str(lock["acquisitions"]),
            str(lock["waits"]),
            fmt_duration(lock["total_wait"]),
            fmt_duration(lock["max_wait"]),
            fmt_duration(lock["longest_hold"]),
            _fail_words(lock),
            _holders_words(lock),
        )
        for lock in locks
    ]
    at_end: list[Line] = []
    for lock in locks:
        name = Code(f"{lock['kind']}:{lock['key']}")
        at_end += [(name, f" still held by {h['worker']} at the end") for h in lock["held_at_end"]]
        at_end += [(name, f" still awaited by {h['worker']}") for h in lock["waiting_at_end"]]
    blocks = _top_table(columns, rows, report["omitted"]["locks"], "lock")
    if at_end:
        blocks.append(Bullets(at_end, warn=True))
    waits: list[Line] = [
        (
            wait_words(
                worker=w["worker"],
                waited=w["waited"],
                holder=w["holder"],
                fixture=w["fixture"],
                test=w["test"],
                outcome=w["outcome"],
                lock=w["lock"],
                fmt=fmt_duration,
            ),
            *(("; lock ", Code(w["lock"])) if w["holder"] else ()),
        )
        for w in report["lock_waits"]
    ]
    if waits:
        blocks.append(Prose([("who kept whom waiting, longest first:",)]))
        blocks.append(Bullets(waits))
        blocks.extend(_omitted(report["omitted"]["lock_waits"], "wait"))
    note: Line = (
        "taken: acquisitions; waited: every wait, granted or not (timed out or failed, with "
        "its time); fail: failed acquisitions, refused try-locks included",
    )
    blocks.append(Prose([note]))
    return Section(("Locks",), blocks)


def _migration_result(row: MigrationRow) -> str:
    if row["count"] > 1:
        said = [
            plural(n, what)
            for n, what in (
                (row["errors"], "error"),
                (row["caught_errors"], "caught error"),
                (row["unfinished"], "unfinished"),
            )
            if n
        ]
        return ", ".join(said) or "ok"
    if not row["finished"]:
        return "unfinished"
    if row["error"]:
        return "caught" if row["caught"] else "error"
    return "ok"


def _migration_races(report: Report) -> list[tuple[Line, tuple[str, str | None]]]:
    """One line per database that several workers migrated at overlapping times (a
    database already named by a racing setup is said there), with its (URL, schema)."""
    said = [
        Resource(r["kind"], r["name"]) for race in report["setup_races"] for r in race["resources"]
    ]
    lines: list[tuple[Line, tuple[str, str | None]]] = []
    for race in report["migration_races"]:
        if any(resource.names(race["url"]) for resource in said):
            continue
        names = race["workers"]
        who = ", ".join(names[:-1]) + " and " + names[-1]
        schema = race["schema"]
        if schema is None:
            where: Line = ("the same database ", Code(race["url"]))
        else:
            where = ("the same schema ", Code(schema), " of ", Code(race["url"]))
        line = (f"{who} migrated ", *where, " at the same time")
        lines.append((line, (race["url"], schema)))
    return lines


_WORKER = Column("worker", code=True)
_TOOK = Column("took", right=True)
_DATABASE = Column("database", squeeze="start", code=True)


def _migrations_section(report: Report) -> Section | None:
    migrations = report["migrations"]
    if not migrations:
        return None
    columns = (
        _WORKER,
        Column("migration"),
        Column("revisions", squeeze="start"),
        Column("at", right=True),
        _TOOK,
        Column("max", right=True),
        Column("result"),
        _DATABASE,
    )
    rows = [
        (
            m["worker"],
            f"{m['tool']} {m['op']}" + (f" ×{m['count']}" if m["count"] > 1 else ""),
            " → ".join(r for r in (m["from_rev"], m["to_rev"]) if r),
            "+" + fmt_duration(m["offset"]),
            fmt_duration(m["duration"]),
            fmt_duration(m["longest"]) if m["count"] > 1 else "",
            _migration_result(m),
            m["url"] if m["schema"] is None else f"{m['url']} (schema {m['schema']})",
        )
        for m in migrations
    ]
    blocks = _top_table(columns, rows, report["omitted"]["migrations"], "migration")
    if any(m["count"] > 1 for m in migrations):
        note: Line = (
            "×N: the same migration run N times by one worker (a schema built per test); "
            "at: the first began, took: their time in all, max: the longest",
        )
        blocks.append(Prose([note]))
    errors = report["migration_errors"]
    warned: list[Line] = []
    races = _migration_races(report)
    for line, place in races:  # each race, and the failures that came while it lasted
        warned.append(line)
        warned += [
            ("during the race: ", *_error_line(e))
            for e in errors
            if e["during_race"] and not e["caught"] and (e["url"], e["schema"]) == place
        ]
    shown = {place for _line, place in races}
    apart = "outside the race: " if len(races) == 1 else "outside any race: "
    for e in errors:
        if e["caught"] or (e["during_race"] and (e["url"], e["schema"]) in shown):
            continue  # caught: below; during a race: said under it
        if races and not e["during_race"]:
            warned.append((apart, *_error_line(e, on=True)))
        else:  # no race; or one said under racing shared setup
            warned.append(_error_line(e))
    caught = [_error_line(e) for e in errors if e["caught"]]
    if warned:
        blocks.append(Bullets(warned, warn=True))
    if caught:
        blocks.append(Bullets(caught))
    blocks += _omitted(report["omitted"]["migration_errors"], "migration error")
    return Section(("Migrations",), blocks)


def _error_line(error: MigrationErrorRow, on: bool = False) -> Line:
    """One line for the migrations that failed alike: how many, where, the message; with
    ``on``, the database they failed on."""
    what, n, message = f"{error['tool']} {error['op']}", error["count"], first_line(error["error"])
    tests: list[str] = []
    for i, test in enumerate(error["tests"]):
        tests += [", " if i else " in ", Code(test)]
    more = error["test_count"] - len(error["tests"])
    if more > 0 and tests:
        tests.append(f" and {more} more")
    workers = ", ".join(error["workers"])
    where: Line = (" on ", Code(error["url"])) if on else ()
    if error["caught"]:
        times = f" {n}×" if n > 1 else ""
        said = "inside tests that passed (an error they expect, caught)"
        return (f"{what} raised{times} {said}: {message} ({workers})", *tests)
    if n == 1:
        return (Code(workers), f" {what} failed", *where, f": {message}", *tests)
    return (f"{what} failed {n}×", *where, f": {message} ({workers})", *tests)


def _migration_steps_section(report: Report) -> Section | None:
    steps = report["migration_steps"]
    if not steps:
        return None
    columns = (_WORKER, Column("step"), Column("migration"), _TOOK, _DATABASE)
    rows = [
        (
            m["worker"],
            f"{m['step']}{' (backwards)' if m['backwards'] else ''}",
            f"{m['tool']} {m['op']}",
            fmt_duration(m["duration"]),
            m["url"],
        )
        for m in steps
    ]
    blocks = _top_table(columns, rows, report["omitted"]["migration_steps"], "step")
    return Section(("Migration steps, slowest first",), blocks)


def _race_blocks(row: SetupRaceRow) -> list[Block]:
    race = SetupRace(
        fixture=row["fixture"],
        scope=row["scope"],
        baseid=row["baseid"],
        workers=row["workers"],
        spread=row["spread"],
        overlap=row["overlap"],
        resources=[Resource(r["kind"], r["name"]) for r in row["resources"]],
        succeeded=row["succeeded"],
        failed=row["failed"],
        tests=row["tests"],
    )
    head, when, on, succeeded, *_failed = race_parts(race, fmt_duration)
    lines: list[Line] = [("  ", when)]
    if race.resources:
        lines += [("  on ", f"{r.kind_words} ", Code(r.name)) for r in race.resources]
    else:
        lines.append(("  ", on))
    lines.append(("  ", succeeded))
    for w, error in race.failed.items():
        test = race.tests.get(w)
        where = (" in ", Code(test)) if test else ()
        lines.append(("  ", w, " failed", *where, f": {error or '(no message)'}"))
    lines.append(("  fix: ", FIX))
    return [Bullets([(head,)], warn=True), Prose(lines)]


def _setup_races_section(report: Report) -> Section | None:
    races = report["setup_races"]
    if not races:
        return None
    return Section(("Racing shared setup",), [b for r in races for b in _race_blocks(r)])


def _tail_section(report: Report) -> Section | None:
    tail = report["tail"]
    if tail is None:
        return None
    parts = tail_parts(tail, fmt_duration)
    return Section(("The tail of the run",), [Prose([(part,) for part in parts])])


def _containers_section(report: Report) -> Section | None:
    containers = report["containers"]
    if not containers:
        return None
    columns = (
        Column("image", squeeze="start", code=True),
        Column("container", code=True),
        Column("owner", code=True),
        Column("startup", right=True),
        Column("state"),
        Column("used by", squeeze="start"),
        Column("starts of image", right=True),
    )
    rows = [
        (
            c["image"] or "?",
            c["name"] or c["cid"],
            c["owner"] or "",
            fmt_duration(c["startup"]),
            c["state"],
            ", ".join(c["users"]),
            str(c["image_starts"]),
        )
        for c in containers
    ]
    blocks: list[Block] = [
        Table(columns, rows),
        Bullets([(Code(c["name"] or c["cid"]), f" {c['story']}") for c in containers]),
    ]
    repeated = _repeated_images(containers)
    if repeated:
        blocks.append(Bullets(repeated, warn=True))
    trouble = _container_trouble(containers)
    if trouble:
        blocks.append(Bullets(trouble, warn=True))
    return Section(("Containers",), blocks)


def _started_by(c: ContainerRow) -> str:
    where = f" in {c['test']}" if c["test"] else ""
    fixture = f" (fixture {c['fixture']})" if c["fixture"] else ""
    return f"started by {c['owner'] or '?'}{where}{fixture}"


def _container_trouble(containers: list[ContainerRow]) -> list[Line]:
    """Failures, deaths, leaks and shared containers torn down under their users."""
    lines: list[Line] = []
    for c in containers:
        label = c["name"] or c["cid"]
        if c["failed_phase"] is not None or c["state"] == "failed":
            wait = f" waiting for {c['wait']}" if c["wait"] else ""
            lines.append(
                (
                    Code(label),
                    f" failed at {c['failed_phase'] or '?'}{wait}: {first_line(c['error'])}"
                    f" ({_started_by(c)})",
                )
            )
        if c["died"]:
            how = death_words(c["state"], c["exit_code"])
            running = ", ".join(f"{w} in {t}" for w, t in sorted(c["during"].items()))
            lines.append(
                (
                    Code(label),
                    f" died ({how}) without anyone of this run asking, {_started_by(c)}"
                    + (f"; running then: {running}" if running else ""),
                )
            )
        if c["leaked"]:
            lines.append((Code(label), f" leaked: still there at the end, {_started_by(c)}"))
        if c["health"] == "unhealthy":
            lines.append((Code(label), f" unhealthy (its health check failed), {_started_by(c)}"))
        if c["stopped_while_used"]:
            lines.append(
                (
                    Code(label),
                    f" stopped by {c['stopped_by'] or c['owner']}"
                    f" while {', '.join(c['stopped_while_used'])}"
                    " still ran tests that used it",
                )
            )
        if c["used_after_end"]:
            lines.append(
                (
                    Code(label),
                    f" looked up by {', '.join(c['used_after_end'])} after it had ended",
                )
            )
        if c["removed_by"] == "engine":
            lines.append((Code(label), " removed without any worker of this run asking"))
    return lines


def _repeated_images(containers: list[ContainerRow]) -> list[Line]:
    lines: list[Line] = []
    seen: set[str] = set()
    for c in containers:
        image = c["image"]
        if c["image_starts"] < 2 or image in seen:
            continue
        seen.add(image)
        same = [o for o in containers if o["image"] == image]
        owners = sorted({o["owner"] for o in same if o["owner"]}, key=worker_order)
        startup = sum(o["startup"] or 0.0 for o in same)
        by = f" by {', '.join(owners)}" if owners else ""
        lines.append(
            (
                Code(image),
                f" started {c['image_starts']}x{by}, {fmt_duration(startup)} of startup in all",
            )
        )
    return lines


def _deadlocks_section(report: Report) -> Section | None:
    items: list[Line] = []
    for d in report["deadlocks"]:
        cycle = " → ".join(
            f"{e['worker']} holds {e['holds']}, waits for {e['waits_for']}" for e in d["cycle"]
        )
        items.append((first_line(d["text"]) or cycle,))
    return Section(("Deadlocks",), [Bullets(items, warn=True)]) if items else None


def _db_waits_section(report: Report) -> Section | None:
    columns = (
        Column("worker", code=True),
        Column("waited", right=True),
        Column("lock", squeeze="start"),
        Column("blocked by", squeeze="start"),
        Column("statement", below=True, code=True),
    )
    rows = [
        (
            d["worker"],
            fmt_duration(d["waited"]),
            d["lock"] or d["error"] or "",
            d["blocked_by"] or "",
            first_line(d["statement"]),
        )
        for d in report["db_waits"]
    ]
    if not rows:
        return None
    blocks = _top_table(columns, rows, report["omitted"]["db_waits"], "wait")
    return Section(("Database lock waits",), blocks)


def _dropped_section(report: Report) -> Section | None:
    dropped = report["dropped"]
    if not dropped:
        return None
    total = sum(d["count"] for d in dropped)
    columns = (Column("worker", code=True), Column("kind"), Column("events", right=True))
    rows = [(d["worker"], d["kind"], str(d["count"])) for d in dropped]
    note: Line = (f"{plural(total, 'event')} never reached the log: this report may miss facts",)
    return Section(("Dropped events",), [Prose([note]), Table(columns, rows)])


def _skipped_section(report: Report) -> Section | None:
    skipped = report["skipped_lines"]
    if not skipped:
        return None
    columns = (Column("line", right=True), Column("reason", squeeze="start"))
    rows = [(str(s["line"]), s["reason"]) for s in skipped]
    total = report["skipped_total"]
    lines = f"{total:,} lines" if total != 1 else "1 line"
    shown = f" (the first {len(skipped)}, and the last if torn)" if total > len(skipped) else ""
    note: Line = (f"the reader skipped {lines} of the log{shown}:",)
    return Section(("Skipped log lines",), [Prose([note]), Table(columns, rows)])


def _notices_section(report: Report) -> Section | None:
    items: list[Line] = [
        (
            f"{n['level']}: ",
            f"{n['source']}: " if n["source"] else "",
            n["message"],
            f" ({', '.join(n['workers'])})" if n["workers"] else "",
        )
        for n in report["notices"]
    ]
    return Section(("Monitor notices",), [Bullets(items)]) if items else None


_SECTIONS = (
    _workers_section,
    _collection_errors_section,
    _failures_section,
    _reruns_section,
    _crashes_section,
    _stalls_section,
    _unresponsive_section,
    _deadlocks_section,
    _setup_races_section,
    _tail_section,
    _slowest_section,
    _fixtures_section,
    _locks_section,
    _db_waits_section,
    _migrations_section,
    _migration_steps_section,
    _containers_section,
    _dropped_section,
    _skipped_section,
    _notices_section,
)


def sections(report: Report) -> list[Section]:
    """What the text and markdown reports say, in order; empty sections are left out."""
    found = [_overview(report)]
    for make in _SECTIONS:
        section = make(report)
        if section is not None:
            found.append(section)
    return found


# ================================================================== rendering


# ===================================================================== runs

# The result cell lists failures and errors first: if it must be cut, passes go first.
_RUNS_COLUMNS = (
    Column("run", code=True),
    Column("started"),
    Column("wall", right=True),
    Column("-n", right=True),
    Column("status"),
    Column("result", squeeze="start"),
)


def _status_cell(run: RunRow) -> str:
    words = [run["status"]]
    if run["crashes"]:
        words.append(plural(run["crashes"], "crash", "crashes"))
    if run["stalls"]:
        words.append(plural(run["stalls"], "stall"))
    return ", ".join(words)


def runs_sections(model: RunsModel) -> list[Section]:
    rows = [
        (
            r["id"],
            time.strftime("%b %d %H:%M", time.localtime(r["started"])),
            fmt_duration(r["wall"]),
            str(r["workers"]),
            _status_cell(r),
            pytest_summary(r["counts"], PROBLEMS_FIRST),
        )
        for r in model["runs"]
    ]
    where = Code(shorten_nodeid(short_path(model["dir"]), 50))
    title: Line = (f"{plural(len(rows), 'run')} in ", where, ", newest first (-n: workers)")
    blocks: list[Block] = [Table(_RUNS_COLUMNS, rows)] if rows else []
    unlisted: list[Line] = [
        (Code(Path(u["log"]).name), ": not listed: ", u["error"].replace(u["log"], "it"))
        for u in model["unlisted"]
    ]
    if unlisted:
        blocks.append(Bullets(unlisted, warn=True))
    return [Section(title, blocks)]
