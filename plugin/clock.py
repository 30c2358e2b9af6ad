"""Wall-clock timestamps that do not jump: one wall reading at import, then perf_counter.

Every timestamp a process writes comes from :func:`now`, so times within one process are
monotonic (an NTP step mid-run does not reorder phases) while still being comparable
across workers on one machine. The clock is the one bound in :mod:`.guard`: a test that
mocks or freezes ``time`` does not move it.
"""

from __future__ import annotations

from .guard import REAL

_WALL0 = REAL.time()
_MONO0 = REAL.perf_counter()


def now() -> float:
    """Seconds since the epoch, monotonic within this process."""
    return _WALL0 + (REAL.perf_counter() - _MONO0)
