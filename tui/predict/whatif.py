"""``testmon whatif``: the recorded run replayed with other settings, and what limits it.

:func:`whatif` answers one question (``-n``, ``--dist``, ``--order``) and a table over
several ``-n``; :func:`best_next` picks the settings the next run should take (the one
line the report and the dashboard show). The answer is a plain dict (:class:`WhatIf`),
printed as it is by ``--format json`` and in words by :func:`render_text`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from testmon_live.plugin.longest_first import history_order
from testmon_live.plugin.state import PER_WORKER_BY_DESIGN, RunState

from . import DISTS, ORDERS
from .overheads import settled
from .profile import Profile, build_profile
from .schedule import Schedule, Unit, replay, units_of

DEFAULT_TABLE = (1, 2, 4, 8, 16)
MAX_WORKERS = 1024
WORTH = 0.03
"""A setting must be this much faster (share of the wall) to be worth recommending over a
smaller ``-n`` or the collected order."""
SAVING_WORTH = 1.0
"""Worker-seconds from which duplicated setup is worth a line."""
FEW_TESTS = 4
"""Fewer tests (or scopes) than this per worker is too few to balance."""
ACCOUNTED = 0.8
"""Replaying the recorded run as it ran (its own ``-n`` and ``--dist``, its tests in the
order they ran, its own start-up and exit), the model must take at least this share of the
measured wall time for its predictions to be trusted: below, the run spent time the model
does not see, and every prediction lacks it (a prediction of 8 s for a run of 23 s, and
``-n 4`` recommended, which took longer still)."""
OVERSHOOT = 1.25
"""... and at most this share: above, it sees time the run did not spend."""


class Row(TypedDict):
    workers: int
    wall: float
    efficiency: float
    tail: float
    startup: float


class Limit(TypedDict):
    kind: str
    """longest-test, lock, duplicated-setup, test-databases, few-tests, startup, tail."""
    text: str
    seconds: float


class Setting(TypedDict):
    workers: int
    dist: str
    order: str
    wall: float


class Check(TypedDict):
    """The model replaying the recorded run as it ran: how much of its wall it accounts for."""

    workers: int
    dist: str
    wall: float
    """The model's wall time for the run's own settings, start-up and exit."""
    accounted: float | None
    """That over the recorded wall time (None: no recorded wall to compare with)."""
    reliable: bool
    """Within :data:`ACCOUNTED` and :data:`OVERSHOOT`: predictions for other settings stand
    on what the run really spent."""


class WhatIf(TypedDict):
    run: str
    recorded: Setting
    """The run as it was (its wall time measured, not predicted)."""
    question: Setting
    prediction: Row
    table: list[Row]
    limits: list[Limit]
    best: Setting
    """The fastest settings by the model: a recommendation only when ``check`` is
    reliable."""
    check: Check
    tests: int
    order_recorded: bool
    """False: the log does not say the collection order (an older log); the order is
    reconstructed from when the tests started."""
    cpus_recorded: bool
    """False: the log does not say how many CPUs its machine had (an older log): this
    machine's count is assumed."""
    model: dict[str, float]
    """The measured costs the model adds: boot (one worker's start-up), gap (between
    tests), finish (after the last test), cpus; runs: how many runs boot and finish are the
    median of (1: this one alone; see :mod:`.overheads`)."""


def positions(profile: Profile, order: str) -> list[int]:
    """The collection order to replay, as positions in ``profile.tests``."""
    if order == "collected":
        return list(range(len(profile.tests)))
    durations = {t.nodeid: t.duration for t in profile.tests}
    return history_order([t.nodeid for t in profile.tests], durations)


def _efficiency(work: float, schedule: Schedule, workers: int) -> float:
    """``work``: the tests' own seconds in all."""
    if schedule.wall <= 0:
        return 0.0
    return min(1.0, work / (workers * schedule.wall))


class Grid:
    """Replays by (order, -n) for one ``--dist``, each made once."""

    def __init__(self, profile: Profile, dist: str) -> None:
        self.profile = profile
        self.dist = dist
        self._units: dict[str, list[Unit]] = {}
        self._done: dict[tuple[str, int], Schedule] = {}
        self._work = sum(t.cost for t in profile.tests)

    def get(self, order: str, workers: int) -> Schedule:
        key = (order, workers)
        found = self._done.get(key)
        if found is None:
            units = self._units.get(order)
            if units is None:
                units = self._units[order] = units_of(self.profile, positions(self.profile, order))
            found = self._done[key] = replay(self.profile, workers, self.dist, units=units)
        return found

    def row(self, order: str, workers: int) -> Row:
        schedule = self.get(order, workers)
        return {
            "workers": workers,
            "wall": round(schedule.wall, 3),
            "efficiency": round(_efficiency(self._work, schedule, workers), 4),
            "tail": round(schedule.tail, 3),
            "startup": round(schedule.startup, 3),
        }

    def best(self, table: tuple[int, ...]) -> Setting:
        """The settings for the next run: of those within :data:`WORTH` of the fastest,
        the fewest workers, and pytest's own order before reordering."""
        rows = [
            (self.get(order, n).wall, n, rank, order)
            for n in sorted(set(table))
            for rank, order in enumerate(ORDERS)
        ]
        fastest = min(wall for wall, _n, _r, _o in rows)
        wall, n, _rank, order = min(
            (row for row in rows if row[0] <= fastest * (1 + WORTH)), key=lambda r: (r[1], r[2])
        )
        return {"workers": n, "dist": self.dist, "order": order, "wall": round(wall, 3)}


@dataclass(frozen=True)
class Question:
    workers: int
    dist: str = "load"
    order: str = "collected"
    table: tuple[int, ...] = DEFAULT_TABLE

    def check(self) -> None:
        """Raises ValueError with the words for a bad question."""
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"-n {self.workers}: give a number of workers from 1 to {MAX_WORKERS}")
        if self.dist not in DISTS:
            raise ValueError(f"--dist {self.dist}: give one of {', '.join(DISTS)}")
        if self.order not in ORDERS:
            raise ValueError(f"--order {self.order}: give one of {', '.join(ORDERS)}")
        for n in self.table:
            if not 1 <= n <= MAX_WORKERS:
                raise ValueError(f"--table: {n} workers: give numbers from 1 to {MAX_WORKERS}")


def trusted(accounted: float | None) -> bool:
    """The model's replay of a run took ``accounted`` of its wall time: close enough (None:
    nothing to compare with)."""
    return accounted is None or ACCOUNTED <= accounted <= OVERSHOOT


def check(profile: Profile, grid: Grid | None = None) -> Check:
    """Replay the recorded run as it ran and compare with its measured wall time (``grid``:
    replays already made, reused when they are of the same profile and ``--dist``)."""
    workers = max(1, profile.workers)
    dist = profile.dist if profile.dist in DISTS else "load"
    if workers > MAX_WORKERS or (
        profile.dist and profile.dist not in DISTS and profile.dist != "no"
    ):
        # more workers than the model replays (a log that says 2**53: its lists would be
        # that long), or --dist each, loadgroup: a distribution the model does not replay;
        # its replay as load would say nothing of what the run spent
        return {
            "workers": workers,
            "dist": profile.dist,
            "wall": 0.0,
            "accounted": None,
            "reliable": True,
        }
    own = profile.as_recorded()  # its own start-up and exit, not the suite's median
    if grid is None or grid.profile is not own or grid.dist != dist:
        grid = Grid(own, dist)
    # "collected": the tests in the order of their positions, which are those the run had
    # (after --monitor-order=history reordered them), or the order they started in
    wall = grid.get("collected", workers).wall
    recorded = profile.wall
    accounted = round(wall / recorded, 4) if recorded > 0 else None
    return {
        "workers": workers,
        "dist": dist,
        "wall": round(wall, 3),
        "accounted": accounted,
        "reliable": trusted(accounted),
    }


def untrusted_words(accounted: float, recorded: float) -> str:
    """How far the model's replay of a run is from its wall time (:func:`trusted` false)."""
    if accounted < 1.0:
        return f"the model accounts for only {accounted:.0%} of this run's {recorded:.1f} s"
    return f"the model takes {accounted:.0%} of this run's {recorded:.1f} s to replay it"


def whatif(profile: Profile, question: Question) -> WhatIf:
    question.check()
    grid = Grid(profile, question.dist)
    prediction = grid.row(question.order, question.workers)
    schedule = grid.get(question.order, question.workers)
    table = [grid.row(question.order, n) for n in question.table]
    return {
        "run": profile.run_id,
        "recorded": {
            "workers": profile.workers,
            "dist": profile.dist or "no",
            "order": "longest-first" if profile.order == "history" else "collected",
            "wall": round(profile.wall, 3),
        },
        "question": {
            "workers": question.workers,
            "dist": question.dist,
            "order": question.order,
            "wall": prediction["wall"],
        },
        "prediction": prediction,
        "table": table,
        "limits": limits(profile, schedule, question.workers),
        "best": grid.best(question.table),
        "check": check(profile, grid),
        "tests": len(profile.tests),
        "order_recorded": profile.indexed,
        "cpus_recorded": profile.cpus_recorded,
        "model": {
            "boot": round(profile.boot, 3),
            "gap": round(profile.gap, 4),
            "finish": round(profile.finish, 3),
            "cpus": float(profile.cpus),
            "runs": float(profile.cost_runs),
        },
    }


def best_next(
    profile: Profile, dist: str = "load", table: tuple[int, ...] = DEFAULT_TABLE
) -> tuple[Setting, Check]:
    """The fastest ``-n`` and order for the next run (see :meth:`Grid.best`), and how much
    of the recorded run the model accounts for (:func:`check`: a recommendation only when
    it is reliable)."""
    grid = Grid(profile, dist if dist in DISTS else "load")
    return grid.best(table), check(profile, grid)


def limits(profile: Profile, schedule: Schedule, workers: int) -> list[Limit]:
    """What keeps the predicted run from going faster, the weightiest first."""
    found: list[Limit] = []
    wall = max(schedule.wall, 1e-9)
    tests = profile.tests
    if tests:
        longest = max(tests, key=lambda t: t.cost)
        if longest.cost >= 0.5 * schedule.makespan and len(tests) > 1:
            found.append(
                {
                    "kind": "longest-test",
                    "text": f"the longest test, {longest.nodeid}, takes {longest.cost:.1f} s of "
                    f"the {schedule.makespan:.1f} s of tests: no -n runs the suite faster than "
                    "it (split it, or start it first: --order longest-first)",
                    "seconds": round(longest.cost, 3),
                }
            )
    holds: dict[str, float] = {}
    for fixture in profile.fixtures:
        setups = schedule.setups.get(fixture.label, 0)
        for hold in fixture.holds:
            if setups:
                more = hold.rest * (setups - 1)
                holds[hold.lock] = holds.get(hold.lock, 0.0) + hold.first + more
    for test in tests:
        for hold in test.holds:
            holds[hold.lock] = holds.get(hold.lock, 0.0) + hold.first
    for lock, held in sorted(holds.items(), key=lambda kv: -kv[1]):
        if held >= 0.5 and (schedule.lock_wait >= 0.5 or held >= 0.3 * schedule.makespan):
            found.append(
                {
                    "kind": "lock",
                    "text": f"lock {lock} is held {held:.1f} s in all and serialises the "
                    f"workers ({schedule.lock_wait:.1f} worker-seconds waiting for locks)",
                    "seconds": round(held, 3),
                }
            )
    for fixture in profile.worker_fixtures():
        paid_by = schedule.setups.get(fixture.label, 0)
        if fixture.once or fixture.shared or paid_by < 2:
            continue
        saved = fixture.per_worker() * (paid_by - 1)
        if fixture.name in PER_WORKER_BY_DESIGN:  # each worker's own, run_once cannot share it
            if fixture.name == "django_db_setup" and saved >= SAVING_WORTH:
                found.append(_test_databases(fixture.per_worker(), paid_by))
            continue
        if saved >= SAVING_WORTH:
            found.append(
                {
                    "kind": "duplicated-setup",
                    "text": f"run_once on `{fixture.name}` would save {saved:.0f} s of worker "
                    f"time (set up on each of {paid_by} workers, {fixture.per_worker():.1f} s "
                    "each)",
                    "seconds": round(saved, 3),
                }
            )
    units = schedule.units
    if workers > 1 and units < FEW_TESTS * workers:
        what = "tests" if units == len(tests) else "scopes"
        found.append(
            {
                "kind": "few-tests",
                "text": f"too few {what} per worker to balance: {units} {what} over {workers} "
                "workers",
                "seconds": 0.0,
            }
        )
    if schedule.startup >= 0.25 * wall:
        found.append(
            {
                "kind": "startup",
                "text": f"worker start-up takes {schedule.startup:.1f} s of the "
                f"{schedule.wall:.1f} s ({profile.cpus or '?'} CPUs shared by {workers} workers)",
                "seconds": round(schedule.startup, 3),
            }
        )
    if workers > 1 and schedule.tail >= 0.15 * wall and schedule.tail >= 0.5:
        found.append(
            {
                "kind": "tail",
                "text": f"the last {schedule.tail:.1f} s run below full width (workers out of "
                "tests wait for the last ones)",
                "seconds": round(schedule.tail, 3),
            }
        )
    found.sort(key=lambda limit: -limit["seconds"])
    return found


def _test_databases(each: float, workers: int) -> Limit:
    """pytest-django's test databases, which every worker creates for itself."""
    return {
        "kind": "test-databases",
        "text": f"`django_db_setup` creates each worker's own test databases ({workers} workers, "
        f"{each:.1f} s each): --reuse-db keeps them for the next run, --nomigrations or a "
        "template database makes creating them cheaper",
        "seconds": round(each * workers, 3),
    }


def setting_text(setting: Setting) -> str:
    return options_text(setting["workers"], setting["dist"], setting["order"])


def options_text(workers: int, dist: str, order: str) -> str:
    """The pytest options of a setting: ``-n 4 --dist load --monitor-order=history``."""
    reorder = " --monitor-order=history" if order == "longest-first" else ""
    return f"-n {workers} --dist {dist}{reorder}"


def next_run_words(
    workers: int,
    dist: str,
    order: str,
    wall: float,
    recorded: float,
    accounted: float | None = None,
) -> str:
    """The one line the report and the dashboard give the prediction; none when the model
    does not account for the run (``accounted``: :attr:`Check.accounted`)."""
    if accounted is not None and not trusted(accounted):
        return (
            f"next run: no prediction: {untrusted_words(accounted, recorded)} "
            "(testmon whatif says more)"
        )
    return (
        f"next run: {options_text(workers, dist, order)} predicted fastest, {wall:.1f} s "
        f"(this run {recorded:.1f} s)"
    )


def render_text(answer: WhatIf) -> str:
    q = answer["question"]
    rec = answer["recorded"]
    p = answer["prediction"]
    checked = answer["check"]
    accounted = checked["accounted"]
    lines = [
        f"run {answer['run']}: {answer['tests']} tests, recorded with -n {rec['workers']} "
        f"--dist {rec['dist']} ({rec['order']} order) in {rec['wall']:.1f} s",
        "",
    ]
    if accounted is not None and not checked["reliable"]:
        why = (
            "The rest is time the model does not see (it replays each test from its first "
            "phase's start to its last one's end, the typical gap between two tests, worker "
            "start-up and exit, as recorded)"
            if accounted < 1.0
            else "It sees time the run did not spend"
        )
        lines += [
            f"{untrusted_words(accounted, rec['wall'])}: replayed as it ran (-n "
            f"{checked['workers']} --dist {checked['dist']}), it takes {checked['wall']:.1f} s.",
            f"{why}: its predictions for other settings are unreliable.",
            "",
        ]
    lines += [
        f"predicted with -n {q['workers']} --dist {q['dist']} ({q['order']} order): "
        f"{p['wall']:.1f} s wall, parallel efficiency {p['efficiency']:.0%}, "
        f"tail {p['tail']:.1f} s, start-up {p['startup']:.1f} s",
        "",
        f"{'-n':>4}  {'wall':>8}  {'efficiency':>10}  {'tail':>7}",
    ]
    lines.extend(
        f"{r['workers']:>4}  {r['wall']:>7.1f}s  {r['efficiency']:>10.0%}  {r['tail']:>6.1f}s"
        for r in answer["table"]
    )
    lines.append("")
    if answer["limits"]:
        lines.append("what limits it:")
        lines.extend(f"  - {limit['text']}" for limit in answer["limits"])
    elif checked["reliable"]:
        lines.append("nothing stands out: the tests spread evenly")
    best = answer["best"]
    if lines[-1]:
        lines.append("")
    if checked["reliable"]:
        lines.append(f"fastest for the next run: {setting_text(best)} ({best['wall']:.1f} s)")
    else:
        lines.append(
            "fastest for the next run: none recommended: the model does not account for "
            f"this run's wall time (by the model alone: {setting_text(best)}, "
            f"{best['wall']:.1f} s)"
        )
    model = answer["model"]
    cpus = f"{int(model['cpus'])} CPUs" + ("" if answer["cpus_recorded"] else ", this machine's")
    runs = int(model.get("runs", 1))
    over = f", start-up and exit the median of {runs} runs of this suite" if runs > 1 else ""
    lines.append(
        f"(measured: worker start-up {model['boot']:.2f} s with a CPU of its own, "
        f"{model['gap'] * 1000:.1f} ms between tests, {model['finish']:.2f} s after the last; "
        f"{cpus}{over})"
    )
    if accounted is not None and checked["reliable"]:
        lines.append(
            f"(replayed as it ran, -n {checked['workers']} --dist {checked['dist']}, the model "
            f"takes {checked['wall']:.1f} s of its {rec['wall']:.1f} s)"
        )
    if accounted is None and checked["dist"] not in DISTS and checked["dist"] != "no":
        lines.append(
            f"(--dist {checked['dist']} is not a distribution the model replays: predictions "
            "take the run's tests as --dist load would, not checked against its wall time)"
        )
    if not answer["order_recorded"]:
        lines.append(
            "(this log does not record the collection order: it is taken from when the tests "
            "started)"
        )
    return "\n".join(lines) + "\n"


_NEXT_RUN: weakref.WeakKeyDictionary[RunState, tuple[int, str | None]] = weakref.WeakKeyDictionary()
"""Per folded run: the events it had when its line was made, and the line (a dashboard
redraws often; the prediction changes only when the run does)."""


def next_run_line(state: RunState, path: Path | None = None) -> str | None:
    """:func:`next_run_words` for a finished run folded with ``detail`` (None while it
    runs, or without tests); with the log's ``path``, start-up and exit over the suite's
    runs in its folder, as ``whatif`` and ``testmon report`` take them."""
    if state.end is None or not state.tests:
        return None
    cached = _NEXT_RUN.get(state)
    if cached is not None and cached[0] == state.events:
        return cached[1]
    profile = build_profile(state)
    if path is not None:
        profile = settled(profile, path)
    best, checked = best_next(profile, profile.dist)
    line = next_run_words(
        best["workers"],
        best["dist"],
        best["order"],
        best["wall"],
        profile.wall,
        checked["accounted"],
    )
    _NEXT_RUN[state] = (state.events, line)
    return line
