"""A fixture's own setup time: less the setups of the fixtures it requested from its body.

A fixture whose body calls ``request.getfixturevalue("other")`` (pytest-django's class
fixture ``_django_setup_unittest`` asking for the session fixture ``django_db_setup``,
which runs the migrations) has ``other``'s whole setup inside its own, on the same worker:
its recorded setup interval contains ``other``'s. The recorder keeps both intervals as
they ran (timelines draw them); what ranks and sums fixtures by setup time charges each
its own time, so that the inner setup is not counted twice (:func:`own_times`).

Only what was recorded with its interval can be taken out: a quick execution that the
worker only counted (``FixtureTotals``) stays inside the time of the one it ran in.
"""

from __future__ import annotations

from collections.abc import Sequence

NEST_SLACK = 1e-5
"""Seconds by which an inner setup may seem to stick out of the setup it ran in: both were
read off one clock of one worker, but turned into wall-clock starts and ends with
rounding."""

Span = tuple[float, float]
"""A setup's (start, duration) in seconds, on one worker."""


def own_times(spans: Sequence[Span]) -> list[float]:
    """The own setup time of each span (in the order given): its duration less those of
    the spans that ran directly inside it (each inner setup is taken out of the innermost
    one that contains it, once). Spans of one worker only: two setups of one worker that
    overlap, one containing the other, are nested calls."""
    n = len(spans)
    own = [max(0.0, dur) for _start, dur in spans]
    if n < 2:
        return own
    end = -1.0  # the common case, one pass: in start order, each ended before the next began
    for start, dur in spans:
        if start < end - NEST_SLACK:
            break
        end = start + dur
    else:
        return own
    order = sorted(range(n), key=lambda i: (spans[i][0], -spans[i][1]))
    stack: list[int] = []
    """Setups still open at the current start, outermost first."""
    for i in order:
        start, dur = spans[i]
        while stack and _end(spans[stack[-1]]) <= start + NEST_SLACK:
            stack.pop()
        if stack:
            parent = stack[-1]
            if start + dur <= _end(spans[parent]) + NEST_SLACK and dur < spans[parent][1]:
                own[parent] = max(0.0, own[parent] - max(0.0, dur))
        stack.append(i)
    return own


def _end(span: Span) -> float:
    return span[0] + span[1]
