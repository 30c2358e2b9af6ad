"""Two variants of one suite started together, round after round: CPU time paired by moment.

On a shared VM the machine's speed moves within seconds (a fixed loop took 0.77-1.14 s
from one run to the next), so runs interleaved one after another pair a variant with a
different machine: two runs of the *same* variant read −10.9…+8.3 % apart. Started at the
same moment, two runs see the same machine: the same A/A pair reads −1.6…+3.1 %. The price:
both share the 2 CPUs (six processes at ``-n 2``), so this measures the variants under
contention, as ``-n 4`` would (where GIL hand-offs and wake-ups cost most), not a run
alone. Each round alternates which variant starts first. Prints each round's CPU seconds
(the whole process tree, from ``wait4``) and the median of ``B / A - 1`` with its 95 %
bootstrap interval and every pair.

A variant is a list of pytest arguments; ``ENV:NAME=value`` sets a variable for it (e.g.
``ENV:PYTHONPATH=DIR`` with ``DIR/testmon_live/plugin`` a checkout of another revision).
Both runs must not share state outside their own temporary folders: two runs of the
``dbpg`` suite share its PostgreSQL schemas and wait on each other's locks (+11.2 % instead
of +5.0 %); give each its own database (``ENV:TESTMON_BENCH_PG=postgresql://...``). Every
run must pass: a variant whose tests error would read as a saving, so any exit code but 0
stops the measurement.

``--by-process`` also loads ``_process_cpu.py`` into every process of both variants and
prints the same medians for the controller and for the workers apart (each process's CPU
from its own clock as pytest unconfigures, without interpreter start-up and shutdown).

    .venv/bin/python benchmarks/overhead.py --generate /tmp/bench --suites trivial --scale 0.3
    .venv/bin/python benchmarks/_paired_concurrent.py /tmp/bench/trivial \\
        --a "-p testmon_live" --b "--monitor --monitor-dir=/tmp/md" --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).parent
_PROCESS_CPU_ENV = "TESTMON_BENCH_PROCESS_CPU_DIR"  # (_process_cpu.OUT_ENV)


def _start(
    python: str, suite: Path, variant: list[str], workers: str, by_process: Path | None = None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # bytecode as users have it (see overhead.py's run_env), kept out of the repository
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "testmon-bench-pycache")
    args = []
    for arg in variant:
        if arg.startswith("ENV:"):
            name, _, value = arg[4:].partition("=")
            env[name] = value
        else:
            args.append(arg)
    command = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", workers, *args]
    if by_process is not None:
        for old in by_process.glob("*.json"):
            old.unlink()
        env[_PROCESS_CPU_ENV] = str(by_process)
        # after the variant's own PYTHONPATH: that one may put another checkout first
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(_HERE)) if p)
        command[3:3] = ["-p", "_process_cpu"]
    return subprocess.Popen(
        command, cwd=suite, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _cpu(process: subprocess.Popen[bytes]) -> float:
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def _roles(folder: Path) -> dict[str, float]:
    """CPU seconds of the controller and of all workers together, as the run wrote them."""
    roles = {"controller": 0.0, "workers": 0.0}
    for path in folder.glob("*.json"):
        cpu = json.loads(path.read_text())["cpu"]
        roles["controller" if path.name.startswith("controller-") else "workers"] += cpu
    return roles


def _interval(ratios: list[float], draws: int = 5_000) -> tuple[float, float]:
    """95 % bootstrap interval of the median of ``ratios`` (pairs resampled, fixed seed)."""
    pick = random.Random(0).choices
    medians = sorted(statistics.median(pick(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int(draws * 0.025)], medians[int(draws * 0.975) - 1]


def _median_line(label: str, ratios: list[float]) -> str:
    pairs = " ".join(f"{r:+.1f}" for r in sorted(ratios))
    low, high = _interval(ratios)
    return (
        f"{label}: median {statistics.median(ratios):+.1f} % (95 % CI {low:+.1f}…{high:+.1f};"
        f" all pairs: {pairs})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path, help="a suite folder (overhead.py --generate)")
    parser.add_argument("--a", required=True, help="variant A's pytest arguments (the reference)")
    parser.add_argument("--b", required=True, help="variant B's pytest arguments")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("-n", "--workers", default="2")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--by-process", action="store_true", help="also the controller and the workers apart"
    )
    args = parser.parse_args()
    if not args.suite.is_dir():
        parser.error(f"{args.suite} is not a folder (make one with overhead.py --generate)")
    variants = [shlex.split(args.a), shlex.split(args.b)]
    for i, variant in enumerate(variants):  # warm-up: bytecode compiled, files cached
        warm_up = _start(args.python, args.suite, variant, args.workers)
        _cpu(warm_up)
        if warm_up.returncode != 0:
            sys.exit(f"warm-up: variant {'AB'[i]} exited with {warm_up.returncode}, not 0")
    ratios = []
    by_role: dict[str, list[float]] = {"controller": [], "workers": []}
    folders = [Path(tempfile.mkdtemp(prefix=f"paired-{v}-")) for v in "AB"]
    for round_ in range(args.rounds):
        order = [0, 1] if round_ % 2 == 0 else [1, 0]
        running = {
            i: _start(
                args.python,
                args.suite,
                variants[i],
                args.workers,
                folders[i] if args.by_process else None,
            )
            for i in order
        }
        cpu = {i: _cpu(process) for i, process in running.items()}
        failed = [i for i, process in running.items() if process.returncode != 0]
        if failed:
            code = running[failed[0]].returncode
            sys.exit(f"round {round_ + 1}: variant {'AB'[failed[0]]} exited with {code}, not 0")
        ratios.append((cpu[1] / cpu[0] - 1) * 100)
        line = f"round {round_ + 1}: A {cpu[0]:.2f} s, B {cpu[1]:.2f} s, B/A {ratios[-1]:+.1f} %"
        if args.by_process:
            a, b = _roles(folders[0]), _roles(folders[1])
            for role, found in by_role.items():
                found.append((b[role] / a[role] - 1) * 100)
                line += f"; {role} {a[role]:.2f} / {b[role]:.2f} s {found[-1]:+.1f} %"
        print(line, flush=True)
    print(_median_line("B against A, CPU", ratios))
    if args.by_process:
        for role, found in by_role.items():
            print(_median_line(f"  {role}", found))


if __name__ == "__main__":
    main()
