"""Words for report cells and lines: durations, percentages and share bars, times, first
lines, plurals, and paths and node ids shortened to fit. The reports, the forensics and
the dashboard's panels all say these things the same way.
"""

from __future__ import annotations

import os
import time

from .document import Column


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds <= 0:
        return "0s"
    if seconds < 0.001:
        return "<1ms"
    if seconds < 0.9995:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes}m{secs:02d}s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def fmt_percent(share: float) -> str:
    return f"{share:.0%}"


def share_bar(share: float, cells: int = 10) -> str:
    filled = max(0, min(cells, round(share * cells)))
    return "█" * filled + "░" * (cells - filled) + f" {fmt_percent(share):>4}"


def fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts > 0 else "-"


def first_line(text: str | None) -> str:
    if not text:
        return ""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def short_path(path: str) -> str:
    """Relative to the current directory when that is shorter."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if len(rel) < len(path) else path


def shorten_nodeid(nodeid: str, width: int) -> str:
    """Keep the end (the test name, then its class and file): ``…/test_x.py::T::test_y``.

    The cut snaps forward to a ``/`` when one is near, so folder names are not cut in half.
    """
    if len(nodeid) <= width:
        return nodeid
    if width <= 1:
        return "…"[:width]
    tail = nodeid[len(nodeid) - width + 1 :]
    slash = tail.find("/")
    if 0 <= slash < len(tail) // 3:
        return "…" + tail[slash:]
    return "…" + tail


def shorten_path(nodeid: str, width: int) -> str:
    """Cut only the path before the test's own name (``…/test_x.py::test_y[3]``): the name
    is kept whole however long, so two tests never read the same."""
    if len(nodeid) <= width:
        return nodeid
    path, sep, name = nodeid.rpartition("::")
    if not sep:
        return shorten_nodeid(nodeid, width)
    room = width - len(name) - len(sep)
    return (shorten_nodeid(path, room) if room >= 8 else "…") + sep + name


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def squeeze_cell(text: str, column: Column, width: int) -> str:
    if column.squeeze == "end":
        return shorten_nodeid(text, width)
    return cut(text, width)


def rerun_words(reruns: int, when: str | None, seconds: float) -> str:
    """How often pytest-rerunfailures ran a test again: ``rerun twice: the first attempt
    failed in call (12ms in attempts before the last)``."""
    times = {1: "once", 2: "twice"}.get(reruns, f"{reruns} times")
    where = f" in {when}" if when else ""
    spent = fmt_duration(seconds)
    return f"rerun {times}: the first attempt failed{where} ({spent} in attempts before the last)"


BETWEEN_PHASES_SHOWN = 0.01
"""Seconds between a test's phases from which its line says so."""


def between_phases_words(span: float, duration: float) -> str | None:
    """A test's time between its phases, in none of them (its ``span`` less pytest's
    ``duration``: pytest making a phase's report, a failure's text), when worth a word:
    ``500ms between phases``."""
    between = span - duration
    if not between >= BETWEEN_PHASES_SHOWN:
        return None
    return f"{fmt_duration(between)} between phases"
