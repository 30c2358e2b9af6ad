"""Shared helpers: run real pytest sessions through pytester and read what they recorded;
the services a test needs, checked in one place (markers); tests run in a process of
their own (``isolated``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir, SkippedLines, iter_log
from testmon_live.plugin.state import RunState

if TYPE_CHECKING:  # types only: like `shown`, this module loads no Textual until used
    from textual.pilot import Pilot
    from textual.widget import Widget

    from testmon_live.tui.dashboard.app import MonitorApp

E = TypeVar("E", bound=ev.Event)

collect_ignore = ["data"]
"""tests/data holds what inner runs run (the Django project's own tests): not this suite's."""

# Inner runs must not see knobs from whoever runs this suite, nor, when it runs under
# xdist itself, the outer worker's identity (an inner run without xdist would pass for gwN).
_ENV_TO_CLEAR = (
    "PYTEST_ADDOPTS",
    "TESTMON_DIR",
    "TESTMON_LIVE_QUEUE",
    "PYTEST_PLUGINS",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
    # Under GitHub Actions an inner --monitor run would annotate the outer job and append
    # its report to the outer step summary: the tests that want them set them.
    "GITHUB_ACTIONS",
    "GITHUB_STEP_SUMMARY",
    # xdist gives its workers COLUMNS=80: a text report read by a test would be cut to a
    # terminal's width there and whole in a plain run; the tests that want a width set it.
    "COLUMNS",
)


# Plugins this suite needs (the dashboard's async and snapshot tests, pytest-django for the
# Django probe's, pytest-rerunfailures for the reruns') stay out of the
# pytest runs the tests start: they would add fixtures and options to what those record
# (pytest-rerunfailures also opens a socket and a thread wherever xdist is installed).
# A test that wants one names it (``-p rerunfailures``).
INNER_ADDOPTS = "-p no:asyncio -p no:textual-snapshot -p no:syrupy -p no:django -p no:rerunfailures"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", INNER_ADDOPTS)


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytest's own, with :data:`INNER_ADDOPTS` (its set-up clears PYTEST_ADDOPTS)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", INNER_ADDOPTS)
    return pytester


@dataclass
class Recorded:
    """A run log as the tests see it: its events, the fold, the lines a reader skipped."""

    path: Path
    events: list[ev.Event]
    problems: SkippedLines = field(default_factory=SkippedLines)

    @property
    def header(self) -> ev.RunStarted:
        first = self.events[0]
        assert isinstance(first, ev.RunStarted)
        return first

    @property
    def state(self) -> RunState:
        return RunState(detail=True).apply_all(self.events)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def tests_by_id(self) -> dict[str, list[ev.TestFinished]]:
        out: dict[str, list[ev.TestFinished]] = {}
        for test in self.of(ev.TestFinished):
            out.setdefault(test.nodeid, []).append(test)
        return out


def read_recorded(path: Path) -> Recorded:
    problems = SkippedLines()
    events = list(iter_log(path, problems))
    return Recorded(path, events, problems)


def run_logs(root: Path) -> list[Path]:
    return MonitorDir(root / ".testmon").logs()


def only_run(pytester: pytest.Pytester) -> Recorded:
    """The one log a pytester session recorded (fails if there is not exactly one)."""
    logs = run_logs(pytester.path)
    assert len(logs) == 1, f"expected one run log, found {logs}"
    return read_recorded(logs[0])


PY = sys.executable


def shown(widget: Any) -> str:
    """The text a Static (or a widget that renders a Text) shows, on every Textual the
    project supports: 1.x keeps what it was given as ``renderable``, later releases as
    ``content``, and ``render()`` wraps it differently in each."""
    from rich.text import Text

    given = getattr(widget, "content", None)
    if given is None:
        given = getattr(widget, "renderable", None)
    if given is None:
        given = widget.render()
    return given.plain if isinstance(given, Text) else str(given)


async def panel_text(app: MonitorApp, pilot: Pilot[Any], key: str, panel: type[Widget]) -> str:
    """The text of the view ``key`` opens, read from its ``panel`` once the screen drew
    it."""
    await pilot.press(key)
    await pilot.pause()
    return shown(app.main.query_one(panel))


# ------------------------------------------------------------ what a test needs
#
# A test marked `postgres`, `mariadb`, `engine`, `terminal` or `mysqlclient` needs that
# service (or, for `mysqlclient`, the driver that builds against system packages); the
# check below runs once per session, before the test's fixtures. Missing, the test skips
# with a reason that names it, or fails under CI=true (.ci/run starts every service).
# `scripts/test -m "not engine"` (or "not postgres and not mariadb") is a fast local loop.

POSTGRES_URL = os.environ.get(
    "TESTMON_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
"""An administrator's URL of the PostgreSQL the tests create their databases in."""
MARIADB_URL = os.environ.get("TESTMON_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
"""The same for MariaDB (or MySQL)."""
TEST_IMAGE = os.environ.get("TESTMON_TEST_IMAGE", "localhost/testmon-bb:latest")
"""The image the container tests run (built locally by scripts/podman-setup)."""
PODMAN_SOCKET = "/run/podman/podman.sock"


def engine_environ() -> dict[str, str]:
    """What an inner run needs to reach the container engine as the tests do."""
    env = {
        "TESTCONTAINERS_RYUK_DISABLED": "true",
        "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
        "TC_HOST": "127.0.0.1",
    }
    host = os.environ.get("DOCKER_HOST")
    if not host and Path(PODMAN_SOCKET).exists():
        host = f"unix://{PODMAN_SOCKET}"
    if host:
        env["DOCKER_HOST"] = host
    return env


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _database(what: str, url: str) -> str | None:
    import sqlalchemy as sa

    shown = sa.make_url(url).render_as_string(hide_password=True)
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        return f"{what} at {shown} is not reachable ({_first_line(exc)})"
    return None


def _postgres() -> str | None:
    return _database("PostgreSQL", POSTGRES_URL)


def _mariadb() -> str | None:
    return _database("MariaDB", MARIADB_URL)


def _engine() -> str | None:
    host = engine_environ().get("DOCKER_HOST")
    where = f"at {host}" if host else "(DOCKER_HOST is unset)"
    try:
        import docker
    except ImportError as exc:
        return f"no container engine: the docker SDK is not installed ({exc})"
    try:
        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            client.ping()
        except Exception as exc:
            return f"no container engine {where} ({_first_line(exc)}); see scripts/podman-setup"
        try:
            client.images.get(TEST_IMAGE)
        except Exception as exc:
            return (
                f"the container engine {where} has no image {TEST_IMAGE} "
                f"({_first_line(exc)}); scripts/podman-setup builds it"
            )
        finally:
            client.close()
    except Exception as exc:
        return f"no container engine {where} ({_first_line(exc)}); see scripts/podman-setup"
    return None


def _terminal() -> str | None:
    return None if shutil.which("tmux") else "no terminal to drive: tmux is not installed"


def _mysqlclient() -> str | None:
    try:
        import MySQLdb  # noqa: F401
    except ImportError as exc:
        return (
            f"mysqlclient is not installed ({_first_line(exc)}): it builds from source, with "
            "the apt packages default-libmysqlclient-dev and pkg-config (scripts/setup)"
        )
    return None


SERVICES: dict[str, Callable[[], str | None]] = {
    "postgres": _postgres,
    "mariadb": _mariadb,
    "engine": _engine,
    "terminal": _terminal,
    "mysqlclient": _mysqlclient,
}
"""marker -> a check that returns why the service is missing, or None."""
_missing: dict[str, str | None] = {}


def missing_service(marker: str) -> str | None:
    """Why the service of ``marker`` is missing (checked once per session), or None."""
    if marker not in _missing:
        _missing[marker] = SERVICES[marker]()
    return _missing[marker]


def under_ci() -> bool:
    return os.environ.get("CI") == "true"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers():
        if marker.name not in SERVICES:
            continue
        why = missing_service(marker.name)
        if why is None:
            continue
        if under_ci():
            pytest.fail(f"{why} (CI=true: .ci/run must provide it)", pytrace=False)
        pytest.skip(why)


def require_marker(request: pytest.FixtureRequest, marker: str) -> None:
    """A fixture that reaches a service makes sure its test says so (and was checked)."""
    if request.node.get_closest_marker(marker) is None:
        pytest.fail(f"{request.node.nodeid} uses a {marker} fixture: mark it @pytest.mark.{marker}")


@pytest.fixture
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs reach the engine that the test's ``engine`` marker made sure is there."""
    require_marker(request, "engine")
    for name, value in engine_environ().items():
        monkeypatch.setenv(name, value)


def fresh_database(admin_url: str, quote: str) -> Iterator[str]:
    """A database of its own on a server the test's marker made sure is there."""
    import sqlalchemy as sa

    name = "tm_" + uuid.uuid4().hex[:12]
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {quote}{name}{quote}"))
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            if admin_url.startswith("postgresql"):
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": name},
                )
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}"))
        engine.dispose()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    require_marker(request, "postgres")
    yield from fresh_database(POSTGRES_URL, '"')


@pytest.fixture
def mariadb_url(request: pytest.FixtureRequest) -> Iterator[str]:
    require_marker(request, "mariadb")
    yield from fresh_database(MARIADB_URL, "`")


# ------------------------------------------------------ in a process of its own

_ISOLATED_ENV = "TESTMON_TEST_ISOLATED"


def in_own_process() -> bool:
    """Inside the pytest process an ``isolated`` test runs in. Its fixtures also run in the
    outer process first (only the call moves): a fixture that patches for good must patch
    only here."""
    return bool(os.environ.get(_ISOLATED_ENV))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A test marked ``isolated`` changes what the whole process shares (it patches a
    library or the import system): it runs in a pytest of its own, which then ends."""
    if pyfuncitem.get_closest_marker("isolated") is None or os.environ.get(_ISOLATED_ENV):
        return None
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env[_ISOLATED_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", pyfuncitem.nodeid, "-q", "-p", "no:cacheprovider"],
        cwd=pyfuncitem.config.rootpath,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"in its own process, the test failed:\n{done.stdout}{done.stderr}", False)
    return True


# ------------------------------------------------------------ gates for inner suites

GATE_MODULE = '''
"""Inner suites: block in one call (sleep, or native code holding the GIL) until the outer
test opens a gate (creates a file), so that the test, not a calibration, says how long."""
import os, signal, subprocess

# A shell waits for the file, outside this process: it works while the GIL is held here.
# It starts looking after 0.5 s (the caller is in its blocking call by then) and gives up
# after ~120 s, so that a run whose test never opens the gate still ends.
_WAIT = (
    'sleep 0.5; i=0; while [ ! -e "$0" ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; '
    'kill -ALRM "$1"'
)


class GateOpened(Exception):
    """Raised in the main thread (its blocking call ends) when the gate opens."""


def _opened(signum, frame):
    raise GateOpened


def alarm_at_the_gate(gate):
    """SIGALRM to this process once the file ``gate`` exists: a call blocked in the main
    thread (time.sleep, or re's matching loop, which holds the GIL but checks for signals)
    then raises GateOpened. Wait for the returned process when done."""
    signal.signal(signal.SIGALRM, _opened)
    return subprocess.Popen(["sh", "-c", _WAIT, str(gate), str(os.getpid())])
'''
"""Written as ``gate.py`` beside an inner suite (:func:`write_gate_module`)."""

HOLD_THE_GIL = 're.match(r"(a+)+$", "a" * 64 + "b")'
"""Native code that holds the GIL (and burns CPU) for ever: re backtracking 2**64 times.
Only a signal ends it (re checks for them), e.g. the gate's."""


def write_gate_module(root: Path) -> None:
    (root / "gate.py").write_text(GATE_MODULE)


def open_gate(gate: Path) -> None:
    gate.write_text("open")


_FINAL_LINE = re.compile(r"(\d+ [a-z][a-z ]*(?:, \d+ [a-z][a-z ]*)*) in [\d.]+s(?: \(.*\))?")
"""pytest's final line within its ``=``: ``1 failed, 3 passed, 4 rerun in 0.5s``."""


def line_counts(text: str) -> dict[str, int]:
    """The counts of pytest's own final line (``1 failed, 3 passed, 4 rerun in 0.5s``), by
    category as the monitor keys them (``errors``: ``error``)."""
    last = [m for line in text.splitlines() if (m := _FINAL_LINE.fullmatch(line.strip("= ")))][-1]
    counts = {}
    for part in last[1].split(", "):
        n, category = part.split(" ", 1)
        counts["error" if category == "errors" else category] = int(n)
    return counts
