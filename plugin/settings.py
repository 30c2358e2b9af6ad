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
HELP_NOTICES = (
    "print a line in pytest's output the moment the monitor sees a stall, a deadlock across "
    "workers, a worker crash or freeze, racing migrations, a container death or a slow test "
    "(default: on; -q leaves out slow tests, -qq all but crashes, deadlocks and container deaths)"
)
HELP_NO_NOTICES = "no live lines in pytest's output (the log and the end summary stay)"
HELP_SLOW = (
    "seconds after which a running test is reported as slow, again at 2x, 4x... "
    "(0: off; default 60)"
)
HELP_QUIET = (
    "seconds in which no test finished after which a status block shows what each worker is "
    "doing; again after twice as long while the silence lasts (0: off; default 60)"
)
HELP_CI_SUMMARY = (
    "append the markdown report of the run to $GITHUB_STEP_SUMMARY at its end "
    "(default: on under GitHub Actions, off elsewhere; ini: true, false or auto)"
)
HELP_NO_CI_SUMMARY = "do not write the markdown report to $GITHUB_STEP_SUMMARY"
HELP_ANNOTATIONS = (
    "turn stalls, deadlocks, crashes, racing migrations and failures that look like shared "
    "state into GitHub Actions annotations (::warning file=...) at the user's frame "
    "(default: on under GitHub Actions, off elsewhere; ini: true, false or auto)"
)
HELP_ENV_KEEP = (
    "environment variables the run header records besides those that explain a run (CI and "
    "pytest variables, PYTHON*, DOCKER_HOST, TESTCONTAINERS_*, database URLs); secret-looking "
    "values are redacted all the same"
)
HELP_NO_ANNOTATIONS = "write no GitHub Actions annotations"
HELP_ORDER = (
    "order of the tests: 'collected' (pytest's, the default) or 'history': longest first by "
    "their durations in the newest recorded runs of the monitor folder, tests never recorded "
    "first, the same order on every xdist worker. Reordering can expose test pollution (a "
    "test that passed only because another ran before it): `testmon suspects` replays the "
    "order a run really had"
)
ORDERS = ("collected", "history")
HELP_FIXTURE_DETAIL = (
    "seconds under which a function fixture's (or a class fixture's of a test outside a "
    "class) setup and teardown are counted per "
    "worker (count, total, longest) instead of recorded one by one in the test's record; a "
    "slower or failing one is always recorded (0: record every execution; default 0.001)"
)

WORKERINPUT_KEY = "testmon_live"
"""Key in xdist's ``workerinput`` carrying a worker's channel and spec."""

DEFAULT_KEEP = 20
DEFAULT_STALL = 30.0
DEFAULT_SLOW = 60.0
DEFAULT_QUIET = 60.0
DEFAULT_FIXTURE_DETAIL = 0.001
GITHUB_ENV = "GITHUB_ACTIONS"
"""Set to ``true`` by GitHub Actions: turns the step summary and annotations on by default."""
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
    group.addoption(
        "--monitor-notices",
        action="store_true",
        default=None,
        dest="monitor_notices",
        help=HELP_NOTICES,
    )
    group.addoption(
        "--no-monitor-notices", action="store_false", dest="monitor_notices", help=HELP_NO_NOTICES
    )
    group.addoption("--monitor-slow", metavar="SECONDS", default=None, help=HELP_SLOW)
    group.addoption("--monitor-quiet", metavar="SECONDS", default=None, help=HELP_QUIET)
    group.addoption(
        "--monitor-ci-summary",
        action="store_true",
        default=None,
        dest="monitor_ci_summary",
        help=HELP_CI_SUMMARY,
    )
    group.addoption(
        "--no-monitor-ci-summary",
        action="store_false",
        dest="monitor_ci_summary",
        help=HELP_NO_CI_SUMMARY,
    )
    group.addoption(
        "--monitor-annotations",
        action="store_true",
        default=None,
        dest="monitor_annotations",
        help=HELP_ANNOTATIONS,
    )
    group.addoption(
        "--no-monitor-annotations",
        action="store_false",
        dest="monitor_annotations",
        help=HELP_NO_ANNOTATIONS,
    )
    group.addoption("--monitor-order", metavar="ORDER", default=None, help=HELP_ORDER)
    group.addoption(
        "--monitor-fixture-detail", metavar="SECONDS", default=None, help=HELP_FIXTURE_DETAIL
    )
    parser.addini("monitor", HELP_MONITOR, type="bool", default=False)
    parser.addini("monitor_dir", HELP_DIR, default="")
    parser.addini("monitor_keep", HELP_KEEP, default=str(DEFAULT_KEEP))
    parser.addini("monitor_stall", HELP_STALL, default=str(DEFAULT_STALL))
    parser.addini("monitor_listen", HELP_LISTEN, default="")
    parser.addini("monitor_notices", HELP_NOTICES, type="bool", default=True)
    parser.addini("monitor_slow", HELP_SLOW, default=str(DEFAULT_SLOW))
    parser.addini("monitor_quiet", HELP_QUIET, default=str(DEFAULT_QUIET))
    # "" means: decide by the environment (on under GitHub Actions). A string, not a bool:
    # pytest < 8.4 gives [] for a bool ini without a default, so "unset" could not be told.
    parser.addini("monitor_ci_summary", HELP_CI_SUMMARY, default="")
    parser.addini("monitor_annotations", HELP_ANNOTATIONS, default="")
    parser.addini("monitor_env_keep", HELP_ENV_KEEP, type="args", default=[])
    parser.addini("monitor_order", HELP_ORDER, default="collected")
    parser.addini(
        "monitor_fixture_detail", HELP_FIXTURE_DETAIL, default=str(DEFAULT_FIXTURE_DETAIL)
    )


@dataclass(frozen=True)
class Settings:
    enabled: bool
    directory: Path
    keep: int
    stall: float
    listen: str | None
    queue: int
    flush: float
    notices: bool = True
    slow: float = DEFAULT_SLOW
    quiet: float = DEFAULT_QUIET
    ci_summary: bool = False
    annotations: bool = False
    env_keep: tuple[str, ...] = ()
    order: str = "collected"
    fixture_detail: float = DEFAULT_FIXTURE_DETAIL

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        flag = config.getoption("monitor")
        enabled = _ini_flag(config, "monitor") if flag is None else bool(flag)
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
        notices = config.getoption("monitor_notices")
        if notices is None:
            notices = _ini_flag(config, "monitor_notices")
        on_github = os.environ.get(GITHUB_ENV) == "true"
        return cls(
            enabled,
            directory,
            int(keep),
            float(stall),
            listen,
            queue,
            flush,
            notices=bool(notices),
            slow=_number(config, "monitor_slow", float, minimum=0.0),
            quiet=_number(config, "monitor_quiet", float, minimum=0.0),
            ci_summary=_switch(config, "monitor_ci_summary", on_github),
            annotations=_switch(config, "monitor_annotations", on_github),
            env_keep=tuple(str(name) for name in config.getini("monitor_env_keep") or ()),
            order=order_of(config),
            fixture_detail=_number(config, "monitor_fixture_detail", float, minimum=0.0),
        )


def order_of(config: pytest.Config) -> str:
    """``--monitor-order``, else the ini key: one of :data:`ORDERS`."""
    raw = config.getoption("monitor_order")
    source = "--monitor-order"
    if raw is None:
        raw = config.getini("monitor_order")
        source = "ini option monitor_order"
    value = str(raw).strip().lower() or "collected"
    if value not in ORDERS:
        raise pytest.UsageError(
            f"{source}: {str(raw)!r} is not an order; give 'collected' (pytest's order) or "
            "'history' (longest first by recorded durations)"
        )
    return value


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


def _ini_flag(config: pytest.Config, name: str) -> bool:
    """A true/false ini option: a value pytest cannot read is a usage error naming it (pytest
    8 raises a bare ValueError from ``getini``: an INTERNALERROR)."""
    try:
        return bool(config.getini(name))
    except ValueError as exc:
        raise pytest.UsageError(f"ini option {name}: {exc} (give true or false)") from None


_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f"})


def _switch(config: pytest.Config, name: str, default: bool) -> bool:
    """An on/off option: the flag, else the ini key (``auto`` or empty: ``default``)."""
    flag = config.getoption(name)
    if flag is not None:
        return bool(flag)
    raw = str(config.getini(name)).strip().lower()
    if raw in ("", "auto"):
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise pytest.UsageError(f"ini option {name}: {raw!r} is not true, false or auto")


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
