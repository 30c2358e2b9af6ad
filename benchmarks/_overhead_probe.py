"""A tiny pytest plugin that benchmarks/overhead.py loads into every process of a run.

``overhead.py`` starts each measured run as ``python -m pytest -p _overhead_probe ...``
with this folder on ``PYTHONPATH``. xdist hands the controller's invocation arguments
(``-p`` included) to every worker, so the controller and each worker load it. In
``pytest_unconfigure`` (the last hook a process runs) each process appends one JSON line
to the file named by :data:`OUT_ENV`: its role, its own CPU time (``os.times()`` user and
system), the CPU time of the children it has waited for, and its peak RSS.

It is measuring equipment, not part of testmon-live: one hook call per process, a few
microseconds, the same in every variant. Without :data:`OUT_ENV` it does nothing.
"""

from __future__ import annotations

import json
import os
import resource
import time

import pytest

OUT_ENV = "TESTMON_BENCH_PROBE_OUT"
"""Environment variable naming the JSON-lines file every process appends its record to."""


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    path = os.environ.get(OUT_ENV)
    if not path:
        return
    workerinput = getattr(config, "workerinput", None)
    times = os.times()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    record = {
        "role": "worker" if workerinput is not None else "controller",
        "worker": str(workerinput.get("workerid", "")) if workerinput is not None else "",
        "pid": os.getpid(),
        "user": times.user,
        "sys": times.system,
        "children_user": times.children_user,
        "children_sys": times.children_system,
        "maxrss_kib": usage.ru_maxrss,  # Linux: KiB
        "at": time.time(),
        "rootdir": str(config.rootpath),
    }
    line = (json.dumps(record) + "\n").encode()
    # One small O_APPEND write per process: lines of concurrent processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
