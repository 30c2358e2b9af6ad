"""Live notices in pytest's own output and in CI: real `pytest -n 2 --monitor` sessions whose
output goes to a pipe, read line by line as it arrives.

Every inner hang waits for a file the test creates once it has seen what it waits for
(bounded by a timeout of its own), so a notice is proven to come while the hang lasts.
Durations are the test's to choose; the only times asserted are the issue's windows
(a stall within its threshold + 2 s, a deadlock within 2 s of forming).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.notices import (
    ERROR,
    INFO,
    PREFIX,
    WARNING,
    Alert,
    Limiter,
    Watch,
    level_for,
    status_lines,
)
from testmon_live.plugin.settings import (
    HELP_ANNOTATIONS,
    HELP_CI_SUMMARY,
    HELP_NOTICES,
    HELP_QUIET,
    HELP_SLOW,
)
from testmon_live.plugin.state import RunState
from testmon_live.plugin.summary import summary_lines
from testmon_live.tui.cli import main as cli_main

from .conftest import Recorded, read_recorded, run_logs

pytestmark = pytest.mark.slow

STALL = 1.0
WITHIN = STALL + 2.0
"""The issue's window: a stall line within the threshold + 2 s."""
RUN_TIMEOUT = 120.0
PYTEST = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly")

WAIT_FOR_RELEASE = '''
import time
from pathlib import Path

HERE = Path(__file__).parent


def hold(name="release", limit=60.0):
    """Block until the outer test creates HERE/<name> (or `limit` seconds passed)."""
    (HERE / ("started-" + name)).touch()
    deadline = time.monotonic() + limit
    while not (HERE / name).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
'''

QUICK = """
import pytest

@pytest.mark.parametrize("n", range(12))
def test_quick(n):
    pass
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    for name in ("TESTMON_DIR", "TESTMON_LIVE_QUEUE", "PYTEST_PLUGINS", "CI"):
        env.pop(name, None)
    env.update(extra)
    return env


class Live:
    """A pytest session in the background; its output read line by line as it comes."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.proc = subprocess.Popen(
            [*PYTEST, *args],
            cwd=root,
            env=env or _env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[tuple[float, float, str]] = []
        """(monotonic, wall clock, text) of each line, when it was read."""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                self.lines.append((time.monotonic(), time.time(), line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> tuple[float, float, re.Match[str]]:
        """The first line matching ``pattern`` (a regex, searched), waiting for it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for mono, wall, line in self.lines[seen:]:
                    found = regex.search(line)
                    if found is not None:
                        return mono, wall, found
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line matching {pattern!r}; output:\n{self.text}")
                self._changed.wait(min(left, 0.2))

    @property
    def text(self) -> str:
        return "\n".join(line for _, _, line in self.lines)

    def matching(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return [line for _, _, line in self.lines if regex.search(line)]

    def release(self, name: str = "release") -> None:
        (self.root / name).touch()

    def finish(self, timeout: float = RUN_TIMEOUT) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[list[Live]]:
    """Sessions a test starts; whatever is left running at its end is killed."""
    sessions: list[Live] = []
    yield sessions
    for session in sessions:
        session.kill()


def start(sessions: list[Live], root: Path, *args: str, **env: str) -> Live:
    session = Live(root, *args, env=_env(**env))
    sessions.append(session)
    return session


def monitored(sessions: list[Live], root: Path, *args: str, **env: str) -> Live:
    """``pytest -n 2 --monitor ARGS`` in ``root``."""
    return start(sessions, root, "-n", "2", "--monitor", *args, **env)


def wait_for_file(path: Path, timeout: float = 60.0) -> float:
    """The time (monotonic) at which ``path`` was seen, polling for it."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return time.monotonic()


def only_log(root: Path) -> Recorded:
    (log,) = run_logs(root)
    return read_recorded(log)


def line_of(source: str, needle: str) -> int:
    (number,) = [i for i, line in enumerate(source.splitlines(), 1) if needle in line]
    return number


def write_suite(root: Path, **files: str) -> None:
    (root / "holding.py").write_text(WAIT_FOR_RELEASE)
    (root / "test_quick.py").write_text(QUICK)
    for name, text in files.items():
        (root / f"{name}.py").write_text(text)


# ------------------------------------------------------------------ stalls

HANG = """
import threading
from holding import HERE

def test_hang():
    (HERE / "started-release").touch()
    gate = threading.Event()
    for _ in range(1200):
        if (HERE / "release").exists():
            break
        gate.wait(0.05)  # the stall's frame
"""


def test_stall_line_comes_within_the_threshold_and_while_the_test_hangs(
    tmp_path: Path, live: list[Live]
) -> None:
    write_suite(tmp_path, test_hang=HANG)
    run = monitored(live, tmp_path, f"--monitor-stall={STALL}")
    began = wait_for_file(tmp_path / "started-release")
    seen, _, _ = run.wait_for(r"STALL")
    assert seen - began <= WITHIN, f"the stall line came {seen - began:.2f}s after the hang began"
    assert not (tmp_path / "release").exists()  # the test still hangs: nothing released it yet
    run.release()
    assert run.finish() == 0
    (stall_line,) = run.matching("STALL")
    line = line_of(HANG, "the stall's frame")
    assert re.fullmatch(
        rf"\[testmon-live\] STALL gw[01] test_hang\.py::test_hang \(call\) \d+\.\d+s "
        rf"at test_hang\.py:{line} in test_hang \(MainThread waiting on an event: .*\)",
        stall_line,
    ), stall_line
    # on a line of its own, and pytest's progress line was ended with its percentage
    before = run.lines[[text for _, _, text in run.lines].index(stall_line) - 1][2]
    assert re.fullmatch(r"\.+ +\[ *\d+%\]", before), before
    assert "1 passed" in run.text or "13 passed" in run.text


SINGLE = """
import threading
from holding import HERE

def test_hang_then_fail():
    print("the test's own output")
    (HERE / "started-release").touch()
    gate = threading.Event()
    for _ in range(1200):
        if (HERE / "release").exists():
            break
        gate.wait(0.05)
    assert False, "failed after its stall"
"""


def test_without_xdist_the_line_goes_past_the_capture_of_the_running_test(
    tmp_path: Path, live: list[Live]
) -> None:
    write_suite(tmp_path, test_single=SINGLE)
    run = start(live, tmp_path, "--monitor", f"--monitor-stall={STALL}")
    began = wait_for_file(tmp_path / "started-release")
    seen, _, found = run.wait_for(r"^\[testmon-live\] STALL main test_single\.py::(\S+) \(call\)")
    assert seen - began <= WITHIN
    assert found[1] == "test_hang_then_fail"
    run.release()
    assert run.finish() == 1
    # The test's failure text is its own: its captured output holds no line of ours.
    captured = run.text.split("Captured stdout call", 1)[1].split("=====", 1)[0]
    assert "the test's own output" in captured
    assert PREFIX not in captured
    # pytest's progress line was not torn: the letter of the test that hung is on a line
    # of pytest's, not after ours
    assert all(line.startswith(PREFIX) for line in run.matching(re.escape(PREFIX)))
    assert len(run.matching(r"^(test_single\.py )?F +\[100%\]$")) == 1


# ------------------------------------------------------------------ deadlocks

ABBA = """
import os, time
from pathlib import Path
import filelock

HERE = Path(__file__).parent
WORKER = os.environ["PYTEST_XDIST_WORKER"]
A, B = str(HERE / "a.lock"), str(HERE / "b.lock")


def meet(name):
    (HERE / f"{name}-{WORKER}").touch()
    deadline = time.monotonic() + 30
    while len(list(HERE.glob(f"{name}-gw*"))) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_abba():
    first, second = (A, B) if WORKER == "gw0" else (B, A)
    with filelock.FileLock(first):
        meet("both-hold-one")
        try:
            with filelock.FileLock(second, timeout=8):
                pass
        except filelock.Timeout:
            pass  # the deadlock ends when a side gives up
"""


def test_deadlock_line_within_two_seconds_of_forming(tmp_path: Path, live: list[Live]) -> None:
    (tmp_path / "test_abba.py").write_text(ABBA)
    run = start(live, tmp_path, "-n", "2", "--dist", "each", "--monitor", "--monitor-stall=0")
    _, seen_wall, found = run.wait_for(r"\[testmon-live\] DEADLOCK (.*)")
    assert run.finish() == 0
    text = found[1]
    assert "gw0 holds a.lock, waits for b.lock (in test_abba.py::test_abba)" in text
    assert "gw1 holds b.lock, waits for a.lock (in test_abba.py::test_abba)" in text
    recorded = only_log(tmp_path)
    waits = [e for e in recorded.of(ev.LockEvent) if e.action == "wait"]
    formed = max(w.ts for w in waits)
    assert seen_wall - formed < 2.0, f"the deadlock line came {seen_wall - formed:.2f}s late"
    ended = min(t.ts for t in recorded.of(ev.TestFinished))
    assert seen_wall < ended  # told while both workers still waited


# ------------------------------------------------------------------ crashes

CRASH = """
import os

def test_crash():
    os._exit(3)
"""


def test_crash_line_names_the_test_and_exit_code(tmp_path: Path, live: list[Live]) -> None:
    write_suite(tmp_path, test_crash=CRASH)
    summary = tmp_path / "summary.md"
    # Not on GitHub: no annotations and no step summary, even with the variable set.
    run = monitored(live, tmp_path, GITHUB_STEP_SUMMARY=str(summary))
    _, _, found = run.wait_for(r"^\[testmon-live\] CRASH (gw\d) (\S+): (.*)$")
    assert run.finish() == 1
    assert (found[2], found[3]) == ("test_crash.py::test_crash", "exit code 3")
    assert not run.matching(r"^::")
    assert not summary.exists()


# ------------------------------------------------------------------ slow tests

SLOW = """
from holding import hold

def test_slow():
    hold()
"""


def test_slow_line_while_the_test_runs(tmp_path: Path, live: list[Live]) -> None:
    write_suite(tmp_path, test_slow=SLOW)
    run = monitored(live, tmp_path, "--monitor-stall=0", "--monitor-slow=1.5")
    began = wait_for_file(tmp_path / "started-release")
    seen, _, found = run.wait_for(r"^\[testmon-live\] SLOW \[> (\S+)s\] (gw\d) (.*)$")
    assert seen - began >= 1.5 - 0.3  # not before its time (the clocks of two processes)
    assert (found[1], found[3]) == ("1.5", "test_slow.py::test_slow (call)")
    run.release()
    assert run.finish() == 0
    assert not run.matching("STALL")  # --monitor-stall=0


# ------------------------------------------------------------------ quiet spells


def test_quiet_spell_prints_what_each_worker_does(tmp_path: Path, live: list[Live]) -> None:
    write_suite(tmp_path, test_slow=SLOW)
    run = monitored(
        live,
        tmp_path,
        "--monitor-stall=0",
        "--monitor-slow=0",
        "--monitor-quiet=1",
    )
    wait_for_file(tmp_path / "started-release")
    run.wait_for(r"^\[testmon-live\] no test finished for \S+ \(\d+ done so far\); each worker")
    row = run.wait_for(r"^  (gw\d)  call +test_slow\.py::test_slow \(call\) (\S+)$", timeout=5)[2]
    others = run.matching(r"^  gw\d  ")
    assert len(others) >= 2, run.text  # a row for each worker
    assert {r.split()[0] for r in others} == {"gw0", "gw1"}
    assert row[1] in ("gw0", "gw1")
    run.release()
    assert run.finish() == 0


# ------------------------------------------------------------------ -q / -qq

QUIET_SUITE = """
import os, time
from holding import hold

def test_a_stall_and_slow():
    hold()

def test_b_crash():
    hold("crash-now")
    os._exit(5)
"""


@pytest.mark.parametrize(
    ("quieter", "kept", "left_out"),
    [
        ("-q", ("STALL", "CRASH"), ("SLOW",)),
        ("-qq", ("CRASH",), ("STALL", "SLOW", "no test finished")),
    ],
)
def test_q_and_qq_quiet_the_lines_down(
    tmp_path: Path,
    live: list[Live],
    quieter: str,
    kept: tuple[str, ...],
    left_out: tuple[str, ...],
) -> None:
    write_suite(tmp_path, test_quiet=QUIET_SUITE)
    run = start(
        live,
        tmp_path,
        quieter,
        "-n",
        "2",
        "--monitor",
        f"--monitor-stall={STALL}",
        "--monitor-slow=1",
        "--monitor-quiet=1",
        "test_quiet.py",
    )
    wait_for_file(tmp_path / "started-release")
    time.sleep(STALL + 2.5)  # time for every notice the hang can give (checked below)
    run.release("crash-now")
    run.wait_for(r"^\[testmon-live\] CRASH")
    run.release()
    run.finish()
    for word in kept:
        assert run.matching(rf"^\[testmon-live\] {word}"), (word, run.text)
    for word in left_out:
        assert not run.matching(rf"^\[testmon-live\] {word}"), (word, run.text)


def test_levels_follow_pytest_verbosity() -> None:
    assert level_for(1) == level_for(0) == INFO
    assert level_for(-1) == WARNING
    assert level_for(-2) == level_for(-3) == ERROR


# ------------------------------------------------------------------ signals


def _hang_run(live: list[Live], root: Path, *extra: str) -> Live:
    root.mkdir(parents=True, exist_ok=True)
    write_suite(root, test_hang=HANG)
    return start(live, root, "-n", "2", *extra)


def test_sigterm_prints_workers_and_stacks_and_completes_the_log(
    tmp_path: Path, live: list[Live]
) -> None:
    plain = _hang_run(live, tmp_path / "plain")
    wait_for_file(tmp_path / "plain" / "started-release")
    os.kill(plain.proc.pid, signal.SIGTERM)
    plain_code = plain.finish()

    root = tmp_path / "monitored"
    run = _hang_run(live, root, "--monitor", f"--monitor-stall={STALL}")
    run.wait_for(r"STALL")
    os.kill(run.proc.pid, signal.SIGTERM)
    code = run.finish()
    assert code == plain_code == -signal.SIGTERM  # it ends as it did without the monitor
    run.wait_for(r"^\[testmon-live\] SIGTERM: the run stops after \S+; each worker at this")
    run.wait_for(r"^  gw\d  stalled +test_hang\.py::test_hang \(call\) \S+ at test_hang\.py:\d+")
    run.wait_for(r"^  gw\d stacks \(stalled test_hang\.py::test_hang \(call\)")
    line = line_of(HANG, "the stall's frame")
    run.wait_for(rf'^      File ".*test_hang\.py", line {line}, in test_hang$')
    run.wait_for(r"^\[testmon-live\] log complete up to this moment: ")
    recorded = only_log(root)
    assert not recorded.problems, list(recorded.problems)
    end = recorded.events[-1]
    assert isinstance(end, ev.RunFinished), end
    assert end.status == "interrupted"
    assert any("SIGTERM" in n.msg for n in recorded.of(ev.Notice))
    assert recorded.state.stall_count() == 1


def test_sigint_prints_the_workers_and_keeps_pytests_interrupt(
    tmp_path: Path, live: list[Live]
) -> None:
    codes = []
    for name, extra in (("plain", ()), ("monitored", ("--monitor", f"--monitor-stall={STALL}"))):
        root = tmp_path / name
        run = _hang_run(live, root, *extra)
        wait_for_file(root / "started-release")
        run.wait_for(r"STALL" if extra else r"\d+ workers \[\d+ items\]")
        os.kill(run.proc.pid, signal.SIGINT)
        codes.append(run.finish())
        run.wait_for(r"KeyboardInterrupt")
        where = run.wait_for(r"^(\S+):\d+: KeyboardInterrupt$")[2]
        assert "/plugin/" not in where[1], where[0]  # not our signal handler's frame
    assert codes == [pytest.ExitCode.INTERRUPTED] * 2
    run.wait_for(r"^\[testmon-live\] SIGINT: the run stops after")
    run.wait_for(r"^  gw\d stacks \(stalled test_hang\.py::test_hang")
    end = only_log(tmp_path / "monitored").events[-1]
    assert isinstance(end, ev.RunFinished)
    assert end.status == "interrupted"


# ------------------------------------------------------------------ GitHub Actions

POLLUTED = """
def test_polluted():
    raise RuntimeError("UNIQUE constraint failed: users.email")  # the polluted frame
"""


@dataclass
class CiRun:
    root: Path
    run: Live
    code: int
    summary: Path


@pytest.fixture(scope="module")
def github_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CiRun]:
    """One run as GitHub Actions runs it: a stall, a crash, a failure that looks polluted."""
    root = tmp_path_factory.mktemp("github")
    write_suite(root, test_hang=HANG, test_crash=CRASH, test_polluted=POLLUTED)
    summary = root / "step-summary.md"
    summary.write_text("earlier step\n")
    sessions: list[Live] = []
    try:
        run = monitored(
            sessions,
            root,
            f"--monitor-stall={STALL}",
            GITHUB_ACTIONS="true",
            GITHUB_STEP_SUMMARY=str(summary),
            GITHUB_WORKSPACE=str(root),
        )
        run.wait_for(r"STALL")
        run.release()
        yield CiRun(root, run, run.finish(), summary)
    finally:
        for session in sessions:
            session.kill()


def test_github_actions_annotations(github_run: CiRun) -> None:
    run = github_run.run
    assert github_run.code == 1
    hang_line = line_of(HANG, "the stall's frame")
    run.wait_for(
        rf"^::warning file=test_hang\.py,line={hang_line},title=testmon-live%3A stall::"
        r"STALL gw\d test_hang\.py::test_hang \(call\)"
    )
    crash_def = line_of(CRASH, "def test_crash")
    run.wait_for(
        rf"^::error file=test_crash\.py,line={crash_def},title=testmon-live%3A crash::"
        r"CRASH gw\d test_crash\.py::test_crash: exit code 3$"
    )
    polluted_line = line_of(POLLUTED, "the polluted frame")
    run.wait_for(
        rf"^::warning file=test_polluted\.py,line={polluted_line},"
        r"title=testmon-live%3A looks polluted::test_polluted\.py::test_polluted failed with "
    )


def test_github_step_summary_holds_the_markdown_report(github_run: CiRun) -> None:
    text = github_run.summary.read_text()
    assert text.startswith("earlier step\n")  # appended, not overwritten
    run_id = only_log(github_run.root).header.run_id
    assert f"### testmon-live run `{run_id}`" in text
    assert "#### Stalls" in text
    assert "| worker |" in text  # the markdown report's tables


def test_junit_export_carries_the_monitors_findings(
    github_run: CiRun, capsys: pytest.CaptureFixture[str]
) -> None:
    (log,) = run_logs(github_run.root)
    capsys.readouterr()
    assert cli_main(["export", str(log), "--format", "junit", "-o", "-"]) == 0
    suite = ET.fromstring(capsys.readouterr().out).find("testsuite")
    assert suite is not None
    run_props = _props(suite)
    assert run_props["testmon.run"] == [only_log(github_run.root).header.run_id]
    assert run_props["testmon.stalls"] == ["1"]
    assert run_props["testmon.crashes"] == ["1"]
    cases = {c.get("name"): _props(c) for c in suite.iter("testcase")}
    hang_line = line_of(HANG, "the stall's frame")
    (stall,) = cases["test_hang"]["testmon.stall"]
    assert re.fullmatch(
        rf"\d+\.\d\ds in call at test_hang\.py:{hang_line} in test_hang "
        r"\(MainThread waiting on an event: .*\)",
        stall,
    ), stall
    assert cases["test_crash"]["testmon.crash"] == ["exit code 3"]
    (hint,) = cases["test_polluted"]["testmon.looks_polluted"]
    assert hint.endswith(" test_polluted.py::test_polluted")
    assert "testmon.stall" not in cases["test_quick[0]"]


def _props(element: ET.Element) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    props = element.find("properties")
    assert props is not None
    for prop in props.iter("property"):
        found.setdefault(prop.get("name") or "", []).append(prop.get("value") or "")
    return found


def test_ci_switches_turn_the_github_outputs_off(tmp_path: Path, live: list[Live]) -> None:
    write_suite(tmp_path, test_crash=CRASH)
    summary = tmp_path / "step-summary.md"
    run = monitored(
        live,
        tmp_path,
        "--no-monitor-ci-summary",
        "--no-monitor-annotations",
        GITHUB_ACTIONS="true",
        GITHUB_STEP_SUMMARY=str(summary),
    )
    run.wait_for(r"^\[testmon-live\] CRASH")
    assert run.finish() == 1
    assert not run.matching(r"^::")
    assert not summary.exists()


# ------------------------------------------------------------------ never breaks the run


def test_a_closed_output_changes_nothing(tmp_path: Path) -> None:
    # One test, 4 s long: the stall line (at ~0.5 s) is the first write after the reader
    # went away, the test's letter the second.
    (tmp_path / "test_d.py").write_text("import time\ndef test_a(): time.sleep(4)\n")
    codes = []
    for extra in ((), ("--monitor", "--monitor-stall=0.5", "--monitor-slow=1")):
        proc = subprocess.Popen(
            [*PYTEST, "-n", "2", *extra],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        while b"workers [" not in proc.stdout.readline():
            pass
        proc.stdout.close()  # the reader goes away: every later write fails
        codes.append(proc.wait(RUN_TIMEOUT))
    assert codes[0] == codes[1]
    recorded = only_log(tmp_path)
    end = recorded.events[-1]
    assert isinstance(end, ev.RunFinished)
    if end.stalls:  # pytest lived to the stall (it can die at an earlier write of its own)
        notices = [n.msg for n in recorded.of(ev.Notice)]
        assert any("pytest's output failed" in n for n in notices), notices


# ------------------------------------------------------------------ options


def test_help_and_ini_keys_of_the_live_options(pytester: pytest.Pytester) -> None:
    out = " ".join(pytester.runpytest_subprocess("--help").stdout.str().split())
    for flag in (
        "--monitor-notices",
        "--no-monitor-notices",
        "--monitor-slow=SECONDS",
        "--monitor-quiet=SECONDS",
        "--monitor-ci-summary",
        "--no-monitor-ci-summary",
        "--monitor-annotations",
        "--no-monitor-annotations",
    ):
        assert flag in out
    for ini in ("monitor_notices", "monitor_slow", "monitor_quiet", "monitor_ci_summary"):
        assert ini in out
    for text in (HELP_NOTICES, HELP_SLOW, HELP_QUIET, HELP_CI_SUMMARY, HELP_ANNOTATIONS):
        assert " ".join(text.split()[:5]) in out


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--monitor-slow", "-1"], "", "--monitor-slow: '-1' must be 0.0 or more"),
        (["--monitor-quiet", "soon"], "", "--monitor-quiet: 'soon' is not a number of seconds"),
        ([], "monitor_ci_summary = maybe", "monitor_ci_summary: 'maybe' is not true, false"),
    ],
)
def test_bad_live_option_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], ini: str, message: str
) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_subprocess("--monitor", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_ini_keys_turn_the_notices_off(tmp_path: Path, live: list[Live]) -> None:
    write_suite(tmp_path, test_crash=CRASH)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nmonitor = true\nmonitor_notices = false\nmonitor_annotations = true\n"
    )
    run = start(live, tmp_path, "-n", "2")
    assert run.finish() == 1
    assert not run.matching(r"^\[testmon-live\] CRASH")
    run.wait_for(r"^::error file=test_crash\.py,.*title=testmon-live%3A crash::")


# ------------------------------------------------------------------ the fold, unit by unit


def _worker(state: RunState, w: str, t: float) -> None:
    state.apply(ev.WorkerStarted(w=w, ts=t, schema=ev.SCHEMA_VERSION, pid=1000 + len(w)))


def test_watch_turns_what_the_fold_added_into_alerts_once() -> None:
    state = RunState(detail=False)
    watch = Watch(slow=10.0)
    _worker(state, "gw0", 100.0)
    _worker(state, "gw1", 100.0)
    assert watch.scan(state, 101.0) == []
    state.apply(ev.Activity(w="gw0", ts=101.0, test="t.py::test_a", phase="call", since=101.0))
    assert watch.scan(state, 110.0) == []
    (slow,) = watch.scan(state, 111.5)
    assert slow.kind == "SLOW"
    assert slow.text == "SLOW [> 10.0s] gw0 t.py::test_a (call)"
    assert watch.scan(state, 112.0) == []  # once per threshold...
    (again,) = watch.scan(state, 121.5)  # ...then at twice the threshold
    assert again.text.startswith("SLOW [> 20.0s]")
    state.apply(
        ev.WorkerCrashed(w="gw1", ts=122.0, error="gone", test="t.py::test_b", signal="SIGSEGV")
    )
    (crash,) = watch.scan(state, 122.5)
    assert (crash.kind, crash.text) == ("CRASH", "CRASH gw1 t.py::test_b: signal SIGSEGV")
    assert crash.level == ERROR
    assert watch.scan(state, 123.0) == []


def test_a_crash_reads_the_same_live_at_the_end_and_in_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One wording of a worker's exit: the live line, the end-of-run summary, the report
    and the JUnit export; a crash xdist gave no words for is still a crash (the summary
    used to fail on its empty error)."""
    header = ev.RunStarted(schema=ev.SCHEMA_VERSION, run_id="r", rootdir=str(tmp_path), ts=99.0)
    events: list[ev.Event] = [header]
    state = RunState(detail=False)
    state.apply(header)
    for w, t in (("gw0", 100.0), ("gw1", 100.0)):
        events.append(ev.WorkerStarted(w=w, ts=t, schema=ev.SCHEMA_VERSION, pid=1000 + len(w)))
    events.append(ev.WorkerCrashed(w="gw0", ts=101.0, error="", test="t.py::test_a"))
    events.append(
        ev.WorkerCrashed(w="gw1", ts=102.0, error="x", test="t.py::test_b", signal="SIGKILL")
    )
    watch = Watch()
    live = []
    for e in events[1:]:
        state.apply(e)
        live += [alert.text for alert in watch.scan(state, e.ts)]
    assert live == [
        "CRASH gw0 t.py::test_a: worker went away",
        "CRASH gw1 t.py::test_b: signal SIGKILL",
    ]
    summary = summary_lines(state, tmp_path / "r.jsonl", [])
    assert "crash: gw0 while running t.py::test_a (worker went away)" in summary
    assert "crash: gw1 while running t.py::test_b (signal SIGKILL)" in summary
    log = tmp_path / "r.jsonl"
    log.write_bytes(ev.encode_lines(events))
    assert cli_main(["report", str(log)]) in (0, 1)
    assert re.search(r"gw1 +t\.py::test_b +signal SIGKILL", capsys.readouterr().out)


def test_an_unresponsive_worker_waits_for_its_stacks_then_speaks_anyway() -> None:
    state = RunState(detail=False)
    watch = Watch()
    _worker(state, "gw0", 100.0)
    state.apply(ev.Unresponsive(w="gw0", ts=105.0, silent=5.0, test="t.py::test_re"))
    assert watch.scan(state, 105.1) == []  # the hub is taking its stacks
    (late,) = watch.scan(state, 108.0)
    assert late.text.startswith("UNRESPONSIVE gw0 no heartbeat for 5.00s: t.py::test_re")
    assert "no stacks" in late.text
    state.apply(ev.Unresponsive(w="gw0", ts=110.0, silent=5.0, test="t.py::test_re"))
    frame = ev.Frame(file="/src/t.py", line=7, func="test_re", user=True)
    state.apply(
        ev.Stall(
            w="gw0",
            ts=110.5,
            reason="unresponsive",
            test="t.py::test_re",
            phase="call",
            location="t.py:7 in test_re",
            threads=[ev.ThreadStack(name="MainThread", ident=1, verdict="busy", frames=[frame])],
        )
    )
    (told,) = watch.scan(state, 110.6)
    assert told.text == (
        "UNRESPONSIVE gw0 no heartbeat for 5.00s: t.py::test_re (call) at t.py:7 in test_re "
        "(MainThread busy)"
    )
    assert told.where is not None
    assert (told.where.path, told.where.line) == ("/src/t.py", 7)


def test_limiter_folds_repeats_and_overflow_into_one_line_a_minute() -> None:
    limiter = Limiter(budget=3, window=60.0)

    def alert(key: str) -> Alert:
        return Alert("STALL", key, f"STALL {key}")

    assert limiter.admit(alert("a"), 0.0)
    assert not limiter.admit(alert("a"), 1.0)  # a repeat within the minute
    assert limiter.admit(alert("b"), 2.0)
    assert limiter.admit(alert("c"), 3.0)
    assert not limiter.admit(alert("d"), 4.0)  # over the budget
    assert limiter.held_line(5.0) is None  # not while the budget is spent
    held = limiter.held_line(61.0)
    assert held is not None
    assert held.startswith(f"{PREFIX} 2 more notices held back")
    assert "2 STALL" in held
    assert held.endswith("; the summary at the end lists every one")
    assert limiter.held_line(62.0) is None
    assert limiter.admit(alert("a"), 62.0)  # a minute later it is news again
    # slow tests are not in the summary: the line does not say they are
    for key in "efgh":
        limiter.admit(Alert("SLOW", key, f"SLOW {key}"), 63.0)
    held = limiter.held_line(200.0, force=True)
    assert held is not None
    assert "SLOW" in held
    assert held.endswith("lists every one but the slow tests (`testmon report` lists the slowest)")


def test_status_block_lists_every_worker_with_test_phase_and_time() -> None:
    state = RunState(detail=False)
    _worker(state, "gw0", 100.0)
    _worker(state, "gw1", 100.0)
    state.apply(ev.WorkerCollected(w="gw1", ts=101.0, count=3))
    state.apply(
        ev.Activity(
            w="gw0", ts=101.0, test="t.py::test_a", phase="setup", fixture="db", since=101.0
        )
    )
    lines = status_lines(state, 131.0, "quiet")
    assert lines == [
        f"{PREFIX} quiet",
        "  gw0  setup  t.py::test_a (setup, fixture db) 30.0s",
        "  gw1  idle   for 30.0s",
    ]


def test_control_characters_never_reach_the_terminal() -> None:
    state = RunState(detail=False)
    _worker(state, "gw0", 100.0)
    state.apply(
        ev.WorkerCrashed(w="gw0", ts=101.0, error="x", test="t.py::test[\x1b[2J]", exitcode=1)
    )
    (crash,) = Watch().scan(state, 102.0)
    assert "\x1b" not in crash.line


# ------------------------------------------------------------------ a real terminal

TERMINAL_SUITE = {
    "test_a_hang": """
from holding import hold

def test_hang():
    hold()
""",
    "test_b_many": """
import time, pytest

@pytest.mark.parametrize("n", range(240))
def test_item(n):
    time.sleep(0.03)
""",
}
PROGRESS = re.compile(r"[.FEsxX]+ *(\[ *\d+%\])?")


@pytest.mark.terminal
def test_lines_do_not_tear_the_progress_line_in_a_terminal(tmp_path: Path) -> None:
    from .test_tui_terminal import Tmux

    write_suite(tmp_path, **TERMINAL_SUITE)
    (tmp_path / "test_quick.py").unlink()
    pytest_line = " ".join(
        [*PYTEST, "-n", "2", "--monitor", f"--monitor-stall={STALL}", "--monitor-slow=1"]
    )
    script = f"{pytest_line}; echo EXIT=$?; sleep 120"
    term = Tmux(tmp_path, f"env -u PYTEST_ADDOPTS sh -c '{script}'")
    try:
        term.wait_for("[testmon-live] STALL", "[testmon-live] SLOW", timeout=60)
        time.sleep(1.0)  # the other worker's progress goes on beside the notices
        (tmp_path / "release").touch()
        screen = term.wait_for("EXIT=", timeout=RUN_TIMEOUT)
    finally:
        term.kill()
    lines = screen.splitlines()
    notices = [i for i, line in enumerate(lines) if PREFIX in line]
    assert len(notices) >= 2, screen
    for i in notices:
        assert lines[i].startswith(PREFIX), f"a notice inside another line:\n{screen}"
        above = lines[i - 1]
        # pytest's progress line above a notice was ended as pytest ends it
        assert above.startswith(PREFIX) or PROGRESS.fullmatch(above.rstrip()), screen
    progress = [line.rstrip() for line in lines if re.match(r"[.FEsxX]+( |$)", line)]
    assert progress, screen
    for line in progress:
        assert PROGRESS.fullmatch(line), f"a torn progress line {line!r}:\n{screen}"
    assert sum(line.count(".") for line in progress) == 241
    assert "EXIT=0" in screen


def test_racing_migrations_and_dead_containers_are_told_once() -> None:
    state = RunState(detail=False)
    watch = Watch()
    for w in ("gw0", "gw1"):
        _worker(state, w, 100.0)
        state.apply(
            ev.Migration(
                w=w,
                ts=101.0,
                action="begin",
                tool="alembic",
                op="upgrade",
                url="sqlite:///app.db",
                test="t.py::test_a",
            )
        )
    state.apply(ev.ContainerEvent(w="gw0", ts=102.0, action="create", cid="c1", image="pg:16"))
    state.apply(
        ev.ContainerEvent(
            ts=103.0,
            action="die",
            cid="c1",
            exit_code=137,
            by="engine",
            during={"gw1": "t.py::test_b"},
        )
    )
    race, death = watch.scan(state, 104.0)
    assert race.text == (
        "RACE gw0, gw1 migrate sqlite:///app.db at the same time "
        "(one worker should, the others wait: monitor.run_once)"
    )
    assert death.text == (
        "CONTAINER c1 (pg:16) died: exit code 137, started by gw0; running then: gw1 in "
        "t.py::test_b"
    )
    assert watch.scan(state, 105.0) == []


def test_junit_findings_of_locks_races_and_containers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = 1_800_000_000.0
    a, b = "t.py::test_a", "t.py::test_b"
    events: list[ev.Event] = [
        ev.RunStarted(ts=t0, schema=ev.SCHEMA_VERSION, run_id="20270115-080000-abcd", rootdir="/r"),
    ]
    for w, test in (("gw0", a), ("gw1", b)):
        events += [
            ev.WorkerStarted(w=w, ts=t0 + 0.1, schema=ev.SCHEMA_VERSION, pid=7),
            ev.Migration(
                w=w,
                ts=t0 + 0.2,
                action="begin",
                tool="alembic",
                op="upgrade",
                url="sqlite:///db",
                test=test,
            ),
        ]
    events += [
        ev.LockEvent(
            w="gw0",
            ts=t0 + 1.0,
            action="acquired",
            kind="filelock",
            key="/r/m.lock",
            lock_id="1",
            test=a,
            waited=1.5,
        ),
        ev.Deadlock(
            ts=t0 + 1.1,
            cycle=[
                ev.WaitEdge(w="gw0", holds="x", waits_for="y", test=a),
                ev.WaitEdge(w="gw1", holds="y", waits_for="x", test=b),
            ],
            text="gw0 holds x, waits for y; gw1 holds y, waits for x",
        ),
        ev.ContainerEvent(
            w="gw0", ts=t0 + 1.2, action="create", cid="c1", name="pg", image="postgres:16"
        ),
        ev.ContainerEvent(
            ts=t0 + 1.3, action="die", cid="c1", exit_code=137, by="engine", during={"gw1": b}
        ),
        ev.TestFinished(w="gw0", ts=t0 + 2.0, nodeid=a, outcome="passed", duration=1.9),
        ev.TestFinished(
            w="gw1",
            ts=t0 + 2.0,
            nodeid=b,
            outcome="failed",
            duration=1.9,
            message="IntegrityError: duplicate key value",
        ),
    ]
    log = tmp_path / "run.jsonl"
    log.write_bytes(b"".join(ev.encode_line(e) for e in events))
    capsys.readouterr()
    assert cli_main(["export", str(log), "--format", "junit", "-o", "-"]) == 0
    suite = ET.fromstring(capsys.readouterr().out).find("testsuite")
    assert suite is not None
    run_props = _props(suite)
    assert run_props["testmon.deadlock"] == ["gw0 holds x, waits for y; gw1 holds y, waits for x"]
    assert run_props["testmon.race"] == ["gw0, gw1 migrated sqlite:///db at once"]
    assert run_props["testmon.container_died"] == ["pg (postgres:16) died: exit code 137"]
    cases = {c.get("name"): _props(c) for c in suite.iter("testcase")}
    assert cases["test_a"]["testmon.lock_wait"] == ["1.500s on m.lock"]
    assert cases["test_a"]["testmon.deadlock"] == run_props["testmon.deadlock"]
    assert cases["test_b"]["testmon.race"] == run_props["testmon.race"]
    assert cases["test_b"]["testmon.container_died"] == run_props["testmon.container_died"]
    assert cases["test_b"]["testmon.looks_polluted"] == [
        "testmon suspects 20270115-080000-abcd t.py::test_b"
    ]
    assert "testmon.looks_polluted" not in cases["test_a"]


# In the controller: a notice written after pytest ended its progress line with the last
# percentage and left it open (the "held back" line at the end comes there).
AFTER_LAST = """
import pytest
from testmon_live.plugin.terminal import TerminalOut

def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):
        TerminalOut(session.config).write([("NOTICE after the last test", {})])
"""


def test_a_line_after_the_last_test_does_not_repeat_the_percentage(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(AFTER_LAST)
    pytester.makepyfile(test_x="def test_a(): pass\ndef test_b(): pass\ndef test_c(): pass\n")
    result = pytester.runpytest_subprocess("-n", "2", "--monitor")
    result.assert_outcomes(passed=3)
    lines = result.stdout.lines
    (at,) = [i for i, line in enumerate(lines) if line.startswith("NOTICE after")]
    assert re.fullmatch(r"\.\.\. +\[100%\]", lines[at - 1].rstrip()), lines
