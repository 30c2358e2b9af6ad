"""The event catalogue: every fact testmon-live records, as typed msgspec structs.

This module is the one place where the wire and log format is defined. A run log is
JSON lines: the first line is a :class:`RunStarted` header carrying
:data:`SCHEMA_VERSION`, every further line one event. Each event is tagged by its ``t``
field and says where it came from: ``w`` (worker id: ``gw0``.. under xdist, ``main``
without it, ``""`` for run-level facts), ``ts`` (wall clock, seconds since the epoch,
monotonic-corrected within the process that stamped it) and ``seq`` (a per-source
sequence number, so gaps and order are visible).

Viewers talk to the hub with the control messages at the end of this module
(:class:`Hello`, :class:`Welcome`, :class:`Command`, :class:`ControlError`, :class:`Bye`).

Rules for changing this file: adding an optional field (with a default) keeps
``SCHEMA_VERSION``; adding an event type keeps it too (older readers skip the line and
say so); renaming or removing a field, or changing its meaning, bumps it.
"""

# No `from __future__ import annotations`: msgspec would evaluate ~270 string annotations
# when the structs are defined, which costs every worker ~2 ms at start-up.

import functools
import re
from collections.abc import Iterable
from typing import Annotated, Literal, TypeVar, get_args

import msgspec

SCHEMA_VERSION = 1
"""Version of the log and wire format written by this build."""

MAX_BATCH_BYTES = 8 * 1024 * 1024
"""Largest worker batch the hub accepts; larger ones are dropped with a notice."""

MAX_CONTROL_LINE = 1024 * 1024
"""Largest single line a viewer may send to the hub."""

MAX_TEXT = 16_000
"""Failure texts and similar free text are cut to this many characters."""

MAX_SECONDS = 6e10
"""Every time and duration read is clamped to +-this (about the year 3870; negative down to
about the year 70): what datetime, time.localtime and the formatting can all take."""

MAX_INT = 2**53
"""Every integer read is clamped to +-this (exact as a float, and any C API takes it)."""

Float = Annotated[float, msgspec.Meta(ge=-MAX_SECONDS, le=MAX_SECONDS)]
"""A time or duration. The bounds cost nothing when writing and little when reading (msgspec
checks them while it decodes); a line out of bounds is repaired by clamping (see
:func:`decode_event`)."""
Int = Annotated[int, msgspec.Meta(ge=-MAX_INT, le=MAX_INT)]


class Event(msgspec.Struct, tag_field="t", omit_defaults=True, kw_only=True, gc=False):
    """Base of every recorded fact."""

    w: str = ""
    """Worker id (``gw0``, ``main``), or ``""`` for run-level events."""
    ts: Float = 0.0
    """Wall-clock time of the fact, seconds since the epoch."""
    seq: Int = 0
    """Sequence number per source (worker or hub), assigned when the event is shipped."""


# --------------------------------------------------------------------------- run


class RunStarted(Event, tag="run", kw_only=True):
    """The header: first line of every log and of every viewer stream."""

    schema: Int
    run_id: str
    rootdir: str
    args: list[str] = []
    invocation_dir: str = ""
    python: str = ""
    implementation: str = ""
    platform: str = ""
    hostname: str = ""
    pid: Int = 0
    plugins: dict[str, str] = {}
    """Distribution name -> version of every pytest plugin loaded."""
    monitor_version: str = ""
    workers: Int = 0
    """Workers requested (0: no xdist, the single process records itself as ``main``)."""
    dist: str = ""
    """xdist distribution mode (``load``, ``loadscope``, ``each``, ...), ``""`` without."""
    tx: list[str] = []
    """xdist gateway specs, one per worker (``popen``, ``socket=host:port``, ...)."""
    git_commit: str | None = None
    git_branch: str | None = None
    env: dict[str, str] = {}
    """What of the controller's environment explains the run (CI, pytest and Python variables,
    the container engine, database URLs, ``monitor_env_keep``); secrets redacted."""
    stall_after: Float = 30.0
    """``--monitor-stall`` seconds (0: stall detection off)."""
    order_plugins: list[str] = []
    """Loaded plugins that reorder tests (pytest-randomly, pytest-random-order...)."""
    seed: str | None = None
    """The random seed those plugins used, when they expose it."""
    order: str = ""
    """``history`` when ``--monitor-order=history`` reordered the collected tests longest
    first (``""``: pytest's own order, or what the plugins above made of it)."""
    cpus: Int = 0
    """CPUs the controller's machine has (0: unknown); ``testmon whatif`` scales worker
    start-up by it."""


ExitName = Literal[
    "ok", "tests_failed", "interrupted", "internal_error", "usage_error", "no_tests_collected"
]


class RunFinished(Event, tag="end", kw_only=True):
    """Last line of a complete log."""

    exitstatus: Int
    status: str
    """pytest's exit code name in lower case (``ok``, ``tests_failed``, ``interrupted``...)."""
    duration: Float
    events: Int = 0
    """Events the hub accepted over the run."""
    dropped: dict[str, dict[str, Int]] = {}
    """worker -> event kind -> events lost (full queue, broken transport, malformed)."""
    tests: Int = 0
    """Test runs recorded (a test run on every worker under ``--dist each`` counts per worker)."""
    counts: dict[str, Int] = {}
    """pytest's categories as its summary counts them (passed, failed, error, skipped...)."""
    workers: list[str] = []
    """Ids of every worker that took part (replacements of crashed workers included)."""
    crashes: Int = 0
    stalls: Int = 0
    test_time: Float = 0.0
    """Seconds in tests, summed over workers (for parallel efficiency): each test from its
    first phase's start to its last one's end (:func:`test_span`), and the attempts before
    a rerun."""


# ------------------------------------------------------------------------ workers


class WorkerStarted(Event, tag="worker_up", kw_only=True):
    """First event of a worker; stamped by the worker itself."""

    schema: Int
    pid: Int
    host: str = ""
    python: str = ""
    platform: str = ""
    cwd: str = ""
    spec: str = ""
    """xdist gateway spec (``popen``, ``socket=..``); ``""`` without xdist."""
    remote: bool = False
    main_thread: Int | None = None
    """Ident of the worker's main thread (names it in stacks taken from outside)."""
    dump_signal: Int | None = None
    """Signal on which faulthandler writes all stacks to ``dump_file`` (None: not armed)."""
    dump_file: str | None = None
    fixture_detail: Float = 0.0
    """Seconds under which a function fixture's execution (or a class fixture's set up for
    a test outside a class; setup and teardown
    each) is counted in a :class:`FixtureTotals` instead of recorded one by one (0: every
    execution recorded, as logs from before this field were)."""


class WorkerCollected(Event, tag="collected", kw_only=True):
    count: Int
    errors: Int = 0
    """This worker's collection errors (pytest's ``session.testsfailed``): its own view.
    What pytest counts is in :class:`CollectionReport` (xdist reports a failure several
    workers share once)."""
    duration: Float = 0.0


class CollectionReport(Event, tag="collect_report", kw_only=True):
    """A collector that did not collect cleanly, as pytest's final line counts it: a test
    module that failed to import (``error``), one that skipped itself
    (``pytest.skip(allow_module_level=True)``: ``skipped``). Recorded by the controller from
    the reports that reach its ``pytest_collectreport``: under xdist, what xdist passes on
    (the same failure on several workers once; its own error when workers collected
    different tests, named by that worker's id), so the count is pytest's."""

    nodeid: str
    outcome: str
    """pytest's category for it: ``error`` or ``skipped``."""
    message: str | None = None
    """Short text: the exception line, the skip reason."""


class PortReached(msgspec.Struct, array_like=True, gc=False):
    """A connect of a worker to a local port, ``[port, test, at]``."""

    port: Int
    test: str | None
    at: Float


class WorkerFinished(Event, tag="worker_end", kw_only=True):
    """The worker's own last word: what it shipped and what it had to drop."""

    sent: Int
    dropped: dict[str, Int] = {}
    exitstatus: Int | None = None
    reached: list[PortReached] = []
    """Its connects, once the run might have containers, to ports it was never told were a
    container's (it ended before the controller told it): the fold makes those to a
    container's mapped port, after its creation, uses of that container."""


class WorkerDown(Event, tag="worker_down", kw_only=True):
    """The controller saw the worker shut down cleanly."""


class WorkerCrashed(Event, tag="worker_crash", kw_only=True):
    """The controller saw the worker die."""

    error: str
    test: str | None = None
    """The test it was running, when known."""
    exitcode: Int | None = None
    signal: str | None = None
    note: str | None = None
    """What could not be known (a remote worker's exit code, say)."""
    reruns: Int = 0
    """pytest-rerunfailures runs :attr:`test` again on another worker: pytest's count of
    ``rerun`` that no record of the test will carry (this attempt, and the reports of those
    before it on the dead worker). The test's next record is its own; 0: not run again."""


class WorkerReplaced(Event, tag="worker_replaced", kw_only=True):
    """xdist started worker ``w`` in place of one that crashed (the controller saw it)."""

    replaces: str


# -------------------------------------------------------------------------- tests


PhaseName = Literal["setup", "call", "teardown"]


class Phase(msgspec.Struct, array_like=True, gc=False):
    """One phase of a test, encoded as ``[when, start, dur, outcome]``."""

    when: str
    start: Float
    dur: Float
    outcome: str
    """pytest's category for this phase: passed, failed, skipped, error, xfailed, xpassed."""


class FixtureRun(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """A function-scoped fixture of a test, carried in its :class:`TestFinished`:
    ``[name, setup_start, setup_dur, teardown_start, teardown_dur, baseid, error]``.
    ``teardown_start`` 0: the fixture registered no teardown code (nothing was timed)."""

    name: str
    setup_start: Float
    setup_dur: Float
    teardown_start: Float = 0.0
    teardown_dur: Float = 0.0
    baseid: str = ""
    error: str | None = None


class TestFinished(Event, tag="test", kw_only=True):
    """A test whose teardown ended: one record per test run, with all its phases."""

    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str
    """The test's overall outcome: the worst of its phases."""
    phases: list[Phase] = []
    duration: Float = 0.0
    """Setup + call + teardown seconds."""
    message: str | None = None
    """Short failure / skip text (the exception line, the skip reason)."""
    longrepr: str | None = None
    """The failure text as pytest prints it, cut to MAX_TEXT."""
    failed_when: str | None = None
    fixtures: list[FixtureRun] = []
    """Its function-scoped fixtures, in setup order (wider scopes have events of their own);
    quick ones are only counted (:class:`FixtureTotals`)."""
    crashed: bool = False
    """The worker died while running it; reported by the controller."""
    recovered: bool = False
    """Rebuilt by the controller from xdist's reports: the worker died before shipping it."""
    subtests: dict[str, Int] = {}
    """Its subtests (pytest's ``subtests`` fixture), counted by category: ``passed``,
    ``failed``, ``skipped``, ``xfailed``. Their time is inside the call phase's."""
    index: Int | None = None
    """Its position in the worker's collection, the order xdist schedules by (None: unknown,
    or a log from before it was recorded)."""
    reruns: Int = 0
    """Attempts before this one that failed and that pytest-rerunfailures ran again
    (``--reruns``, ``@pytest.mark.flaky``): this record is the last attempt's (its phases,
    outcome and failure text), the earlier attempts are folded into it. pytest counts
    each as ``rerun``; none is a test or a failure of its own."""
    rerun_when: str | None = None
    """The phase in which the first of those attempts failed (``setup``, ``call``...)."""
    rerun_message: str | None = None
    """Why the first of those attempts failed: its short failure text."""
    rerun_time: Float = 0.0
    """Seconds those attempts took in all (setup + call + teardown each; ``duration`` is
    the last attempt's alone)."""
    rerun_reports: Int = 0
    """pytest's count of ``rerun`` for those attempts, when it is not :attr:`reruns` (0):
    pytest-rerunfailures 15 and later report every failed phase of an attempt it runs
    again as a rerun (a failed call and a failed teardown: two)."""
    rerun_counts: dict[str, Int] | None = None
    """What else pytest counted of those attempts, by category: the phases that did not
    fail (a call that passed before its teardown failed: ``passed``; a skipped call:
    ``skipped``). None for most: an attempt whose call failed counts only as a rerun. (None,
    not ``{}``: an empty dict default is a dict made for every record, in every worker.)"""


SUBTEST_CATEGORIES = {
    "passed": "subtests passed",
    "failed": "failed",
    "skipped": "skipped",
    "xfailed": "xfailed",
}
"""What pytest's summary line counts a subtest of each category as (``5 subtests passed``;
a failed, skipped or xfailed subtest counts with the tests); any other key of a log's
:attr:`TestFinished.subtests` is not counted."""


OUTCOME_RANK = {"failed": 5, "error": 4, "xpassed": 3, "xfailed": 2, "skipped": 1, "passed": 0}
"""How bad a phase's outcome is: a test's :attr:`TestFinished.outcome` is its worst phase's."""
FAILING = frozenset({"failed", "error"})
"""The outcomes of a test that failed (a failing phase, or an error in setup or teardown)."""


def counted(when: str, outcome: str) -> bool:
    """Does pytest's final line count a phase of this outcome? A call always; a setup or
    teardown only when it did not pass (pytest gives a passed one no category). The fold
    checks the same inline, per phase of every test."""
    return when == "call" or outcome != "passed"


def worst_outcome(categories: Iterable[str]) -> str:
    """The overall outcome of a test from the categories of its phases."""
    best = "passed"
    rank = 0
    for cat in categories:
        r = OUTCOME_RANK.get(cat, 0)
        if r > rank:
            best, rank = cat, r
    return best


def test_started(test: TestFinished) -> float:
    """When the test began: its first phase's start (its end record's time without one)."""
    return test.phases[0].start if test.phases else test.ts


def test_span(test: TestFinished) -> float:
    """Seconds the test held its worker: its first phase's start to its last phase's end
    (the record's time: it is made as the teardown ends).

    pytest times each phase alone (:attr:`TestFinished.duration` is the sum): between one
    phase's end and the next one's start it makes the phase's report (a failure's text:
    0.2 s and more for a long traceback) and hands it to every plugin's ``logreport``
    (xdist sends it). That time is the test's too: whatever counts a worker busy counts
    this. A log is untrusted input: phases out of order or overlapping never make it less
    than ``duration``, nor negative; without phases (a crashed test), ``duration``."""
    duration = test.duration if test.duration > 0.0 else 0.0
    phases = test.phases
    if not phases:
        return duration
    span = test.ts - phases[0].start
    if span > duration + SPAN_GAPS_MAX:  # a clock that moved (a log of before it was caught)
        return duration
    return span if span > duration else duration  # (a NaN: the duration)


SPAN_GAPS_MAX = 3600.0
"""Seconds between a test's phases past which :func:`test_span` takes them for a wall clock
that moved during the test (recorded before the worker checked its clock against a
monotonic one), not for time the test held its worker: then its ``duration``."""


class Activity(Event, tag="activity", kw_only=True):
    """A worker's current test / phase / fixture changed (sampled a few times a second)."""

    test: str | None = None
    phase: str = "idle"
    """idle, collect, setup, call, teardown, finish."""
    fixture: str | None = None
    since: Float = 0.0
    """When the current phase began."""
    waiting: str | None = None
    """What the worker is blocked on when a probe knows: ``lock:migrations``, ``container:pg``."""


class Heartbeat(Event, tag="hb", kw_only=True):
    """Once a second from each worker's watchdog thread."""

    test: str | None = None
    phase: str = "idle"
    fixture: str | None = None
    elapsed: Float = 0.0
    """Seconds in the current phase."""
    rss: Int = 0
    """Resident set size, bytes."""
    cpu: Float = 0.0
    """CPU seconds used by the process so far (user + system)."""
    threads: Int = 0
    dropped: Int = 0
    """Events this worker has had to drop so far."""
    pending: Int = 0
    """Events queued and not yet shipped."""


# ------------------------------------------------------------------------ fixtures


class FixtureSetup(Event, tag="fixture_setup", kw_only=True):
    """A session, package, module or class fixture was set up (function-scoped ones
    travel inside their test's record: :attr:`TestFinished.fixtures`)."""

    name: str
    scope: str
    test: str | None
    """The test whose setup triggered it."""
    start: Float
    dur: Float
    baseid: str = ""
    """Where the fixture is defined ("" for conftest at the root or plugins)."""
    error: str | None = None


class FixtureTeardown(Event, tag="fixture_teardown", kw_only=True):
    name: str
    scope: str
    test: str | None
    """The test during whose teardown it ran."""
    start: Float
    dur: Float
    baseid: str = ""
    error: str | None = None


class FixtureTally(msgspec.Struct, array_like=True, gc=False):
    """Quick executions of one fixture on one worker since the last tally, in
    :class:`FixtureTotals`: ``[name, scope, baseid, count, setup_total, setup_max,
    teardown_total]`` (seconds)."""

    name: str
    scope: str
    baseid: str
    count: Int
    setup_total: Float
    setup_max: Float
    teardown_total: Float = 0.0


class FixtureTotals(Event, tag="fixtures", kw_only=True):
    """Function fixture executions (and class fixture executions within one test outside a
    class) too quick to be recorded one by one (setup and teardown each under
    :attr:`WorkerStarted.fixture_detail`, no error), counted since the worker's previous
    tally: sent at most once a second, after a test, and at the worker's
    end. A slow or failing execution is never in a tally (it rides in its test's record,
    or has events of its own)."""

    fixtures: list[FixtureTally] = []


# -------------------------------------------------------------- hangs (watchdog)


class Frame(msgspec.Struct, array_like=True, gc=False):
    """``[file, line, function, user]``; ``user`` marks the project's own code."""

    file: str
    line: Int
    func: str
    user: bool = False


class TaskStack(msgspec.Struct, omit_defaults=True, gc=False):
    """A pending asyncio task of a stalled event loop."""

    name: str
    coro: str
    frames: list[Frame] = []
    awaiting: str | None = None


Verdict = Literal[
    "lock",
    "condition",
    "event",
    "queue",
    "future",
    "sleep",
    "socket",
    "subprocess",
    "database",
    "busy",
    "unknown",
    "idle",
]


class ThreadStack(msgspec.Struct, omit_defaults=True, gc=False):
    name: str
    ident: Int
    daemon: bool = False
    verdict: str = "unknown"
    """What the thread is doing: one of :data:`Verdict`."""
    detail: str | None = None
    """The call that decides the verdict (``threading.Condition.wait``)."""
    frames: list[Frame] = []
    """Outermost first."""
    tasks: list[TaskStack] = []
    moved: bool | None = None
    """Did the stack change since the previous sample (``None`` on the first)."""


class Stall(Event, tag="stall", kw_only=True):
    """A phase ran past ``--monitor-stall``; or stacks asked for on demand (``reason``)."""

    reason: str = "stall"
    """``stall``, ``dump`` (asked for), ``unresponsive`` (taken from outside by the hub)."""
    test: str | None = None
    phase: str = ""
    fixture: str | None = None
    elapsed: Float = 0.0
    location: str | None = None
    """Innermost frame in the user's own code, ``file:line in func``."""
    threads: list[ThreadStack] = []
    sample: Int = 1
    """1 for the first sample of a stall; later samples only list threads that changed."""
    request: Int | None = None
    """Id of the :class:`Command` that asked for a dump."""


class StallEnded(Event, tag="stall_end", kw_only=True):
    test: str | None = None
    duration: Float = 0.0
    """Seconds the stalled phase ran in all."""


class Unresponsive(Event, tag="unresponsive", kw_only=True):
    """The hub heard no heartbeat from a worker for ``silent`` seconds (GIL held, frozen)."""

    silent: Float
    """Seconds without a sign of life: so far, or in all once ``recovered``."""
    test: str | None = None
    """The test it went silent in (the same on its recovery)."""
    phase: str | None = None
    since: Float | None = None
    """When that phase began, as the hub knows it (the worker's own record of it may
    arrive only after the silence)."""
    recovered: bool = False


# ------------------------------------------------------------------------- locks


LockKind = Literal[
    "filelock",
    "monitor",
    "pg_advisory",
    "mysql_get_lock",
    "sqlite",
    "table",
    "row",
    "metadata",
    "other",
    "run_once",
]


class Holder(msgspec.Struct, omit_defaults=True, gc=False):
    w: str | None = None
    test: str | None = None
    fixture: str | None = None
    pid: Int | None = None
    detail: str | None = None
    backend: Int | None = None
    """Database connection id of the holder (PostgreSQL backend pid, MariaDB connection id);
    the fold maps it to a worker through :class:`DbConnected`."""


class LockEvent(Event, tag="lock", kw_only=True):
    """A lock wait began, was granted, released, failed or timed out."""

    action: Literal["wait", "acquired", "released", "failed"]
    kind: str
    key: str
    """Lock path, name, advisory key or table."""
    lock_id: str = ""
    """Ties the wait, acquisition and release of one acquisition together."""
    test: str | None = None
    fixture: str | None = None
    waited: Float | None = None
    held: Float | None = None
    holder: Holder | None = None
    error: str | None = None
    reason: Literal["timeout", "refused", "deadlock"] | None = None
    """Why a ``failed`` acquisition failed when it was no error: ``timeout`` (a wait that
    gave up, e.g. ``GET_LOCK`` returned 0), ``refused`` (a try-lock that was not granted,
    e.g. ``pg_try_advisory_lock`` returned false). Neither leaves a holder. ``deadlock``: the
    server found a deadlock and failed this wait to break it (MariaDB/MySQL error 1213,
    PostgreSQL 40P01); the fold turns it into a :class:`Deadlock`."""


class DbWait(Event, tag="db_wait", kw_only=True):
    """A database statement that waited on a lock (or failed because of one)."""

    dialect: str
    url: str
    """Redacted database URL."""
    statement: str
    waited: Float
    lock: str | None = None
    blocked_by: Holder | None = None
    test: str | None = None
    fixture: str | None = None
    error: str | None = None


class MigrationStep(msgspec.Struct, omit_defaults=True, gc=False):
    """One migration a tool applied (or unapplied) within a run of it."""

    name: str
    """``app_label.migration_name`` (Django), ``revision message`` (Alembic: the revision id
    and the first line of its message), the statement (a hand-written runner's schema
    change, tool ``ddl``)."""
    duration: Float
    backwards: bool = False


class Migration(Event, tag="migration", kw_only=True):
    action: Literal["begin", "end"]
    tool: str
    """``alembic``, ``sqlalchemy`` (``MetaData.create_all`` / ``drop_all``), ``django``."""
    op: str
    """``upgrade``, ``downgrade``, ``stamp``, ``create_all``, ``drop_all``; Django's
    ``migrate``, ``create_test_db`` (a test database created, its migrations included) and
    ``reuse_test_db`` (the same under ``--reuse-db``, the database kept). A reuse that had
    to create (or migrate) the database begins as ``reuse_test_db`` and ends as
    ``create_test_db``: see :attr:`span_op`."""
    url: str = ""
    schema: str | None = None
    """The schema a hand-written runner's changes went into, where its first statement
    names it (``CREATE SCHEMA s``, ``CREATE TABLE s.t``, ``CREATE INDEX i ON s.t``): two
    workers changing different schemas of one database do not race. ``None``: none named
    (the connection's search path decides)."""
    from_rev: str | None = None
    to_rev: str | None = None
    duration: Float | None = None
    error: str | None = None
    steps: list[MigrationStep] | None = None
    """On an ``end``: the migrations applied, each with its duration (Django's migrate,
    Alembic's revisions; a hand-written runner's schema changes)."""
    test: str | None = None
    fixture: str | None = None

    @property
    def span_op(self) -> str:
        """The operation a begin and its end share (a reuse may end as a creation)."""
        return "create_test_db" if self.op == "reuse_test_db" else self.op

    @property
    def place(self) -> str:
        """What two workers' migrations must share to race: the database, and the schema
        where the changes name one."""
        return self.url if self.schema is None else f"{self.url} (schema {self.schema})"


class WaitEdge(msgspec.Struct, omit_defaults=True, gc=False):
    w: str
    holds: str
    waits_for: str
    test: str | None = None


class Deadlock(Event, tag="deadlock", kw_only=True):
    """A cycle in the wait-for graph across workers, or one the database server found and
    broke by failing a worker's wait (``broken``)."""

    cycle: list[WaitEdge]
    text: str = ""
    broken: bool = False
    """The server broke it: the first edge's worker had its wait failed (error 1213,
    40P01)."""


class DbConnected(Event, tag="db_conn", kw_only=True):
    """A worker opened a database connection: lets the hub map the server's connection ids
    (``pg_blocking_pids``, ``IS_USED_LOCK``) to workers."""

    dialect: str
    url: str
    """Redacted database URL."""
    backend: Int
    """PostgreSQL backend pid / MariaDB ``CONNECTION_ID()``."""


# -------------------------------------------------------------------- containers


ContainerAction = Literal[
    "create",
    "start",
    "ready",
    "stop",
    "remove",
    "die",
    "oom",
    "health",
    "fail",
    "leak",
    "use",
]


class ContainerEvent(Event, tag="container", kw_only=True):
    action: str
    """One of :data:`ContainerAction`."""
    cid: str
    """Short container id."""
    image: str = ""
    name: str = ""
    ports: dict[str, str] = {}
    """Exposed port -> host address."""
    labels: dict[str, str] = {}
    wait: str | None = None
    """The wait strategy and what it waited for."""
    dur: Float | None = None
    exit_code: Int | None = None
    health: str | None = None
    error: str | None = None
    owner: str | None = None
    """Worker that started it."""
    test: str | None = None
    fixture: str | None = None
    phase: str | None = None
    """For ``fail``: the phase that failed (``engine``, ``create``, ``start``, ``ready``); for
    ``stop``: the phase the asking worker was in (``setup``, ``call``, ``teardown``, ...)."""
    call: str | None = None
    """For ``stop``: what was called (``stop``, ``kill``, ``remove(force=True)``, and
    ``DockerContainer.stop`` for testcontainers' own)."""
    during: dict[str, str] = {}
    """For engine events (``die``, ``oom``, ``leak``): worker -> the test it was running."""
    by: str | None = None
    """Who reported it: ``None`` for the worker's own probe, ``engine`` for the controller's
    watch of the container engine, ``connection`` for a ``use`` the controller saw as the
    worker's open connection to one of the container's mapped ports, ``connect`` for one the
    worker saw itself as it connected (told the ports by the controller)."""


# ---------------------------------------------------------------------- the hub


class Notice(Event, tag="notice", kw_only=True):
    """Something the monitor itself wants the user to know (malformed input, drops)."""

    level: Literal["info", "warning", "error"] = "warning"
    source: str = ""
    msg: str


class CommandReply(Event, tag="reply", kw_only=True):
    """A worker's answer to a :class:`Command`."""

    request: Int
    cmd: str
    ok: bool = True
    result: dict[str, str | Int | Float | bool | None] = {}
    error: str | None = None


AnyEvent = (
    RunStarted
    | RunFinished
    | WorkerStarted
    | WorkerCollected
    | CollectionReport
    | WorkerFinished
    | WorkerDown
    | WorkerCrashed
    | WorkerReplaced
    | TestFinished
    | Activity
    | Heartbeat
    | FixtureSetup
    | FixtureTeardown
    | FixtureTotals
    | Stall
    | StallEnded
    | Unresponsive
    | LockEvent
    | DbWait
    | Migration
    | Deadlock
    | DbConnected
    | ContainerEvent
    | Notice
    | CommandReply
)

EVENT_TYPES: tuple[type[Event], ...] = get_args(AnyEvent)
TAGS: dict[type[Event], str] = {cls: str(cls.__struct_config__.tag) for cls in EVENT_TYPES}


def kind(event: Event) -> str:
    """The ``t`` tag of an event (``test``, ``hb``...)."""
    return TAGS.get(type(event), type(event).__name__)


# --------------------------------------------------------------- viewer control


class Control(msgspec.Struct, tag_field="t", omit_defaults=True, kw_only=True, gc=False):
    """Messages between a viewer and the hub that are not events of the run."""


class Hello(Control, tag="hello", kw_only=True):
    """First line a viewer sends."""

    schema: int
    token: str
    client: str = ""


class Welcome(Control, tag="welcome", kw_only=True):
    """The hub accepted the viewer; the run's events follow, header first."""

    schema: int
    run_id: str
    backlog_bytes: int
    """Bytes of log that precede the live tail."""


class Command(Control, tag="cmd", kw_only=True):
    """Viewer -> hub -> worker: ``ping`` (and ``dump`` for stacks)."""

    worker: str
    cmd: str
    id: int = 0
    args: dict[str, str] = {}


class ControlError(Control, tag="error", kw_only=True):
    msg: str
    fatal: bool = False


class Bye(Control, tag="bye", kw_only=True):
    """The hub closes this viewer's stream (run ended, viewer fell behind...)."""

    reason: str


AnyControl = Hello | Welcome | Command | ControlError | Bye

# ------------------------------------------------------------------ encode/decode

_encoder = msgspec.json.Encoder()


# The decoders are built on first use: building one makes msgspec read the types of every
# struct it can meet (~11 M instructions for the events'), which a worker, which decodes
# nothing but commands, would pay at start-up for nothing. Annotated with the base classes:
# msgspec >= 0.23 infers the union of every struct, which `list` (invariant) would then
# carry into every caller; older releases infer Any.
@functools.cache
def _event_decoder() -> msgspec.json.Decoder[Event]:
    return msgspec.json.Decoder(AnyEvent)


@functools.cache
def _control_decoder() -> msgspec.json.Decoder[Control]:
    return msgspec.json.Decoder(AnyControl)


@functools.cache
def _stream_decoder() -> msgspec.json.Decoder[Event | Control]:
    return msgspec.json.Decoder(AnyEvent | AnyControl)


class DecodeError(ValueError):
    """A line that is not a valid event; the message says why."""


class EncodeError(ValueError):
    """An event that cannot be encoded even with its text escaped."""


_ENCODE_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, msgspec.EncodeError)
"""What encoding an event can raise: UnicodeEncodeError (a ValueError) for lone surrogates,
TypeError for values of foreign types, RecursionError for a value that contains itself."""

UNENCODABLE = "unencodable"
"""Key under which events dropped because they could not be encoded are counted."""


def encode(obj: Event | Control) -> bytes:
    """One JSON object, no newline. Text that is no valid Unicode (lone surrogates from
    ``os.fsdecode``, say) is escaped; raises :class:`EncodeError` if that is not enough."""
    try:
        return _encoder.encode(obj)
    # msgspec refuses lone surrogates (UnicodeEncodeError) and values of foreign types
    except _ENCODE_ERRORS:
        pass
    try:
        return _encoder.encode(_escaped(obj))
    except _ENCODE_ERRORS as exc:
        raise EncodeError(f"{kind_of(obj)}: {type(exc).__name__}") from None


def encode_line(obj: Event | Control) -> bytes:
    return encode(obj) + b"\n"


def encode_lines(events: list[Event], dropped: list[Event] | None = None) -> bytes:
    """Newline-delimited JSON, newline-terminated.

    One event that cannot be encoded never costs the others: its text is escaped, and if
    even that fails it is left out and appended to ``dropped`` (raises :class:`EncodeError`
    when no ``dropped`` list is given)."""
    try:
        return _encoder.encode_lines(events)
    except _ENCODE_ERRORS:
        pass
    parts: list[bytes] = []
    for event in events:
        try:
            parts.append(encode_line(event))
        except EncodeError:  # noqa: PERF203 - only after the whole batch failed to encode
            if dropped is None:
                raise
            dropped.append(event)
    return b"".join(parts)


def kind_of(obj: Event | Control) -> str:
    tag = obj.__struct_config__.tag
    return str(tag) if tag is not None else type(obj).__name__


_S = TypeVar("_S", bound=msgspec.Struct)


def _escaped(obj: _S) -> _S:
    """``obj`` with every text made encodable: lone surrogates backslash-escaped, values
    of types JSON cannot hold replaced by their text. Changes ``obj`` in place."""
    for name in obj.__struct_fields__:
        setattr(obj, name, _escape_value(getattr(obj, name)))
    return obj


def _escape_value(value: object) -> object:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, msgspec.Struct):
        return _escaped(value)
    if isinstance(value, (list, tuple)):
        return [_escape_value(item) for item in value]
    if isinstance(value, dict):
        return {_escape_value(k): _escape_value(v) for k, v in value.items()}
    from .guard import text_of

    return _escape_value(text_of(value))


_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
"""What decoding untrusted bytes can raise: RecursionError for nesting deeper than the
interpreter's stack (a line of 100,000 ``[``), the rest for anything else that is wrong."""

_REPAIRS = 16
"""Fields a line may have repaired (null or out-of-range numbers) before it is given up."""
_REPAIRABLE = ("got `null`", "got `float`", "` <= ", "` >= ", "out of range", "malformed")
"""Faults a repair may mend (``malformed``: ``NaN`` and ``Infinity``, which Python reads)."""
_REPAIR_LIMIT = 4 * 1024 * 1024
"""Longest line a repair is tried on (it parses the line into Python objects)."""
_AT = re.compile(r" - at `\$(.*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def decode_event(line: bytes | str) -> Event:
    """One event. A line whose only fault is a number (beyond :data:`Float` or :data:`Int`,
    ``null`` where the encoder met inf or nan, ``1e999``, ``NaN``) is repaired: clamped, 0."""
    return _decoded(_event_decoder(), line)


_D = TypeVar("_D")


def _decoded(decoder: "msgspec.json.Decoder[_D]", line: bytes | str) -> _D | Event:
    try:
        return decoder.decode(line)
    except _DECODE_ERRORS as exc:
        repaired = _repaired(line, exc)
        if repaired is None:
            raise DecodeError(_reason(exc)) from None
        return repaired


def decode_events(data: bytes) -> list[Event]:
    """Decode newline-delimited events all at once; raises :class:`DecodeError` on any bad line."""
    try:
        events = _event_decoder().decode_lines(data)
    except _DECODE_ERRORS as exc:
        raise DecodeError(_reason(exc)) from None
    return events


def decode_events_tolerant(data: bytes) -> tuple[list[Event], list[tuple[int, str]]]:
    """Decode line by line: the good events, and ``(line number, reason)`` for each bad line."""
    try:
        return decode_events(data), []
    except DecodeError:
        pass
    good: list[Event] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            good.append(decode_event(line))
        except DecodeError as exc:
            bad.append((number, str(exc)))
    return good, bad


def _repaired(line: bytes | str, exc: BaseException) -> Event | None:
    """The event of a line that failed only on numbers: ``null`` where a number belongs (what
    the encoder writes for inf and nan), a number beyond any float. None otherwise."""
    text = str(exc)
    if len(line) > _REPAIR_LIMIT:
        return None
    if not any(fault in text for fault in _REPAIRABLE):
        return None
    from .guard import REAL  # the hub may decode in the process of a test that patches json

    try:
        raw = REAL.json_loads(line)
    except (ValueError, RecursionError):
        return None
    raw = _clamp_any(raw)
    for _ in range(_REPAIRS):
        try:
            event: Event = msgspec.convert(raw, AnyEvent)
        except msgspec.ValidationError as err:  # noqa: PERF203 - a handful of tries at most
            if not _fix_at(raw, str(err)):
                return None
        except (RecursionError, ValueError):  # too deep; a lone surrogate in a key
            return None
        else:
            return event
    return None


def _fix_at(raw: object, error: str) -> bool:
    """Put a number where the error says one was expected and null (or a float where an int
    belongs) was found; False for any other fault."""
    match = _AT.search(error)
    if match is None or not error.startswith("Expected `"):
        return False
    steps = [(key, int(index)) if index else (key, None) for key, index in _STEP.findall(match[1])]
    if not steps:
        return False
    parent = raw
    try:
        for key, index in steps[:-1]:
            parent = parent[index] if index is not None else parent[key]  # type: ignore[index]
        key, index = steps[-1]
        slot: int | str = index if index is not None else key
        found = parent[slot]  # type: ignore[index]
    except (LookupError, TypeError):
        return False
    wants_int = error.startswith("Expected `int")
    bound = MAX_INT if wants_int else MAX_SECONDS
    if found is None:
        fixed: float = 0 if wants_int else 0.0
    elif wants_int and isinstance(found, float):
        fixed = round(found)
    elif isinstance(found, (int, float)) and ("` <= " in error or "` >= " in error):
        fixed = bound if found > 0 else -bound  # an int beyond a float field's range
    else:
        return False
    parent[slot] = fixed  # type: ignore[index]
    return True


# ------------------------------------------------------------ numbers in range


def _clamp_any(value: object) -> object:
    """A JSON value with every number within :data:`Float` and :data:`Int` (nan: 0)."""
    if isinstance(value, float):
        if value != value:
            return 0.0
        return max(-MAX_SECONDS, min(MAX_SECONDS, value))
    if isinstance(value, int) and not isinstance(value, bool):
        return max(-MAX_INT, min(MAX_INT, value))
    if isinstance(value, list):
        return [_clamp_any(item) for item in value]
    if isinstance(value, dict):
        return {key: _clamp_any(item) for key, item in value.items()}
    return value


def decode_control(line: bytes | str) -> Control:
    try:
        return _control_decoder().decode(line)
    except _DECODE_ERRORS as exc:
        raise DecodeError(_reason(exc)) from None


def decode_stream_line(line: bytes | str) -> Event | Control:
    """What a viewer reads from the hub: an event of the run or a control message."""
    return _decoded(_stream_decoder(), line)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    text = str(exc)
    if text.startswith("Invalid value") and "$.t" in text:
        return f"unknown event type ({text})"
    return text


def clip(text: str | None, limit: int = MAX_TEXT) -> str | None:
    """Cut free text to ``limit`` characters, saying how much was cut."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"\n... [{len(text) - limit} more characters cut by testmon-live]"


EXIT_NAMES: dict[int, str] = {
    0: "ok",
    1: "tests_failed",
    2: "interrupted",
    3: "internal_error",
    4: "usage_error",
    5: "no_tests_collected",
}
