"""Exports of a recorded run: a Perfetto / Chrome trace, and JUnit XML.

Perfetto (``--format perfetto``) writes Chrome's JSON trace format, which ui.perfetto.dev
and chrome://tracing open: one process for the run, per worker one track of tests (with
their setup / call / teardown phases and fixtures nested inside), one track of lock waits
and one of container phases; stalls, crashes and deadlocks are instant events; RSS and CPU
from the heartbeats are counters. Slices on one track always nest (a trace viewer shows
partial overlaps wrongly), so what may overlap a test gets a track of its own.

JUnit (``--format junit``) writes the XML that CI systems read, one ``testcase`` per test
run, with the worker as a property, and the monitor's findings as ``testmon.*`` properties:
of the run on the ``testsuite`` (status, efficiency, deadlocks, racing migrations, dead and
leaked containers, dropped events), of a test on its ``testcase`` (its stall or frozen spell
with where and why, the crash that ended it, the deadlock it was part of, its lock waits,
the container that died under it, a failure that looks like state another test left).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from testmon_live.plugin import events as ev
from testmon_live.plugin.notices import looks_polluted, verdict_words
from testmon_live.plugin.state import (
    ContainerView,
    RunState,
    StallRecord,
    lock_label,
    worker_order,
)
from testmon_live.plugin.summary import race_line
from testmon_live.plugin.words import death_words, exit_words

from .values import iso_time

Trace = dict[str, Any]
TRACKS = ("tests", "locks", "containers")


def _us(seconds: float, origin: float) -> float:
    return round((seconds - origin) * 1_000_000, 3)


class TraceBuilder:
    def __init__(self, state: RunState) -> None:
        self.state = state
        self.origin = state.started
        self.events: list[dict[str, Any]] = []
        workers = sorted({t.w for t in state.tests} | set(state.workers), key=worker_order)
        self.tid: dict[tuple[str, str], int] = {}
        for n, worker in enumerate(workers):
            for k, track in enumerate(TRACKS):
                tid = n * len(TRACKS) + k + 1
                self.tid[(worker, track)] = tid
                name = worker if track == "tests" else f"{worker} {track}"
                self.events.append(_meta("thread_name", tid, name))
                self.events.append(_meta("thread_sort_index", tid, tid))
        title = f"testmon-live run {state.run_id}"
        self.events.append(
            {"ph": "M", "pid": 1, "tid": 0, "name": "process_name", "args": {"name": title}}
        )

    def track(self, worker: str, kind: str = "tests") -> int:
        if (worker, kind) not in self.tid:
            base = len(self.tid) + 1
            for k, track in enumerate(TRACKS):
                self.tid[(worker, track)] = base + k
                self.events.append(
                    _meta(
                        "thread_name", base + k, worker if track == "tests" else f"{worker} {track}"
                    )
                )
        return self.tid[(worker, kind)]

    def slice(
        self,
        worker: str,
        kind: str,
        name: str,
        cat: str,
        start: float,
        end: float,
        args: dict[str, Any] | None = None,
    ) -> None:
        """A slice from ``start`` to ``end`` (seconds). Both ends are rounded on their own, so
        a child computed from the same numbers as its parent's end never sticks out."""
        ts = _us(start, self.origin)
        self.events.append(
            {
                "ph": "X",
                "pid": 1,
                "tid": self.track(worker, kind),
                "name": name,
                "cat": cat,
                "ts": ts,
                "dur": max(0.0, round(_us(end, self.origin) - ts, 3)),
                "args": args or {},
            }
        )

    def instant(self, worker: str, name: str, cat: str, ts: float, args: dict[str, Any]) -> None:
        self.events.append(
            {
                "ph": "i",
                "s": "t",
                "pid": 1,
                "tid": self.track(worker),
                "name": name,
                "cat": cat,
                "ts": _us(ts, self.origin),
                "args": args,
            }
        )

    def build(self, events: list[ev.Event]) -> Trace:
        for test in self.state.tests:
            self._test(test)
        self._wide_fixtures(events)
        self._locks(events)
        self._containers(events)
        self._instants(events)
        header = self.state.header
        return {
            "traceEvents": self.events,
            "displayTimeUnit": "ms",
            "metadata": {
                "run_id": self.state.run_id,
                "rootdir": header.rootdir if header else "",
                "started": self.origin,
                "tool": "testmon-live",
            },
        }

    def _test(self, test: ev.TestFinished) -> None:
        if not test.phases:  # a crashed test: only the controller's note of it
            self.instant(
                test.w, f"crashed: {test.nodeid}", "crash", test.ts, {"message": test.message or ""}
            )
            return
        begin = ev.test_started(test)
        end = max(p.start + p.dur for p in test.phases)
        args = {"nodeid": test.nodeid, "outcome": test.outcome}
        if test.message:
            args["message"] = test.message
        self.slice(test.w, "tests", test.nodeid, f"test,{test.outcome}", begin, end, args)
        spans: dict[str, tuple[float, float]] = {}
        for phase in test.phases:
            phase_end = phase.start + phase.dur
            spans[phase.when] = (phase.start, phase_end)
            self.slice(
                test.w,
                "tests",
                phase.when,
                f"phase,{phase.outcome}",
                phase.start,
                phase_end,
                {"outcome": phase.outcome},
            )
        for fx in test.fixtures:
            # fixtures are timed by the monitor's clock, phases by pytest's: keep each
            # fixture inside its phase so the tracks nest
            name = f"fixture {fx.name}"
            lo, hi = spans.get("setup", (begin, end))
            self.slice(
                test.w,
                "tests",
                name,
                "fixture",
                *_inside(fx.setup_start, fx.setup_start + fx.setup_dur, lo, hi),
                {"scope": "function", "when": "setup"},
            )
            if fx.teardown_start:
                lo, hi = spans.get("teardown", (begin, end))
                self.slice(
                    test.w,
                    "tests",
                    name,
                    "fixture",
                    *_inside(fx.teardown_start, fx.teardown_start + fx.teardown_dur, lo, hi),
                    {"scope": "function", "when": "teardown"},
                )

    def _wide_fixtures(self, events: list[ev.Event]) -> None:
        for e in events:
            if isinstance(e, (ev.FixtureSetup, ev.FixtureTeardown)):
                when = "setup" if isinstance(e, ev.FixtureSetup) else "teardown"
                self.slice(
                    e.w,
                    "tests",
                    f"fixture {e.name}",
                    "fixture",
                    e.start,
                    e.start + e.dur,
                    {"scope": e.scope, "when": when, "test": e.test or ""},
                )

    def _locks(self, events: list[ev.Event]) -> None:
        waits: dict[str, ev.LockEvent] = {}
        for e in events:
            if not isinstance(e, ev.LockEvent):
                continue
            if e.action == "wait":
                waits[e.lock_id] = e
            elif e.action in ("acquired", "failed"):
                wait = waits.pop(e.lock_id, None)
                waited = e.waited if e.waited is not None else (e.ts - wait.ts if wait else 0.0)
                if waited > 0:
                    named = self.state.holder(e)
                    holder = named.w if named is not None and named.w else ""
                    self.slice(
                        e.w,
                        "locks",
                        f"wait {e.key}",
                        f"lock,{e.kind}",
                        e.ts - waited,
                        e.ts,
                        {"kind": e.kind, "key": e.key, "holder": holder, "result": e.action},
                    )

    def _containers(self, events: list[ev.Event]) -> None:
        for e in events:
            if isinstance(e, ev.ContainerEvent) and e.dur is not None and e.w:
                self.slice(
                    e.w,
                    "containers",
                    f"{e.action} {e.image or e.cid}",
                    "container",
                    e.ts - e.dur,
                    e.ts,
                    {"cid": e.cid, "image": e.image},
                )

    def _instants(self, events: list[ev.Event]) -> None:
        for e in events:
            if isinstance(e, ev.Stall):
                self.instant(
                    e.w,
                    f"stall: {e.test or e.phase}",
                    "stall",
                    e.ts,
                    {"reason": e.reason, "elapsed": e.elapsed, "location": e.location or ""},
                )
            elif isinstance(e, ev.WorkerCrashed):
                self.instant(
                    e.w,
                    "worker crashed",
                    "crash",
                    e.ts,
                    {"test": e.test or "", "signal": e.signal or "", "exitcode": e.exitcode},
                )
            elif isinstance(e, ev.Deadlock):
                for edge in e.cycle:
                    self.instant(edge.w, "deadlock", "deadlock", e.ts, {"text": e.text})
            elif isinstance(e, ev.Heartbeat):
                self.events.append(
                    {
                        "ph": "C",
                        "pid": 1,
                        "name": f"{e.w} rss MiB",
                        "ts": _us(e.ts, self.origin),
                        "args": {"rss": round(e.rss / 2**20, 1)},
                    }
                )


def _inside(start: float, end: float, lo: float, hi: float) -> tuple[float, float]:
    start = min(max(start, lo), hi)
    return start, min(max(end, start), hi)


def _meta(name: str, tid: int, value: object) -> dict[str, Any]:
    key = "name" if name == "thread_name" else "sort_index"
    return {"ph": "M", "pid": 1, "tid": tid, "name": name, "args": {key: value}}


def perfetto(state: RunState, events: list[ev.Event]) -> str:
    return json.dumps(TraceBuilder(state).build(events), separators=(",", ":"))


# ---------------------------------------------------------------------- junit


def _split(nodeid: str) -> tuple[str, str]:
    """(classname, name) the way pytest's junitxml names them."""
    path, _, rest = nodeid.partition("::")
    parts = rest.split("::") if rest else [path]
    module = path.removesuffix(".py").replace("/", ".")
    return ".".join([module, *parts[:-1]]), parts[-1]


Findings = list[tuple[str, str]]
"""``(name, value)`` properties, in order."""


def _run_findings(state: RunState) -> Findings:
    """What the monitor found about the run as a whole."""
    found: Findings = [("testmon.run", state.run_id), ("testmon.status", state.status)]
    if state.slots() > 1:
        found.append(("testmon.parallel_efficiency", f"{state.efficiency():.2f}"))
    found += [
        ("testmon.stalls", str(state.stall_count())),
        ("testmon.crashes", str(len(state.crashes))),
        ("testmon.deadlocks", str(len(state.deadlocks))),
    ]
    found += [("testmon.deadlock", d.text) for d in state.deadlocks]
    found += [("testmon.race", race_line(race)) for race in state.setup_races.values()]
    for place, workers in state.migration_races.items():
        names = ", ".join(sorted(workers, key=worker_order))
        found.append(("testmon.race", f"{names} migrated {state.race_where(place)} at once"))
    for view in state.dead_containers():
        found.append(("testmon.container_died", _container_words(view)))
    found += [
        ("testmon.container_leaked", f"{c.name or c.cid} ({c.image}) started by {c.owner or '?'}")
        for c in state.leaked_containers()
    ]
    dropped = state.dropped_total()
    if dropped:
        found.append(("testmon.dropped_events", str(dropped)))
    return found


def _container_words(view: ContainerView) -> str:
    return f"{view.name or view.cid} ({view.image}) died: {death_words(view.state, view.exit_code)}"


def _test_findings(state: RunState) -> dict[tuple[str, str], Findings]:
    """(worker, node id) -> what the monitor found about that test run."""
    found: dict[tuple[str, str], Findings] = defaultdict(list)
    for record in state.stall_records:
        if record.test:
            found[(record.w, record.test)].append(_stall_finding(record))
    for crash in state.crashes:
        if crash.test:
            found[(crash.w, crash.test)].append(("testmon.crash", exit_words(crash)))
    for deadlock in state.deadlocks:
        for edge in deadlock.cycle:
            if edge.test:
                found[(edge.w, edge.test)].append(("testmon.deadlock", deadlock.text))
    waits: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for lock in state.lock_events:
        if lock.action != "wait" and lock.test and (lock.waited or 0.0) > 0.0:  # every wait
            waits[(lock.w, lock.test)][lock_label(lock.kind, lock.key)] += lock.waited or 0.0
    for key, by_lock in waits.items():
        text = ", ".join(f"{wait:.3f}s on {label}" for label, wait in by_lock.items())
        found[key].append(("testmon.lock_wait", text))
    for race in state.setup_races.values():
        for worker, nodeid in race.tests.items():
            found[(worker, nodeid)].append(("testmon.race", race_line(race)))
    for migration in state.migrations:
        place = state.race_of(migration)
        if place is None or not migration.test:
            continue
        names = ", ".join(sorted(state.migration_races[place], key=worker_order))
        finding = ("testmon.race", f"{names} migrated {state.race_where(place)} at once")
        said = found[(migration.w, migration.test)]
        if finding not in said:  # a test's create_all and drop_all: one race
            said.append(finding)
    for view in state.dead_containers():
        died = _container_words(view)
        for worker, nodeid in view.during.items():
            found[(worker, nodeid)].append(("testmon.container_died", died))
    for failure in state.failures:
        if looks_polluted(failure):
            hint = f"testmon suspects {state.run_id} {failure.nodeid}"
            found[(failure.w, failure.nodeid)].append(("testmon.looks_polluted", hint))
    return found


def _stall_finding(record: StallRecord) -> tuple[str, str]:
    first = record.at_place
    took = record.duration if record.duration is not None else record.elapsed
    text = f"{took:.2f}s in {first.phase}" + (f" at {first.location}" if first.location else "")
    threads = [f"{t.name} {verdict_words(t)}" for t in first.threads if t.verdict != "idle"]
    if threads:
        text += " (" + "; ".join(threads) + ")"
    kind = "testmon.stall" if record.reason == "stall" else "testmon.unresponsive"
    return kind, text


def _properties(parent: ET.Element, found: Findings) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in found:
        ET.SubElement(props, "property", name=name, value=value)


def _cases(state: RunState) -> Iterator[ET.Element]:
    findings = _test_findings(state)
    for test in state.tests:
        classname, name = _split(test.nodeid)
        case = ET.Element("testcase", classname=classname, name=name, time=f"{test.duration:.3f}")
        _properties(case, [("worker", test.w), *findings.get((test.w, test.nodeid), [])])
        message = test.message or ""
        text = test.longrepr or message
        if test.outcome == "failed" or test.crashed:
            ET.SubElement(case, "failure", message=message).text = text
        elif test.outcome == "error":
            ET.SubElement(case, "error", message=message).text = text
        elif test.outcome in ("skipped", "xfailed"):
            ET.SubElement(
                case,
                "skipped",
                type="pytest.xfail" if test.outcome == "xfailed" else "pytest.skip",
                message=message,
            )
        yield case


def junit(state: RunState) -> str:
    cases = list(_cases(state))
    outcomes = [t.outcome for t in state.tests]
    suite = ET.Element(
        "testsuite",
        name="pytest",
        tests=str(len(cases)),
        failures=str(sum(1 for t in state.tests if t.outcome == "failed" or t.crashed)),
        errors=str(outcomes.count("error")),
        skipped=str(outcomes.count("skipped") + outcomes.count("xfailed")),
        time=f"{state.wall():.3f}",
        timestamp=iso_time(state.started),
        hostname=state.header.hostname if state.header else "",
    )
    _properties(suite, _run_findings(state))
    suite.extend(cases)
    root = ET.Element("testsuites", name=f"testmon-live run {state.run_id}")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
