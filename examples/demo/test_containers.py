"""One container shared by every xdist worker, behind a file lock (the usual recipe).

The first worker to take the lock starts the container and writes where it is; the others
wait on the lock, then look the container up. testmon-live shows who started it, who waited,
who used it, and what its startup cost. Runs only where a container engine answers and the
image is there (``scripts/podman-setup`` builds it); skipped anywhere else.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

IMAGE = os.environ.get("TESTMON_TEST_IMAGE", "localhost/testmon-bb:latest")


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
def shared_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The host port of one web server container for the whole run, however many workers."""
    try:
        import fcntl
    except ImportError:
        pytest.skip("needs fcntl (POSIX) for the cross-worker lock")
    client = _engine_or_skip()
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    shared = tmp_path_factory.getbasetemp().parent / "demo-web.json"
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
    yield int(container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
    if started is not None:
        time.sleep(1.0)  # the other workers' last requests
        started.stop()


@pytest.mark.parametrize("page", ["index.html", "", "index.html?again"])
def test_shared_web_server(shared_web: int, page: str) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{shared_web}/{page}", timeout=5) as reply:
        assert reply.status == 200
