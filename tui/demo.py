"""``testmon demo``: run the bundled demo suite in the background and watch it.

The suite (``examples/demo``) shows, within about half a minute: workers contending on a
migration lock, a session fixture set up once per worker, a straggler, a failure and a
stall (``--monitor-stall`` is short here). Its output goes to ``.testmon/demo-output.txt``
so it does not scribble over the dashboard.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from testmon_live.plugin.runlog import DEFAULT_DIRNAME, MonitorDir

DEMO_WORKERS = 4
DEMO_STALL = 2.0
"""Seconds before a phase counts as stalled in the demo (the default is 30)."""
DEMO_ENV = "TESTMON_DEMO"
"""Where the demo suite is when testmon-live is not run from its source tree."""
OUTPUT_NAME = "demo-output.txt"


class DemoError(Exception):
    pass


def demo_dir(given: Path | None = None) -> Path:
    """The demo suite: ``--path``, ``$TESTMON_DEMO``, or ``examples/demo`` of the source tree."""
    candidates = [given] if given else []
    if os.environ.get(DEMO_ENV):
        candidates.append(Path(os.environ[DEMO_ENV]))
    candidates.append(Path(__file__).resolve().parents[1] / "examples" / "demo")
    for path in candidates:
        if path is not None and (path / "conftest.py").is_file():
            return path
    raise DemoError(
        "cannot find the demo suite (examples/demo of the testmon-live source tree); "
        f"pass --path or set {DEMO_ENV}"
    )


def pytest_command(workers: int = DEMO_WORKERS, stall: float = DEMO_STALL) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-n",
        str(workers),
        "--monitor",
        f"--monitor-stall={stall:g}",
        "-p",
        "no:cacheprovider",
        "-q",
    ]


def start(
    path: Path,
    workers: int = DEMO_WORKERS,
    stall: float = DEMO_STALL,
    environ: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the demo run in the background; its output goes to the monitor folder.
    ``environ``: the run's environment (default: this process's)."""
    mdir = MonitorDir(path / DEFAULT_DIRNAME)
    mdir.ensure()
    output = (mdir.root / OUTPUT_NAME).open("wb")
    base = os.environ if environ is None else environ
    env = {k: v for k, v in base.items() if k not in ("PYTEST_ADDOPTS", "TESTMON_DIR")}
    try:
        return subprocess.Popen(
            pytest_command(workers, stall),
            cwd=path,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        output.close()


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """End the demo run if it still goes (the user quit the dashboard early): Ctrl-C, as a
    user would, so that pytest ends the run and the log says ``interrupted``; harder only
    when that does not end it."""
    for how in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        process.send_signal(how)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            continue
