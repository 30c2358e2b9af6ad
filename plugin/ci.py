"""GitHub Actions: workflow annotations, and the run's report in the job's step summary.

Annotations are workflow commands printed on a line of their own
(``::warning file=F,line=L,title=T::message``); the runner shows them on the run's page
and beside the file in a pull request's diff. Paths are relative to ``GITHUB_WORKSPACE``
(the checkout), which is how GitHub finds the file.

The step summary is the markdown report that ``testmon report --format markdown`` prints.
It is rendered by the viewer side (``testmon_live.tui``), which the plugin never imports
(it loads into every pytest worker, and the import contract keeps it free of the
reports): the controller runs that command in a subprocess at the end of the run, on the
complete log, with a deadline, and appends its output. If it fails or runs out of time,
the terminal summary goes into the step summary instead, with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .guard import REAL
from .notices import Where

WORKSPACE_ENV = "GITHUB_WORKSPACE"
SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
REPORT_MODULE = "testmon_live.tui.cli"


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def relative(path: str, rootdir: str = "") -> str:
    """``path`` as GitHub wants it: relative to the workspace when it lies inside."""
    base = os.environ.get(WORKSPACE_ENV) or rootdir
    full = Path(rootdir, path) if rootdir and not os.path.isabs(path) else Path(path)
    if base:
        try:
            return full.relative_to(base).as_posix()
        except ValueError:
            pass
    return full.as_posix()


def annotation(
    level: str, message: str, *, where: Where | None = None, title: str = "", rootdir: str = ""
) -> str:
    """One workflow command line: ``::warning file=...,line=...,title=...::message``."""
    props = []
    if where is not None:
        props.append(f"file={_prop(relative(where.path, rootdir))}")
        if where.line:
            props.append(f"line={where.line}")
    if title:
        props.append(f"title={_prop(title)}")
    head = f"::{level} {','.join(props)}" if props else f"::{level}"
    return f"{head}::{_data(message)}"


def report_command(log: Path, monitor_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        REPORT_MODULE,
        "report",
        str(log),
        "--dir",
        str(monitor_dir),
        "--format",
        "markdown",
    ]


def append_step_summary(
    target: str,
    log: Path,
    monitor_dir: Path,
    fallback: Sequence[str],
    *,
    deadline: float,
) -> str | None:
    """Append the run's markdown report to ``target``; what went wrong, or None.

    The report runs as ``python -m testmon_live.tui.cli report LOG --format markdown``:
    a crash or a hang of the renderer cannot touch the run, and ``deadline`` bounds it.
    """
    problem: str | None = None
    text = ""
    try:
        done = subprocess.run(
            report_command(log, monitor_dir),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=deadline,
            check=False,
        )
    except subprocess.TimeoutExpired:
        problem = f"the report did not finish within {deadline:g}s"
    except OSError as exc:
        problem = f"the report could not start: {exc}"
    else:
        if done.returncode == 0 and done.stdout.strip():
            text = done.stdout.decode("utf-8", "replace")
        else:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()
            problem = f"the report failed (exit {done.returncode})" + (
                f": {said[-1]}" if said else ""
            )
    if problem is not None:
        body = "\n".join(fallback).replace("```", "'''")
        text = f"## testmon-live\n\n{problem}; the end summary instead:\n\n```\n{body}\n```\n"
    try:
        with REAL.open(target, "a", encoding="utf-8") as handle:
            handle.write(text.rstrip("\n") + "\n\n")
    except OSError as exc:
        return f"cannot write the step summary {target}: {exc}"
    return problem
