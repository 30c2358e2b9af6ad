"""Test order on a worker: what ran before a test, and how to replay exactly that order.

A test that passes alone but fails in the suite was usually polluted by a test that ran
before it in the same process. The run log holds each worker's exact order, so the
suspects of a failure are the tests its worker ran before it, in that order — not every
test of the suite, and not a guess at xdist's scheduling.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir
from testmon_live.plugin.state import RunState

REPRO_DIR = "repro"
ORDER_OFF = ("-p", "no:randomly", "-p", "no:random_order", "--monitor-order=collected")
"""The ordering plugins that would shuffle the given order, and our own ordering (an ini's
``monitor_order = history`` would sort the replayed ids longest first)."""
XDIST_OFF = ("-n", "0", "--dist", "no")
"""xdist off, whatever the ini's ``addopts`` say: given last, these override its ``-n 4
--dist loadgroup`` (``-p no:xdist`` would leave those options unrecognized)."""
_GROUP = re.compile(r"@[^@\[\]:/\\]*$")
"""The ``@group`` suffix ``--dist loadgroup`` adds to the node ids of grouped tests."""


def pytest_id(nodeid: str) -> str:
    """A recorded node id as pytest collects it in a serial run (no ``@group``)."""
    return _GROUP.sub("", nodeid)


def serial_args() -> tuple[str, ...]:
    """Options for a serial run in the given order (xdist's only where it is installed:
    without it there is nothing to turn off, and ``-n`` would be unrecognized)."""
    xdist = importlib.util.find_spec("xdist") is not None
    return (XDIST_OFF if xdist else ()) + ORDER_OFF


class OrderError(Exception):
    """The test cannot be found (or not unambiguously) in the run."""


def find_target(state: RunState, spec: str, worker: str | None = None) -> ev.TestFinished:
    """The test run named by ``spec``: a node id, or a unique part of one.

    When the test ran more than once (``--dist each``, reruns) the failing run is chosen,
    or the one on ``worker``.
    """
    runs = [t for t in state.tests if t.nodeid == spec]
    if not runs:
        ids = sorted({t.nodeid for t in state.tests if spec in t.nodeid})
        if not ids:
            raise OrderError(f"no test matching {spec!r} ran in run {state.run_id}")
        if len(ids) > 1:
            shown = ", ".join(ids[:4]) + (", ..." if len(ids) > 4 else "")
            raise OrderError(f"{spec!r} matches {len(ids)} tests ({shown}): give the node id")
        runs = [t for t in state.tests if t.nodeid == ids[0]]
    if worker is not None:
        runs = [t for t in runs if t.w == worker]
        if not runs:
            raise OrderError(f"{spec!r} did not run on worker {worker!r}")
    failing = [t for t in runs if t.outcome in ev.FAILING]
    return (failing or runs)[0]


@dataclass(frozen=True)
class Suspects:
    run_id: str
    rootdir: str
    target: ev.TestFinished
    predecessors: list[ev.TestFinished]
    """Tests the same worker ran before the target, in order (oldest first)."""
    seed: str | None
    order_plugins: list[str]
    order: str = ""
    """``history`` when ``--monitor-order=history`` ordered the run (see ``RunStarted``)."""


def suspects(state: RunState, spec: str, worker: str | None = None) -> Suspects:
    target = find_target(state, spec, worker)
    order = state.tests_on(target.w)
    index = next(i for i, t in enumerate(order) if t is target)
    header = state.header
    return Suspects(
        run_id=state.run_id,
        rootdir=header.rootdir if header else ".",
        target=target,
        predecessors=order[:index],
        seed=header.seed if header else None,
        order_plugins=list(header.order_plugins) if header else [],
        order=header.order if header else "",
    )


def write_ids(mdir: MonitorDir, name: str, ids: list[str]) -> Path:
    """An argument file for ``pytest @FILE`` (one node id a line, run in that order)."""
    folder = mdir.root / REPRO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.txt"
    path.write_text("".join(f"{pytest_id(nodeid)}\n" for nodeid in ids))
    return path


def repro_name(found: Suspects) -> str:
    digest = hashlib.sha1(found.target.nodeid.encode()).hexdigest()[:8]
    return f"{found.run_id}-{found.target.w}-{digest}"


def repro_argv(
    ids_file: Path, python: str = sys.executable, options: Sequence[str] = ()
) -> list[str]:
    """pytest on the node ids of ``ids_file``, after ``--``: a log is untrusted, and a node id
    of ``--basetemp=~`` or ``-p evil`` in it must stay a (missing) test, never an option."""
    return [
        *(python, "-m", "pytest", *serial_args(), "-p", "no:cacheprovider", *options),
        "--",
        f"@{ids_file}",
    ]


def repro_command(found: Suspects, ids_file: Path) -> str:
    """A shell line that replays the worker's order serially, from the rootdir: every part
    quoted, the node ids after ``--``, so it is safe to paste whatever the log holds."""
    argv = ["pytest", *serial_args(), "--", f"@{ids_file}"]
    return f"cd {shlex.quote(found.rootdir)} && " + " ".join(shlex.quote(a) for a in argv)


def looks_like_option(nodeid: str) -> bool:
    """A node id pytest would read as an option or an argument file, or that would split
    into two lines of one: no test is named so, a crafted log may be."""
    return nodeid.startswith(("-", "@")) or any(c in nodeid for c in "\n\r\0")


def trusted_rootdir(found: Suspects, mdir: MonitorDir, cwd: Path) -> Path:
    """The rootdir pytest may run in: the log's, if it is this folder or one above it, or
    the project of the monitor folder the user chose. The log alone never picks where
    pytest runs (its conftest.py, its pytest.py, its ini file are code and options).
    Raises :class:`OrderError`."""
    recorded = Path(found.rootdir)
    if recorded.is_absolute() and recorded.is_dir():
        root = recorded.resolve()
        here = cwd.resolve()
        if root == here or root in here.parents or root == mdir.root.resolve().parent:
            return root
    raise OrderError(
        f"the log says its run was in {found.rootdir!r}, which is not this folder ({cwd}), "
        "one above it, or the project of the monitor folder: a log does not choose where "
        "pytest runs; cd into that project and run testmon bisect there"
    )


class SuspectRow(TypedDict):
    position: int
    nodeid: str
    outcome: str
    duration: float


class SuspectsModel(TypedDict):
    run: str
    test: str
    worker: str
    outcome: str
    seed: str | None
    order_plugins: list[str]
    order: str
    predecessors: list[SuspectRow]
    ids_file: str
    command: str


def suspects_model(found: Suspects, ids_file: Path) -> SuspectsModel:
    return {
        "run": found.run_id,
        "test": found.target.nodeid,
        "worker": found.target.w,
        "outcome": found.target.outcome,
        "seed": found.seed,
        "order_plugins": found.order_plugins,
        "order": found.order,
        "predecessors": [
            {"position": n, "nodeid": t.nodeid, "outcome": t.outcome, "duration": t.duration}
            for n, t in enumerate(found.predecessors, start=1)
        ],
        "ids_file": str(ids_file),
        "command": repro_command(found, ids_file),
    }
