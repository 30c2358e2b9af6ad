"""Find the test that pollutes another: replay the worker's real order and bisect it.

The recording gives the exact predecessors of a failing test on its worker. The search:

1. the target alone must pass (if it fails alone, nothing before it is to blame);
2. the target after all its predecessors, in their recorded order, must fail (if it
   passes, the failure did not reproduce: flaky rather than polluted);
3. binary search for the shortest failing *prefix* of the predecessors: when the first
   k-1 predecessors pass and the first k fail, predecessor k is the polluter (the failure
   appears once it has run). Prefixes keep the real order, so a polluter whose effect
   depends on what ran before it is still found.

That is at most ceil(log2(n)) + 2 pytest runs for n predecessors. Each run is a serial
``pytest -n 0 --dist no`` of node ids from an argument file, recorded with ``--monitor`` into a
scratch folder so the target's outcome is read from a run log, not parsed from output.

A log is untrusted input: pytest runs only in a rootdir the user is in (see
:func:`~.order.trusted_rootdir`), only node ids that project collects (one
``--collect-only`` run first), and those after ``--``, so that none becomes an option.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testmon_live.plugin import events as ev
from testmon_live.plugin.collect_ids import COLLECT_IDS_ENV
from testmon_live.plugin.runlog import MonitorDir, RunLogError, iter_log

from .order import Suspects, looks_like_option, pytest_id, repro_argv, serial_args, write_ids

SHOWN = 3
"""Refused node ids named in the message."""


class BisectRefused(Exception):
    """The log's node ids are not safe to run: they look like options, or are no tests of
    the project."""


@dataclass
class Trial:
    """One pytest run of the search."""

    label: str
    ids: list[str]
    outcome: str
    """The target's outcome: passed, failed, error, skipped..., or 'not run' / 'timeout'."""
    seconds: float
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in ev.FAILING


@dataclass
class BisectResult:
    verdict: str
    """polluter, fails-alone, not-reproduced, timeout, error."""
    message: str
    culprit: str | None = None
    trials: list[Trial] = field(default_factory=list)
    bound: int = 0
    """The most runs the search may take: ceil(log2(n)) + 2."""


Progress = Callable[[str], None]
Runner = Callable[[list[str], float], tuple[str, str]]
"""(node ids in order, seconds allowed) -> (target outcome, detail)."""


def max_runs(predecessors: int) -> int:
    return (math.ceil(math.log2(predecessors)) if predecessors > 1 else 0) + 2


class PytestRunner:
    """Runs node ids serially in a subprocess and reads the target's outcome from its log."""

    def __init__(
        self, rootdir: Path, target: str, scratch: MonitorDir, extra: list[str], python: str
    ) -> None:
        self.rootdir = rootdir
        self.target = target
        self.scratch = scratch
        self.extra = extra
        self.python = python
        self.count = 0

    def __call__(self, ids: list[str], timeout: float) -> tuple[str, str]:
        self.count += 1
        ids_file = write_ids(self.scratch, f"trial-{self.count}", ids)
        monitor_dir = self.scratch.root / f"trial-{self.count}"
        options = ["-q", "--monitor", f"--monitor-dir={monitor_dir}", "--monitor-keep=0"]
        argv = repro_argv(ids_file, self.python, [*options, *self.extra])
        try:
            done = subprocess.run(
                argv,
                cwd=self.rootdir,
                env=_environ(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=max(1.0, timeout),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return "timeout", f"stopped after {timeout:.0f} s"
        outcome = self._outcome(MonitorDir(monitor_dir))
        return outcome, said(done.stdout.decode(errors="replace"), outcome == "not run")

    def _outcome(self, mdir: MonitorDir) -> str:
        """The target's outcome in the run's log (recorded without xdist: no ``@group``)."""
        logs = mdir.logs()
        if not logs:
            return "not run"
        try:
            for event in iter_log(logs[-1]):
                if isinstance(event, ev.TestFinished) and event.nodeid == pytest_id(self.target):
                    return event.outcome
        except RunLogError:
            return "not run"
        return "not run"


def said(output: str, failed: bool) -> str:
    """What a trial's pytest said, in a line: its last line; when the target did not run,
    its own errors (``ERROR: not found``, ``error: unrecognized arguments``) if any."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    if failed:
        errors = [line for line in lines if "error" in line.lower()]
        if errors:
            return " / ".join(dict.fromkeys(errors[:3]))
    return lines[-1] if lines else ""


class Bisector:
    def __init__(
        self, found: Suspects, run: Runner, *, time_limit: float, progress: Progress = print
    ) -> None:
        self.found = found
        self.run = run
        self.deadline = time.monotonic() + time_limit
        self.time_limit = time_limit
        self.progress = progress
        self.predecessors = [t.nodeid for t in found.predecessors]
        self.target = found.target.nodeid
        self.result = BisectResult("error", "", bound=max_runs(len(self.predecessors)))

    def _trial(self, label: str, before: list[str]) -> Trial:
        left = self.deadline - time.monotonic()
        number = len(self.result.trials) + 1
        if left <= 0:
            trial = Trial(label, before, "timeout", 0.0, "time limit reached")
        else:
            self.progress(
                f"[{number}/{self.result.bound}] {label}: {len(before)} before the target ..."
            )
            start = time.monotonic()
            outcome, detail = self.run([*before, self.target], left)
            trial = Trial(label, before, outcome, time.monotonic() - start, detail)
            self.progress(f"      target {outcome} ({trial.seconds:.1f} s)")
        self.result.trials.append(trial)
        return trial

    def _stop(self, verdict: str, message: str, culprit: str | None = None) -> BisectResult:
        self.result.verdict = verdict
        self.result.message = message
        self.result.culprit = culprit
        return self.result

    def _unusable(self, trial: Trial) -> BisectResult | None:
        if trial.outcome == "timeout":
            return self._stop(
                "timeout", f"time limit of {self.time_limit:.0f} s reached during: {trial.label}"
            )
        if trial.outcome == "not run":
            return self._stop(
                "error",
                f"the target did not run during '{trial.label}'; pytest said: {trial.detail}"
                " (check that the suite still has it and collects from the rootdir)",
            )
        return None

    def search(self) -> BisectResult:
        alone = self._trial("target alone", [])
        if (stop := self._unusable(alone)) is not None:
            return stop
        if alone.failed:
            return self._stop(
                "fails-alone",
                f"{self.target} fails on its own ({alone.outcome}): it is broken, not polluted",
            )
        preds = self.predecessors
        if not preds:
            return self._stop(
                "not-reproduced",
                "it passes alone and nothing ran before it on its worker: the failure did not "
                "reproduce (flaky, or it needs conditions of the parallel run)",
            )
        full = self._trial(f"after all {len(preds)} predecessors", preds)
        if (stop := self._unusable(full)) is not None:
            return stop
        if not full.failed:
            return self._stop(
                "not-reproduced",
                f"it passed after its {len(preds)} predecessors in their recorded order: the "
                "failure did not reproduce, so it looks flaky rather than polluted",
            )
        low, high = 0, len(preds)  # prefix[:low] passes, prefix[:high] fails
        while high - low > 1:
            middle = (low + high) // 2
            trial = self._trial(f"after the first {middle}", preds[:middle])
            if (stop := self._unusable(trial)) is not None:
                return stop
            if trial.failed:
                high = middle
            else:
                low = middle
        culprit = preds[high - 1]
        return self._stop(
            "polluter",
            f"it fails once predecessor {high} of {len(preds)} (on {self.found.target.w}) has "
            "run before it",
            culprit,
        )


def _environ() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _shown(ids: list[str]) -> str:
    return ", ".join(repr(i) for i in ids[:SHOWN]) + (", ..." if len(ids) > SHOWN else "")


def collected_ids(
    rootdir: Path, extra: list[str], python: str, scratch: Path, timeout: float
) -> set[str]:
    """The node ids the project in ``rootdir`` collects (with the user's extra options)."""
    target = scratch / "collected.json"
    argv = [
        *(python, "-m", "pytest", *serial_args(), "-p", "no:cacheprovider"),
        *("-p", "testmon_live.plugin.collect_ids", "--collect-only", "-q", *extra),
    ]
    env = _environ()
    env[COLLECT_IDS_ENV] = str(target)
    try:
        done = subprocess.run(
            argv,
            cwd=rootdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=max(1.0, timeout),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BisectRefused(
            f"collecting the tests of {rootdir} took over {timeout:.0f} s"
        ) from None
    try:
        ids = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tail = done.stdout.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise BisectRefused(f"could not collect the tests of {rootdir}: {tail[0]}") from None
    return {nodeid for nodeid in ids if isinstance(nodeid, str)}


def refuse_options(ids: list[str]) -> None:
    """Raise :class:`BisectRefused` if a node id of the log looks like an option."""
    options = [nodeid for nodeid in ids if looks_like_option(nodeid)]
    if options:
        raise BisectRefused(
            f"the log holds node ids that look like pytest options or argument files "
            f"({_shown(options)}): a log is untrusted input, and bisect passes pytest no "
            "option it did not choose; nothing was run"
        )


def refuse_unknown(ids: list[str], collected: set[str], rootdir: Path) -> None:
    """Raise :class:`BisectRefused` if a node id of the log is no test of the project."""
    unknown = [nodeid for nodeid in ids if pytest_id(nodeid) not in collected]
    if unknown:
        raise BisectRefused(
            f"{len(unknown)} node ids of the log are not tests that pytest collects in "
            f"{rootdir} ({_shown(unknown)}): the suite changed since the run, or the log "
            "was made up; bisect runs only the project's own tests"
        )


def bisect(
    found: Suspects,
    *,
    rootdir: Path,
    time_limit: float,
    extra: list[str] | None = None,
    progress: Progress = print,
    python: str = sys.executable,
) -> BisectResult:
    """Run the search with real pytest runs in ``rootdir`` (the run's, checked by the caller
    with :func:`~.order.trusted_rootdir`). Raises :class:`BisectRefused` when the log's node
    ids are not the project's tests."""
    extra = extra or []
    ids = [t.nodeid for t in found.predecessors] + [found.target.nodeid]
    refuse_options(ids)
    scratch = Path(tempfile.mkdtemp(prefix="testmon-bisect-"))
    try:
        started = time.monotonic()
        refuse_unknown(ids, collected_ids(rootdir, extra, python, scratch, time_limit), rootdir)
        left = time_limit - (time.monotonic() - started)
        runner = PytestRunner(rootdir, found.target.nodeid, MonitorDir(scratch), extra, python)
        return Bisector(found, runner, time_limit=left, progress=progress).search()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
