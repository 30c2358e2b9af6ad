"""Fixtures of the demo suite: the troubles testmon-live is built to show.

- ``database`` is session-scoped, so pytest-xdist sets it up once per *worker*: its 1.5 s
  of "loading reference data" is paid four times with ``-n 4``.
- Its migration step takes a cross-process file lock (``filelock``), as migration runners
  do: the first worker migrates for 3 s, the others wait on the lock, then find the schema
  already there.
- ``shared_web`` is one container for the whole run, whatever the number of workers: the
  first worker to take a file lock starts it, the others look it up (needs a container
  engine and the image ``scripts/podman-setup`` builds; skipped without).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

IMAGE = os.environ.get("TESTMON_TEST_IMAGE", "localhost/testmon-bb:latest")
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


def _engine_or_skip() -> Any:
    try:
        import docker
        import testcontainers  # noqa: F401
    except ImportError:
        pytest.skip("testcontainers is not installed")
    try:
        # 10 s: four workers starting at once on a small machine keep the engine slow
        client = docker.from_env(timeout=10)
        client.images.get(IMAGE)
    except Exception as exc:  # noqa: BLE001 - any failure: no engine for the demo
        pytest.skip(f"no container engine with {IMAGE}: {type(exc).__name__}: {exc}")
    return client


@pytest.fixture(scope="session")
def shared_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of one web server container for the whole run, however many workers."""
    try:
        import fcntl
    except ImportError:
        pytest.skip("needs fcntl (POSIX) for the cross-worker lock")
    client = _engine_or_skip()
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    shared = _shared_dir(tmp_path_factory) / "demo-web.json"
    started = None
    with open(shared.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if shared.exists():
            cid = json.loads(shared.read_text())["id"]
        else:
            started = (
                DockerContainer(IMAGE)
                .with_command(["sh", "-c", "sleep 1; echo serving; exec httpd -f -p 8080 -h /www"])
                .with_exposed_ports(8080)
                .waiting_for(LogMessageWaitStrategy("serving").with_startup_timeout(20))
                .start()
            )
            cid = started.get_wrapped_container().id
            shared.write_text(json.dumps({"id": cid}))
    container = client.containers.get(cid)
    port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
    yield f"http://127.0.0.1:{port}"
    if started is not None:
        time.sleep(1.0)  # the other workers' last requests
        started.stop()
