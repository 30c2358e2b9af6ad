"""Where does ``--monitor`` spend its time? Profiling helpers for benchmarks/README.md.

Two tools in one module:

1. A pytest plugin (``-p _overhead_profile`` with this folder on ``PYTHONPATH`` and
   :data:`OUT_ENV` naming a folder): cProfile, timed by thread CPU time, of every
   process's main thread from ``pytest_configure`` to ``pytest_unconfigure``, of every
   ``threading.Thread`` started in between (testmon-live's sender and watchdog), and of
   every ``Hub.ingest`` call (the hub runs in execnet's receiver thread, which is not a
   ``threading.Thread``). One ``.prof`` file per process and thread.

   With :data:`NAMES_ENV` naming a file instead, it only notes each ``threading.Thread``'s
   native id and name (for ``threads`` below; no profiling, no overhead to speak of).

2. Reports (``python benchmarks/_overhead_profile.py ...``):

   ``threads SUITE N [pytest args]``
                            exact CPU per thread: runs ``pytest -n 2`` in SUITE N times,
                            polls ``/proc/<pid>/task/<tid>/stat`` of every process of the
                            run every 10 ms and names the threads; prints CPU seconds per
                            process side and thread (median over the N runs)

   ``cprofile DIR TESTS``   testmon-live's functions from the .prof files, per role,
                            with calls and microseconds per test
   ``pyspy FILE TESTS``     a ``py-spy record --format raw --threads --subprocesses``
                            profile: samples per process/thread, and per testmon-live
                            function (inclusive), as CPU milliseconds per 1,000 tests
"""

from __future__ import annotations

import cProfile
import importlib
import os
import pstats
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

OUT_ENV = "TESTMON_BENCH_PROFILE_DIR"
NAMES_ENV = "TESTMON_BENCH_THREAD_NAMES"
PLUGIN_DIR_MARK = str(Path(__file__).resolve().parent.parent)
"""The repository: its plugin/ folder is testmon-live's code (an editable install)."""


def _role(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput is not None else "controller"


class _Profiling:
    def __init__(self, out: Path, role: str) -> None:
        self.out = out
        self.role = role
        self.main = cProfile.Profile(time.thread_time)
        self.ingest = cProfile.Profile(time.thread_time)
        self._original_run: Callable[[threading.Thread], None] | None = None

    def start(self) -> None:
        original = threading.Thread.run
        self._original_run = original
        out, role = self.out, self.role

        def run(thread: threading.Thread) -> None:
            profile = cProfile.Profile(time.thread_time)
            profile.enable()
            try:
                original(thread)
            finally:
                profile.disable()
                name = re.sub(r"[^\w.-]", "_", thread.name)
                _dump(profile, out / f"{role}-{os.getpid()}-thread-{name}.prof")

        threading.Thread.run = run  # type: ignore[method-assign,assignment]
        self._wrap_hub_ingest()
        self.main.enable()

    def _wrap_hub_ingest(self) -> None:
        try:
            hub_class: Any = importlib.import_module("testmon_live.plugin.hub").Hub
        except ImportError:
            return
        original = hub_class.ingest
        profile = self.ingest

        def ingest(hub: object, worker: str, data: object) -> None:
            profile.enable()
            try:
                original(hub, worker, data)
            finally:
                profile.disable()

        hub_class.ingest = ingest

    def stop(self) -> None:
        self.main.disable()
        pid = os.getpid()
        _dump(self.main, self.out / f"{self.role}-{pid}-main.prof")
        _dump(self.ingest, self.out / f"{self.role}-{pid}-hub-ingest.prof")
        if self._original_run is not None:
            threading.Thread.run = self._original_run  # type: ignore[method-assign,assignment]


def _dump(profile: cProfile.Profile, path: Path) -> None:
    profile.create_stats()
    if profile.stats:
        profile.dump_stats(path)


_key = pytest.StashKey[_Profiling]()


def _note_thread_names(path: str, role: str) -> None:
    original = threading.Thread.run

    def run(thread: threading.Thread) -> None:
        line = f"{os.getpid()} {threading.get_native_id()} {role} {thread.name}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        original(thread)

    threading.Thread.run = run  # type: ignore[method-assign,assignment]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    names = os.environ.get(NAMES_ENV)
    if names:
        _note_thread_names(names, _role(config))
    out = os.environ.get(OUT_ENV)
    if not out:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    profiling = _Profiling(Path(out), _role(config))
    config.stash[_key] = profiling
    profiling.start()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    profiling = config.stash.get(_key, None)
    if profiling is not None:
        profiling.stop()


# ----------------------------------------------------------------------- reports


def _ours(filename: str) -> bool:
    """testmon-live's plugin code, as cProfile (absolute) or py-spy (shortened) names it."""
    if "__editable__" in filename:
        return False
    return filename.startswith("plugin/") or PLUGIN_DIR_MARK + "/plugin/" in filename


def report_cprofile(folder: Path, tests: int, top: int = 25) -> None:
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(folder.glob("*.prof")):
        role, _pid, kind = path.stem.split("-", 2)
        side = "controller" if role == "controller" else "worker"
        groups[f"{side} {kind}"].append(path)
    for group, paths in sorted(groups.items()):
        stats = pstats.Stats(str(paths[0]))
        for extra in paths[1:]:
            stats.add(str(extra))
        table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        total = max((v[3] for v in table.values()), default=0.0)
        rows = [(key, value) for key, value in table.items() if _ours(str(key[0])) and value[1] > 0]
        rows.sort(key=lambda kv: kv[1][3], reverse=True)
        per = f"per test over {tests} tests" if "worker" in group else f"per test ({tests})"
        print(f"\n## {group} ({len(paths)} files; largest cumulative {total:.2f}s); {per}")
        print(f"{'calls':>9} {'tottime s':>9} {'cumtime s':>9} {'cum us/test':>11}  function")
        for (filename, line, func), (_cc, calls, tt, ct, _callers) in rows[:top]:
            short = filename.split("plugin/")[-1]
            print(f"{calls:9d} {tt:9.3f} {ct:9.3f} {ct / tests * 1e6:11.1f}  {short}:{line}:{func}")


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def report_pyspy(path: Path, tests: int, rate: float, top: int = 30) -> None:
    """py-spy ``--format raw --threads --subprocesses`` lines, root first:
    ``process A;[process B;]thread (tid): Name;frame;...;frame count``."""
    by_thread: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    innermost: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    ours_total: Counter[str] = Counter()
    for raw in path.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # Process frames quote their command line, which may contain ";".
        processes = _PROCESSES.match(stack)
        rest = stack[processes.end() :] if processes else stack
        side = "worker" if processes and processes[0].count("process ") > 1 else "controller"
        frames = rest.split(";")
        depth = 0
        thread = "?"
        if frames and frames[0].startswith("thread ("):
            head = frames[0]
            depth = 1
            thread = head.split(": ", 1)[1] if ": " in head else _thread_label(frames[1:])
        by_thread[f"{side:<10} {thread}"] += count
        totals[side] += count
        seen: set[str] = set()
        inner: str | None = None
        for frame in frames[depth:]:
            match = _FRAME.match(frame)
            if match is None or not _ours(match["file"]):
                continue
            name = f"{match['file'].split('plugin/')[-1]}:{match['func']}"
            if name not in seen:
                seen.add(name)
                inclusive[side][name] += count
            inner = name
        if inner is not None:
            ours_total[side] += count
            innermost[side][inner] += count
    ms = 1000.0 / rate
    per_k = 1000.0 / tests
    print(f"py-spy samples at {rate:.0f} Hz, shown as ms of CPU per 1,000 tests ({tests} tests)")
    print("\n## by process side and thread")
    for key, count in by_thread.most_common():
        print(f"{count * ms * per_k:9.1f} ms/1k  {count:7d} samples  {key}")
    for side in ("worker", "controller"):
        share = ours_total[side] / max(1, totals[side])
        print(
            f"\n## {side}s: {totals[side]} samples, {ours_total[side]} with testmon-live on the "
            f"stack ({share:.1%}) = {ours_total[side] * ms * per_k:.1f} ms per 1,000 tests"
        )
        print(f"{'inclusive (on the stack), ms/1k tests':<62} | innermost testmon-live frame")
        inc = inclusive[side].most_common(top)
        leaf = innermost[side].most_common(top)
        for i in range(max(len(inc), len(leaf))):
            a = f"{inc[i][1] * ms * per_k:8.1f} {inc[i][0]}" if i < len(inc) else ""
            b = f"{leaf[i][1] * ms * per_k:8.1f} {leaf[i][0]}" if i < len(leaf) else ""
            print(f"{a:<62.62} | {b}")


def _task_ticks(pid: int) -> dict[int, tuple[int, int, int]]:
    """tid -> (CPU ticks, voluntary, involuntary context switches) of each thread of pid.

    A voluntary switch is the thread blocking (a wait, a lock, a read): each is followed by
    a wake-up, so their count is the thread's wake-ups. Involuntary ones are preemptions."""
    ticks: dict[int, tuple[int, int, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return ticks
    for tid in tids:
        try:
            raw = Path(f"/proc/{pid}/task/{tid}/stat").read_bytes()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_bytes()
        except OSError:
            continue
        fields = raw.rsplit(b")", 1)[1].split()
        switches = dict.fromkeys((b"voluntary_ctxt_switches", b"nonvoluntary_ctxt_switches"), 0)
        for line in status.splitlines():
            name, _, value = line.partition(b":")
            if name in switches:
                switches[name] = int(value)
        ticks[int(tid)] = (
            int(fields[11]) + int(fields[12]),
            switches[b"voluntary_ctxt_switches"],
            switches[b"nonvoluntary_ctxt_switches"],
        )
    return ticks


def _session_pids(sid: int) -> list[int]:
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if int(raw.rsplit(b")", 1)[1].split()[3]) == sid:
            pids.append(int(entry))
    return pids


def thread_cpu_once(
    suite: Path, args: list[str], names_file: Path
) -> tuple[dict[str, tuple[float, int, int]], float]:
    """One run: (CPU seconds, voluntary, involuntary switches) per "side thread-name"
    (workers summed), and the run's wall time."""
    import subprocess

    names_file.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env[NAMES_ENV] = str(names_file)
    cmd = [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider"]
    cmd += ["-p", "_overhead_profile", *args]
    began = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=suite, env=env, stdout=subprocess.DEVNULL, start_new_session=True
    )
    last: dict[tuple[int, int], tuple[int, int, int]] = {}
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        for pid in _session_pids(proc.pid):
            for tid, seen in _task_ticks(pid).items():
                if seen >= last.get((pid, tid), (-1, -1, -1)):
                    last[(pid, tid)] = seen
        time.sleep(0.01)
    proc.wait()
    wall = time.monotonic() - began
    named: dict[tuple[int, int], str] = {}
    if names_file.exists():
        for line in names_file.read_text().splitlines():
            pid_text, tid_text, role, name = line.split(" ", 3)
            side = "controller" if role == "controller" else "worker"
            named[(int(pid_text), int(tid_text))] = f"{side} {name}"
    tick = os.sysconf("SC_CLK_TCK")
    result: dict[str, tuple[float, int, int]] = {}
    for (pid, tid), (ticks, vol, invol) in last.items():
        side = "controller" if pid == proc.pid else "worker"
        if (pid, tid) in named:
            label = named[(pid, tid)]
        elif tid == pid:
            label = f"{side} main thread"
        else:
            label = f"{side} other thread (execnet io)"
        cpu, v, i = result.get(label, (0.0, 0, 0))
        result[label] = (cpu + ticks / tick, v + vol, i + invol)
    return result, wall


def report_threads(suite: Path, runs: int, args: list[str]) -> None:
    import statistics
    import tempfile

    names_file = Path(tempfile.mkdtemp(prefix="testmon-threads-")) / "names.txt"
    samples: dict[str, list[tuple[float, int, int]]] = defaultdict(list)
    walls: list[float] = []
    for _ in range(runs):
        found, wall = thread_cpu_once(suite, args, names_file)
        walls.append(wall)
        for label, seen in found.items():
            samples[label].append(seen)
    print(
        f"Per thread, median of {runs} runs (wall {statistics.median(walls):.1f} s): "
        f"pytest -n 2 {' '.join(args)}"
    )
    print(f"{'CPU s':>8} {'(min..max)':>13} {'wake-ups':>9} {'preempted':>9}  thread")
    total = 0.0
    for label, values in sorted(samples.items()):
        values += [(0.0, 0, 0)] * (runs - len(values))
        cpu = [v[0] for v in values]
        med = statistics.median(cpu)
        total += med
        vol = statistics.median(v[1] for v in values)
        invol = statistics.median(v[2] for v in values)
        print(f"{med:8.2f} ({min(cpu):5.2f}..{max(cpu):5.2f}) {vol:9.0f} {invol:9.0f}  {label}")
    print(f"{total:8.2f}s  total")


_PROCESSES = re.compile(r'(?:process \d+:"[^"]*";)+')


def _thread_label(frames: list[str]) -> str:
    """A name for a thread py-spy has no name for (execnet's): its outermost own frame."""
    for frame in frames:
        match = _FRAME.match(frame)
        if match is not None and "threading.py" not in match["file"]:
            return f"<{match['func']}>"
    return "?"


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "threads":
        report_threads(Path(argv[1]), int(argv[2]), argv[3:])
        return 0
    if len(argv) >= 3 and argv[0] == "cprofile":
        report_cprofile(Path(argv[1]), int(argv[2]))
        return 0
    if len(argv) >= 3 and argv[0] == "pyspy":
        rate = float(argv[3]) if len(argv) > 3 else 250.0
        report_pyspy(Path(argv[1]), int(argv[2]), rate)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
