"""Shared helpers: run real pytest sessions through pytester and read what they recorded."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir, iter_log
from testmon_live.plugin.state import RunState

E = TypeVar("E", bound=ev.Event)

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
)


# Plugins this suite needs (the dashboard's async and snapshot tests) stay out of the
# pytest runs the tests start: they would add fixtures and options to what those record.
INNER_ADDOPTS = "-p no:asyncio -p no:textual-snapshot -p no:syrupy"


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
    problems: list[tuple[int, str]] = field(default_factory=list)

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
    problems: list[tuple[int, str]] = []
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
