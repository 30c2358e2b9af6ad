"""Many small tests of uneven length, so the timeline and the parallelism view fill up."""

from __future__ import annotations

import time

import pytest


@pytest.mark.parametrize("n", range(36))
def test_customer_profile(database: dict[str, str], n: int) -> None:
    time.sleep(0.1 + (n * 7 % 11) / 20)
