"""Experiment for overhead.py's ``monitor-lowfreq`` variant: fewer background wake-ups.

Not a fix and not part of testmon-live: it checks a hypothesis from the profiles, namely
that much of ``--monitor``'s time goes to waking threads (the sender every 50 ms, the
watchdog every 100 ms, in every worker; the controller's receiver for every batch), not to
the work they do. The variant runs ``--monitor`` with ``TESTMON_LIVE_FLUSH=0.25`` (the
sender's interval, an existing setting) and this plugin, which makes the watchdog sample
every 0.25 s instead of 0.1 s by changing ``Watchdog``'s default ``tick`` before the
recorder builds it. If testmon-live's internals change, it does nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

TICK = 0.25


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    try:
        watchdog: Any = importlib.import_module("testmon_live.plugin.probes.watchdog")
    except ImportError:
        return
    defaults = getattr(watchdog.Watchdog.__init__, "__kwdefaults__", None)
    if isinstance(defaults, dict) and "tick" in defaults:
        defaults["tick"] = TICK
