"""Predictions and ordering (issue 17): the model of xdist's scheduling against schedules
worked out by hand, the profile it replays taken apart from recorded events,
``--monitor-order=history`` in real runs with ``-n 2``, and ``testmon whatif`` at the
command line."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Literal

import msgspec
import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.history_order import ORDER_KEY
from testmon_live.plugin.longest_first import history_order, recorded_durations
from testmon_live.plugin.runlog import MonitorDir, iter_log
from testmon_live.plugin.settings import HELP_ORDER
from testmon_live.plugin.state import RunState
from testmon_live.tui.cli import main
from testmon_live.tui.predict import overheads
from testmon_live.tui.predict.exits import exit_work, exits_end
from testmon_live.tui.predict.profile import (
    Fixture,
    Hold,
    Profile,
    Test,
    build_profile,
    load_profile,
)
from testmon_live.tui.predict.schedule import replay, units_of
from testmon_live.tui.predict.whatif import (
    ACCOUNTED,
    Question,
    WhatIf,
    check,
    next_run_line,
    next_run_words,
    render_text,
    whatif,
)
from testmon_live.tui.testing import sample_runs

from .conftest import only_run, read_recorded, run_logs

T0 = sample_runs.T0


def profile(
    costs: list[float],
    *,
    fixtures: list[Fixture] | None = None,
    holds: dict[int, list[Hold]] | None = None,
    names: list[str] | None = None,
    boot: float = 0.0,
    gap: float = 0.0,
    finish: float = 0.0,
    cpus: int = 0,
) -> Profile:
    """A profile made by hand: tests of the given seconds in ``test_m.py``."""
    names = names or [f"test_m.py::test_{i}" for i in range(len(costs))]
    tests = [
        Test(
            name,
            cost,
            (holds or {}).get(i, []),
            name.split("::", 1)[0],
            duration=cost,
        )
        for i, (name, cost) in enumerate(zip(names, costs, strict=True))
    ]
    return Profile(
        run_id="hand",
        tests=tests,
        fixtures=fixtures or [],
        workers=2,
        dist="load",
        order="",
        cpus=cpus,
        boot=boot,
        gap=gap,
        finish=finish,
        wall=0.0,
        indexed=True,
    )


# ------------------------------------------------------------- hand-worked schedules


def test_even_tests_split_evenly_over_workers() -> None:
    p = profile([1.0] * 8)
    assert replay(p, 1).makespan == pytest.approx(8.0)
    assert replay(p, 2).makespan == pytest.approx(4.0)
    assert replay(p, 4).makespan == pytest.approx(2.0)


def test_a_straggler_collected_last_runs_alone_and_first_it_overlaps() -> None:
    """load, 2 workers, six 1 s tests and a 5 s one collected last.

    Collected order: chunks of 2 ([0,1] and [2,3]), then one test at a time as each worker
    reports; the 5 s test goes out last, at t=3, and ends at 8. Longest first: gw0's first
    chunk is [6, 0], so it runs 6 (0..5) and then 0 (5..6) while gw1 runs 1..5 one by one
    (0..5): 6 s, not the 5 a perfect split would give."""
    p = profile([1.0] * 6 + [5.0])
    assert replay(p, 2).makespan == pytest.approx(8.0)
    first = history_order([t.nodeid for t in p.tests], {t.nodeid: t.duration for t in p.tests})
    assert first[0] == 6
    assert replay(p, 2, order=first).makespan == pytest.approx(6.0)


def test_start_up_gap_and_finish_add_to_the_wall_and_start_up_scales_with_cpus() -> None:
    p = profile([1.0] * 4, boot=0.5, gap=0.1, finish=0.25, cpus=2)
    # -n 2 on 2 CPUs: each worker runs two tests of 1 s + 0.1 s gap
    assert replay(p, 2).wall == pytest.approx(0.5 + 2.2 + 0.25)
    # -n 4 on 2 CPUs: start-up, gap and end twice as long (the recording had 2 workers)
    assert replay(p, 4).startup == pytest.approx(1.0)
    assert replay(p, 4).wall == pytest.approx(1.0 + 1.2 + 0.5)


def test_workers_exit_sharing_the_cpus_only_when_they_exit_together() -> None:
    """Each worker needs 0.5 s of a CPU to exit. Four 1 s tests on -n 4, 2 CPUs: all four
    exit at 1 s together, at half speed: 1 s. Three 0.1 s tests and a 3 s one: the three
    have exited (by 0.85 s) long before the last, which exits alone in 0.5 s."""
    even = profile([1.0] * 4, finish=0.5, cpus=2)
    assert replay(even, 4).wall == pytest.approx(1.0 + 1.0)
    straggler = profile([0.1, 0.1, 0.1, 3.0], finish=0.5, cpus=2)
    assert replay(straggler, 4).wall == pytest.approx(3.0 + 0.5)
    assert exits_end([0.1, 0.1, 0.1], 0.5, 2) == pytest.approx(0.85)


def test_a_recorded_exit_is_taken_apart_from_the_workers_exiting_with_it() -> None:
    """Four workers that ended together took 1 s on 2 CPUs: 0.5 s each on a CPU of its
    own; one that ended alone took what it took."""
    assert exit_work([2.0] * 4, 1.0, 2) == pytest.approx(0.5)
    assert exit_work([0.5, 0.5, 0.5, 2.0], 0.6, 2) == pytest.approx(0.6)
    assert exit_work([2.0], 0.6, 0) == pytest.approx(0.6)


def test_workers_finishing_together_are_heard_in_any_order_and_the_common_case_wins() -> None:
    """64 tests on -n 4, a 1.5 s one at 7, 23, 39 and 55, the others 0.05 s. The first
    chunks are 0-3, 4-7, 8-11, 12-15; the workers report together, and whichever the
    controller hears first is topped up first. Most orders give the worker on test 7 a
    chunk without a long test (the four long ones land on four workers, the last starts at
    1.25 s: 2.75 s); in some it gets 20-23 and runs two (3.3 s), as it does when the
    reports are taken in worker order. The model takes the median of a few drawn orders,
    the same on every call."""
    p = profile([1.5 if i % 16 == 7 else 0.05 for i in range(64)])
    assert replay(p, 4).makespan == pytest.approx(2.75)
    assert replay(p, 4).makespan == replay(p, 4).makespan


def test_a_lock_held_2s_per_worker_serialises_the_workers() -> None:
    """Four workers each set up a session fixture that holds one lock 2 s: 2, 4, 6, 8."""
    migrate = Fixture("migrated", "session", "", 0.0, 0.0, [Hold("migrations", 2.0, 2.0)])
    p = profile([0.0] * 8, fixtures=[migrate])
    schedule = replay(p, 4)
    assert schedule.makespan == pytest.approx(8.0)
    assert schedule.lock_wait == pytest.approx(2.0 + 4.0 + 6.0)
    assert replay(p, 1).makespan == pytest.approx(2.0)


def test_run_once_pays_the_work_once_and_the_others_wait_for_it() -> None:
    once = Fixture(
        "migrated", "session", "", 0.0, 0.0, [Hold("migrations", 2.0, 0.0)], workers=2, once=True
    )
    p = profile([1.0] * 8, fixtures=[once])
    # every worker waits for the first's 2 s, then runs its two tests
    assert replay(p, 4).makespan == pytest.approx(4.0)


def test_a_session_fixture_is_paid_once_per_worker_and_flagged() -> None:
    database = Fixture("database", "session", "", 3.0, 3.0, workers=2)
    p = profile([0.5] * 16, fixtures=[database])
    schedule = replay(p, 4)
    assert schedule.setups == {"database (session)": 4}
    assert schedule.makespan == pytest.approx(3.0 + 4 * 0.5)
    answer = whatif(p, Question(4, table=(1, 4)))
    texts = [limit["text"] for limit in answer["limits"]]
    assert any("run_once on `database` would save 9 s of worker time" in t for t in texts)


def test_django_test_databases_are_each_workers_own_and_no_run_once() -> None:
    """pytest-django's django_db_setup creates each worker's own test databases: run_once
    cannot share them; the Django remedies are named instead."""
    databases = Fixture("django_db_setup", "session", "", 3.0, 3.0, workers=2)
    p = profile([0.5] * 16, fixtures=[databases])
    texts = [limit["text"] for limit in whatif(p, Question(4, table=(1, 4)))["limits"]]
    assert not any("run_once" in t for t in texts)
    assert any(
        t.startswith("`django_db_setup` creates each worker's own test databases (4 workers, ")
        and "--reuse-db keeps them for the next run" in t
        for t in texts
    )


def test_a_module_fixture_is_paid_by_each_worker_entering_the_module() -> None:
    names = [f"test_a.py::test_{i}" for i in range(4)] + [f"test_b.py::test_{i}" for i in range(4)]
    table = Fixture("table", "module", "", 1.0, 1.0, scopes=frozenset({"test_a.py"}))
    p = profile([1.0] * 8, fixtures=[table], names=names)
    # loadfile: gw0 takes test_a.py (1 s fixture + 4 tests), gw1 test_b.py (4 tests)
    schedule = replay(p, 2, "loadfile")
    assert schedule.ends == {0: pytest.approx(5.0), 1: pytest.approx(4.0)}


def test_loadfile_gives_whole_files_and_shuts_down_workers_without_one() -> None:
    names = ["a.py::t1", "a.py::t2", "a.py::t3", "b.py::t1"]
    p = profile([1.0] * 4, names=names)
    assert replay(p, 2, "loadfile").makespan == pytest.approx(3.0)
    three = replay(p, 3, "loadfile")
    assert set(three.ends) == {0, 1}  # the third worker had no file and ran nothing


def test_worksteal_steals_nothing_from_a_worker_with_two_left() -> None:
    """Two workers, [4, 1, 1, 1]: gw0 gets [0, 1], gw1 [2, 3]; gw1 runs out at 2 s and
    finds gw0 with two (the running one and the next): too few to steal, so test 1 waits
    for test 0 and runs 4..5."""
    p = profile([4.0, 1.0, 1.0, 1.0])
    assert replay(p, 2, "worksteal").makespan == pytest.approx(5.0)


def test_fewer_tests_than_two_per_worker_go_round_robin() -> None:
    p = profile([1.0, 2.0, 3.0])
    schedule = replay(p, 4)
    assert schedule.makespan == pytest.approx(3.0)
    assert set(schedule.ends) == {0, 1, 2}


def test_a_large_run_is_replayed_in_units_and_keeps_its_stragglers() -> None:
    p = profile([0.01] * 20_000 + [30.0])
    units = units_of(p, list(range(len(p.tests))))
    assert len(units) < 8000
    assert sum(u.count for u in units) == len(p.tests)
    assert units[-1].cost == 30.0
    assert units[-1].count == 1
    assert replay(p, 4).makespan >= 30.0


def test_the_table_and_the_best_setting() -> None:
    p = profile([1.0] * 6 + [5.0], boot=0.2, cpus=2)
    answer = whatif(p, Question(2, table=(1, 2, 4)))
    assert [row["workers"] for row in answer["table"]] == [1, 2, 4]
    assert answer["prediction"]["wall"] == answer["table"][1]["wall"]
    assert answer["best"]["order"] == "longest-first"
    kinds = {limit["kind"] for limit in answer["limits"]}
    assert "longest-test" in kinds


@pytest.mark.parametrize(
    ("question", "words"),
    [
        (Question(0), "-n 0: give a number of workers"),
        (Question(2, dist="each"), "--dist each: give one of load"),
        (Question(2, order="random"), "--order random"),
        (Question(2, table=(2, 0)), "--table: 0 workers"),
    ],
)
def test_bad_questions_are_refused_in_words(question: Question, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        whatif(profile([1.0]), question)


# ------------------------------------------------------------------ the profile


def _recorded_run(
    boot: float = 1.0,
    finish: float = 0.8,
    *,
    rootdir: str = "/p",
    workers: int = 2,
    status: str = "ok",
) -> list[ev.Event]:
    """Two workers; each sets up session fixture `db` (0.5 s, of which it holds lock
    `migrations` 0.3 s and gw1 first waits 0.3 s for it) in its first test's setup. The
    first tests start ``boot`` seconds after the header, the end record comes ``finish``
    seconds after the last test."""
    events: list[ev.Event] = [
        ev.RunStarted(
            ts=T0,
            schema=ev.SCHEMA_VERSION,
            run_id="r",
            rootdir=rootdir,
            workers=workers,
            dist="load",
            cpus=2,
        ),
    ]
    t = T0 + boot
    for k, w in enumerate(("gw0", "gw1")):
        wait = 0.3 * k
        setup_start = t
        events += [
            ev.LockEvent(
                w=w,
                ts=setup_start,
                action="wait",
                kind="monitor",
                key="migrations",
                lock_id="1",
                fixture="db",
                test=f"test_m.py::test_{k}",
            ),
            ev.LockEvent(
                w=w,
                ts=setup_start + wait,
                action="acquired",
                kind="monitor",
                key="migrations",
                lock_id="1",
                waited=wait,
                fixture="db",
                test=f"test_m.py::test_{k}",
            ),
            ev.LockEvent(
                w=w,
                ts=setup_start + wait + 0.3,
                action="released",
                kind="monitor",
                key="migrations",
                lock_id="1",
                held=0.3,
                fixture="db",
                test=f"test_m.py::test_{k}",
            ),
            ev.FixtureSetup(
                w=w,
                ts=setup_start + wait + 0.5,
                name="db",
                scope="session",
                test=f"test_m.py::test_{k}",
                start=setup_start,
                dur=wait + 0.5,
            ),
        ]
    for k in range(4):
        w = f"gw{k % 2}"
        start = t + (0 if k < 2 else 1.0)
        dur = (0.8 if k < 2 else 0.2) + (0.3 if k == 1 else 0.0)
        events.append(
            ev.TestFinished(
                w=w,
                ts=start + dur,
                nodeid=f"test_m.py::test_{k}",
                outcome="passed",
                phases=[ev.Phase("call", start, dur, "passed")],
                duration=dur,
                index=k,
            )
        )
    end = t + 1.2 + finish
    events.append(ev.RunFinished(ts=end, exitstatus=0, status=status, duration=end - T0))
    return events


def test_the_profile_takes_wide_fixtures_and_lock_waits_out_of_the_tests() -> None:
    state = RunState(detail=True).apply_all(_recorded_run())
    p = build_profile(state)
    assert [t.nodeid for t in p.tests] == [f"test_m.py::test_{k}" for k in range(4)]
    # test_0: 0.8 - 0.5 of db; test_1: 1.1 - 0.8 of db (0.3 of it waiting)
    assert [round(t.cost, 6) for t in p.tests] == [0.3, 0.3, 0.2, 0.2]
    (db,) = p.fixtures
    assert (db.name, db.scope, db.workers) == ("db", "session", 2)
    assert db.first == pytest.approx(0.2)
    assert db.rest == pytest.approx(0.2)
    assert [(h.lock, h.first, h.rest) for h in db.holds] == [("migrations", 0.3, 0.3)]
    assert db.needers is None  # every test ran after its worker set it up
    assert p.indexed
    assert p.cpus == 2
    assert p.workers == 2
    assert p.boot == pytest.approx(1.0)  # 2 workers on 2 CPUs: no contention


def test_a_log_without_collection_indexes_falls_back_to_start_order() -> None:
    events = _recorded_run()
    for e in events:
        if isinstance(e, ev.TestFinished):
            e.index = None
    p = build_profile(RunState(detail=True).apply_all(events))
    assert not p.indexed
    assert [t.nodeid for t in p.tests][:2] == ["test_m.py::test_0", "test_m.py::test_1"]


# ---------------------------------------------------------------- ordering by history


def test_history_order_unknown_first_then_longest_ties_as_collected() -> None:
    ids = ["a", "b", "c", "d", "e"]
    durations = {"a": 1.0, "b": 3.0, "d": 1.0}
    assert [ids[i] for i in history_order(ids, durations)] == ["c", "e", "b", "a", "d"]


def _history_log(folder: Path, durations: dict[str, float]) -> None:
    """A recorded run in ``folder``'s monitor dir with the given test durations."""
    events: list[ev.Event] = [
        ev.RunStarted(
            ts=T0, schema=ev.SCHEMA_VERSION, run_id="20261201-000000-000aa", rootdir=str(folder)
        )
    ]
    for i, (nodeid, dur) in enumerate(durations.items()):
        events.append(
            ev.TestFinished(
                w="gw0", ts=T0 + i + dur, nodeid=nodeid, outcome="passed", duration=dur, index=i
            )
        )
    events.append(ev.RunFinished(ts=T0 + 100, exitstatus=0, status="ok", duration=100.0))
    sample_runs.write_log(folder / ".testmon" / "runs" / "20261201-000000-000aa.jsonl", events)


def test_recorded_durations_skip_what_does_not_decode(tmp_path: Path) -> None:
    _history_log(tmp_path, {"t.py::a": 1.5, "t.py::b": 0.5})
    log = run_logs(tmp_path)[0]
    with log.open("ab") as handle:
        handle.write(b'{"t":"test","nodeid":5}\n{"t":"test","nodeid":"t.py::c","duration":-1}\n')
        handle.write(b"garbage\n")
    assert recorded_durations(MonitorDir(tmp_path / ".testmon")) == {"t.py::a": 1.5, "t.py::b": 0.5}


SUITE = """
import os, pytest

def _seen(request):
    pass

def test_fast(): pass
def test_slow(): pass
def test_mid(): pass
def test_new(): pass
"""

CONFTEST = """
import json, os

def pytest_collection_finish(session):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(f"order-{worker}.json", "w") as handle:
        json.dump([item.nodeid for item in session.items], handle)
"""

RECORDED = {
    "test_order.py::test_fast": 0.01,
    "test_order.py::test_slow": 3.0,
    "test_order.py::test_mid": 1.0,
}
EXPECTED = [
    "test_order.py::test_new",
    "test_order.py::test_slow",
    "test_order.py::test_mid",
    "test_order.py::test_fast",
]


def test_history_order_is_the_same_on_every_worker_and_recorded(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_order=SUITE)
    pytester.makeconftest(CONFTEST)
    _history_log(pytester.path, RECORDED)
    result = pytester.runpytest_subprocess(
        "--monitor", "-n", "2", "--monitor-order=history", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=4)
    for worker in ("gw0", "gw1"):
        assert json.loads((pytester.path / f"order-{worker}.json").read_text()) == EXPECTED
    (log,) = [p for p in run_logs(pytester.path) if "000aa" not in p.name]
    recorded = read_recorded(log)
    assert recorded.header.order == "history"
    by_index = sorted(recorded.of(ev.TestFinished), key=lambda t: t.index or 0)
    assert [t.nodeid for t in by_index] == EXPECTED
    assert [t.index for t in by_index] == [0, 1, 2, 3]
    # suspects replays the order the run had, and says it was changed
    last = max(recorded.of(ev.TestFinished), key=lambda t: t.index or 0)
    capsys.readouterr()
    code = main(
        [
            "suspects",
            str(log),
            last.nodeid,
            "--dir",
            str(pytester.path / ".testmon"),
            "--format",
            "json",
        ]
    )
    model = json.loads(capsys.readouterr().out)
    assert code == 0
    assert model["order"] == "history"
    assert "--monitor-order=collected" in model["command"]
    mine = recorded.state.tests_on(last.w)
    ran_before = [t.nodeid for t in mine[: mine.index(last)]]
    assert [p["nodeid"] for p in model["predecessors"]] == ran_before
    main(["suspects", str(log), last.nodeid, "--dir", str(pytester.path / ".testmon")])
    assert "order changed by --monitor-order=history" in capsys.readouterr().out


def test_history_order_from_the_ini_without_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_order=SUITE)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmonitor_order = history\n")
    _history_log(pytester.path, RECORDED)
    result = pytester.runpytest_subprocess("--monitor", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    assert json.loads((pytester.path / "order-main.json").read_text()) == EXPECTED


def test_collected_order_is_the_default_and_not_recorded_as_changed(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_order=SUITE)
    pytester.makeconftest(CONFTEST)
    _history_log(pytester.path, RECORDED)
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    order = json.loads((pytester.path / "order-gw0.json").read_text())
    assert order == [f"test_order.py::test_{n}" for n in ("fast", "slow", "mid", "new")]
    (log,) = [p for p in run_logs(pytester.path) if "000aa" not in p.name]
    assert read_recorded(log).header.order == ""


def test_a_bad_order_is_a_usage_error_and_help_warns_of_pollution(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_order=SUITE)
    result = pytester.runpytest_subprocess("--monitor-order=fastest")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--monitor-order: 'fastest' is not an order*history*"])
    helped = pytester.runpytest_subprocess("--help")
    text = " ".join(helped.stdout.str().split())
    assert "pollution" in HELP_ORDER
    assert " ".join(HELP_ORDER.split()[:12]) in text


def test_the_order_key_is_handed_to_workers() -> None:
    assert ORDER_KEY == "testmon_live_order"


# ------------------------------------------------------------------ the command


def _write_run(folder: Path) -> Path:
    return sample_runs.write_log(folder / "runs" / "20261201-000001-000bb.jsonl", _recorded_run())


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_whatif_prints_prediction_table_and_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_run(tmp_path)
    code, out, err = run_cli(capsys, "whatif", "--dir", str(tmp_path), "-n", "4")
    assert code == 0, err
    assert "predicted with -n 4 --dist load (collected order)" in out
    assert "  16 " in out  # the default table
    assert "fastest for the next run: -n " in out
    code, out, _ = run_cli(
        capsys, "whatif", "--dir", str(tmp_path), "--table", "1,3", "--format", "json"
    )
    answer = json.loads(out)
    assert [row["workers"] for row in answer["table"]] == [1, 3]
    assert answer["question"]["workers"] == 2  # as recorded
    assert answer["recorded"]["wall"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-n", "0"], "-n 0: give a number of workers from 1"),
        (["--dist", "each"], "invalid choice: 'each'"),
        (["--order", "random"], "invalid choice: 'random'"),
        (["--table", "1,x"], "'1,x' is not a comma list of worker counts"),
        (["--table", ","], "give at least one worker count"),
    ],
)
def test_whatif_bad_input_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    _write_run(tmp_path)
    try:
        code, _out, err = run_cli(capsys, "whatif", "--dir", str(tmp_path), *args)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
        err = capsys.readouterr().err
    assert code == 2
    assert words in err
    assert "Traceback" not in err


def test_whatif_on_a_run_without_tests_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [e for e in _recorded_run() if not isinstance(e, ev.TestFinished)]
    sample_runs.write_log(tmp_path / "runs" / "20261201-000002-000cc.jsonl", events)
    code, _out, err = run_cli(capsys, "whatif", "--dir", str(tmp_path))
    assert code == 1
    assert "ran no tests: there is nothing to predict" in err


def test_whatif_help_explains_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["whatif", "--help"])
    out = capsys.readouterr().out
    assert "model of xdist's scheduling" in " ".join(out.split())
    assert "longest-first" in out
    assert "worksteal" in out
    assert "run_once" in out


def test_report_and_dashboard_line_give_the_next_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_run(tmp_path)
    code, out, _ = run_cli(capsys, "report", "--dir", str(tmp_path), "--format", "json")
    assert code == 0
    nxt = json.loads(out)["next_run"]
    assert nxt["workers"] >= 1
    assert nxt["order"] in ("collected", "longest-first")
    code, out, _ = run_cli(capsys, "report", "--dir", str(tmp_path))
    assert "next run: -n " in out
    assert "predicted fastest" in out
    state = RunState(detail=True).apply_all(_recorded_run())
    line = next_run_line(state)
    assert line is not None
    assert line.startswith("next run: -n ")
    running = RunState(detail=True).apply_all(_recorded_run()[:-1])
    assert next_run_line(running) is None


def test_a_recorded_run_carries_collection_indexes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_order=SUITE)
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    recorded = only_run(pytester)
    indexes = {t.nodeid: t.index for t in recorded.of(ev.TestFinished)}
    assert indexes == {
        "test_order.py::test_fast": 0,
        "test_order.py::test_slow": 1,
        "test_order.py::test_mid": 2,
        "test_order.py::test_new": 3,
    }
    assert recorded.header.cpus >= 1


def test_the_best_setting_is_the_fewest_workers_within_reach_of_the_fastest() -> None:
    """-n 2 takes 4.1 s, -n 4 and more 4.0 s: not worth twice the workers; and the test
    already comes first, so reordering is not worth it either."""
    p = profile([4.0, 0.1, 0.1, 0.1])
    best = whatif(p, Question(2, table=(1, 2, 4, 8)))["best"]
    assert (best["workers"], best["order"]) == (2, "collected")
    assert best["wall"] == pytest.approx(4.1)


# ---------------------------------------------- start-up and exit over several runs


def _run_log(folder: Path, second: int, events: list[ev.Event]) -> Path:
    return sample_runs.write_log(folder / "runs" / f"20261201-0000{second:02d}-000aa.jsonl", events)


def _answer(capsys: pytest.CaptureFixture[str], folder: Path, run: str = "latest") -> WhatIf:
    code, out, err = run_cli(
        capsys, "whatif", run, "--dir", str(folder), "-n", "4", "--format", "json"
    )
    assert code == 0, err
    answer: WhatIf = json.loads(out)
    return answer


def test_a_slow_start_of_the_recording_is_outvoted_by_older_runs_of_its_suite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for second in (1, 2, 3):
        _run_log(tmp_path, second, _recorded_run())
    normal = _answer(capsys, tmp_path)
    assert normal["model"]["runs"] == 3
    slow = _run_log(tmp_path, 4, _recorded_run(boot=5.0, finish=3.0))
    answer = _answer(capsys, tmp_path)
    assert answer["model"]["runs"] == 4
    assert answer["model"]["boot"] == pytest.approx(1.0)  # 2 workers on 2 CPUs
    assert answer["model"]["finish"] == pytest.approx(normal["model"]["finish"])
    assert answer["prediction"]["wall"] == pytest.approx(normal["prediction"]["wall"])
    assert answer["recorded"]["wall"] == pytest.approx(5.0 + 1.2 + 3.0)  # as it was
    # replayed as it ran, with its own slow start-up and exit, the model accounts for it
    assert answer["check"]["accounted"] == pytest.approx(1.0, abs=0.05)
    assert answer["check"]["reliable"]
    alone = whatif(load_profile(slow), Question(4))
    assert alone["model"]["boot"] == pytest.approx(5.0)
    assert alone["prediction"]["wall"] > answer["prediction"]["wall"] + 5.0
    _code, out, _ = run_cli(capsys, "whatif", "--dir", str(tmp_path))
    assert "start-up and exit the median of 4 runs of this suite" in " ".join(out.split())
    # the report's next-run line takes them as whatif does
    _code, out, _ = run_cli(capsys, "report", "--dir", str(tmp_path), "--format", "json")
    nxt = json.loads(out)["next_run"]
    assert (nxt["workers"], nxt["order"]) == (answer["best"]["workers"], answer["best"]["order"])
    assert nxt["wall"] == pytest.approx(answer["best"]["wall"], abs=0.01)
    # ...and so does the dashboard's, given the log's path
    said = next_run_words(
        nxt["workers"], nxt["dist"], nxt["order"], nxt["wall"], nxt["recorded_wall"]
    )
    assert next_run_line(RunState(detail=True).apply_all(iter_log(slow)), slow) == said
    assert next_run_line(RunState(detail=True).apply_all(iter_log(slow))) != said


def test_a_lone_run_keeps_its_own_start_up_and_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _run_log(tmp_path, 1, _recorded_run(boot=5.0, finish=3.0))
    answer = _answer(capsys, tmp_path)
    alone = whatif(load_profile(log), Question(4))
    assert answer["model"]["runs"] == 1
    assert answer["model"]["boot"] == pytest.approx(5.0)
    assert answer["prediction"] == alone["prediction"]
    _code, out, _ = run_cli(capsys, "whatif", "--dir", str(tmp_path))
    assert "median of" not in out


def test_only_older_finished_xdist_runs_of_the_suite_count_and_bad_logs_are_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    _run_log(tmp_path, 1, _recorded_run(rootdir="/elsewhere"))  # another project
    _run_log(tmp_path, 2, _recorded_run(workers=0))  # no xdist: no workers started
    _run_log(tmp_path, 3, _recorded_run(status="interrupted"))
    fewer = [e for e in _recorded_run() if getattr(e, "nodeid", "") != "test_m.py::test_3"]
    _run_log(tmp_path, 4, fewer)  # a subset of the suite
    _run_log(tmp_path, 5, [e for e in _recorded_run() if not isinstance(e, ev.RunFinished)])
    _run_log(tmp_path, 6, _recorded_run(finish=-1.0))  # ends before its last test
    (runs / "20261201-000007-000aa.jsonl").write_bytes(b"\x00garbage\n" * 10)
    (runs / "20261201-000008-000aa.jsonl").write_bytes(b"")
    os.mkfifo(runs / "20261201-000009-000aa.jsonl")  # would hang a reader
    (runs / "20261201-000010-000aa.jsonl").mkdir()
    header = ev.encode_lines(_recorded_run()[:1])
    (runs / "20261201-000011-000aa.jsonl").write_bytes(header + b'{"t":"test","nodeid":[1]}\n')
    _run_log(tmp_path, 12, _recorded_run(boot=5.0, finish=3.0))
    _run_log(tmp_path, 13, _recorded_run())  # newer than the run predicted
    answer = _answer(capsys, tmp_path, "20261201-000012")
    assert answer["model"]["runs"] == 1
    assert answer["model"]["boot"] == pytest.approx(5.0)


def test_an_older_run_counts_for_what_of_it_decodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ev.encode_lines(_recorded_run()).split(b"\n")
    lines[3:3] = [
        b'{"t":"test","nodeid":"x","ts":"soon"}',
        b"\xff\xfe not json",
        b"[" * 5000,
        b'{"t":"test","nodeid":"y","phases":' + b"[" * 100_000,
        b'{"t":"end","ts":1e999,"status":"ok","crashes":1' + b"0" * 400 + b"}",
    ]
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "20261201-000001-000aa.jsonl").write_bytes(b"\n".join(lines))
    _run_log(tmp_path, 2, _recorded_run(boot=5.0))
    answer = _answer(capsys, tmp_path)
    assert answer["model"]["runs"] == 2
    assert answer["model"]["boot"] == pytest.approx(3.0)  # the median of 1 s and 5 s


def test_older_logs_are_read_within_a_byte_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for second in (1, 2, 3):
        _run_log(tmp_path, second, _recorded_run())
    _run_log(tmp_path, 4, _recorded_run(boot=5.0))
    size = (tmp_path / "runs" / "20261201-000001-000aa.jsonl").stat().st_size
    monkeypatch.setattr(overheads, "HISTORY_BYTES", 2 * size + 10)  # two older logs fit
    answer = _answer(capsys, tmp_path)
    assert answer["model"]["runs"] == 3
    monkeypatch.setattr(overheads, "LOG_BYTES", size - 1)  # none is small enough
    answer = _answer(capsys, tmp_path)
    assert answer["model"]["runs"] == 1
    assert answer["model"]["boot"] == pytest.approx(5.0)


def test_a_lock_held_across_a_nested_setup_is_not_the_outer_fixtures_work_twice() -> None:
    """A session fixture that holds a lock around ``request.getfixturevalue`` of another:
    the other's setup is its own, so it is taken out of the outer's free work once, not
    once as nested time and again as the lock's hold."""
    t = 1.7e9
    state = RunState(detail=True)

    def lock(ts: float, action: Literal["acquired", "released"], took: float) -> ev.LockEvent:
        acquired = action == "acquired"
        return ev.LockEvent(
            w="gw0", ts=ts, action=action, kind="filelock", key="/tmp/x.lock", lock_id="1",
            test="t1", fixture="db", waited=took if acquired else None,
            held=None if acquired else took,
        )  # fmt: skip

    for event in [
        lock(t + 0.5, "acquired", 0.0),
        ev.FixtureSetup(
            w="gw0", ts=t + 9, name="migrated", scope="session", test="t1", start=t + 1, dur=8.0
        ),
        lock(t + 9.5, "released", 9.0),
        ev.FixtureSetup(w="gw0", ts=t + 10, name="db", scope="session", test="t1", start=t, dur=10),
        ev.TestFinished(w="gw0", ts=t + 11, nodeid="t1", outcome="passed", duration=11.0),
    ]:
        state.apply(event)
    free = {f.name: f.first for f in build_profile(state).fixtures}
    # db's own work: 10 s less 8 s of migrated less the 1 s it held the lock outside it
    assert free == pytest.approx({"db": 1.0, "migrated": 8.0})


# ------------------------------------------ the time between a test's phases is its own


def test_the_time_between_a_tests_phases_is_its_own_busy_and_modelled_time() -> None:
    """pytest makes a phase's report (a failure's text) after the phase's timing stops and
    before the next phase starts: 8 failing tests on 2 workers whose phases take 1 ms and
    whose failure reports take 0.5 s each. Their workers were busy, not idle: busy share,
    efficiency, the tail and the model all count the time between phases."""
    events = sample_runs.slow_reports_run(tests=8, workers=2, report=0.5)
    state = RunState(detail=True).apply_all(events)
    wall = state.wall()
    assert wall == pytest.approx(0.5 + 4 * 0.503 + 3 * 0.002 + 0.3)
    for view in state.active_workers():
        assert view.busy == pytest.approx(4 * 0.503)  # 4 tests of 3 ms by pytest's count
        assert view.reporting_time == pytest.approx(4 * 0.5)
        assert state.busy_share(view) == pytest.approx(4 * 0.503 / wall)
        assert view.longest_duration == pytest.approx(0.503)
    assert state.test_time == pytest.approx(8 * 0.503)
    assert state.efficiency() == pytest.approx(8 * 0.503 / (2 * wall))
    assert state.tail() is None  # both workers ran to the end: no straggler
    assert [t.duration for t in state.slowest(1)] == [pytest.approx(0.003)]  # pytest's own

    profile = build_profile(state)
    assert [t.cost for t in profile.tests] == [pytest.approx(0.503)] * 8
    assert [t.duration for t in profile.tests] == [pytest.approx(0.003)] * 8
    assert profile.gap == pytest.approx(0.002, abs=1e-5)
    answer = whatif(profile, Question(2))
    assert answer["prediction"]["wall"] == pytest.approx(wall, rel=0.05)
    assert answer["check"] == {
        "workers": 2,
        "dist": "load",
        "wall": answer["prediction"]["wall"],
        "accounted": pytest.approx(1.0, abs=0.05),
        "reliable": True,
    }
    text = render_text(answer)
    assert "replayed as it ran, -n 2 --dist load, the model takes 2.8 s of its 2.8 s" in text
    assert "unreliable" not in text


def test_whatif_says_when_the_model_cannot_account_for_the_runs_wall_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Workers that sat 1.5 s between tests (past the gap the model takes for xdist's own,
    waits for work it does not replay): replayed as it ran, the model takes 2.8 s of the
    run's 7.3 s. whatif says so, gives no "nothing stands out" and recommends no -n; the
    report and the dashboard give no next-run line."""
    events = sample_runs.slow_reports_run(tests=8, workers=2, report=0.5, between=1.5)
    path = sample_runs.write_log(tmp_path / "runs" / "20261201-000001-000aa.jsonl", events)
    state = RunState(detail=True).apply_all(events)
    checked = check(build_profile(state))
    assert checked["accounted"] is not None
    assert checked["accounted"] < ACCOUNTED
    assert checked["accounted"] == pytest.approx(2.8 / 7.3, abs=0.03)
    assert not checked["reliable"]

    code, out, err = run_cli(capsys, "whatif", "--dir", str(tmp_path))
    assert code == 0, err
    said = " ".join(out.split())
    assert "the model accounts for only 38% of this run's 7.3 s" in said
    assert "replayed as it ran (-n 2 --dist load), it takes 2.8 s" in said
    assert "its predictions for other settings are unreliable" in said
    assert "nothing stands out" not in said
    assert "fastest for the next run: none recommended" in said
    answer = _answer(capsys, tmp_path)
    assert answer["check"]["reliable"] is False
    assert answer["check"]["accounted"] == pytest.approx(checked["accounted"])

    line = next_run_line(state, path)
    assert line is not None
    assert line.startswith("next run: no prediction: the model accounts for only 38%")
    code, out, _ = run_cli(capsys, "report", "--dir", str(tmp_path), "--format", "json")
    nxt = json.loads(out)["next_run"]
    assert (nxt["reliable"], nxt["accounted"]) == (False, pytest.approx(checked["accounted"]))
    code, out, _ = run_cli(capsys, "report", "--dir", str(tmp_path))
    assert "next run: no prediction: the model accounts for only 38%" in out
    assert "predicted fastest" not in out


def test_a_model_that_takes_longer_than_the_run_is_no_recommendation_either() -> None:
    p = dataclasses.replace(profile([2.0] * 4), wall=2.0)  # 4 s of tests in 2 s on -n 2
    answer = whatif(p, Question(2, table=(1, 2, 4)))
    assert answer["check"]["accounted"] == pytest.approx(2.0)
    assert not answer["check"]["reliable"]
    text = " ".join(render_text(answer).split())
    assert "the model takes 200% of this run's 2.0 s to replay it" in text
    assert "It sees time the run did not spend" in text
    assert "none recommended" in text
    fine = whatif(dataclasses.replace(p, wall=4.0), Question(2, table=(1, 2, 4)))
    assert fine["check"]["reliable"]
    assert dataclasses.replace(p, wall=0.0).wall == 0.0
    assert check(dataclasses.replace(p, wall=0.0))["accounted"] is None  # nothing to go by


SLOW_REPORTS_CONFTEST = """
import time
import msgspec
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield  # the report is made: the time the test asks for goes by before the next phase
    if call.when == "call":
        time.sleep(getattr(item, "report_takes", 0.0))
"""

SLOW_REPORTS_SUITE = """
import msgspec
import pytest

@pytest.mark.parametrize("n", range(6))
def test_slow_report(request, n):
    request.node.report_takes = 0.5
    assert n < 0
"""


def test_a_real_run_whose_failure_reports_are_slow_is_busy_and_modelled(
    pytester: pytest.Pytester,
) -> None:
    """The case a real suite showed (long SQLAlchemy failure reports): pytest spends time
    making each failing test's report between its call and its teardown. Here 6 failing
    tests whose phases take milliseconds and whose reports take at least 0.5 s each, on
    2 workers: the workers' busy time, the run's test time and the model's replay of the
    tests count those seconds (the sleep is a floor: no assumption on the machine's speed)."""
    pytester.makeconftest(SLOW_REPORTS_CONFTEST)
    pytester.makepyfile(test_reports=SLOW_REPORTS_SUITE)
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", "-p", "no:randomly")
    result.assert_outcomes(failed=6)
    recorded = only_run(pytester)
    state = RunState(detail=True).apply_all(recorded.events)
    tests = state.tests
    assert len(tests) == 6
    assert all(t.duration < 0.5 for t in tests)  # pytest's durations leave the reports out
    for view in state.active_workers():
        ran = sum(1 for t in tests if t.w == view.id)
        assert view.busy >= 0.5 * ran
        assert view.reporting_time >= 0.5 * ran
        assert state.busy_share(view) * state.wall() >= 0.5 * ran
    assert state.test_time >= 3.0
    (end,) = recorded.of(ev.RunFinished)
    assert end.test_time >= 3.0  # the controller's own fold counted them as it went
    profile = build_profile(state)
    assert sum(t.cost for t in profile.tests) >= 3.0
    # the tests' part of the run (first test's start to last test's end), replayed at -n 2:
    # the reports are in it (xdist may hand one worker a test more than the model does)
    first = min(ev.test_started(t) for t in tests)
    last = max(t.ts for t in tests)
    assert replay(profile, 2).makespan >= 0.7 * (last - first)
    answer = whatif(profile, Question(2))
    assert answer["check"]["accounted"] is not None
    assert answer["check"]["accounted"] >= ACCOUNTED
    assert answer["check"]["reliable"]


def test_a_distribution_the_model_does_not_replay_is_not_checked_as_load() -> None:
    """--dist each runs every test on every worker: replayed as load, the model would find
    half the run's time unseen and blame time it does not see. It says the distribution is
    not one it replays instead, and keeps its recommendation."""
    events = sample_runs.slow_reports_run(tests=8, workers=2, report=0.5)
    header = events[0]
    assert isinstance(header, ev.RunStarted)
    events[0] = msgspec.structs.replace(header, dist="each")
    answer = whatif(build_profile(RunState(detail=True).apply_all(events)), Question(2))
    assert answer["check"]["accounted"] is None
    assert answer["check"]["dist"] == "each"
    assert answer["check"]["reliable"]
    text = " ".join(render_text(answer).split())
    assert "--dist each is not a distribution the model replays" in text
    assert "unreliable" not in text


def test_a_tests_rerun_attempts_are_its_cost_in_the_model() -> None:
    """A test pytest-rerunfailures ran again held its worker for every attempt: the fold
    counts them busy, the model's replay of the run counts them too (else a healthy run with
    a rerun reads as one the model cannot account for)."""
    events = sample_runs.slow_reports_run(tests=8, workers=2, report=0.5)
    plain = build_profile(RunState(detail=True).apply_all(events))
    k = next(i for i, e in enumerate(events) if isinstance(e, ev.TestFinished))
    record = events[k]
    assert isinstance(record, ev.TestFinished)
    events[k] = msgspec.structs.replace(record, reruns=1, rerun_time=2.0)
    rerun = build_profile(RunState(detail=True).apply_all(events))
    costs = {t.nodeid: t.cost for t in plain.tests}
    assert {t.nodeid: t.cost for t in rerun.tests} == {
        nodeid: pytest.approx(cost + (2.0 if nodeid == record.nodeid else 0.0))
        for nodeid, cost in costs.items()
    }


def test_a_log_that_claims_absurd_workers_is_not_replayed_at_its_own_n() -> None:
    """A header saying 2**53 workers (a hostile log: the fuzz found it) made the self-check
    replay with a queue per worker, 2**53 of them, until the machine ran out of memory
    (CI's OOM killer at 23 GB). More workers than the model replays: no check."""
    p = dataclasses.replace(profile([1.0] * 4), workers=2**53, wall=2.0)
    checked = check(p)
    assert checked["accounted"] is None
    assert checked["workers"] == 2**53
    answer = whatif(p, Question(2, table=(1, 2)))
    assert answer["check"]["accounted"] is None
