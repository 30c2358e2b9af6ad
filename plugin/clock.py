"""Wall-clock timestamps that do not jump: one wall reading at import, then perf_counter.

Every timestamp a process writes comes from :func:`now`, so times within one process are
monotonic (an NTP step mid-run does not reorder phases) while still being comparable
across workers on one machine.
"""

from __future__ import annotations

import time

_WALL0 = time.time()
_MONO0 = time.perf_counter()


def now() -> float:
    """Seconds since the epoch, monotonic within this process."""
    return _WALL0 + (time.perf_counter() - _MONO0)
