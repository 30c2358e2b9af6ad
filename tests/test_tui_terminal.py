"""`testmon tui`, `replay` and `demo` as a user runs them: in a real terminal (tmux) and
from the command line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.tui.cli import EXIT_ERROR, EXIT_SCHEMA, EXIT_USAGE, main
from testmon_live.tui.testing import sample_runs

from .conftest import engine_environ, require_marker

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"
SUITE = """
import time, pytest

@pytest.mark.parametrize("n", range(10))
def test_item(n):
    time.sleep(0.2)

def test_broken():
    assert 1 + 1 == 3
"""


class Tmux:
    """A dashboard in a real terminal: a tmux session (tests marked ``terminal``)."""

    def __init__(self, cwd: Path, command: str) -> None:
        tmux = shutil.which("tmux")
        assert tmux is not None, "the test's `terminal` marker makes sure tmux is there"
        self.tmux = tmux
        self.name = f"testmon-{uuid.uuid4().hex[:8]}"
        env_path = f"{BIN}:{os.environ.get('PATH', '')}"
        subprocess.run(
            [tmux, "new-session", "-d", "-s", self.name, "-x", "160", "-y", "50",
             "-c", str(cwd),
             # A server started from a test inherits its COLUMNS and LINES (80x24 under
             # pytest), and Textual believes them over the terminal's own size.
             f"env -u COLUMNS -u LINES PATH={env_path} TERM=xterm-256color {command}"],
            check=True,
            timeout=10,
        )  # fmt: skip
        # a server started with another default size can leave the window at 80x24
        subprocess.run(
            [tmux, "resize-window", "-t", self.name, "-x", "160", "-y", "50"],
            capture_output=True,
            timeout=10,
        )

    def screen(self) -> str:
        done = subprocess.run(
            [self.tmux, "capture-pane", "-p", "-t", self.name],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout

    def wait_for(self, *needles: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(n in screen for n in needles):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{needles} never all on screen; last screen:\n{screen}")

    def keys(self, *keys: str) -> None:
        subprocess.run([self.tmux, "send-keys", "-t", self.name, *keys], check=True, timeout=10)

    def kill(self) -> None:
        subprocess.run(
            [self.tmux, "kill-session", "-t", self.name], capture_output=True, timeout=10
        )


@pytest.fixture
def tmux_session(request: pytest.FixtureRequest) -> Iterator[list[Tmux]]:
    require_marker(request, "terminal")
    sessions: list[Tmux] = []
    yield sessions
    for session in sessions:
        session.kill()


@pytest.mark.terminal
def test_tui_in_a_real_terminal_follows_a_run_started_beside_it(
    pytester: pytest.Pytester, tmux_session: list[Tmux]
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    (pytester.path / ".testmon").mkdir()
    term = Tmux(pytester.path, "testmon tui")
    tmux_session.append(term)
    term.wait_for("no live run and none recorded", "1 Workers")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--monitor", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout
    screen = term.wait_for("finished", "10 passed", "1 failed", "11/11")
    # the table's rows (under them, each worker's strip of recent tests starts with it too)
    rows = [line for line in screen.splitlines() if re.match(r"\s*gw[01]\s+done\b", line)]
    assert len(rows) == 2, screen
    term.keys("q")
    deadline = time.monotonic() + 10
    while "finished" in term.screen() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "finished" not in term.screen(), "q quits the dashboard"


@pytest.mark.terminal
def test_replay_command_in_a_terminal(pytester: pytest.Pytester, tmux_session: list[Tmux]) -> None:
    path = sample_runs.write_log(
        pytester.path / ".testmon" / "runs" / f"{sample_runs.RUN_ID}.jsonl", sample_runs.demo_run()
    )
    term = Tmux(pytester.path, f"testmon replay {path.name[:15]}")
    tmux_session.append(term)
    screen = term.wait_for("finished", "56 passed", "elapsed 18.0s")
    assert "gw3" in screen
    term.keys("2")
    term.wait_for("lock wait", "container wait", "←→ select", "? keys")
    term.keys("?")  # the help: the view's keys, then the app's
    term.wait_for("the Timeline view", "prev test", "everywhere", "focus Next")
    term.keys("Escape")
    term.keys("C-p")  # the palette, as in every Textual app (and `/`)
    term.wait_for("Search for commands")
    term.keys("Escape")
    deadline = time.monotonic() + 10
    while "Search for commands" in term.screen() and time.monotonic() < deadline:
        time.sleep(0.2)
    term.keys("C-c")  # quits, as q does: no "press ctrl+q" toast
    deadline = time.monotonic() + 10
    while "finished" in term.screen() and time.monotonic() < deadline:
        time.sleep(0.2)
    last = term.screen()
    assert "finished" not in last, last
    assert "ctrl+q" not in last


def test_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".testmon" / "runs").mkdir(parents=True)
    sample_runs.write_log(tmp_path / ".testmon" / "runs" / "20261117-000000-aaaa.jsonl", [])
    assert main(["replay", "nosuchrun"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("testmon replay: error:")
    assert len(err.strip().splitlines()) == 1
    assert main(["tui", "--speed", "2"]) == EXIT_USAGE
    assert "--speed needs a recorded RUN" in capsys.readouterr().err
    for bad in ("0", "-1", "nan", "inf", "1e400"):  # nan and inf once spun a core forever
        with pytest.raises(SystemExit) as exited:  # argparse's usage error
            main(["replay", "latest", "--speed", bad])
        assert exited.value.code == EXIT_USAGE
        assert "give a finite number above 0" in capsys.readouterr().err
    for command in ("tui", "replay", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "usage: testmon" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["tui", "replay"])
def test_dashboard_refuses_what_is_not_a_run_log_before_opening(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Like `testmon report`: one line and its exit code, no dashboard on nothing."""
    header = ev.encode_lines(sample_runs.demo_run()[:1])
    newer = header.replace(b'"schema":1,', b'"schema":99,').rstrip(b"\n")
    cases = {
        "empty.jsonl": (b"", EXIT_ERROR, "is empty"),
        "garbage.jsonl": (b"garbage\n", EXIT_ERROR, "is not a testmon-live run log"),
        "newer.jsonl": (newer + b"\n", EXIT_SCHEMA, "upgrade testmon-live"),
    }
    for name, (content, code, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert main([command, str(tmp_path / name)]) == code, name
        err = capsys.readouterr().err
        assert words in err, err
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.engine
def test_demo_headless_prints_the_report(tmp_path: Path) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(DEMO, copy, ignore=shutil.ignore_patterns(".testmon", "__pycache__"))
    done = subprocess.run(
        [str(BIN / "testmon"), "demo", "--headless", "--path", str(copy)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **engine_environ()},
    )
    assert done.returncode == 0, done.stderr
    report = done.stdout
    # with the engine (the test's marker), the five shared-container tests run too
    assert "64 tests: 1 failed, 61 passed, 1 skipped, 1 xfailed" in report, report
    assert "4 workers" in report
    assert "test_reports.py::test_quarterly_report" in report
    assert "session fixture 'database' set up 4x on 4 workers" in report
    assert (copy / ".testmon" / "demo-output.txt").read_text().count("FAILED") == 1


def test_demo_ends_with_its_run_and_commands_that_work_where_the_user_stands(
    tmp_path: Path,
) -> None:
    """The demo records beside its suite, where `testmon runs` from elsewhere does not look:
    it ends with the run id and the commands that reopen and report it, paths and program
    as they work from the user's folder (the venv's testmon is not on their PATH)."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text("")
    (suite / "test_x.py").write_text("def test_a():\n    pass\n\ndef test_b():\n    assert 0\n")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # as a shell without the venv
    done = subprocess.run(
        [str(BIN / "testmon"), "demo", "--headless", "--path", "suite", "-n", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    said = dict(
        line.removeprefix("demo: ").split(None, 1)
        for line in done.stderr.splitlines()
        if line.startswith("demo: ")
    )
    (log,) = (suite / ".testmon" / "runs").glob("*.jsonl")
    run_id = log.name.removesuffix(".jsonl")
    assert said["run"] == f"{run_id}, recorded in suite/.testmon"
    replay = said["open"].removeprefix("it again:").split()
    report = said["its"].removeprefix("report:").split()
    assert replay == [str(BIN / "testmon"), "replay", run_id, "--dir", "suite/.testmon"]
    assert report == [str(BIN / "testmon"), "report", run_id, "--dir", "suite/.testmon"]
    again = subprocess.run(report, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert run_id in again.stdout
    assert "1 failed, 1 passed" in again.stdout


def test_the_demo_names_the_program_as_the_user_can_run_it(tmp_path: Path) -> None:
    from testmon_live.tui.demo import invoked_as

    program = BIN / "testmon"
    assert invoked_as(str(program), tmp_path, f"{BIN}:/usr/bin") == "testmon"
    assert invoked_as(str(program), tmp_path, "/usr/bin") == str(program)
    root = BIN.parents[1]
    assert invoked_as(str(program), root, "/usr/bin") == f"{BIN.relative_to(root)}/testmon"
    assert invoked_as("/no/such/testmon", tmp_path, "/usr/bin") == "testmon"


def test_quitting_the_demo_early_interrupts_its_run_cleanly(tmp_path: Path) -> None:
    """The dashboard's quit ends the demo run as Ctrl-C would: pytest records the run as
    interrupted (not a killed, incomplete log) and says nothing of broken channels."""
    from testmon_live.plugin.runlog import read_log
    from testmon_live.tui import demo

    copy = tmp_path / "demo"
    shutil.copytree(DEMO, copy, ignore=shutil.ignore_patterns(".testmon", "__pycache__"))
    runs = copy / ".testmon" / "runs"

    def into_the_run() -> bool:
        """Workers busy, the migration lock taken (and maybe waited on)."""
        logs = list(runs.glob("*.jsonl"))
        return bool(logs) and any(
            isinstance(e, ev.LockEvent) and e.action == "acquired" for e in read_log(logs[0]).events
        )

    process = demo.start(copy)
    try:
        deadline = time.monotonic() + 120
        while not into_the_run():
            assert process.poll() is None, "the demo run ended by itself"
            assert time.monotonic() < deadline, "the demo run never took its migration lock"
            time.sleep(0.2)
    finally:
        demo.stop(process)
    assert process.returncode == pytest.ExitCode.INTERRUPTED
    (log,) = runs.glob("*.jsonl")
    end = read_log(log).events[-1]
    assert isinstance(end, ev.RunFinished)
    assert end.status == "interrupted"
    assert end.workers, "the workers were up when it was interrupted"
    output = (copy / ".testmon" / "demo-output.txt").read_text()
    assert "cannot send" not in output
    assert "Warning" not in output
