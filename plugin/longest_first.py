"""Longest first by recorded durations: the order ``--monitor-order=history`` gives a run,
and the one ``testmon whatif --order longest-first`` predicts (one sort key for both).

Durations come from the newest runs in the monitor folder (each test's newest duration);
tests never recorded come first (their cost is unknown, and a new test is the one a
developer waits for); ties keep pytest's order, so the order is deterministic. No pytest
import here: the viewer side uses it too. A log is untrusted input: only a test's node id
and duration are taken from it, and only from lines that decode as such.
"""

from __future__ import annotations

import math

import msgspec

from .runlog import MonitorDir, RunLogError, open_log

HISTORY_RUNS = 5
"""Newest logs read for durations."""
HISTORY_BYTES = 256 * 1024 * 1024
"""Bytes of logs read at most (the newest first)."""
_TEST_PREFIX = b'{"t":"test"'


class _Duration(msgspec.Struct):
    """What a test line holds that ordering needs (the rest is skipped unread)."""

    nodeid: str
    duration: float = 0.0


_decode = msgspec.json.Decoder(_Duration).decode


def recorded_durations(mdir: MonitorDir, runs: int = HISTORY_RUNS) -> dict[str, float]:
    """Each test's duration in the newest of the last ``runs`` logs that ran it."""
    found: dict[str, float] = {}
    budget = HISTORY_BYTES
    read = 0
    for path in reversed(mdir.logs()):
        if read >= runs or budget <= 0:
            break
        this_run: dict[str, float] = {}
        try:
            with open_log(path) as handle:
                for line in handle:
                    budget -= len(line)
                    if budget <= 0:
                        break
                    if not line.startswith(_TEST_PREFIX):
                        continue
                    try:
                        test = _decode(line)
                    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
                        continue
                    if math.isfinite(test.duration) and test.duration >= 0:
                        # a test run twice in one run (reruns, --dist each): its longest
                        this_run[test.nodeid] = max(test.duration, this_run.get(test.nodeid, 0.0))
        except (RunLogError, OSError):
            continue
        if not this_run:
            continue  # this run's own log, or one that ran nothing
        read += 1
        for nodeid, duration in this_run.items():
            found.setdefault(nodeid, duration)
    return found


def history_order(nodeids: list[str], durations: dict[str, float]) -> list[int]:
    """Positions of ``nodeids`` in the new order: unknown first, then longest first; ties
    (and the unknown among themselves) in the collected order."""
    get = durations.get
    return sorted(
        range(len(nodeids)),
        key=lambda i: (0, 0.0, i) if (d := get(nodeids[i])) is None else (1, -d, i),
    )
