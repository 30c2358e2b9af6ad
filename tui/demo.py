"""``testmon demo``: run the bundled demo suite in the background and watch it.

The suite (``examples/demo``) shows, within about half a minute: workers contending on a
migration lock, a session fixture set up once per worker, a straggler, a failure and a
stall (``--monitor-stall`` is short here). Its output goes to ``.testmon/demo-output.txt``
so it does not scribble over the dashboard.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from testmon_live.plugin.runlog import DEFAULT_DIRNAME, MonitorDir

DEMO_WORKERS = 4
DEMO_STALL = 2.0
"""Seconds before a phase counts as stalled in the demo (the default is 30)."""
DEMO_ENV = "TESTMON_DEMO"
"""A demo suite to run instead of the bundled one."""
BUNDLED = "testmon_live.demo_suite"
"""The bundled suite: examples/demo of the source tree, installed under this name."""
OUTPUT_NAME = "demo-output.txt"


class DemoError(Exception):
    pass


def demo_dir(given: Path | None = None) -> Path:
    """The demo suite to run: ``--path``, ``$TESTMON_DEMO``, or the bundled one.

    The bundled suite is ``examples/demo`` of a source checkout (an editable install), or
    the copy a wheel installed as ``testmon_live.demo_suite``: a run writes its logs beside
    the suite, and nothing may write into an installed package, so an installed suite is
    copied to :func:`work_dir` first (refreshed each time; earlier runs are kept).
    """
    candidates = [given] if given else []
    if os.environ.get(DEMO_ENV):
        candidates.append(Path(os.environ[DEMO_ENV]))
    for path in candidates:
        if path is not None and (path / "conftest.py").is_file():
            return path
    bundled = bundled_suite()
    if bundled is None:
        raise DemoError(
            f"cannot find the demo suite (the package {BUNDLED} is not installed); "
            f"pass --path or set {DEMO_ENV}"
        )
    if not _installed(bundled):
        return bundled
    work = work_dir()
    shutil.copytree(
        bundled,
        work,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", DEFAULT_DIRNAME),
    )
    return work


def bundled_suite() -> Path | None:
    """Where the demo suite that ships with testmon-live is, if it is there."""
    try:
        spec = importlib.util.find_spec(BUNDLED)
    except ImportError:
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location)
        if (path / "conftest.py").is_file():
            return path
    return None


def work_dir() -> Path:
    """Where an installed demo suite runs: the user's cache folder."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "testmon-live" / "demo"


def _installed(path: Path) -> bool:
    """Is ``path`` inside an installed distribution (site-packages)?"""
    paths = sysconfig.get_paths()
    roots = {Path(paths[key]).resolve() for key in ("purelib", "platlib")}
    resolved = path.resolve()
    return any(resolved.is_relative_to(root) for root in roots)


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
            start_new_session=True,  # its own process group: stop() signals all of it
        )
    finally:
        output.close()


def stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """End the demo run if it still goes (the user quit the dashboard early): Ctrl-C, as a
    terminal sends it, to the run's whole process group (pytest and its xdist workers), so
    that pytest ends the run and the log says ``interrupted``; harder only when that does
    not end it within ``timeout`` seconds (xdist gives its workers 10 s to finish)."""
    for how in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # (it ended since the poll)
            os.killpg(process.pid, how)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            continue


def shown_path(path: Path, cwd: Path) -> str:
    """``path`` as the user can type it where they stand: relative to ``cwd`` when it is
    below it, else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(cwd.resolve()))
    except ValueError:
        return str(resolved)


def invoked_as(argv0: str, cwd: Path, search_path: str | None) -> str:
    """How to run this ``testmon`` again from ``cwd``: ``testmon`` when the shell's PATH
    finds this very program, else its path (``.venv/bin/testmon`` after ``scripts/demo``,
    which does not put the venv on the user's PATH)."""
    program = Path(argv0)
    if program.name != "testmon" or not program.exists():
        return "testmon"
    found = shutil.which("testmon", path=search_path)
    if found is not None and Path(found).resolve() == program.resolve():
        return "testmon"
    shown = shown_path(program, cwd)
    return shown if "/" in shown else f"./{shown}"


def reopen_commands(
    mdir: MonitorDir, run_id: str, cwd: Path, program: str
) -> list[tuple[str, str]]:
    """What reopens and reports the demo's run, from ``cwd``: the run's log is in the demo
    suite's monitor folder, which is not where ``testmon`` looks from elsewhere."""
    folder = shlex.quote(shown_path(mdir.root, cwd))
    return [
        ("open it again:", f"{program} replay {run_id} --dir {folder}"),
        ("its report:", f"{program} report {run_id} --dir {folder}"),
    ]
