"""What the controller tells the user while the run goes on: live notices from the fold.

The hub already folds every event into :class:`~testmon_live.plugin.state.RunState`; this
module does not fold again. :class:`Watch` keeps a cursor into each of the state's lists
(stall records, crashes, deadlocks, unresponsive spells, migration races, containers) and
turns what was added since its last look into :class:`Alert` objects; workers' current
tests give the slow ones. A look costs a few comparisons of lengths while nothing happens.

:class:`Limiter` keeps the lines to a few a minute: a notice that repeats one printed in the
last minute (same key) is only counted, as is one over the budget; one line a minute then
says how many were held back. :func:`status_lines` is the block that says what each worker
is doing (after a quiet spell, or when the run is stopped from outside, with stacks).

Nothing here writes or imports pytest: :mod:`.live` decides when and where.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

import msgspec

from . import events as ev
from .findings import FIX
from .guard import REAL
from .state import RunState, StallRecord, WorkerView, lock_label, worker_order
from .summary import _dur as duration
from .summary import race_line
from .words import death_words, exit_words

PREFIX = "[testmon-live]"
"""Every line the monitor prints while the run goes on starts with this."""

INFO, WARNING, ERROR = 0, 1, 2
KIND_LEVEL = {
    "SLOW": INFO,
    "STALL": WARNING,
    "UNRESPONSIVE": WARNING,
    "RACE": WARNING,
    "CRASH": ERROR,
    "REPLACED": WARNING,
    "DEADLOCK": ERROR,
    "CONTAINER": ERROR,
}
"""How serious each kind is: ``-q`` leaves out INFO, ``-qq`` WARNING too."""

ANNOTATED = frozenset({"STALL", "UNRESPONSIVE", "DEADLOCK", "CRASH", "RACE"})
"""Kinds that become CI annotations (failures that look polluted are added at the end)."""

UNRESPONSIVE_GRACE = 2.5
"""Seconds to wait for the stacks the hub takes of a silent worker before saying it anyway."""

WINDOW = 60.0
BUDGET = 5
"""Notice lines per WINDOW seconds; past it they are counted, and said in one line."""

VERDICT_WORDS = {
    "lock": "waiting on a lock",
    "condition": "waiting on a condition",
    "event": "waiting on an event",
    "queue": "waiting on a queue",
    "future": "waiting on a future",
    "sleep": "sleeping",
    "socket": "waiting on a socket",
    "subprocess": "waiting on a subprocess",
    "database": "waiting on the database",
    "busy": "busy",
    "unknown": "blocked",
}

STACK_FRAMES = 12
"""Innermost frames printed per thread in a stopped run's stacks."""


def level_for(verbosity: int) -> int:
    """The least serious kind printed at a verbosity: all, then -q, then -qq."""
    if verbosity >= 0:
        return INFO
    return WARNING if verbosity == -1 else ERROR


# Patterns are compiled on first use (re keeps them): importing this module in the
# controller costs no regex compilation.
_CONTROL = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"


def printable(text: str) -> str:
    """No control characters from a worker's text reach the terminal (escapes, bells)."""
    return re.sub(_CONTROL, "?", text)


class Where(msgspec.Struct, frozen=True):
    """A place in the user's code: a path (absolute, or relative to the rootdir) and line."""

    path: str
    line: int | None = None


class Alert(msgspec.Struct, frozen=True):
    kind: str
    """STALL, UNRESPONSIVE, DEADLOCK, CRASH, REPLACED, RACE, CONTAINER or SLOW."""
    key: str
    """Alerts with one key are repeats of each other (folded into a count)."""
    text: str
    """The line, without :data:`PREFIX`."""
    where: Where | None = None
    """The user's frame, for an annotation."""

    @property
    def level(self) -> int:
        return KIND_LEVEL.get(self.kind, WARNING)

    @property
    def line(self) -> str:
        return printable(f"{PREFIX} {self.text}")


# ------------------------------------------------------------------ the watch


class Watch:
    """Turns what the fold added since the last look into alerts."""

    def __init__(self, slow: float = 0.0, *, rootdir: str = "", locate: bool = True) -> None:
        self.slow = slow
        self.rootdir = rootdir
        self.locate = locate
        """Find a test's ``def`` line for annotations (reads its file; off when unused)."""
        self._stalls = 0
        self._crashes = 0
        self._replacements = 0
        self._deadlocks = 0
        self._unresponsive = 0
        self._races: dict[str, int] = {}
        self._setup_races: dict[tuple[str, str, str], int] = {}
        self._dead: set[str] = set()
        self._slow_seen: dict[tuple[str, str, float], float] = {}
        """(worker, test, its start) -> the threshold last reported for it."""
        self._silent: dict[str, tuple[ev.Unresponsive, float]] = {}
        """worker -> its silence, while the hub may still be taking its stacks."""
        self.tests_done = 0

    def scan(self, state: RunState, t: float, *, final: bool = False) -> list[Alert]:
        """Alerts for what changed; call with the hub's lock held. ``final``: say what is
        still pending (stacks that never came) instead of waiting for it."""
        out: list[Alert] = []
        self.tests_done = state.tests_done
        if len(state.unresponsive) > self._unresponsive:
            for spell in state.unresponsive[self._unresponsive :]:
                if not spell.recovered:
                    self._silent[spell.w] = (spell, t + UNRESPONSIVE_GRACE)
            self._unresponsive = len(state.unresponsive)
        if len(state.stall_records) > self._stalls:
            out.extend(self._stall(record, state) for record in state.stall_records[self._stalls :])
            self._stalls = len(state.stall_records)
        if self._silent:
            for wid, (spell, deadline) in list(self._silent.items()):
                if final or t >= deadline:
                    del self._silent[wid]
                    out.append(_unresponsive(spell, None, self._test_where))
        if len(state.crashes) > self._crashes:
            out.extend(self._crash(c) for c in state.crashes[self._crashes :])
            self._crashes = len(state.crashes)
        if len(state.replacements) > self._replacements:
            out.extend(self._replaced(state, r) for r in state.replacements[self._replacements :])
            self._replacements = len(state.replacements)
        if len(state.deadlocks) > self._deadlocks:
            out.extend(self._deadlock(d) for d in state.deadlocks[self._deadlocks :])
            self._deadlocks = len(state.deadlocks)
        if state.setup_races:
            out.extend(self._setup_races_in(state))
        if state.migration_races:
            out.extend(self._races_in(state))
        if state.containers:
            out.extend(self._deaths(state))
        if self.slow > 0:
            out.extend(self._slow_tests(state, t))
        return out

    # ------------------------------------------------------------- each kind

    def _stall(self, record: StallRecord, state: RunState) -> Alert:
        if record.reason == "unresponsive":
            pending = self._silent.pop(record.w, None)
            spell = pending[0] if pending is not None else None
            return _unresponsive(spell, record, self._test_where, w=record.w)
        first = record.first
        text = (
            f"STALL {record.w} {_test_phase(first.test, first.phase, first.fixture)} "
            f"{duration(first.elapsed)}{_at(first)}{_waiting_on(state, record.w)}"
        )
        return Alert(
            "STALL",
            f"stall {first.location or first.test}",
            text,
            _frame_where(first) or self._test_where(first.test),
        )

    def _replaced(self, state: RunState, replaced: ev.WorkerReplaced) -> Alert:
        view = state.workers.get(replaced.replaces)
        crash = view.crash if view is not None else None
        how = f" (it crashed: {exit_words(crash)})" if crash is not None else ""
        return Alert(
            "REPLACED",
            f"replaced {replaced.replaces}",
            f"REPLACED {replaced.w} replaced {replaced.replaces}{how}",
        )

    def _crash(self, crash: ev.WorkerCrashed) -> Alert:
        how = exit_words(crash)
        test = crash.test or "(between tests)"
        return Alert(
            "CRASH",
            f"crash {how}",
            f"CRASH {crash.w} {test}: {how}",
            self._test_where(crash.test),
        )

    def _deadlock(self, deadlock: ev.Deadlock) -> Alert:
        parts = [
            f"{e.w} holds {e.holds}, waits for {e.waits_for}"
            + (f" (in {e.test})" if e.test else "")
            for e in deadlock.cycle
        ]
        tests = [e.test for e in deadlock.cycle if e.test]
        return Alert(
            "DEADLOCK",
            f"deadlock {deadlock.text}",
            "DEADLOCK " + ("; ".join(parts) or deadlock.text),
            self._test_where(tests[0] if tests else None),
        )

    def _setup_races_in(self, state: RunState) -> list[Alert]:
        out = []
        for key, race in state.setup_races.items():
            seen = len(race.workers) + len(race.failed)
            if seen <= self._setup_races.get(key, 0):
                continue
            self._setup_races[key] = seen
            for place in state.races_said_as_setup():  # said here: not again as a migration race
                self._races[place] = len(state.migration_races[place])
            failed = next(iter(race.failed), None)
            out.append(
                Alert(
                    "RACE",
                    f"race setup {race.fixture}",
                    f"RACE {race_line(race)} ({FIX})",
                    self._test_where(race.tests.get(failed) if failed else None),
                )
            )
        return out

    def _races_in(self, state: RunState) -> list[Alert]:
        out = []
        for place, workers in state.migration_races.items():
            if len(workers) <= self._races.get(place, 0):
                continue
            self._races[place] = len(workers)
            names = ", ".join(sorted(workers, key=worker_order))
            test = next(
                (
                    m.test
                    for m in reversed(state.migrations)
                    if m.test and state.race_of(m) == place
                ),
                None,
            )
            out.append(
                Alert(
                    "RACE",
                    f"race {place}",
                    f"RACE {names} migrate {state.race_where(place)} at the same time "
                    "(one worker should, the others wait: monitor.run_once)",
                    self._test_where(test),
                )
            )
        return out

    def _deaths(self, state: RunState) -> list[Alert]:
        out = []
        for view in state.containers.values():
            if view.died is None or view.cid in self._dead:
                continue
            self._dead.add(view.cid)
            how = death_words(view.state, view.exit_code)
            running = ", ".join(f"{w} in {t}" for w, t in sorted(view.during.items()))
            text = (
                f"CONTAINER {view.name or view.cid} ({view.image}) died: {how}"
                + (f", started by {view.owner}" if view.owner else "")
                + (f"; running then: {running}" if running else "")
            )
            out.append(Alert("CONTAINER", f"container {view.image}", text))
        return out

    def _slow_tests(self, state: RunState, t: float) -> list[Alert]:
        out = []
        for view in state.workers.values():
            began = view.test_started
            test = view.test
            if began is None or test is None or view.crash is not None or view.down:
                continue
            ran = t - began
            if ran < self.slow:
                continue
            key = (view.id, test, began)
            last = self._slow_seen.get(key, 0.0)
            mark = self.slow
            while mark * 2 <= ran:
                mark *= 2
            if mark <= last:
                continue
            self._slow_seen[key] = mark
            out.append(
                Alert(
                    "SLOW",
                    f"slow {view.id} {test}",
                    f"SLOW [> {mark:.1f}s] {view.id} {_test_phase(test, view.phase, view.fixture)}",
                )
            )
        if len(self._slow_seen) > 1000:  # keep only the tests still running
            running = {(v.id, v.test, v.test_started) for v in state.workers.values()}
            self._slow_seen = {k: v for k, v in self._slow_seen.items() if k in running}
        return out

    def _test_where(self, nodeid: str | None) -> Where | None:
        return test_where(nodeid, self.rootdir) if self.locate else None


def _unresponsive(
    spell: ev.Unresponsive | None,
    record: StallRecord | None,
    test_where: Callable[[str | None], Where | None],
    *,
    w: str = "",
) -> Alert:
    wid = spell.w if spell is not None else w
    silent = f" no heartbeat for {duration(spell.silent)}:" if spell is not None else ""
    if record is not None:
        first = record.first
        text = (
            f"UNRESPONSIVE {wid}{silent} {_test_phase(first.test, first.phase, first.fixture)}"
            f"{_at(first)}"
        )
        where = _frame_where(first) or test_where(first.test)
        test = first.test
    else:
        test = spell.test if spell is not None else None
        text = (
            f"UNRESPONSIVE {wid}{silent} {test or '(no test)'} "
            "(no stacks: a remote worker, or not safe to signal)"
        )
        where = test_where(test)
    return Alert("UNRESPONSIVE", f"unresponsive {wid} {test}", text, where)


# ------------------------------------------------------------------ texts


def _waiting_on(state: RunState, w: str) -> str:
    """``; waiting on lock:x held by gw0 (test_a)`` for a worker waiting on a lock now, with
    whoever holds it as far as the run knows (the trial's STALL lines said "waiting on the
    database" and left whom to the dashboard), else nothing."""
    for stats in state.locks.values():
        if not stats.waiting:
            continue
        wait = next((e for e in stats.waiting.values() if e.w == w), None)
        if wait is None:
            continue
        said = f"; waiting on {lock_label(stats.kind, stats.key)}"
        holder = state.holder(wait)
        if holder is None or not (holder.w or holder.pid):
            return said + " (holder unknown)"
        who = holder.w or f"pid {holder.pid}"
        # the fixture that holds it (a session fixture's lock outlives its test), else the test
        where = f"fixture {holder.fixture}" if holder.fixture else holder.test
        return f"{said} held by {who}" + (f" ({where})" if where else "")
    return ""


def _test_phase(test: str | None, phase: str, fixture: str | None) -> str:
    where = phase + (f", fixture {fixture}" if fixture else "")
    return f"{test or '(no test)'} ({where})" if where else test or "(no test)"


def stuck_thread(stall: ev.Stall) -> ev.ThreadStack | None:
    """The thread whose frame is the stall's location (the worker chose it)."""
    location = stall.location
    if not location:
        return None
    where, _, func = location.rpartition(" in ")
    file, _, line = where.rpartition(":")
    for thread in sorted(stall.threads, key=lambda th: th.name != "MainThread"):
        stacks = [thread.frames, *(task.frames for task in thread.tasks)]
        for frames in stacks:
            for frame in frames:
                if (
                    frame.user
                    and str(frame.line) == line
                    and frame.func == func
                    and frame.file.endswith(file)
                ):
                    return thread
    return None


def _at(stall: ev.Stall) -> str:
    if not stall.location:
        return ""
    thread = stuck_thread(stall)
    if thread is None:
        return f" at {stall.location}"
    return f" at {stall.location} ({thread.name} {verdict_words(thread)})"


def verdict_words(thread: ev.ThreadStack) -> str:
    words = VERDICT_WORDS.get(thread.verdict, thread.verdict)
    return words + (f": {thread.detail}" if thread.detail else "")


def _frame_where(stall: ev.Stall) -> Where | None:
    thread = stuck_thread(stall)
    if thread is None or not stall.location:
        return None
    where, _, _func = stall.location.rpartition(" in ")
    file, _, line = where.rpartition(":")
    for frames in [thread.frames, *(task.frames for task in thread.tasks)]:
        for frame in reversed(frames):
            if frame.user and str(frame.line) == line and frame.file.endswith(file):
                return Where(frame.file, frame.line)
    return None


def test_where(nodeid: str | None, rootdir: str) -> Where | None:
    """The file of a test and the line of its ``def`` (found by reading the file)."""
    if not nodeid:
        return None
    path = nodeid.split("::", 1)[0]
    name = nodeid.rsplit("::", 1)[-1].split("[", 1)[0]
    if not path or name == nodeid:
        return None
    full = Path(rootdir, path) if rootdir else Path(path)
    line = None
    pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(")
    try:
        with REAL.open(full, encoding="utf-8", errors="replace") as handle:
            for number, text in enumerate(handle, 1):
                if pattern.match(text):
                    line = number
                    break
    except OSError:
        pass  # the file moved or is not local: the annotation names the file only
    return Where(str(full), line)


# ------------------------------------------------------------------ failures


POLLUTION = (
    r"(?i)already exists|duplicate key|unique constraint|UNIQUE constraint failed|"
    r"UniqueViolation|IntegrityError|database is locked|database schema is locked|"
    r"dirty database|is being accessed by other users|could not obtain lock|lock wait timeout"
)
"""Failure texts that say a test met state it did not create (another test's rows, tables,
a migration half done): the usual faces of test-data pollution and racing setup."""

_CRASH_LINE = r"(?m)^(?P<file>[^\s:][^:\n]*\.py):(?P<line>\d+): "


def looks_polluted(test: ev.TestFinished) -> bool:
    text = test.message or ""
    if test.longrepr:
        text += "\n" + test.longrepr[-4000:]
    return bool(re.search(POLLUTION, text))


def failure_where(test: ev.TestFinished, rootdir: str) -> Where | None:
    """Where a failure was raised in the user's code: pytest's last ``file:line:`` line."""
    found = list(re.finditer(_CRASH_LINE, test.longrepr or ""))
    for match in reversed(found):
        path = Path(rootdir, match["file"]) if rootdir else Path(match["file"])
        if path.is_file():
            return Where(str(path), int(match["line"]))
    return test_where(test.nodeid, rootdir)


# ------------------------------------------------------------------ limiting


class Limiter:
    """A few lines a minute; repeats and the overflow are counted, then said in one line."""

    def __init__(self, budget: int = BUDGET, window: float = WINDOW) -> None:
        self.budget = budget
        self.window = window
        self._printed: deque[float] = deque()
        self._keys: dict[str, float] = {}
        self._held: Counter[str] = Counter()
        self._last_fold = float("-inf")

    def _expire(self, t: float) -> None:
        edge = t - self.window
        while self._printed and self._printed[0] <= edge:
            self._printed.popleft()
        if len(self._keys) > 256:
            self._keys = {k: when for k, when in self._keys.items() if when > edge}

    def admit(self, alert: Alert, t: float) -> bool:
        """Print this alert now? Otherwise it is counted."""
        self._expire(t)
        last = self._keys.get(alert.key)
        if (last is not None and t - last < self.window) or len(self._printed) >= self.budget:
            self._held[alert.kind] += 1
            return False
        self._printed.append(t)
        self._keys[alert.key] = t
        return True

    def held_line(self, t: float, *, force: bool = False) -> str | None:
        """Once a window, when the budget allows (or ``force``), the count of held lines."""
        self._expire(t)
        if not self._held:
            return None
        if not force and (t - self._last_fold < self.window or len(self._printed) >= self.budget):
            return None
        total = sum(self._held.values())
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self._held.items()))
        slow = "SLOW" in self._held  # the one kind the summary does not list
        self._held.clear()
        self._last_fold = t
        self._printed.append(t)
        listed = (
            "every one but the slow tests (`testmon report` lists the slowest)"
            if slow
            else "every one"
        )
        return (
            f"{PREFIX} {total} more notice{'s' if total != 1 else ''} held back (repeats or "
            f"too many at once): {kinds}; the summary at the end lists {listed}"
        )


# ------------------------------------------------------------------ status


def status_lines(state: RunState, t: float, headline: str, *, stacks: bool = False) -> list[str]:
    """What each worker is doing now; with ``stacks``, the stacks of the stuck ones."""
    lines = [printable(f"{PREFIX} {headline}")]
    views = sorted(
        (v for v in state.workers.values() if v.started is not None or v.tests),
        key=lambda v: worker_order(v.id),
    )
    if not views:
        lines.append("  no worker has started yet")
    widths = (
        max((len(v.id) for v in views), default=0),
        max((len(v.state) for v in views), default=0),
    )
    lines.extend(printable(_worker_row(view, t, widths)) for view in views)
    if stacks:
        for view in views:
            record = view.current_stall
            if record is not None and not view.down and view.crash is None:
                lines.extend(printable(line) for line in stack_lines(record, t))
    return lines


def _worker_row(view: WorkerView, t: float, widths: tuple[int, int]) -> str:
    head = f"  {view.id:<{widths[0]}}  {view.state:<{widths[1]}}"
    if view.crash is not None:
        return f"{head}  {view.crash.test or '(between tests)'}: {exit_words(view.crash)}"
    if view.down:
        return f"{head}  {view.tests} tests"
    if view.test is None:
        return f"{head}  for {duration(max(0.0, t - view.since))}" if view.since else head
    began = view.test_started if view.test_started is not None else view.since
    text = f"{head}  {_test_phase(view.test, view.phase, view.fixture)} {duration(t - began)}"
    if view.waiting:
        text += f", on {view.waiting}"
    record = view.current_stall
    if record is not None and record.at_place.location:
        text += _at(record.at_place)  # where its latest sample found it
    return text


def stack_lines(record: StallRecord, t: float) -> list[str]:
    """Every non-idle thread of a stuck worker, innermost frames last, as Python prints."""
    first = record.first
    lines = [
        f"  {record.w} stacks ({'stalled' if record.reason == 'stall' else 'unresponsive'} "
        f"{_test_phase(first.test, first.phase, first.fixture)}, sampled at "
        f"{duration(record.elapsed)}):"
    ]
    shown = 0
    for thread in record.thread_list:
        if thread.verdict == "idle":
            continue
        shown += 1
        lines.append(f"    {thread.name} ({verdict_words(thread)}):")
        # From the outermost frame of the user's code in (pytest's own frames above it say
        # nothing), at most STACK_FRAMES innermost ones.
        start = next((i for i, f in enumerate(thread.frames) if f.user), 0)
        frames = thread.frames[start:][-STACK_FRAMES:]
        if len(thread.frames) > len(frames):
            lines.append(f"      ... {len(thread.frames) - len(frames)} outer frames")
        lines.extend(f'      File "{f.file}", line {f.line}, in {f.func}' for f in frames)
    if not shown:
        lines.append("    (no thread but the monitor's own)")
    return lines
