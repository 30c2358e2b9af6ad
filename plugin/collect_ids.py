"""Which tests a project has: ``testmon bisect`` loads this with ``-p`` into a
``pytest --collect-only`` run, and it writes the collected node ids, as a JSON list, to the
file named by ``TESTMON_COLLECT_IDS`` (whatever the project's verbosity makes pytest print).
A log is untrusted input: bisect runs only node ids the project itself collects.
"""

from __future__ import annotations

import json
import os

import pytest

COLLECT_IDS_ENV = "TESTMON_COLLECT_IDS"


def pytest_collection_finish(session: pytest.Session) -> None:
    target = os.environ.get(COLLECT_IDS_ENV)
    if target:
        with open(target, "w", encoding="utf-8", errors="backslashreplace") as handle:
            json.dump([item.nodeid for item in session.items], handle)
