"""``--monitor-order=history``: run the longest tests first, by their recorded durations.

A long test collected last keeps one worker busy alone at the end while the others idle;
started first, it overlaps with everything else. The order is :mod:`.longest_first`'s.

xdist refuses to run unless every worker collected the same tests in the same order, so the
durations are read once, by the controller, and handed to every worker in ``workerinput``:
workers never read the folder themselves (a run finishing meanwhile could change what each
saw). Without xdist the one process reads them. Loaded only when the option is on; the
hook runs once per session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .longest_first import history_order, recorded_durations
from .runlog import MonitorDir

ORDER_KEY = "testmon_live_order"
"""Key in xdist's ``workerinput`` carrying the durations the controller read."""


class HistoryOrder:
    """The pytest plugin object: in the controller it reads and hands out durations, in a
    worker (or a run without xdist) it reorders the collected items."""

    def __init__(self, config: pytest.Config, directory: Path) -> None:
        workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        self.durations: dict[str, float] | None
        if workerinput is None:
            self.durations = recorded_durations(MonitorDir(directory))
        else:
            handed = workerinput.get(ORDER_KEY)
            # no durations handed over (a controller without this option): pytest's order,
            # which every worker then keeps alike
            self.durations = dict(handed) if isinstance(handed, dict) else None
        self.moved = 0

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[ORDER_KEY] = self.durations or {}

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        if self.durations is None or len(items) < 2:
            return
        order = history_order([item.nodeid for item in items], self.durations)
        self.moved = sum(1 for new, old in enumerate(order) if new != old)
        items[:] = [items[i] for i in order]
