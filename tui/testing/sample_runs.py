"""Deterministic runs made of events, for the UI tests and the benchmarks.

:func:`demo_run` is shaped like a ``pytest -n 4 --monitor`` run of ``examples/demo``: four
workers contending on the migration lock, the ``database`` session fixture set up on every
worker, a straggler, a failure, a stall with its stacks, a shared container. Every timestamp
derives from :data:`T0`, so the same call gives the same log and the same screen.
:func:`slow_reports_run` is a run whose time goes between its tests' phases (pytest making
failure reports). :func:`synthetic_run` makes logs of any size for the benchmarks. (The
screenshots and snapshot tests show a real recorded run instead:
:mod:`testmon_live.tui.dashboard.screenshots`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from testmon_live.plugin import events as ev

T0 = 1_795_000_000.0
"""2026-11-17 07:06:40 UTC: the start of every sample run."""
RUN_ID = "20261117-070640-demo"
WORKERS = ("gw0", "gw1", "gw2", "gw3")
MIGRATION = 3.0
LOAD = 1.5

REFUND_LONGREPR = """\
order = {'id': 1, 'total': 100}

    def test_refund_rounding(order: dict[str, int]) -> None:
        refund = order["total"] / 3
>       assert round(refund * 3, 2) == 100.01, "refunds lose a cent"
E       AssertionError: refunds lose a cent
E       assert 100.0 == 100.01
E        +  where 100.0 = round((33.333333333333336 * 3), 2)

test_orders.py:16: AssertionError"""


@dataclass
class _Worker:
    wid: str
    now: float
    events: list[ev.Event] = field(default_factory=list)
    done: int = 0
    cpu: float = 0.3

    def add(self, event: ev.Event) -> None:
        self.events.append(event)


def _test(
    w: _Worker,
    nodeid: str,
    call: float,
    *,
    setup: float = 0.01,
    outcome: str = "passed",
    fixture: str | None = None,
    longrepr: str | None = None,
    message: str | None = None,
) -> ev.TestFinished:
    start = w.now
    w.add(ev.Activity(w=w.wid, ts=start, test=nodeid, phase="setup", since=start, fixture=fixture))
    call_start = start + setup
    w.add(ev.Activity(w=w.wid, ts=call_start, test=nodeid, phase="call", since=call_start))
    teardown_start = call_start + call
    w.add(
        ev.Activity(w=w.wid, ts=teardown_start, test=nodeid, phase="teardown", since=teardown_start)
    )
    end = teardown_start + 0.002
    call_outcome = outcome
    phases = [
        ev.Phase("setup", start, setup, "skipped" if outcome == "skipped" else "passed"),
    ]
    if outcome != "skipped":
        phases.append(ev.Phase("call", call_start, call, call_outcome))
    phases.append(ev.Phase("teardown", teardown_start, 0.002, "passed"))
    record = ev.TestFinished(
        w=w.wid,
        ts=end,
        nodeid=nodeid,
        outcome=outcome,
        phases=phases,
        duration=end - start,
        message=message,
        longrepr=longrepr,
        failed_when="call" if outcome == "failed" else None,
        fixtures=[ev.FixtureRun("order", start, 0.05)] if "orders" in nodeid else [],
    )
    w.add(record)
    w.now = end + 0.003
    w.done += 1
    return record


def _heartbeats(w: _Worker, start: float, end: float) -> None:
    """One a second; the phase comes from the worker's last activity at that moment."""
    acts = [e for e in w.events if isinstance(e, ev.Activity)]
    t = start + 1.0
    k = 0
    current: ev.Activity | None = None
    while t < end:
        while k < len(acts) and acts[k].ts <= t:
            current = acts[k]
            k += 1
        w.cpu += 0.35
        w.add(
            ev.Heartbeat(
                w=w.wid,
                ts=t,
                test=current.test if current else None,
                phase=current.phase if current else "idle",
                fixture=current.fixture if current else None,
                elapsed=t - current.since if current else 0.0,
                rss=48_000_000 + int((t - start) * 400_000),
                cpu=round(w.cpu, 2),
                threads=3,
            )
        )
        t += 1.0


def _stall_threads() -> list[ev.ThreadStack]:
    test_file = "examples/demo/test_reports.py"
    return [
        ev.ThreadStack(
            name="MainThread",
            ident=140001,
            verdict="event",
            detail="threading.Event.wait",
            frames=[
                ev.Frame("_pytest/python.py", 159, "pytest_pyfunc_call"),
                ev.Frame(test_file, 29, "test_report_waits_for_renderer", user=True),
                ev.Frame("threading.py", 629, "wait"),
                ev.Frame("threading.py", 331, "wait"),
            ],
        ),
        ev.ThreadStack(
            name="testmon-live-sender",
            ident=140002,
            daemon=True,
            verdict="idle",
            detail="threading.Condition.wait",
            frames=[ev.Frame("testmon_live/plugin/sender.py", 112, "_run")],
        ),
    ]


def demo_run(finished: bool = True) -> list[ev.Event]:
    """A run shaped like the demo suite's; without ``finished`` it lacks its end record."""
    header = ev.RunStarted(
        ts=T0,
        schema=ev.SCHEMA_VERSION,
        run_id=RUN_ID,
        rootdir="/home/dev/testmon-live/examples/demo",
        args=["-n", "4", "--monitor", "--monitor-stall=2"],
        python="3.12.3",
        platform="Linux-6.8-x86_64",
        hostname="devbox",
        pid=4242,
        workers=4,
        dist="load",
        tx=["popen"] * 4,
        stall_after=2.0,
    )
    run_level: list[ev.Event] = []
    workers = [_Worker(wid, T0 + 0.4 + 0.05 * i) for i, wid in enumerate(WORKERS)]
    for i, w in enumerate(workers):
        w.add(ev.WorkerStarted(w=w.wid, ts=w.now, schema=ev.SCHEMA_VERSION, pid=5000 + i))
        w.now += 0.6
        w.add(ev.WorkerCollected(w=w.wid, ts=w.now, count=59, duration=0.6))
        w.now += 0.05
    # the migration lock: gw0 migrates, the others queue behind it
    lock_free = workers[0].now  # gw0 comes first and finds the lock free
    first_tests = {
        "gw0": "test_orders.py::test_order_total[0]",
        "gw1": "test_customers.py::test_customer_profile[0]",
        "gw2": "test_reports.py::test_export[csv]",
        "gw3": "test_reports.py::test_quarterly_report",
    }
    setup_ends: dict[str, float] = {}
    container = "3f9c2a7d1e08"
    for order, w in enumerate(workers):
        nodeid = first_tests[w.wid]
        ask = w.now
        lock_id = f"{w.wid}-1"
        w.add(
            ev.Activity(w=w.wid, ts=ask, test=nodeid, phase="setup", fixture="database", since=ask)
        )
        w.add(
            ev.LockEvent(
                w=w.wid,
                ts=ask,
                action="wait",
                kind="filelock",
                key="migrations.lock",
                lock_id=lock_id,
                test=nodeid,
                fixture="database",
                holder=ev.Holder(w="gw0", fixture="database") if order else None,
            )
        )
        if order:
            w.add(
                ev.Activity(
                    w=w.wid,
                    ts=ask + 0.002,
                    test=nodeid,
                    phase="setup",
                    fixture="database",
                    since=ask,
                    waiting="lock:migrations.lock",
                )
            )
        got = ask if order == 0 else max(ask, lock_free)  # stable sort: wait stays first
        hold = MIGRATION if order == 0 else 0.05
        w.add(
            ev.LockEvent(
                w=w.wid,
                ts=got,
                action="acquired",
                kind="filelock",
                key="migrations.lock",
                lock_id=lock_id,
                test=nodeid,
                fixture="database",
                waited=round(got - ask, 3),
            )
        )
        if order == 0:
            w.add(
                ev.Activity(
                    w=w.wid, ts=got, test=nodeid, phase="setup", fixture="database", since=ask
                )
            )
            w.add(
                ev.ContainerEvent(
                    w=w.wid,
                    ts=got + 0.1,
                    action="create",
                    cid=container,
                    image="postgres:16",
                    name="demo-pg",
                    fixture="database",
                    dur=0.1,
                )
            )
            w.add(
                ev.ContainerEvent(
                    w=w.wid,
                    ts=got + 0.6,
                    action="start",
                    cid=container,
                    image="postgres:16",
                    dur=0.5,
                    ports={"5432/tcp": "127.0.0.1:32771"},
                )
            )
            w.add(
                ev.ContainerEvent(
                    w=w.wid,
                    ts=got + 2.2,
                    action="ready",
                    cid=container,
                    dur=1.6,
                    wait="log line 'database system is ready to accept connections'",
                )
            )
            w.add(
                ev.Migration(
                    w=w.wid,
                    ts=got + 2.3,
                    action="begin",
                    tool="alembic",
                    op="upgrade",
                    to_rev="42",
                    fixture="database",
                )
            )
            w.add(
                ev.Migration(
                    w=w.wid,
                    ts=got + hold - 0.01,
                    action="end",
                    tool="alembic",
                    op="upgrade",
                    to_rev="42",
                    duration=hold - 2.31,
                    fixture="database",
                )
            )
        else:
            w.add(
                ev.Activity(
                    w=w.wid, ts=got, test=nodeid, phase="setup", fixture="database", since=ask
                )
            )
            w.add(ev.ContainerEvent(w=w.wid, ts=got + 0.01, action="use", cid=container))
        released = got + hold
        w.add(
            ev.LockEvent(
                w=w.wid,
                ts=released,
                action="released",
                kind="filelock",
                key="migrations.lock",
                lock_id=lock_id,
                held=hold,
            )
        )
        lock_free = released
        setup_ends[w.wid] = released + LOAD
        w.add(
            ev.FixtureSetup(
                w=w.wid,
                ts=released + LOAD,
                name="database",
                scope="session",
                test=nodeid,
                start=ask,
                dur=released + LOAD - ask,
            )
        )
    run_level.append(
        ev.DbWait(
            w="gw1",
            ts=T0 + 9.0,
            dialect="postgresql",
            url="postgresql://demo:***@127.0.0.1/demo",
            statement="ALTER TABLE orders ADD COLUMN refunded numeric",
            waited=0.8,
            lock="AccessExclusiveLock on orders",
            blocked_by=ev.Holder(w="gw0", pid=771),
            test="test_customers.py::test_customer_profile[5]",
        )
    )
    # first tests, whose setup carried the session fixture
    for w in workers:
        nodeid = first_tests[w.wid]
        start = w.now
        setup = setup_ends[w.wid] - start
        call = 12.0 if "quarterly" in nodeid else 0.15 if "export" in nodeid else 0.1
        _test(w, nodeid, call, setup=setup, fixture="database")
    # the rest of the suite, dealt out as xdist's load scheduling would
    queue: list[tuple[str, float, dict[str, str]]] = [
        *((f"test_orders.py::test_order_total[{n}]", 0.1, {}) for n in range(1, 12)),
        ("test_orders.py::test_refund_rounding", 0.004, {"outcome": "failed"}),
        ("test_orders.py::test_payment_sandbox", 0.0, {"outcome": "skipped"}),
        *((f"test_reports.py::test_export[{f}]", 0.15, {}) for f in ("pdf", "xlsx", "json")),
        ("test_reports.py::test_report_waits_for_renderer", 5.0, {"stall": "yes"}),
        ("test_reports.py::test_export[html]", 0.15, {}),
        ("test_reports.py::test_report_timezone", 0.002, {"outcome": "xfailed"}),
        ("test_reports.py::test_export[md]", 0.15, {}),
        *(
            (f"test_customers.py::test_customer_profile[{n}]", 0.1 + n * 7 % 11 / 20, {})
            for n in range(1, 36)
        ),
    ]
    free = [w for w in workers if w.wid != "gw3"]
    for nodeid, call, opts in queue:
        w = min(free, key=lambda x: (x.now, x.wid))
        outcome = opts.get("outcome", "passed")
        if opts.get("stall"):
            began = w.now + 0.01
            stall_at = began + 2.0
            w.add(
                ev.Stall(
                    w=w.wid,
                    ts=stall_at,
                    test=nodeid,
                    phase="call",
                    elapsed=2.0,
                    location="examples/demo/test_reports.py:29 in test_report_waits_for_renderer",
                    threads=_stall_threads(),
                )
            )
            w.add(ev.StallEnded(w=w.wid, ts=began + call, test=nodeid, duration=call - 2.0))
        _test(
            w,
            nodeid,
            call,
            outcome=outcome,
            longrepr=REFUND_LONGREPR if outcome == "failed" else None,
            message="AssertionError: refunds lose a cent"
            if outcome == "failed"
            else "payment sandbox is down"
            if outcome == "skipped"
            else None,
        )
    end = max(w.now for w in workers) + 0.3
    for w in workers:
        _heartbeats(w, T0 + 0.4, w.now)
        w.add(ev.WorkerFinished(w=w.wid, ts=w.now + 0.05, sent=len(w.events) + 2))
        w.add(ev.WorkerDown(w=w.wid, ts=w.now + 0.1))
    stop = end
    w0 = workers[0]
    w0.add(
        ev.ContainerEvent(
            w=w0.wid, ts=end - 0.2, action="stop", cid=container, dur=0.15, exit_code=0
        )
    )
    body: list[ev.Event] = [*run_level]
    for w in workers:
        body.extend(w.events)
    body.sort(key=lambda e: e.ts)
    seqs: dict[str, int] = {}
    for event in body:
        seqs[event.w] = seqs.get(event.w, 0) + 1
        event.seq = seqs[event.w]
    out: list[ev.Event] = [header, *body]
    if finished:
        tests = [e for e in body if isinstance(e, ev.TestFinished)]
        counts: dict[str, int] = {}
        for t in tests:
            counts[t.outcome] = counts.get(t.outcome, 0) + 1
        out.append(
            ev.RunFinished(
                ts=stop,
                exitstatus=1,
                status="tests_failed",
                duration=stop - T0,
                events=len(out) + 1,
                tests=len(tests),
                counts=counts,
                workers=list(WORKERS),
                stalls=1,
                test_time=sum(t.duration for t in tests),
            )
        )
    return out


def cut(events: list[ev.Event], seconds: float) -> list[ev.Event]:
    """The events of the first ``seconds`` of a run: how it looked live at that moment."""
    limit = events[0].ts + seconds
    return [e for e in events if e.ts <= limit]


def write_log(path: Path, events: list[ev.Event]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ev.encode_lines(events))
    return path


def slow_reports_run(
    tests: int = 8,
    workers: int = 2,
    report: float = 0.5,
    between: float = 0.002,
    boot: float = 0.5,
    finish: float = 0.3,
) -> list[ev.Event]:
    """A ``-n workers`` run of failing ``tests`` whose phases take a millisecond each and
    whose call's failure report takes ``report`` seconds to make: between the call's end
    and the teardown's start, in no phase (pytest's durations leave it out). Each worker
    runs its share back to back, ``between`` seconds apart; the first tests start ``boot``
    seconds after the header, the end record comes ``finish`` seconds after the last."""
    header = ev.RunStarted(
        ts=T0,
        schema=ev.SCHEMA_VERSION,
        run_id="20261117-070640-reports",
        rootdir="/reports",
        workers=workers,
        dist="load",
        cpus=workers,
    )
    wids = [f"gw{k}" for k in range(workers)]
    out: list[ev.Event] = [header]
    for k, wid in enumerate(wids):
        out.append(ev.WorkerStarted(w=wid, ts=T0 + boot / 2, schema=ev.SCHEMA_VERSION, pid=k))
        out.append(ev.WorkerCollected(w=wid, ts=T0 + boot * 0.9, count=tests))
    now = dict.fromkeys(wids, T0 + boot)
    phase = 0.001
    records: list[ev.Event] = []
    for i in range(tests):
        wid = wids[i % workers]
        start = now[wid]
        teardown = start + 2 * phase + report
        end = teardown + phase
        records.append(
            ev.TestFinished(
                w=wid,
                ts=end,
                nodeid=f"test_reports.py::test_fails[{i}]",
                outcome="failed",
                phases=[
                    ev.Phase("setup", start, phase, "passed"),
                    ev.Phase("call", start + phase, phase, "failed"),
                    ev.Phase("teardown", teardown, phase, "passed"),
                ],
                duration=3 * phase,
                message="AssertionError",
                failed_when="call",
                index=i,
            )
        )
        now[wid] = end + between
    out += sorted(records, key=lambda e: e.ts)
    last = max(e.ts for e in records) if records else T0 + boot
    stop = last + finish
    out.append(
        ev.RunFinished(
            ts=stop,
            exitstatus=1,
            status="tests_failed",
            duration=stop - T0,
            tests=tests,
            counts={"failed": tests},
            workers=wids,
        )
    )
    return out


def synthetic_run(n_events: int, workers: int = 8) -> Iterator[ev.Event]:
    """About ``n_events`` events of a large run: per test an activity, a heartbeat now and
    then, and its record; deterministic, streamed (nothing held in memory)."""
    yield ev.RunStarted(
        ts=T0,
        schema=ev.SCHEMA_VERSION,
        run_id="20261117-070640-big",
        rootdir="/big",
        workers=workers,
    )
    for k in range(workers):
        yield ev.WorkerStarted(w=f"gw{k}", ts=T0 + 0.1, schema=ev.SCHEMA_VERSION, pid=100 + k)
    produced = workers + 1
    n = 0
    now = T0 + 1.0
    while produced < n_events - 1:
        wid = f"gw{n % workers}"
        nodeid = f"tests/test_mod{n // 500}.py::test_case[{n}]"
        start = now
        outcome = "failed" if n % 997 == 0 else "passed"
        yield ev.Activity(w=wid, ts=start, test=nodeid, phase="call", since=start)
        yield ev.TestFinished(
            w=wid,
            ts=start + 0.02,
            nodeid=nodeid,
            outcome=outcome,
            duration=0.02,
            phases=[
                ev.Phase("setup", start, 0.001, "passed"),
                ev.Phase("call", start + 0.001, 0.018, outcome),
                ev.Phase("teardown", start + 0.019, 0.001, "passed"),
            ],
            message="AssertionError" if outcome == "failed" else None,
        )
        produced += 2
        if n % 4 == 0:
            yield ev.Heartbeat(
                w=wid,
                ts=start + 0.01,
                test=nodeid,
                phase="call",
                rss=50_000_000,
                cpu=n / 1000,
                threads=3,
            )
            produced += 1
        n += 1
        now += 0.02 / workers
    yield ev.RunFinished(ts=now + 0.5, exitstatus=1, status="tests_failed", duration=now - T0)
