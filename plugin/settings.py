"""Options of the monitor: one group, each help text shared by the flag and its ini key."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

GROUP = "testmon-live"
HELP_MONITOR = (
    "record this run (every xdist worker's tests, fixtures, heartbeats) to "
    ".testmon/runs/<run-id>.jsonl and serve it live to `testmon tui`"
)
HELP_NO_MONITOR = "do not record this run, even if the ini file turns monitoring on"
HELP_DIR = "folder for run logs and live endpoints (default: <rootdir>/.testmon)"
HELP_KEEP = (
    "recorded runs to keep; older logs are deleted at the end of a run (0: keep all; default 20)"
)
HELP_STALL = (
    "seconds a test phase may run before it is reported as a stall with the stacks of all "
    "threads (0: off; default 30)"
)
HELP_LISTEN = (
    "serve live viewers on TCP HOST:PORT (with a per-run token) instead of a private unix socket"
)

WORKERINPUT_KEY = "testmon_live"
"""Key in xdist's ``workerinput`` carrying a worker's channel and spec."""

DEFAULT_KEEP = 20
DEFAULT_STALL = 30.0
QUEUE_ENV = "TESTMON_LIVE_QUEUE"
"""Environment variable: events a worker may queue before it drops (default 100000)."""
PROBES_OFF_ENV = "TESTMON_LIVE_PROBES_OFF"
"""Environment variable: comma list of lock probes not to install (``filelock``, ``sqlalchemy``)."""
FLUSH_ENV = "TESTMON_LIVE_FLUSH"
"""Environment variable: seconds between a worker's batches (default 0.1)."""
RUN_KEY_ENV = "TESTMON_LIVE_RUN_KEY"
"""Set by the plugin in the controller: one run's key, shared by its workers (locks)."""


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "testmon-live: live monitor of (parallel) test runs")
    group.addoption(
        "--monitor", action="store_true", default=None, dest="monitor", help=HELP_MONITOR
    )
    group.addoption("--no-monitor", action="store_false", dest="monitor", help=HELP_NO_MONITOR)
    group.addoption("--monitor-dir", metavar="DIR", default=None, help=HELP_DIR)
    group.addoption("--monitor-keep", metavar="N", default=None, help=HELP_KEEP)
    group.addoption("--monitor-stall", metavar="SECONDS", default=None, help=HELP_STALL)
    group.addoption("--monitor-listen", metavar="HOST:PORT", default=None, help=HELP_LISTEN)
    parser.addini("monitor", HELP_MONITOR, type="bool", default=False)
    parser.addini("monitor_dir", HELP_DIR, default="")
    parser.addini("monitor_keep", HELP_KEEP, default=str(DEFAULT_KEEP))
    parser.addini("monitor_stall", HELP_STALL, default=str(DEFAULT_STALL))
    parser.addini("monitor_listen", HELP_LISTEN, default="")


@dataclass(frozen=True)
class Settings:
    enabled: bool
    directory: Path
    keep: int
    stall: float
    listen: str | None
    queue: int
    flush: float

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        flag = config.getoption("monitor")
        enabled = bool(config.getini("monitor")) if flag is None else bool(flag)
        raw_dir = config.getoption("monitor_dir")
        if raw_dir:
            directory = Path(config.invocation_params.dir, raw_dir)
        elif config.getini("monitor_dir"):
            directory = Path(config.rootpath, str(config.getini("monitor_dir")))
        else:
            directory = Path(config.rootpath, ".testmon")
        keep = _number(config, "monitor_keep", int, minimum=0)
        stall = _number(config, "monitor_stall", float, minimum=0.0)
        listen = config.getoption("monitor_listen") or str(config.getini("monitor_listen")) or None
        if listen is not None:
            _check_listen(listen)
        queue = int(_env_number(QUEUE_ENV, "100000", int, 1))
        flush = _env_number(FLUSH_ENV, "0.1", float, 0.001)
        return cls(enabled, directory, int(keep), float(stall), listen, queue, flush)


def _number(
    config: pytest.Config, name: str, kind: type[int] | type[float], minimum: float
) -> float:
    flag = "--" + name.replace("_", "-")
    raw = config.getoption(name)
    source = flag
    if raw is None:
        raw = config.getini(name)
        source = f"ini option {name}"
    try:
        value = kind(str(raw))
    except ValueError:
        noun = "a whole number" if kind is int else "a number of seconds"
        raise pytest.UsageError(f"{source}: {raw!r} is not {noun}") from None
    if not math.isfinite(value):
        raise pytest.UsageError(f"{source}: {raw!r} is not a finite number")
    if value < minimum:
        raise pytest.UsageError(f"{source}: {raw!r} must be {minimum} or more")
    return value


def _env_number(name: str, default: str, kind: type[int] | type[float], minimum: float) -> float:
    text = os.environ.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        raise pytest.UsageError(f"{name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise pytest.UsageError(f"{name}={text!r} is not a finite number")
    if value < minimum:
        raise pytest.UsageError(f"{name}={text!r} must be {minimum} or more")
    return value


def _check_listen(value: str) -> None:
    host, sep, port = value.rpartition(":")
    if (
        not sep
        or not host
        or not (port.isascii() and port.isdigit())
        or not 0 <= int(port) <= 65535
    ):
        raise pytest.UsageError(
            f"--monitor-listen: {value!r} is not HOST:PORT (e.g. 127.0.0.1:8765, or port 0 for any)"
        )
