"""What the code under test does to the process around the monitor - a time zone set at
import, a deleted log - and what a failed start leaves behind: the monitor says what
happened, keeps its own times and cleans up after itself."""

from __future__ import annotations

import gc
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir, iter_log

from .conftest import only_run

SETS_THE_TIME_ZONE = """
import os
import time

# As Django does at import when settings.TIME_ZONE is set (default America/Chicago).
os.environ["TZ"] = "Asia/Kathmandu"
time.tzset()
"""


@pytest.mark.parametrize("mode", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "single"])
def test_a_time_zone_set_by_the_code_under_test_moves_no_run_id_nor_time(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: list[str]
) -> None:
    monkeypatch.setenv("TZ", "UTC")
    pytester.makeconftest(SETS_THE_TIME_ZONE)
    pytester.makepyfile(
        test_tz=SETS_THE_TIME_ZONE + "\ndef test_a():\n    pass\n\ndef test_b():\n    pass\n"
    )
    before = time.time()
    pytester.runpytest_subprocess("--monitor", *mode).assert_outcomes(passed=2)
    after = time.time()
    run = only_run(pytester)
    # the run id is the start in the zone the run was started in (UTC here), not +05:45
    stamp = time.strftime("%Y%m%d-%H%M", time.gmtime(before))
    stamp_after = time.strftime("%Y%m%d-%H%M", time.gmtime(after))
    assert run.header.run_id[:13] in (stamp, stamp_after), run.header.run_id
    for event in run.events:
        if event.ts:
            assert before - 1 <= event.ts <= after + 1, event


# ------------------------------------------------------------ a disk that refuses


def run_with_file_size_limit(
    root: Path, limit: int, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """pytest in ``root`` where no file may grow beyond ``limit`` bytes: writes past it fail
    with EFBIG, as on a full disk (SIGXFSZ ignored, as the shell's ``ulimit -f`` would not)."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=env,
        preexec_fn=limited,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_disk_that_fills_up_is_said_once_and_not_blamed_on_a_kill(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_many="import pytest\n\n@pytest.mark.parametrize('n', range(300))\n"
        "def test_n(n):\n    pass\n"
    )
    done = run_with_file_size_limit(pytester.path, 20_000, "--monitor", "-n", "2")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "300 passed" in out
    assert out.count("File too large") == 1, out
    assert "events not written" in out
    (log,) = MonitorDir(pytester.path / ".testmon").logs()
    report = subprocess.run(
        [sys.executable, "-m", "testmon_live.tui.cli", "report", str(log)],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    events = list(iter_log(log))
    if isinstance(events[-1], ev.RunFinished):  # the end record fitted after all
        assert events[-1].dropped["hub"]["unwritten"] > 0
    else:
        assert "could not be written" in report, report
    assert "pytest was killed or crashed;" not in report


def test_a_monitor_that_cannot_write_its_header_leaves_nothing_behind(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    sockets = pytester.path / "sockets"
    sockets.mkdir()
    env = dict(os.environ, TMPDIR=str(sockets))
    done = run_with_file_size_limit(pytester.path, 300, "--monitor", "-n", "2", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "testmon-live: not recording this run:" in done.stdout
    assert done.stdout.count("File too large") == 1, done.stdout
    mdir = MonitorDir(pytester.path / ".testmon")
    assert mdir.logs() == [], "a log was left behind"
    assert list(mdir.live.iterdir()) == [] if mdir.live.exists() else True
    leftovers = [p for p in sockets.iterdir() if p.name.startswith("testmon-live-")]
    assert leftovers == [], "a socket folder was left behind"


def test_a_taken_tcp_port_leaks_no_socket(tmp_path: Path) -> None:
    from testmon_live.plugin.server import ViewerServer

    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(OSError, match="in use"):
                ViewerServer(None, "tok", f"127.0.0.1:{port}")  # type: ignore[arg-type]
            gc.collect()
    finally:
        blocker.close()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
