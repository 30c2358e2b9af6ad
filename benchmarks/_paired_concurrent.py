"""Two variants of one suite started together, round after round: CPU time paired by moment.

On a shared VM the machine's speed moves within seconds (a fixed loop took 0.77-1.14 s
from one run to the next), so runs interleaved one after another pair a variant with a
different machine: two runs of the *same* variant read −10.9…+8.3 % apart. Started at the
same moment, two runs see the same machine: the same A/A pair reads −1.6…+3.1 %. The price:
both share the 2 CPUs (six processes at ``-n 2``), so this measures the variants under
contention, as ``-n 4`` would (where GIL hand-offs and wake-ups cost most), not a run
alone. Each round alternates which variant starts first. Prints each round's CPU seconds
(the whole process tree, from ``wait4``) and the median of ``B / A - 1`` with every pair.

A variant is a list of pytest arguments; ``ENV:NAME=value`` sets a variable for it (e.g.
``ENV:PYTHONPATH=DIR`` with ``DIR/testmon_live/plugin`` a checkout of another revision).
Both runs must not share state outside their own temporary folders: two runs of the
``dbpg`` suite share its PostgreSQL schemas and wait on each other's locks (+11.2 % instead
of +5.0 %); give each its own database (``ENV:TESTMON_BENCH_PG=postgresql://...``). Every
run must pass: a variant whose tests error would read as a saving, so any exit code but 0
stops the measurement.

    .venv/bin/python benchmarks/overhead.py --generate /tmp/bench --suites trivial --scale 0.3
    .venv/bin/python benchmarks/_paired_concurrent.py /tmp/bench/trivial \\
        --a "-p testmon_live" --b "--monitor --monitor-dir=/tmp/md" --rounds 10
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _start(python: str, suite: Path, variant: list[str], workers: str) -> subprocess.Popen[bytes]:
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
    return subprocess.Popen(
        command, cwd=suite, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _cpu(process: subprocess.Popen[bytes]) -> float:
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path, help="a suite folder (overhead.py --generate)")
    parser.add_argument("--a", required=True, help="variant A's pytest arguments (the reference)")
    parser.add_argument("--b", required=True, help="variant B's pytest arguments")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("-n", "--workers", default="2")
    parser.add_argument("--python", default=sys.executable)
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
    for round_ in range(args.rounds):
        order = [0, 1] if round_ % 2 == 0 else [1, 0]
        running = {i: _start(args.python, args.suite, variants[i], args.workers) for i in order}
        cpu = {i: _cpu(process) for i, process in running.items()}
        failed = [i for i, process in running.items() if process.returncode != 0]
        if failed:
            code = running[failed[0]].returncode
            sys.exit(f"round {round_ + 1}: variant {'AB'[failed[0]]} exited with {code}, not 0")
        ratios.append((cpu[1] / cpu[0] - 1) * 100)
        print(f"round {round_ + 1}: A {cpu[0]:.2f} s, B {cpu[1]:.2f} s, B/A {ratios[-1]:+.1f} %")
    pairs = " ".join(f"{r:+.1f}" for r in sorted(ratios))
    print(f"B against A, CPU: median {statistics.median(ratios):+.1f} % (all pairs: {pairs})")


if __name__ == "__main__":
    main()
