"""Checks, independently of any waiting, that RUSAGE_CHILDREN deltas count the xdist workers.

``overhead.py`` takes a run's CPU time as the ``getrusage(RUSAGE_CHILDREN)`` delta around
the pytest subprocess. That only counts descendants somebody waited for. This script
runs one pytest command in its own session and, while it runs, samples
``/proc/<pid>/stat`` of every process of that session every few milliseconds, keeping the
last user + system ticks seen for each pid. The controller is read once more as a zombie
(``waitid(WNOWAIT)``) before it is reaped. If the sampled sum over all pids matches the
RUSAGE_CHILDREN delta (and is well above the controller's own time), the delta includes
the workers. Sampling misses at most a few milliseconds at the end of each worker.

    .venv/bin/python benchmarks/_verify_cpu.py SUITE_DIR [pytest args ...]

(``overhead.py --keep-tmp`` leaves suites to point it at.)
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(session id, utime + stime ticks, cutime + cstime ticks) of a process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw.rsplit(b")", 1)[1].split()
    # fields[0] is field 3 (state): session is field 6, utime 14, stime 15, cutime 16, cstime 17
    return int(fields[3]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _session_pids(sid: int) -> dict[int, int]:
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[0] == sid:
                found[int(entry)] = stat[1]
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    except OSError:
        return "?"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    suite, *extra = argv
    cmd = [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        cmd, cwd=suite, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    last: dict[int, int] = {}
    names: dict[int, str] = {}
    while True:
        for pid, ticks in _session_pids(proc.pid).items():
            last[pid] = max(ticks, last.get(pid, 0))
            if pid not in names:
                names[pid] = _cmdline(pid)
        done = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if done is not None:
            break
        time.sleep(0.003)
    zombie = _stat(proc.pid)  # the controller, exited but not yet reaped
    controller_children = 0
    if zombie is not None:
        last[proc.pid] = max(zombie[1], last.get(proc.pid, 0))
        controller_children = zombie[2]
    proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rusage = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sampled = sum(last.values()) / TICK
    print(f"exit {proc.returncode}; processes seen in the run's session: {len(last)}")
    for pid, ticks in sorted(last.items()):
        role = "controller" if pid == proc.pid else "descendant"
        print(f"  {pid:>7} {role:<10} {ticks / TICK:7.2f}s  {names.get(pid, '?')}")
    own = last.get(proc.pid, 0) / TICK
    print(f"controller's own CPU (final, as a zombie): {own:.2f}s")
    print(f"controller's reaped children CPU (cutime+cstime): {controller_children / TICK:.2f}s")
    print(f"sum sampled from /proc over all processes:  {sampled:.2f}s")
    print(f"getrusage(RUSAGE_CHILDREN) delta:           {rusage:.2f}s")
    print(f"delta / sampled sum: {rusage / sampled:.3f} (1.0 = the delta includes every worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
