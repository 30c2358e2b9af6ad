"""One container shared by every xdist worker, behind a file lock (the usual recipe).

The fixture ``shared_web`` (conftest.py) starts one web server container for the whole run:
the first worker to take the lock starts it and writes where it is; the others wait on the
lock, then look the container up. Tests here and in test_orders.py and test_reports.py use
it, so it is usually used by several workers. testmon-live shows who started it, who waited,
who used it, and what its startup cost. Runs only where a container engine answers and the
image is there (``scripts/podman-setup`` builds it); skipped anywhere else.
"""

from __future__ import annotations

import urllib.request

import pytest


@pytest.mark.parametrize("page", ["index.html", "", "index.html?again"])
def test_shared_web_server(shared_web: str, page: str) -> None:
    with urllib.request.urlopen(f"{shared_web}/{page}", timeout=5) as reply:
        assert reply.status == 200
