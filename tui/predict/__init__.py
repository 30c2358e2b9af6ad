"""Predictions from a recorded run: the same suite with another ``-n``, ``--dist`` or order
(``testmon whatif``), built on the one fold (:mod:`testmon_live.plugin.state`) alone, so
that reports, forensics and the dashboard may all use it."""

DISTS = ("load", "loadscope", "loadfile", "worksteal")
"""The xdist distributions the model replays."""
ORDERS = ("collected", "longest-first")
"""Test orders: pytest's, and ``--monitor-order=history``'s."""
