"""The pytest entry point (``pytest11``): options, and the recorder when ``--monitor`` is on.

Loaded into every pytest process, so it stays thin: without ``--monitor`` it adds its
options and nothing else (no hooks on the test path, no imports beyond this module,
:mod:`.settings` and :mod:`.guard`, which binds the standard library functions the monitor
calls before any test can patch them).
"""

from __future__ import annotations

import os

import pytest

# Bound now, at pytest start-up, before any test can patch what the monitor calls.
from . import guard  # noqa: F401
from .settings import RUN_KEY_ENV, Settings, add_options

CONFIGURED: set[int] = set()
"""ids of the pytest configurations alive in this process: more than one while a test runs
pytest in its own process (pytester's ``runpytest_inprocess``, ``inline_run``)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_unconfigure(config: pytest.Config) -> None:
    CONFIGURED.discard(id(config))


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    CONFIGURED.add(id(config))
    if not hasattr(config, "workerinput"):
        # This run's key for monitor.lock()/run_once(), inherited by its xdist workers. Set
        # afresh here because a pytest started from inside a test inherits the outer run's
        # environment, xdist's PYTEST_XDIST_TESTRUNUID included: the two would share locks.
        os.environ[RUN_KEY_ENV] = os.urandom(8).hex()
    settings = Settings.from_config(config)
    if settings.order == "history":
        from .history_order import HistoryOrder

        config.pluginmanager.register(
            HistoryOrder(config, settings.directory), "testmon-live-order"
        )
    if not settings.enabled:
        return
    from .session import install

    install(config, settings)
