"""The dashboard's ETA reads earlier runs of the same suite only (:mod:`.dashboard.eta`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.tui.dashboard import eta
from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.testing import sample_runs

T0 = sample_runs.T0
ROOT = "/home/dev/project"
TINY = [f"tests/test_version_info.py::test_{k}" for k in range(7)]
SUITE = TINY + [f"tests/test_mod{i // 20}.py::test_{i}" for i in range(193)]


def run(
    run_id: str, nodeids: list[str], took: float, rootdir: str = ROOT, workers: int = 2
) -> list[ev.Event]:
    """A finished run of ``nodeids``, each taking ``took``, handed out in turn."""
    events: list[ev.Event] = [
        ev.RunStarted(
            ts=T0, schema=ev.SCHEMA_VERSION, run_id=run_id, rootdir=rootdir, workers=workers
        )
    ]
    wids = [f"gw{k}" for k in range(workers)] or ["main"]  # 0: no xdist
    now = {}
    for k, wid in enumerate(wids):
        events.append(ev.WorkerStarted(w=wid, ts=T0 + 0.1, schema=ev.SCHEMA_VERSION, pid=k))
        events.append(ev.WorkerCollected(w=wid, ts=T0 + 0.2, count=len(nodeids)))
        now[wid] = T0 + 0.3
    tests = []
    for i, nodeid in enumerate(nodeids):
        wid = wids[i % len(wids)]
        start = now[wid]
        tests.append(
            ev.TestFinished(
                w=wid,
                ts=start + took,
                nodeid=nodeid,
                outcome="passed",
                phases=[ev.Phase("call", start, took, "passed")],
                duration=took,
            )
        )
        now[wid] = start + took
    events += sorted(tests, key=lambda t: t.ts)
    end = max(now.values()) + 0.1
    events.append(
        ev.RunFinished(ts=end, exitstatus=0, status="ok", duration=end - T0, tests=len(nodeids))
    )
    return events


def log(folder: Path, run_id: str, events: list[ev.Event]) -> Path:
    return sample_runs.write_log(folder / ".testmon" / "runs" / f"{run_id}.jsonl", events)


def eta_at(path: Path, events: list[ev.Event], seconds: float) -> float | None:
    """The ETA the dashboard shows ``seconds`` into the run logged at ``path``."""
    cut = sample_runs.cut(events, seconds)
    sample_runs.write_log(path, cut)
    ingest = Ingest(lambda message: None, clock=lambda: T0 + seconds)
    ingest.reset("live", path)
    ingest.events(cut)
    return ingest.eta()


def test_eta_of_a_full_run_after_quick_runs_of_one_file(tmp_path: Path) -> None:
    """The reported case: a full run of the suite, then another project's, then three runs
    of one file of 7 tiny tests; halfway through the next full run, the ETA is what the
    full run took for the other half, not 100 tests at the tiny tests' mean."""
    log(tmp_path, "20261207-100000-full", run("full", SUITE, 0.4))
    log(tmp_path, "20261207-100500-other", run("other", SUITE, 5.0, rootdir="/elsewhere"))
    for k in range(3):
        log(tmp_path, f"20261207-10100{k}-tiny", run("tiny", TINY, 0.001, workers=0))
    now = tmp_path / ".testmon" / "runs" / "20261207-103000-now.jsonl"
    events = run("now", SUITE, 0.4)
    left = eta_at(now, events, 20.2)  # 100 of 200 tests done, 20 s of them left
    assert left is not None
    assert left == pytest.approx(20.0, abs=1.0)


def test_eta_ignores_a_newer_run_of_another_rootdir(tmp_path: Path) -> None:
    log(tmp_path, "20261207-100000-full", run("full", SUITE, 0.4))
    log(tmp_path, "20261207-100500-other", run("other", SUITE, 5.0, rootdir="/elsewhere"))
    now = tmp_path / ".testmon" / "runs" / "20261207-103000-now.jsonl"
    left = eta_at(now, run("now", SUITE, 0.4), 20.2)
    assert left is not None
    assert left == pytest.approx(20.0, abs=1.0)
    log(tmp_path, "20261207-090000-older", run("older", SUITE, 5.0, rootdir="/elsewhere"))
    (tmp_path / ".testmon" / "runs" / "20261207-100000-full.jsonl").unlink()
    assert eta_at(now, run("now", SUITE, 0.4), 20.2) is None  # another project's only


def test_history_of_a_subset_run_and_a_fuller_one(tmp_path: Path) -> None:
    """A newer run of a subset gives its tests' durations; the fuller run gives the rest
    and the mean a test none ran takes."""
    log(tmp_path, "20261207-100000-full", run("full", SUITE, 0.4))
    log(tmp_path, "20261207-101000-tiny", run("tiny", TINY, 0.001, workers=0))
    now = log(tmp_path, "20261207-103000-now", run("now", SUITE, 0.4)[:1])
    history = eta.read_history(now)
    assert history.durations[TINY[0]] == pytest.approx(0.001)
    assert history.durations[SUITE[-1]] == pytest.approx(0.4)
    assert len(history.durations) == len(SUITE)
    assert history.typical == pytest.approx(0.4)
    assert history.order == SUITE


def test_the_full_run_is_found_beyond_the_newest_few(tmp_path: Path) -> None:
    """More quick runs than :data:`HISTORY_RUNS` since the full one: it is still read (it
    is the largest log of the suite), within :data:`SCANNED` logs."""
    log(tmp_path, "20261207-100000-full", run("full", SUITE, 0.4))
    for k in range(eta.HISTORY_RUNS + 3):
        log(tmp_path, f"20261207-10100{k}-tiny", run("tiny", TINY, 0.001, workers=0))
    now = log(tmp_path, "20261207-103000-now", run("now", SUITE, 0.4)[:1])
    history = eta.read_history(now)
    assert history.typical == pytest.approx(0.4)
    assert len(history.durations) == len(SUITE)


def test_an_unreadable_current_header_gives_no_history(tmp_path: Path) -> None:
    log(tmp_path, "20261207-100000-full", run("full", SUITE, 0.4))
    now = tmp_path / ".testmon" / "runs" / "20261207-103000-now.jsonl"
    now.write_text("not a header\n")
    assert not eta.read_history(now)


def test_a_subset_run_again_counts_its_own_tests_left(tmp_path: Path) -> None:
    """A run of one file after runs of that file: what is left is that file's quick tests,
    not the first (slow) tests of the fullest run the history also read."""
    slow = [f"tests/test_slow.py::test_{i}" for i in range(40)]
    fast = [f"tests/test_fast.py::test_{i}" for i in range(40)]
    full = run("full", slow, 5.0)
    end = full.pop()
    assert isinstance(end, ev.RunFinished)
    after = end.ts - T0
    for event in run("x", fast, 0.01)[1:-1]:  # the fast file, after the slow one
        if isinstance(event, ev.TestFinished):
            event.ts += after
            event.phases[0].start += after
            full.append(event)
    last = full[-1].ts + 0.1
    full.append(ev.RunFinished(ts=last, exitstatus=0, status="ok", duration=last - T0, tests=80))
    log(tmp_path, "20261207-100000-full", full)
    for k in range(2):
        log(tmp_path, f"20261207-10100{k}-fast", run("fast", fast, 0.01))
    now = tmp_path / ".testmon" / "runs" / "20261207-103000-now.jsonl"
    left = eta_at(now, run("now", fast, 0.01), 0.305)  # the first test has begun
    assert left is not None
    assert left < 1.0  # 40 tests of 0.01 s on 2 workers, not 5 s ones


def test_a_test_takes_its_span_the_time_between_its_phases_included(tmp_path: Path) -> None:
    """An earlier run whose failing tests took 3 ms by pytest's count and 0.5 s more making
    their failure reports: the ETA takes each as long as it held its worker, and the gap
    between two tests stays what it was (2 ms), not those reports spread over every test."""
    before = sample_runs.slow_reports_run(tests=8, workers=2, report=0.5)
    log(tmp_path, "20261207-100000-before", before)
    header = before[0]
    assert isinstance(header, ev.RunStarted)
    now = log(tmp_path, "20261207-110000-now", [header])
    history = eta.read_history(now)
    assert list(history.durations.values()) == [pytest.approx(0.503)] * 8
    assert history.typical == pytest.approx(0.503)
    assert history.gap == pytest.approx(0.002, abs=1e-5)
