"""The Workers tab: the table of workers, and under it what they did lately and the run's
problems now (:class:`~.worker_activity.WorkerActivity`), so a tall screen is used."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll

from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.widgets.worker_activity import WorkerActivity
from testmon_live.tui.dashboard.widgets.workers_table import WorkersTable


class WorkersView(Vertical):
    """The workers table over their recent tests and the run's problems now."""

    def compose(self) -> ComposeResult:
        yield WorkersTable(id="workers-table")
        with VerticalScroll(id="worker-activity-scroll", can_focus=False):
            yield WorkerActivity(id="worker-activity")

    def refresh_from(self, ingest: Ingest) -> None:
        table = self.query_one(WorkersTable)
        table.refresh_from(ingest)
        self.query_one(WorkerActivity).refresh_from(ingest, table.dropped(ingest))
