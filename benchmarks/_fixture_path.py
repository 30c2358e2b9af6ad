"""The fixture-timing path alone, in a loop: this tree's ``probes/lifecycle.py`` against the
same file at another git revision, in one process, interleaved.

Per simulated test: ``logstart``, nine fixture setups through the timed setup (as with
pytest-django's nine per-test fixtures), their teardowns (pytest's ``FixtureDef.finish``
popping finalizers), and the test's record. Stand-in fixture definitions, no pytest run:
what the path itself costs, without pytest's own work around it (in place, with cache
misses, it costs 2-3x this). Prints best-of and median µs per test over the rounds:

- ``plain``: the same setups and teardowns without the monitor;
- ``mixed``: five yield fixtures (a teardown: a span), four without;
- ``yields``: nine yield fixtures.

    .venv/bin/python benchmarks/_fixture_path.py --against e67f353
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from testmon_live.plugin.activity import WorkerActivity
from testmon_live.plugin.probes import lifecycle

HERE = Path(__file__).resolve().parent


class _Def:
    """A stand-in ``FixtureDef``: what the timed setup reads, and ``finish``."""

    def __init__(self, name: str, yields: bool) -> None:
        self.argname = name
        self.scope = "function"
        self.baseid = ""
        self.func = None
        self._finalizers: list[Callable[[], object]] = []
        self.yields = yields

    def addfinalizer(self, fin: Callable[[], object]) -> None:
        self._finalizers.append(fin)

    def finish(self) -> None:
        while self._finalizers:
            self._finalizers.pop()()


def _setup(fixturedef: _Def, request: object) -> object:
    if fixturedef.yields:
        fixturedef._finalizers.append(lambda: None)
    return 1


def _old_module(rev: str) -> ModuleType:
    text = subprocess.run(
        ["git", "show", f"{rev}:plugin/probes/lifecycle.py"],
        cwd=HERE.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "lifecycle_old.py"
    path.write_text(text)
    name = "testmon_live.plugin.probes._lifecycle_old"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _one_test(module: ModuleType | None, defs: list[_Def]) -> Callable[[], None]:
    if module is None:

        def plain() -> None:
            for d in defs:
                _setup(d, None)
            for d in reversed(defs):
                d.finish()

        return plain
    events: list[Any] = []
    probe = module.LifecycleProbe(events.append, WorkerActivity(0.0), 0.001)
    # the timed setup binds pytest's implementation when made: make it around ours
    real = getattr(module, "_PYTEST_FIXTURE_SETUP")  # noqa: B009
    setattr(module, "_PYTEST_FIXTURE_SETUP", _setup)  # noqa: B010
    try:
        timed = probe._timed_setup()
    finally:
        setattr(module, "_PYTEST_FIXTURE_SETUP", real)  # noqa: B010

    def monitored() -> None:
        probe.pytest_runtest_logstart("t.py::t", None)
        for d in defs:
            timed(d, None)
        for d in reversed(defs):
            d.finish()
        probe._test.finish("t.py::t", 0.0)

    return monitored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--tests", type=int, default=5000, help="simulated tests per round")
    args = parser.parse_args()
    old = _old_module(args.against)
    mixed = [_Def(f"f{i}", i % 2 == 0) for i in range(9)]
    yields = [_Def(f"y{i}", True) for i in range(9)]
    cases = {
        "plain": _one_test(None, mixed),
        f"mixed {args.against}": _one_test(old, mixed),
        "mixed this tree": _one_test(lifecycle, mixed),
        f"yields {args.against}": _one_test(old, yields),
        "yields this tree": _one_test(lifecycle, yields),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, run in cases.items():
            start = time.perf_counter()
            for _ in range(args.tests):
                run()
            times[name].append((time.perf_counter() - start) / args.tests * 1e6)
    print(f"µs per simulated test, {args.rounds} rounds of {args.tests}: best / median")
    for name, values in times.items():
        print(f"  {name:28s} {min(values):7.2f} / {statistics.median(values):7.2f}")


if __name__ == "__main__":
    main()
