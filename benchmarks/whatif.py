"""How good ``testmon whatif`` is: record suites at -n 2, predict -n 4 and -n 1, measure them.

Suites (sleep-based, so a loaded machine stretches them little; written to a temp folder):

- ``straggler``: 40 tests of 0.1 s and one of 4 s collected last;
- ``short-long``: 60 tests of 0.05 s and 4 of 1.5 s spread through the collection;
- ``lock``: every worker's session fixture migrates behind ``monitor.lock`` for 2 s;
- ``session``: a 1.5 s session fixture set up on every worker, 30 tests of 0.1 s.

Each suite is recorded ``--recordings`` times (default 3) in a row with ``pytest -n 2
--monitor`` in one monitor folder; the model predicts -n 4 and -n 1 from the newest log, as
``testmon whatif`` does: worker start-up and exit the median over that log and the older
ones of the suite (``tui/predict/overheads.py``); then -n 4 and -n 1 are run ``--repeats``
times, interleaved (4, 1, 4, 1, ...), and the median measured wall is compared with the
prediction. The prediction from the newest recording alone (its own start-up and exit, what
``--recordings 1`` gives) is printed beside it. Wall is the run's as
its log says (header to end record, what the model predicts); the process's own wall,
which adds Python's and pytest's start-up before the header, is printed beside it.

Then ``--monitor-order=history`` on the straggler suite: -n 2 in the collected order and
with the history order, interleaved; the measured cut against the model's.

``--big`` instead times ``testmon whatif`` on a synthetic 100,000-test log (subprocess,
start-up included): wall and CPU seconds, median of 3; then again with four older logs of
the same suite in the folder (what the start-up and exit figures look at).

    flock /tmp/testmon-bench.lock .venv/bin/python benchmarks/whatif.py [--repeats 3]
    flock /tmp/testmon-bench.lock .venv/bin/python benchmarks/whatif.py --big
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir, iter_log
from testmon_live.tui.predict.overheads import settled
from testmon_live.tui.predict.profile import load_profile
from testmon_live.tui.predict.schedule import replay
from testmon_live.tui.predict.whatif import positions
from testmon_live.tui.testing import sample_runs

PY = sys.executable
ARGS = ("-p", "no:cacheprovider", "-p", "no:randomly", "-q", "--monitor-keep=0")
INNER_ADDOPTS = "-p no:asyncio -p no:textual-snapshot -p no:syrupy -p no:django"

SUITES: dict[str, dict[str, str]] = {
    "straggler": {
        "test_a.py": """
            import time, pytest
            @pytest.mark.parametrize("i", range(40))
            def test_short(i):
                time.sleep(0.1)
        """,
        "test_z.py": """
            import time
            def test_straggler():
                time.sleep(4.0)
        """,
    },
    "short-long": {
        "test_mixed.py": """
            import time, pytest
            @pytest.mark.parametrize("i", range(64))
            def test_case(i):
                time.sleep(1.5 if i % 16 == 7 else 0.05)
        """,
    },
    "lock": {
        "conftest.py": """
            import time, pytest
            from testmon_live.plugin import monitor
            @pytest.fixture(scope="session", autouse=True)
            def migrated():
                with monitor.lock("migrations"):
                    time.sleep(2.0)
        """,
        "test_db.py": """
            import time, pytest
            @pytest.mark.parametrize("i", range(20))
            def test_query(i):
                time.sleep(0.1)
        """,
    },
    "session": {
        "conftest.py": """
            import time, pytest
            @pytest.fixture(scope="session", autouse=True)
            def database():
                time.sleep(1.5)
        """,
        "test_app.py": """
            import time, pytest
            @pytest.mark.parametrize("i", range(30))
            def test_view(i):
                time.sleep(0.1)
        """,
    },
}


def write_suite(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for filename, text in SUITES[name].items():
        (folder / filename).write_text(textwrap.dedent(text))
    (folder / "pytest.ini").write_text("[pytest]\n")
    return folder


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TESTMON_"))}
    out["PYTEST_ADDOPTS"] = INNER_ADDOPTS
    return out


def run(folder: Path, workers: int, *extra: str) -> tuple[float, float, float]:
    """(the run's wall as its log says, the process's wall, first test to last) of one
    recorded run."""
    before = set(MonitorDir(folder / ".testmon").logs())
    t = time.perf_counter()
    done = subprocess.run(
        [PY, "-m", "pytest", "-n", str(workers), "--monitor", *ARGS, *extra],
        cwd=folder,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    process = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{folder.name} -n {workers} failed:\n{done.stdout}\n{done.stderr}")
    (log,) = set(MonitorDir(folder / ".testmon").logs()) - before
    events = list(iter_log(log))
    end = [e for e in events if isinstance(e, ev.RunFinished)]
    tests = [e for e in events if isinstance(e, ev.TestFinished)]
    span = max(t.ts for t in tests) - min(ev.test_started(t) for t in tests)
    return end[-1].duration, process, span


def predict(
    log: Path, workers: int, order: str = "collected", history: bool = True
) -> tuple[float, float]:
    """(wall, first test to last) predicted; ``history``: start-up and exit over the older
    runs of the folder too, as ``testmon whatif`` takes them (False: the log's alone)."""
    profile = load_profile(log)
    if history:
        profile = settled(profile, log)
    schedule = replay(profile, workers, "load", positions(profile, order))
    return schedule.wall, schedule.makespan


def newest(folder: Path) -> Path:
    return MonitorDir(folder / ".testmon").logs()[-1]


def accuracy(root: Path, repeats: int, recordings: int) -> None:
    print(
        "| suite | recorded -n 2 | -n 4 predicted | -n 4 measured | error | "
        "-n 1 predicted | -n 1 measured | error | tests only: error -n 4 | -n 1 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in SUITES:
        folder = write_suite(root, name)
        recorded_all = [run(folder, 2)[0] for _ in range(max(1, recordings))]
        recorded = recorded_all[-1]
        log = newest(folder)
        predicted = {n: predict(log, n) for n in (4, 1)}
        alone = {n: predict(log, n, history=False)[0] for n in (4, 1)}
        profile = load_profile(log)
        robust = settled(profile, log)
        measured: dict[int, list[tuple[float, float, float]]] = {4: [], 1: []}
        for _ in range(repeats):
            for n in (4, 1):
                measured[n].append(run(folder, n))
        wall = {n: statistics.median(r[0] for r in rows) for n, rows in measured.items()}
        span = {n: statistics.median(r[2] for r in rows) for n, rows in measured.items()}
        err = {n: (predicted[n][0] - wall[n]) / wall[n] for n in (4, 1)}
        span_err = {n: (predicted[n][1] - span[n]) / span[n] for n in (4, 1)}
        print(
            f"| {name} | {recorded:.2f} s | {predicted[4][0]:.2f} s | {wall[4]:.2f} s | "
            f"{err[4]:+.0%} | {predicted[1][0]:.2f} s | {wall[1]:.2f} s | {err[1]:+.0%} | "
            f"{span_err[4]:+.0%} | {span_err[1]:+.0%} |",
            flush=True,
        )
        spread = {
            n: (min(r[0] for r in rows), max(r[0] for r in rows)) for n, rows in measured.items()
        }
        print(
            f"<!-- {name}: -n 4 runs {spread[4][0]:.2f}..{spread[4][1]:.2f} s, -n 1 runs "
            f"{spread[1][0]:.2f}..{spread[1][1]:.2f} s; tests only predicted -n 4 "
            f"{predicted[4][1]:.2f} s measured {span[4]:.2f} s, -n 1 {predicted[1][1]:.2f} s "
            f"measured {span[1]:.2f} s; start-up and exit (wall less tests) predicted -n 4 "
            f"{predicted[4][0] - predicted[4][1]:.2f} s measured {wall[4] - span[4]:.2f} s, "
            f"-n 1 {predicted[1][0] - predicted[1][1]:.2f} s measured {wall[1] - span[1]:.2f} s "
            f"(newest recording alone: a worker's start-up {profile.boot:.2f} s, exit "
            f"{profile.finish:.2f} s, predicting -n 4 {alone[4]:.2f} s "
            f"({(alone[4] - wall[4]) / wall[4]:+.0%}), -n 1 {alone[1]:.2f} s "
            f"({(alone[1] - wall[1]) / wall[1]:+.0%}); the median of {robust.cost_runs} "
            f"recordings: {robust.boot:.2f} s, {robust.finish:.2f} s; recorded walls "
            f"{', '.join(f'{w:.2f}' for w in recorded_all)} s); "
            f"load {os.getloadavg()[0]:.1f} -->",
            flush=True,
        )


def ordering(root: Path, repeats: int) -> None:
    folder = write_suite(root, "straggler-order")
    recorded = run(folder, 2)[0]
    log = newest(folder)
    p_collected, p_history = predict(log, 2)[0], predict(log, 2, "longest-first")[0]
    walls: dict[str, list[float]] = {"collected": [], "history": []}
    for _ in range(repeats):
        walls["collected"].append(run(folder, 2)[0])
        walls["history"].append(run(folder, 2, "--monitor-order=history")[0])
    m_collected = statistics.median(walls["collected"])
    m_history = statistics.median(walls["history"])
    predicted_cut = (p_collected - p_history) / p_collected
    measured_cut = (m_collected - m_history) / m_collected
    verdict = "met" if measured_cut >= predicted_cut - 0.10 else "NOT met"
    print()
    print("| straggler suite, -n 2 | predicted | measured |")
    print("|---|---:|---:|")
    print(f"| collected order | {p_collected:.2f} s | {m_collected:.2f} s |")
    print(f"| `--monitor-order=history` | {p_history:.2f} s | {m_history:.2f} s |")
    print(f"| cut | {predicted_cut:.0%} | {measured_cut:.0%} |")
    shown = {k: [round(v, 2) for v in vs] for k, vs in walls.items()}
    print(
        f"\n(recorded at -n 2: {recorded:.2f} s; target: measured cut >= predicted - 10 "
        f"points: {verdict}; runs {shown})"
    )


def big() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mdir = Path(tmp) / ".testmon"
        log = mdir / "runs" / "20261117-070640-big.jsonl"
        sample_runs.write_log(log, list(sample_runs.synthetic_run(226_000)))
        tests = sum(1 for e in iter_log(log) if isinstance(e, ev.TestFinished))
        for older in (0, 4):
            for k in range(older):
                os.link(log, log.with_name(f"20261117-07063{k}-big.jsonl"))
            walls, cpus = [], []
            for _ in range(3):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t = time.perf_counter()
                subprocess.run(
                    [PY, "-m", "testmon_live.tui.cli", "whatif", str(log), "--dir", str(mdir)],
                    check=True,
                    capture_output=True,
                )
                walls.append(time.perf_counter() - t)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            print(
                f"testmon whatif on {tests:,} tests ({log.stat().st_size / 1e6:.0f} MB log, "
                f"{older} older logs of the suite beside it): wall "
                f"{statistics.median(walls):.2f} s, CPU {statistics.median(cpus):.2f} s "
                f"(median of 3; load average {os.getloadavg()[0]:.1f})"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--recordings",
        type=int,
        default=3,
        help="-n 2 recordings per suite before predicting (default 3; 1: the newest alone, "
        "as before the start-up and exit were taken over several runs)",
    )
    parser.add_argument("--big", action="store_true")
    parser.add_argument("--only", choices=("accuracy", "ordering"), default=None)
    args = parser.parse_args()
    if args.big:
        big()
        return 0
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)\n")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "accuracy"):
            accuracy(Path(tmp), args.repeats, args.recordings)
        if args.only in (None, "ordering"):
            SUITES["straggler-order"] = SUITES["straggler"]
            ordering(Path(tmp), max(args.repeats, 5))
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
