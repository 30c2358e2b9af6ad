"""Thread CPU per pytest hook, in every process of a real run: where ``--monitor`` costs.

cProfile and py-spy say little about a cost of a few microseconds per hook call spread over
a hundred hooks: cProfile multiplies every call's cost, and a sampler at 2 kHz sees a few
samples of each. This times each *hook call* (all its implementations together) with the
calling thread's CPU clock, so the same hook of a run with and without ``--monitor`` can be
compared directly; the difference is what testmon-live's implementations of that hook cost,
in place (with pytest's cache misses and branch mispredictions, which a micro-benchmark in a
loop does not have).

As a plugin (``-p _hook_cpu`` with this folder on ``PYTHONPATH`` and :data:`OUT_ENV`
naming a folder), every process writes ``<role>-<pid>.json``: per hook, calls and CPU
seconds. The timing itself costs two ``thread_time()`` calls per hook call, alike in both
variants.

``python benchmarks/_hook_cpu.py SUITE ROUNDS [pytest args]`` runs SUITE with ``-n 2``
without and with ``--monitor``, interleaved, ROUNDS times each, and prints per hook the
median CPU microseconds per test of the workers (and of the controller), and the
difference.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

OUT_ENV = "TESTMON_BENCH_HOOK_CPU_DIR"

_cpu: dict[str, float] = {}
_calls: Counter[str] = Counter()


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get(OUT_ENV):
        return
    manager: Any = config.pluginmanager
    inner = manager._inner_hookexec
    clock = time.thread_time

    def timed(name: str, methods: Any, kwargs: Any, firstresult: bool) -> Any:
        start = clock()
        try:
            return inner(name, methods, kwargs, firstresult)
        finally:
            _cpu[name] = _cpu.get(name, 0.0) + clock() - start
            _calls[name] += 1

    manager._inner_hookexec = timed


def pytest_unconfigure(config: pytest.Config) -> None:
    out = os.environ.get(OUT_ENV)
    if not out:
        return
    workerinput = getattr(config, "workerinput", None)
    role = str(workerinput["workerid"]) if workerinput is not None else "controller"
    data = {name: [_calls[name], cpu] for name, cpu in _cpu.items()}
    Path(out, f"{role}-{os.getpid()}.json").write_text(json.dumps(data))


def _one_run(suite: Path, args: list[str], out: Path) -> tuple[dict[str, float], dict[str, float]]:
    """(workers, controller): CPU microseconds per test, per hook."""
    for old in out.glob("*.json"):
        old.unlink()
    # A PYTHONPATH of the caller's stays, after this folder: it may put another checkout's
    # plugin first (a before/after: PYTHONPATH=/other/checkout/typings).
    pythonpath = os.pathsep.join(
        p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
    )
    env = {**os.environ, OUT_ENV: str(out), "PYTHONPATH": pythonpath}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "_hook_cpu"]
    subprocess.run([*command, *args], cwd=suite, env=env, stdout=subprocess.DEVNULL, check=False)
    workers: Counter[str] = Counter()
    controller: Counter[str] = Counter()
    tests = 0
    for path in out.glob("*.json"):
        data = json.loads(path.read_text())
        into = controller if path.name.startswith("controller") else workers
        for name, (calls, cpu) in data.items():
            into[name] += cpu
            if name == "pytest_runtest_protocol" and into is workers:
                tests += calls
    tests = tests or 1
    return (
        {k: 1e6 * v / tests for k, v in workers.items()},
        {k: 1e6 * v / tests for k, v in controller.items()},
    )


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    suite, rounds, extra = Path(argv[0]).resolve(), int(argv[1]), argv[2:]
    variants = {
        "base": ["-n", "2", *extra],
        "monitor": ["-n", "2", "--monitor", "--monitor-keep=1", *extra],
    }
    results: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        variants["monitor"].append(f"--monitor-dir={out / '.testmon'}")
        for i in range(rounds):
            names = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in names:
                results[name].append(_one_run(suite, variants[name], out))
    for side, index in (("workers", 0), ("controller", 1)):
        hooks = {h for runs in results.values() for run in runs for h in run[index]}
        rows = []
        for hook in hooks:
            base = statistics.median(run[index].get(hook, 0.0) for run in results["base"])
            mon = statistics.median(run[index].get(hook, 0.0) for run in results["monitor"])
            rows.append((mon - base, hook, base, mon))
        rows.sort(reverse=True)
        print(f"\n{side}: CPU us per test (median of {rounds} runs each, interleaved)")
        print(f"{'hook':36} {'base':>8} {'monitor':>8} {'diff':>7}")
        for diff, hook, base, mon in rows[:16]:
            print(f"{hook:36} {base:8.1f} {mon:8.1f} {diff:+7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
