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

from collections.abc import Iterable
from typing import Literal, TypeVar, get_args

import msgspec

SCHEMA_VERSION = 1
"""Version of the log and wire format written by this build."""

MAX_BATCH_BYTES = 8 * 1024 * 1024
"""Largest worker batch the hub accepts; larger ones are dropped with a notice."""

MAX_CONTROL_LINE = 1024 * 1024
"""Largest single line a viewer may send to the hub."""

MAX_TEXT = 16_000
"""Failure texts and similar free text are cut to this many characters."""


class Event(msgspec.Struct, tag_field="t", omit_defaults=True, kw_only=True, gc=False):
    """Base of every recorded fact."""

    w: str = ""
    """Worker id (``gw0``, ``main``), or ``""`` for run-level events."""
    ts: float = 0.0
    """Wall-clock time of the fact, seconds since the epoch."""
    seq: int = 0
    """Sequence number per source (worker or hub), assigned when the event is shipped."""


# --------------------------------------------------------------------------- run


class RunStarted(Event, tag="run", kw_only=True):
    """The header: first line of every log and of every viewer stream."""

    schema: int
    run_id: str
    rootdir: str
    args: list[str] = []
    invocation_dir: str = ""
    python: str = ""
    implementation: str = ""
    platform: str = ""
    hostname: str = ""
    pid: int = 0
    plugins: dict[str, str] = {}
    """Distribution name -> version of every pytest plugin loaded."""
    monitor_version: str = ""
    workers: int = 0
    """Workers requested (0: no xdist, the single process records itself as ``main``)."""
    dist: str = ""
    """xdist distribution mode (``load``, ``loadscope``, ``each``, ...), ``""`` without."""
    tx: list[str] = []
    """xdist gateway specs, one per worker (``popen``, ``socket=host:port``, ...)."""
    git_commit: str | None = None
    git_branch: str | None = None
    env: dict[str, str] = {}
    """Environment of the controller; secret-looking values redacted."""
    stall_after: float = 30.0
    """``--monitor-stall`` seconds (0: stall detection off)."""
    order_plugins: list[str] = []
    """Loaded plugins that reorder tests (pytest-randomly, pytest-random-order...)."""
    seed: str | None = None
    """The random seed those plugins used, when they expose it."""


ExitName = Literal[
    "ok", "tests_failed", "interrupted", "internal_error", "usage_error", "no_tests_collected"
]


class RunFinished(Event, tag="end", kw_only=True):
    """Last line of a complete log."""

    exitstatus: int
    status: str
    """pytest's exit code name in lower case (``ok``, ``tests_failed``, ``interrupted``...)."""
    duration: float
    events: int = 0
    """Events the hub accepted over the run."""
    dropped: dict[str, dict[str, int]] = {}
    """worker -> event kind -> events lost (full queue, broken transport, malformed)."""
    tests: int = 0
    """Test runs recorded (a test run on every worker under ``--dist each`` counts per worker)."""
    counts: dict[str, int] = {}
    """pytest's categories as its summary counts them (passed, failed, error, skipped...)."""
    workers: list[str] = []
    """Ids of every worker that took part (replacements of crashed workers included)."""
    crashes: int = 0
    stalls: int = 0
    test_time: float = 0.0
    """Sum of all test durations (for parallel efficiency)."""


# ------------------------------------------------------------------------ workers


class WorkerStarted(Event, tag="worker_up", kw_only=True):
    """First event of a worker; stamped by the worker itself."""

    schema: int
    pid: int
    host: str = ""
    python: str = ""
    platform: str = ""
    cwd: str = ""
    spec: str = ""
    """xdist gateway spec (``popen``, ``socket=..``); ``""`` without xdist."""
    remote: bool = False
    main_thread: int | None = None
    """Ident of the worker's main thread (names it in stacks taken from outside)."""
    dump_signal: int | None = None
    """Signal on which faulthandler writes all stacks to ``dump_file`` (None: not armed)."""
    dump_file: str | None = None


class WorkerCollected(Event, tag="collected", kw_only=True):
    count: int
    errors: int = 0
    duration: float = 0.0


class WorkerFinished(Event, tag="worker_end", kw_only=True):
    """The worker's own last word: what it shipped and what it had to drop."""

    sent: int
    dropped: dict[str, int] = {}
    exitstatus: int | None = None


class WorkerDown(Event, tag="worker_down", kw_only=True):
    """The controller saw the worker shut down cleanly."""


class WorkerCrashed(Event, tag="worker_crash", kw_only=True):
    """The controller saw the worker die."""

    error: str
    test: str | None = None
    """The test it was running, when known."""
    exitcode: int | None = None
    signal: str | None = None
    note: str | None = None
    """What could not be known (a remote worker's exit code, say)."""


class WorkerReplaced(Event, tag="worker_replaced", kw_only=True):
    """xdist started worker ``w`` in place of one that crashed (the controller saw it)."""

    replaces: str


# -------------------------------------------------------------------------- tests


PhaseName = Literal["setup", "call", "teardown"]


class Phase(msgspec.Struct, array_like=True, gc=False):
    """One phase of a test, encoded as ``[when, start, dur, outcome]``."""

    when: str
    start: float
    dur: float
    outcome: str
    """pytest's category for this phase: passed, failed, skipped, error, xfailed, xpassed."""


class FixtureRun(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """A function-scoped fixture of a test, carried in its :class:`TestFinished`:
    ``[name, setup_start, setup_dur, teardown_start, teardown_dur, baseid, error]``."""

    name: str
    setup_start: float
    setup_dur: float
    teardown_start: float = 0.0
    teardown_dur: float = 0.0
    baseid: str = ""
    error: str | None = None


class TestFinished(Event, tag="test", kw_only=True):
    """A test whose teardown ended: one record per test run, with all its phases."""

    __test__ = False  # not a pytest test class

    nodeid: str
    outcome: str
    """The test's overall outcome: the worst of its phases."""
    phases: list[Phase] = []
    duration: float = 0.0
    """Setup + call + teardown seconds."""
    message: str | None = None
    """Short failure / skip text (the exception line, the skip reason)."""
    longrepr: str | None = None
    """The failure text as pytest prints it, cut to MAX_TEXT."""
    failed_when: str | None = None
    fixtures: list[FixtureRun] = []
    """Its function-scoped fixtures, in setup order (wider scopes have events of their own)."""
    crashed: bool = False
    """The worker died while running it; reported by the controller."""
    recovered: bool = False
    """Rebuilt by the controller from xdist's reports: the worker died before shipping it."""


OUTCOME_RANK = {"failed": 5, "error": 4, "xpassed": 3, "xfailed": 2, "skipped": 1, "passed": 0}
"""How bad a phase's outcome is: a test's :attr:`TestFinished.outcome` is its worst phase's."""
FAILING = frozenset({"failed", "error"})
"""The outcomes of a test that failed (a failing phase, or an error in setup or teardown)."""


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


class Activity(Event, tag="activity", kw_only=True):
    """A worker's current test / phase / fixture changed (sampled a few times a second)."""

    test: str | None = None
    phase: str = "idle"
    """idle, collect, setup, call, teardown, finish."""
    fixture: str | None = None
    since: float = 0.0
    """When the current phase began."""
    waiting: str | None = None
    """What the worker is blocked on when a probe knows: ``lock:migrations``, ``container:pg``."""


class Heartbeat(Event, tag="hb", kw_only=True):
    """Once a second from each worker's watchdog thread."""

    test: str | None = None
    phase: str = "idle"
    fixture: str | None = None
    elapsed: float = 0.0
    """Seconds in the current phase."""
    rss: int = 0
    """Resident set size, bytes."""
    cpu: float = 0.0
    """CPU seconds used by the process so far (user + system)."""
    threads: int = 0
    dropped: int = 0
    """Events this worker has had to drop so far."""
    pending: int = 0
    """Events queued and not yet shipped."""


# ------------------------------------------------------------------------ fixtures


class FixtureSetup(Event, tag="fixture_setup", kw_only=True):
    """A session, package, module or class fixture was set up (function-scoped ones
    travel inside their test's record: :attr:`TestFinished.fixtures`)."""

    name: str
    scope: str
    test: str | None
    """The test whose setup triggered it."""
    start: float
    dur: float
    baseid: str = ""
    """Where the fixture is defined ("" for conftest at the root or plugins)."""
    error: str | None = None


class FixtureTeardown(Event, tag="fixture_teardown", kw_only=True):
    name: str
    scope: str
    test: str | None
    """The test during whose teardown it ran."""
    start: float
    dur: float
    baseid: str = ""
    error: str | None = None


# -------------------------------------------------------------- hangs (watchdog)


class Frame(msgspec.Struct, array_like=True, gc=False):
    """``[file, line, function, user]``; ``user`` marks the project's own code."""

    file: str
    line: int
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
    ident: int
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
    elapsed: float = 0.0
    location: str | None = None
    """Innermost frame in the user's own code, ``file:line in func``."""
    threads: list[ThreadStack] = []
    sample: int = 1
    """1 for the first sample of a stall; later samples only list threads that changed."""
    request: int | None = None
    """Id of the :class:`Command` that asked for a dump."""


class StallEnded(Event, tag="stall_end", kw_only=True):
    test: str | None = None
    duration: float = 0.0
    """Seconds the stalled phase ran in all."""


class Unresponsive(Event, tag="unresponsive", kw_only=True):
    """The hub heard no heartbeat from a worker for ``silent`` seconds (GIL held, frozen)."""

    silent: float
    """Seconds without a sign of life: so far, or in all once ``recovered``."""
    test: str | None = None
    """The test it went silent in (the same on its recovery)."""
    phase: str | None = None
    since: float | None = None
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
    pid: int | None = None
    detail: str | None = None
    backend: int | None = None
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
    waited: float | None = None
    held: float | None = None
    holder: Holder | None = None
    error: str | None = None
    reason: Literal["timeout", "refused"] | None = None
    """Why a ``failed`` acquisition failed when it was no error: ``timeout`` (a wait that
    gave up, e.g. ``GET_LOCK`` returned 0), ``refused`` (a try-lock that was not granted,
    e.g. ``pg_try_advisory_lock`` returned false). Neither leaves a holder."""


class DbWait(Event, tag="db_wait", kw_only=True):
    """A database statement that waited on a lock (or failed because of one)."""

    dialect: str
    url: str
    """Redacted database URL."""
    statement: str
    waited: float
    lock: str | None = None
    blocked_by: Holder | None = None
    test: str | None = None
    fixture: str | None = None
    error: str | None = None


class Migration(Event, tag="migration", kw_only=True):
    action: Literal["begin", "end"]
    tool: str
    """``alembic``, ``sqlalchemy`` (``MetaData.create_all`` / ``drop_all``)."""
    op: str
    """``upgrade``, ``downgrade``, ``stamp``, ``create_all``, ``drop_all``."""
    url: str = ""
    from_rev: str | None = None
    to_rev: str | None = None
    duration: float | None = None
    error: str | None = None
    test: str | None = None
    fixture: str | None = None


class WaitEdge(msgspec.Struct, omit_defaults=True, gc=False):
    w: str
    holds: str
    waits_for: str
    test: str | None = None


class Deadlock(Event, tag="deadlock", kw_only=True):
    """A cycle in the wait-for graph across workers."""

    cycle: list[WaitEdge]
    text: str = ""


class DbConnected(Event, tag="db_conn", kw_only=True):
    """A worker opened a database connection: lets the hub map the server's connection ids
    (``pg_blocking_pids``, ``IS_USED_LOCK``) to workers."""

    dialect: str
    url: str
    """Redacted database URL."""
    backend: int
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
    dur: float | None = None
    exit_code: int | None = None
    health: str | None = None
    error: str | None = None
    owner: str | None = None
    """Worker that started it."""
    test: str | None = None
    fixture: str | None = None
    phase: str | None = None
    """For ``fail``: the phase that failed (``engine``, ``create``, ``start``, ``ready``)."""
    during: dict[str, str] = {}
    """For engine events (``die``, ``oom``, ``leak``): worker -> the test it was running."""
    by: str | None = None
    """Who reported it: ``None`` for the worker's own probe, ``engine`` for the controller's
    watch of the container engine."""


# ---------------------------------------------------------------------- the hub


class Notice(Event, tag="notice", kw_only=True):
    """Something the monitor itself wants the user to know (malformed input, drops)."""

    level: Literal["info", "warning", "error"] = "warning"
    source: str = ""
    msg: str


class CommandReply(Event, tag="reply", kw_only=True):
    """A worker's answer to a :class:`Command`."""

    request: int
    cmd: str
    ok: bool = True
    result: dict[str, str | int | float | bool | None] = {}
    error: str | None = None


AnyEvent = (
    RunStarted
    | RunFinished
    | WorkerStarted
    | WorkerCollected
    | WorkerFinished
    | WorkerDown
    | WorkerCrashed
    | WorkerReplaced
    | TestFinished
    | Activity
    | Heartbeat
    | FixtureSetup
    | FixtureTeardown
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
# Annotated with the base classes: msgspec >= 0.23 infers the union of every struct, which
# `list` (invariant) would then carry into every caller; older releases infer Any.
_event_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(AnyEvent)
_control_decoder: msgspec.json.Decoder[Control] = msgspec.json.Decoder(AnyControl)
_stream_decoder: msgspec.json.Decoder[Event | Control] = msgspec.json.Decoder(AnyEvent | AnyControl)


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


def decode_event(line: bytes | str) -> Event:
    try:
        return _event_decoder.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(_reason(exc)) from None


def decode_events(data: bytes) -> list[Event]:
    """Decode newline-delimited events all at once; raises :class:`DecodeError` on any bad line."""
    try:
        return _event_decoder.decode_lines(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(_reason(exc)) from None


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


def decode_control(line: bytes | str) -> Control:
    try:
        return _control_decoder.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(_reason(exc)) from None


def decode_stream_line(line: bytes | str) -> Event | Control:
    """What a viewer reads from the hub: an event of the run or a control message."""
    try:
        return _stream_decoder.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise DecodeError(_reason(exc)) from None


def _reason(exc: Exception) -> str:
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
