"""CPU time of each process of a run, by role (controller, gw0, gw1...), and of its threads.

As a plugin (``-p _process_cpu`` with this folder on ``PYTHONPATH`` and :data:`OUT_ENV`
naming a folder), every process writes ``<role>-<pid>.json`` as pytest unconfigures:
its CPU seconds (all threads, ``time.process_time``) and each thread's, by name, from
``/proc/self/task/<tid>/stat`` (Linux; other systems: the process only). Interpreter start-up
before pytest and shutdown after are not in it; they are alike with and without ``--monitor``
but for the imports, which are. ``_paired_concurrent.py --by-process`` loads it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

OUT_ENV = "TESTMON_BENCH_PROCESS_CPU_DIR"


def _threads() -> dict[str, float]:
    """CPU seconds of each thread of this process, by name (same names summed)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        out[name] = out.get(name, 0.0) + cpu
    return out


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    out = os.environ.get(OUT_ENV)
    if not out:
        return
    workerinput = getattr(config, "workerinput", None)
    role = str(workerinput["workerid"]) if workerinput is not None else "controller"
    data = {"cpu": time.process_time(), "threads": _threads()}
    Path(out, f"{role}-{os.getpid()}.json").write_text(json.dumps(data))
