"""xdist's worker start-up and exit, measured over the newest runs of a suite, not one.

A worker's start-up (the header to the first test: spawning, importing, collecting) and its
exit (the last test to the end record) are short, and they vary from run to run: a cold
disk cache or a burst of load elsewhere on the machine makes one run's workers start or
exit slowly. Taken from the one recording being predicted, such a run makes every
prediction from it slow by as much (a -n 4 prediction 18 % over the measured wall came
from one). :func:`settled` takes each figure as the median over that recording and the
newest older runs of the same suite in the same folder, which an outlier does not move.

Which runs count (from each log's header and its own records):

- older than the recording (its id sorts before the recording's): a prediction of a run
  stays what it was when later runs come;
- the same suite on the same machine (:class:`~testmon_live.tui.suite.Suite`): the same
  rootdir, Python (version and implementation), host name and CPU count, and as many
  distinct tests (a run of one file, or ``-k``, starts up differently; so does another
  machine);
- run under xdist (a run without it starts no workers), finished normally (``ok`` or
  ``tests_failed``: an interrupted run's exit is not an exit), no worker crashed;
- figures that make sense: finite, not negative, start-up and exit within the run's wall.

At most :data:`OLDER_RUNS` such runs, newest first, and at most :data:`SCANNED` logs looked
at; a log larger than :data:`LOG_BYTES` or than what is left of :data:`HISTORY_BYTES` is
not read, only its header (then the figures come from fewer runs, down to the recording
alone: a suite whose logs are that large, some 50,000 tests, runs long enough that
start-up and exit are a small share of its wall, and ``whatif`` on it stays fast).

A log is untrusted input: one that cannot be opened or whose lines do not decode is
skipped or read for what decodes, never trusted for more than the figures above.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import RunLogError, open_log

from ..suite import Suite, older_logs, read_header, suite_of
from .exits import exit_work

if TYPE_CHECKING:
    from .profile import Profile

OLDER_RUNS = 4
"""Older runs taken besides the recording (the median of up to five)."""
SCANNED = 20
"""Older logs looked at, newest first (other suites' among them)."""
HISTORY_BYTES = 48 * 1024 * 1024
"""Bytes of older logs read at most (about a third of a second of decoding)."""
LOG_BYTES = HISTORY_BYTES // 2
"""An older log larger than this is not read (two must fit in the budget: the median of
the recording and one older run is only their mean)."""
FINISHED = frozenset({"ok", "tests_failed"})

_TEST = b'{"t":"test"'
_END = b'{"t":"end"'


def contention(workers: int, cpus: int) -> float:
    """How much slower CPU-bound work runs with ``workers`` processes on ``cpus`` CPUs."""
    if cpus <= 0:
        return 1.0
    return max(1.0, workers / cpus)


@dataclass(frozen=True)
class Costs:
    """One run's xdist costs, each for one worker with a CPU of its own."""

    boot: float
    """The header to the first test, divided by the CPU share the workers had."""
    finish: float
    """A worker's exit after its last test (see :func:`~.exits.exit_work`)."""


def costs_of(
    started: float,
    workers: int,
    cpus: int,
    first_start: float | None,
    ends: list[float],
    end_ts: float,
) -> Costs:
    """The costs of a run from its header's time, its first test's start, each worker's
    last test's end and its end record's time (the one computation for the recording and
    the older runs)."""
    boot_recorded = (first_start - started) if first_start is not None else 0.0
    boot = max(0.0, boot_recorded) / contention(max(1, workers), cpus)
    last_end = max(ends, default=started)
    return Costs(boot, exit_work(ends, max(0.0, end_ts - last_end), cpus))


class _Timing(msgspec.Struct):
    """What a test line holds that the costs need (the rest is skipped unread)."""

    nodeid: str
    w: str = ""
    ts: float = 0.0
    phases: list[ev.Phase] = []


class _End(msgspec.Struct):
    ts: float = 0.0
    status: str = ""
    crashes: int = 0


_decode_test = msgspec.json.Decoder(_Timing).decode
_decode_end = msgspec.json.Decoder(_End).decode
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError)


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def run_costs(path: Path, suite: Suite, budget: int) -> tuple[Costs | None, int]:
    """The costs of the run logged at ``path`` if it is one of ``suite`` (see the module's
    rules), and the bytes read; a log larger than ``budget`` (or :data:`LOG_BYTES`) is not
    read."""
    header = read_header(path)
    if header is None or header.workers < 1 or suite_of(header, suite.tests) != suite:
        return None, 0
    if not _finite(header.ts):
        return None, 0
    limit = min(budget, LOG_BYTES)
    try:
        with open_log(path) as handle:
            if os.fstat(handle.fileno()).st_size > limit:
                return None, 0
            data = handle.read(limit + 1)  # it may have grown since
    except (RunLogError, OSError):
        return None, 0
    if len(data) > limit:
        return None, len(data)
    first_start: float | None = None
    ends: dict[str, float] = {}
    nodeids: set[str] = set()
    end: _End | None = None
    for line in data.split(b"\n"):
        if line.startswith(_TEST):
            try:
                test = _decode_test(line)
            except _DECODE_ERRORS:
                continue
            start = test.phases[0].start if test.phases else test.ts
            if not _finite(start, test.ts) or start > test.ts:
                continue
            nodeids.add(test.nodeid)
            if first_start is None or start < first_start:
                first_start = start
            if test.ts > ends.get(test.w, -math.inf):
                ends[test.w] = test.ts
        elif line.startswith(_END):
            try:
                end = _decode_end(line)
            except _DECODE_ERRORS:
                continue
    if end is None or end.status not in FINISHED or end.crashes or len(nodeids) != suite.tests:
        return None, len(data)
    if first_start is None or not _finite(end.ts):
        return None, len(data)
    wall = end.ts - header.ts
    last_end = max(ends.values())
    if wall <= 0.0 or first_start < header.ts or last_end > end.ts:
        return None, len(data)
    costs = costs_of(
        header.ts, header.workers, header.cpus, first_start, list(ends.values()), end.ts
    )
    if (
        not _finite(costs.boot, costs.finish)
        or (first_start - header.ts) + (end.ts - last_end) > wall
    ):
        return None, len(data)
    return costs, len(data)


def older_costs(path: Path, suite: Suite) -> list[Costs]:
    """The costs of the newest older runs of ``suite`` in the folder of ``path``, newest
    first (see the module's rules)."""
    found: list[Costs] = []
    budget = HISTORY_BYTES
    for sibling in older_logs(path, SCANNED):
        if len(found) >= OLDER_RUNS or budget <= 0:
            break
        costs, read = run_costs(sibling, suite, budget)
        budget -= read
        if costs is not None:
            found.append(costs)
    return found


Settled = tuple[float, float, int]
"""(boot, finish, how many runs they are the median of)."""


def settle(own: Costs | None, older: list[Costs]) -> Settled | None:
    """The median boot and finish of the recording's own (None: it ran without xdist,
    its figures are no worker's) and the older runs' (None: nothing to take them from)."""
    runs = ([own] if own is not None else []) + older
    if not runs:
        return None
    boot = statistics.median(c.boot for c in runs)
    finish = statistics.median(c.finish for c in runs)
    return boot, finish, len(runs)


def settled(profile: Profile, path: Path) -> Profile:
    """``profile`` (of the log at ``path``) with its start-up and exit the median over it
    and the newest older runs of its suite in the same folder; unchanged when there are
    none or the log's header does not read."""
    header = read_header(path)
    if header is None:
        return profile
    own = Costs(profile.boot, profile.finish) if profile.workers >= 1 else None
    found = settle(own, older_costs(path, suite_of(header, len(profile.tests))))
    if found is None or found[2] <= 1:
        return profile
    boot, finish, runs = found
    mine = profile.own_costs or (profile.boot, profile.finish)
    return dataclasses.replace(profile, boot=boot, finish=finish, cost_runs=runs, own_costs=mine)
