"""A migration as the probes report it: begin and end events of one run of a tool.

Shared by the SQLAlchemy/Alembic probe and the Django probe. The begin event is stamped
when the migration started; it goes out when :meth:`MigrationSpan.begin` is called (a tool
may first have to read the revision the database is at) or, at the latest, with the end.
"""

from __future__ import annotations

from .. import events as ev
from ..clock import now
from . import locking

_active = [0]
"""Migrations of a tool (Alembic, create_all, Django) in progress in this process: their
schema changes are theirs, not a hand-written runner's (see :mod:`.dblocks`)."""


def tool_running() -> bool:
    """Whether a tool's migration is in progress in this process."""
    return _active[0] > 0


class MigrationSpan:
    """One migration (or test-database creation) of this worker, from begin to end."""

    __slots__ = (
        "act", "begun", "error", "from_rev", "op", "reporter", "schema", "start", "steps",
        "to_rev", "tool", "url",
    )  # fmt: skip

    def __init__(
        self,
        reporter: locking.LockReporter,
        tool: str,
        op: str,
        url: str,
        from_rev: str | None = None,
        to_rev: str | None = None,
    ) -> None:
        self.reporter = reporter
        self.tool = tool
        self.op = op
        self.url = url
        self.from_rev = from_rev
        self.to_rev = to_rev
        self.error: str | None = None
        self.schema: str | None = None
        """The schema a hand-written runner changes, where it names one."""
        self.steps: list[ev.MigrationStep] | None = None
        """The migrations applied, with their durations, where the tool says (Django)."""
        self.act = reporter.activity
        self.start = now()
        self.begun = False

    def begin(self) -> None:
        if self.begun:
            return
        self.begun = True
        if self.tool != "ddl":
            _active[0] += 1
        act = self.act
        self.reporter.emit(
            ev.Migration(
                ts=self.start,
                action="begin",
                tool=self.tool,
                op=self.op,
                url=self.url,
                schema=self.schema,
                from_rev=self.from_rev,
                to_rev=self.to_rev,
                test=act.test,
                fixture=act.fixture,
            )
        )

    def end(self) -> None:
        self.begin()
        if self.tool != "ddl":
            _active[0] -= 1
        t = now()
        act = self.act
        self.reporter.emit(
            ev.Migration(
                ts=t,
                action="end",
                tool=self.tool,
                op=self.op,
                url=self.url,
                schema=self.schema,
                from_rev=self.from_rev,
                to_rev=self.to_rev,
                duration=t - self.start,
                error=self.error,
                steps=self.steps,
                test=act.test,
                fixture=act.fixture,
            )
        )
