"""Instructions instead of seconds: the overhead without the machine's noise.

On a shared VM the speed of a core drifts by tens of percent from one run to the next,
and CPU time drifts with it (overhead.py records how much). Instructions executed do not.
This runs each variant of a suite once under ``valgrind --tool=cachegrind
--cache-sim=no --trace-children=yes`` (controller and xdist workers alike) and compares
the instruction counts ("I refs") per process role.

Caveats, also in README.md: valgrind runs everything ~20x slower and one thread at a time,
so what is driven by the clock rather than by tests (heartbeats each second, activity
samples ten times a second, sender wake-ups twenty times a second) happens ~20x more often
per test than in a real run: the monitor's count is a little pessimistic. GIL hand-offs and
cache effects are not modelled at all: this is the work done, not the time taken.

    .venv/bin/python benchmarks/_instructions.py [--suites trivial] [--scale 1] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root
from benchmarks.overhead import (
    REFERENCE,
    SUITES,
    VARIANT_ENV,
    VARIANTS,
    generate,
    run_env,
    variant_args,
)

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")
_COMMAND = re.compile(r"Command: (.*)")
_EXIT_TIMEOUT_PLUGIN = "_instructions_exit_timeout"
"""A ``-p`` plugin written into the temporary folder, loaded by every variant alike:
xdist kills workers that take more than 10 s to exit, and under valgrind on a busy machine
they do; a killed process's log has no count."""


def _env(tmp: Path, variant: str) -> dict[str, str]:
    """overhead.py's environment (same .pyc cache prefix), without its probe plugin."""
    env = {**run_env(tmp / "probe.jsonl"), **VARIANT_ENV.get(variant, {})}
    if not any("_overhead_" in arg for arg in variant_args(variant, tmp)):
        # The helper plugins live there; the probe is not loaded. A PYTHONPATH of the
        # caller's stays: it may put another checkout's plugin first (a before/after).
        env.pop("PYTHONPATH", None)
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp), env.get("PYTHONPATH")) if p)
    return env


def count(python: str, suite_dir: Path, variant: str, tmp: Path) -> tuple[int, int, int]:
    """(total, controller, workers) instructions of one run under cachegrind."""
    logs = tmp / "vg"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    (tmp / "reportlog.jsonl").unlink(missing_ok=True)
    cmd = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--trace-children=yes",
        "--cachegrind-out-file=/dev/null", f"--log-file={logs}/%p.log",
        python, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider",
        "-p", _EXIT_TIMEOUT_PLUGIN, *variant_args(variant, tmp),
    ]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=suite_dir, env=_env(tmp, variant), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    controller = workers = other = 0
    for log in logs.glob("*.log"):
        text = log.read_text()
        found = _REFS.search(text)
        command = _COMMAND.search(text)
        what = command.group(1) if command else ""
        if found is None:
            raise RuntimeError(f"{variant}: no count in {log} ({what[:80]}): killed?")
        refs = int(found.group(1).replace(",", ""))
        # By command, not by pid: pids wrap around, and short helpers (uname) run too.
        if " -m pytest " in what:
            controller += refs
        elif "exec(eval(" in what:  # execnet's bootstrap of an xdist worker
            workers += refs
        else:
            other += refs
    return controller + workers + other, controller, workers


def _write_exit_timeout_plugin(tmp: Path) -> None:
    (tmp / f"{_EXIT_TIMEOUT_PLUGIN}.py").write_text(
        "def pytest_configure(config):\n"
        "    try:\n"
        "        from xdist.workermanage import NodeManager\n"
        "    except ImportError:\n"
        "        return\n"
        "    NodeManager.EXIT_TIMEOUT = 600\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--suites", default="trivial")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    variants = args.variants.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="testmon-instr-"))
    _write_exit_timeout_plugin(tmp)
    try:
        print(
            "| suite | variant | vs | instructions (G) | controller (G) | workers (G) "
            "| Δ total | Δ controller | Δ workers |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for name in args.suites.split(","):
            folder = tmp / "suites" / name
            tests = generate(SUITES[name], folder, args.scale)
            for variant in variants:  # unmeasured: fill the .pyc cache as overhead.py does
                subprocess.run(
                    [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider",
                     "-p", _EXIT_TIMEOUT_PLUGIN, *variant_args(variant, tmp)],
                    cwd=folder, env=_env(tmp, variant), capture_output=True, check=False,
                )  # fmt: skip
            results: dict[str, list[tuple[int, int, int]]] = {v: [] for v in variants}
            for _ in range(args.rounds):
                for variant in variants:
                    results[variant].append(count(sys.executable, folder, variant, tmp))
                    print(f"  {name} {variant}: {results[variant][-1]}", file=sys.stderr)
            for variant in variants:
                mine = min(results[variant])
                ref_name = REFERENCE.get(variant)
                cells = ["—", "—", "—"]
                if ref_name in results:
                    ref = min(results[ref_name])
                    cells = [f"{(a / b - 1) * 100:+.1f}%" for a, b in zip(mine, ref, strict=True)]
                print(
                    f"| {name} ({tests}) | {variant} | {ref_name if ref_name in results else '—'} "
                    f"| {mine[0] / 1e9:.2f} | {mine[1] / 1e9:.2f} | {mine[2] / 1e9:.2f} "
                    f"| {' | '.join(cells)} |"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
