"""Fixtures of the demo suite: the troubles testmon-live is built to show.

- ``database`` is session-scoped, so pytest-xdist sets it up once per *worker*: its 1.5 s
  of "loading reference data" is paid four times with ``-n 4``.
- Its migration step takes a cross-process file lock (``filelock``), as migration runners
  do: the first worker migrates for 3 s, the others wait on the lock, then find the schema
  already there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

MIGRATION_SECONDS = 3.0
LOAD_SECONDS = 1.5


def _shared_dir(factory: pytest.TempPathFactory) -> Path:
    """A folder every xdist worker of this run shares (the parent of their temp roots)."""
    base = factory.getbasetemp()
    return base.parent if base.name.startswith("popen-gw") else base


def migrate(shared: Path) -> bool:
    """Apply the schema once per run; True when this process did it."""
    with FileLock(str(shared / "migrations.lock")):
        done = shared / "schema-version"
        if done.exists():
            return False
        time.sleep(MIGRATION_SECONDS)
        done.write_text("42\n")
        return True


@pytest.fixture(scope="session")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Stands in for 'migrate the schema, load reference data': once per worker."""
    migrate(_shared_dir(tmp_path_factory))
    time.sleep(LOAD_SECONDS)
    yield {"url": "postgresql://demo:demo-password@localhost/demo"}
    time.sleep(0.2)


@pytest.fixture
def order(database: dict[str, str]) -> dict[str, int]:
    time.sleep(0.05)
    return {"id": 1, "total": 100}
