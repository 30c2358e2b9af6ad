"""A worker's live activity: what it is doing right now.

The hot path writes plain attributes (a few stores per phase change); background threads
(the watchdog, later stall detection) read them. Attribute stores are atomic in CPython,
and a reader that sees a half-updated picture only reports it a tick later.
"""

from __future__ import annotations


class WorkerActivity:
    __slots__ = ("fixture", "phase", "since", "test", "waiting")

    def __init__(self, now: float) -> None:
        self.test: str | None = None
        self.phase: str = "collect"
        self.fixture: str | None = None
        self.since: float = now
        self.waiting: str | None = None

    def snapshot(self) -> tuple[str | None, str, str | None, float, str | None]:
        return (self.test, self.phase, self.fixture, self.since, self.waiting)
