"""The one fold of events into run state.

The hub folds every accepted event (for the terminal summary and crash attribution), the
reports fold a log, the dashboard folds live or replayed streams: all through
:meth:`RunState.apply`. Nothing here imports Textual or pytest.

``RunState(detail=False)`` keeps aggregates only (bounded memory, for the controller);
``detail=True`` also keeps every test and fixture record (for timelines and replays).

:class:`RunState` (:mod:`.fold`: the run, its tests, fixtures, stalls and notices) is made
of parts that fold one kind of event each: :mod:`.workers` (the workers, the base of the
others), :mod:`.locks` (locks, database waits, migrations, deadlocks), :mod:`.setups` (what
each worker's setup of a wide fixture did, and races between them) and :mod:`.containers`;
:mod:`.nesting` tells a fixture's own setup time from the setups it requested from its body.
The names other modules use are importable from here.
"""

from .containers import ContainerView, ImageStats
from .fold import (
    DUPLICATE_WORTH,
    FAILURES_KEPT,
    PER_WORKER_BY_DESIGN,
    SLOWEST_KEPT,
    FixtureStats,
    RunState,
    Tail,
    fold,
    gc_paused,
)
from .locks import LockStats, LockWait, MigrationGroup, MigrationRun, StepRecord, lock_label
from .nesting import own_times
from .setups import Resource, SetupRace, SetupRecord, SetupStory
from .workers import (
    CLOCK_SLACK,
    WORKER_STATES,
    Spell,
    StallPlace,
    StallRecord,
    WorkerView,
    worker_order,
)

__all__ = [
    "CLOCK_SLACK",
    "DUPLICATE_WORTH",
    "FAILURES_KEPT",
    "PER_WORKER_BY_DESIGN",
    "SLOWEST_KEPT",
    "WORKER_STATES",
    "ContainerView",
    "FixtureStats",
    "ImageStats",
    "LockStats",
    "LockWait",
    "MigrationGroup",
    "MigrationRun",
    "Resource",
    "RunState",
    "SetupRace",
    "SetupRecord",
    "SetupStory",
    "Spell",
    "StallPlace",
    "StallRecord",
    "StepRecord",
    "Tail",
    "WorkerView",
    "fold",
    "gc_paused",
    "lock_label",
    "own_times",
    "worker_order",
]
