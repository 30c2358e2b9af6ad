"""Values as the JSON models hold them (the report, the runs list, the diff, the exports):
seconds, epoch times, ISO times and outcome counts, written one way everywhere.
"""

from __future__ import annotations

import math
from datetime import datetime

COUNT_KEYS = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
"""Always present in the JSON ``counts`` (0 when none)."""


def seconds(value: float | None) -> float:
    """Seconds as JSON wants them: finite, microsecond resolution."""
    if value is None or not math.isfinite(value):
        return 0.0
    return round(value, 6)


def optional_seconds(value: float | None) -> float | None:
    return None if value is None else seconds(value)


def epoch(value: float) -> float:
    """Seconds since the epoch, millisecond resolution (0 for a value a log made up)."""
    return round(value, 3) if math.isfinite(value) else 0.0


def iso_time(ts: float) -> str:
    """Local time with its offset, to the second (``2026-11-17T07:06:40+01:00``); ``""``
    when there is no time (0) or the log's is out of range."""
    if not math.isfinite(ts) or ts <= 0:
        return ""
    try:
        return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return ""


def all_counts(counts: dict[str, int]) -> dict[str, int]:
    """Every key of :data:`COUNT_KEYS` (0 when none), then any other non-zero category."""
    found = dict.fromkeys(COUNT_KEYS, 0)
    found.update({k: n for k, n in counts.items() if n})
    return found
