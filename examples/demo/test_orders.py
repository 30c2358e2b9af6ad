from __future__ import annotations

import time
import urllib.request

import pytest


def test_order_page(shared_web: str) -> None:
    """Uses the run's one web container, wherever this test lands."""
    with urllib.request.urlopen(f"{shared_web}/index.html", timeout=5) as reply:
        assert reply.status == 200


@pytest.mark.parametrize("n", range(12))
def test_order_total(order: dict[str, int], n: int) -> None:
    time.sleep(0.1)
    assert order["total"] == 100


def test_refund_rounding(order: dict[str, int]) -> None:
    refund = order["total"] / 3
    assert round(refund * 3, 2) == 100.01, "refunds lose a cent"


@pytest.mark.skip(reason="payment sandbox is down")
def test_payment_sandbox() -> None:
    pass
