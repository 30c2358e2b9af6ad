"""The recorder of one worker process (an xdist worker, or the single process without xdist).

It owns the worker's sender, watchdog and probes, announces the worker, reports its
collection, answers commands from viewers and flushes everything before xdist tells the
controller the worker is finished.
"""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType
from typing import Any

import pytest

from . import events as ev
from .activity import WorkerActivity
from .clock import now
from .guard import REAL
from .probes import locking
from .probes.containers import ContainerProbe
from .probes.lifecycle import LifecycleProbe, RerunPhases, may_rerun
from .probes.stalls import StallDetector, dump
from .probes.unresponsive import DumpSignal, arm_dump_signal
from .probes.watchdog import Watchdog
from .sender import DEFAULT_CAPACITY, FLUSH_INTERVAL, Sender, Ship
from .settings import PROBES_OFF_ENV

FINAL_FLUSH_SECONDS = 3.0
"""How long a worker waits at most to ship its last events."""


class WorkerRecorder:
    """pytest plugin object registered in each recording worker."""

    def __init__(
        self,
        worker_id: str,
        ship: Ship,
        *,
        spec: str = "",
        remote: bool = False,
        run_id: str = "",
        capacity: int = DEFAULT_CAPACITY,
        flush_interval: float = FLUSH_INTERVAL,
        stall: float = 0.0,
        dump_signal: bool = False,
        fixture_detail: float = 0.0,
    ) -> None:
        self.worker_id = worker_id
        self.root: str | None = None
        """The rootdir: user frames below it are shown relative to it."""
        self.spec = spec
        self.remote = remote
        t = now()
        self.activity = WorkerActivity(t)
        self.started = t
        self.sender = Sender(worker_id, ship, capacity=capacity, interval=flush_interval)
        self.emit = self.sender.emit
        self.lifecycle = LifecycleProbe(self.emit, self.activity, fixture_detail)
        self.watchdog = Watchdog(
            self.activity,
            self.emit,
            dropped=lambda: self.sender.dropped_total,
            pending=lambda: self.sender.pending,
        )
        self.locks = locking.LockReporter(self.emit, self.activity)
        self.containers = ContainerProbe(self.emit, self.activity, worker_id, run_id)
        self.stalls: StallDetector | None = None
        if stall > 0:
            self.stalls = StallDetector(
                self.activity, self.sender.emit_always, stall, skip=self._own_threads
            )
            self.watchdog.extra_checks.append(self.stalls.check)
        self.dump_signal: DumpSignal | None = None
        self.dump_problem: str | None = None
        if stall > 0 and dump_signal:
            armed = arm_dump_signal()
            if isinstance(armed, str):
                self.dump_problem = armed
            else:
                self.dump_signal = armed
        self._finished = False

    def _own_threads(self) -> set[int]:
        """The monitor's own threads, left out of stack samples."""
        return {i for i in (self.watchdog.ident, self.sender.ident) if i is not None}

    def start(self, config: pytest.Config) -> None:
        self.sender.emit_always(
            ev.WorkerStarted(
                ts=self.started,
                schema=ev.SCHEMA_VERSION,
                pid=REAL.getpid(),
                host=REAL.uname().nodename,
                python="{}.{}.{}".format(*sys.version_info[:3]),
                platform=sys.platform,
                cwd=REAL.getcwd(),
                spec=self.spec,
                remote=self.remote,
                main_thread=REAL.main_thread().ident,
                dump_signal=self.dump_signal.signum if self.dump_signal else None,
                dump_file=self.dump_signal.path if self.dump_signal else None,
                fixture_detail=self.lifecycle.detail,
            )
        )
        if self.dump_problem is not None:
            self.emit(
                ev.Notice(ts=now(), level="info", source=self.worker_id, msg=self.dump_problem)
            )
        self.root = str(config.rootpath)
        if self.stalls is not None:
            self.stalls.root = self.root
        config.pluginmanager.register(self.lifecycle, "testmon-live-lifecycle")
        self.lifecycle.time_fixtures(config)
        self._install_lock_probes()
        if self.dump_signal is not None:
            # Ship the announcement now, not on the sender's first tick: a test that grabs
            # the GIL right after collection must find the hub knowing this worker's pid
            # and dump signal (once per worker, one channel send).
            self.sender.flush()
        self.sender.start()
        if self.dump_signal is not None:
            self.dump_signal.on_disarm = self._dump_signal_lost
            self.dump_signal.watch()
            self.watchdog.extra_checks.append(self.dump_signal.check)
        self.watchdog.start()
        self.containers.install()
        if "containers" not in {p.strip() for p in os.environ.get(PROBES_OFF_ENV, "").split(",")}:
            from .probes.imports import when_imported

            def containers_loaded(_module: ModuleType) -> None:
                # The run may have containers: note this worker's connections from now on
                # (the controller's look from outside misses the brief ones).
                from .probes import portwatch

                portwatch.arm(self.emit, self.activity)

            when_imported("docker", containers_loaded)
            when_imported("testcontainers", containers_loaded)

    def _dump_signal_lost(self, why: str) -> None:
        """A test takes over the dump signal: say so (the hub will not signal any more)."""
        test = self.activity.test
        self.sender.emit_always(
            ev.Notice(
                ts=now(),
                level="info",
                source=self.worker_id,
                msg=f"{self.worker_id}: {why}{f' in {test}' if test else ''}: stacks of this "
                "worker, if it freezes in native code, can no longer be taken from outside",
            )
        )

    def _install_lock_probes(self) -> None:
        from .probes import drivers, filelock
        from .probes.imports import when_imported

        off = {p.strip() for p in os.environ.get(PROBES_OFF_ENV, "").split(",")}
        locking.activate(self.locks)
        if "filelock" not in off:
            filelock.install()
        if "sqlalchemy" not in off:
            checks = self.watchdog.extra_checks

            def sqlalchemy_loaded(_module: ModuleType) -> None:
                # The probe module (its regexes, its watchdog check) only in a worker whose
                # suite uses SQLAlchemy: a fixed cost every other worker does not pay.
                from .probes import sqlalchemy

                sqlalchemy.install(checks)

            when_imported("sqlalchemy", sqlalchemy_loaded)
        if "django" not in off:

            def django_loaded(module: ModuleType) -> None:
                from .probes import django

                django.install(module)

            when_imported("django", django_loaded)
        if "dbapi" not in off:
            checks = self.watchdog.extra_checks

            def driver_loaded(module: ModuleType) -> None:
                # As for SQLAlchemy: the probe's modules load with the first driver.
                from .probes import dbapi, dblocks

                dbapi.install_driver(module.__name__, module)
                dblocks.install(checks)

            def driver_not_wrapped(module: ModuleType) -> None:
                from .probes import dbapi

                dbapi.not_wrapped(module)

            for driver in drivers.RECORDED:
                when_imported(driver, driver_loaded)
            for driver in drivers.UNRECORDED:
                when_imported(driver, driver_not_wrapped)

    # -------------------------------------------------------------- pytest hooks

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # once per session: where each test stands in the collection xdist schedules by
        self.lifecycle.positions = {item.nodeid: i for i, item in enumerate(session.items)}
        t = now()
        self.emit(
            ev.WorkerCollected(
                ts=t,
                count=len(session.items),
                errors=int(session.testsfailed),
                duration=t - self.started,
            )
        )
        activity = self.activity
        activity.phase = "idle"
        activity.since = t
        if may_rerun(session):
            self.lifecycle.reports_tell_phases = False
            session.config.pluginmanager.register(
                RerunPhases(activity), "testmon-live-rerun-phases"
            )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # A plain (non-wrapper) impl: it runs before xdist's wrapper reports the worker
        # finished, so these events travel ahead of "workerfinished" on the same gateway.
        self.finish(int(exitstatus))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.finish(None)

    # ------------------------------------------------------------------ control

    def finish(self, exitstatus: int | None) -> None:
        if self._finished:
            return
        self._finished = True
        if locking.current() is self.locks:
            locking.activate(None)
        self.containers.uninstall()
        self.lifecycle.untime_fixtures()
        self.lifecycle.send_tallies(now())
        self.watchdog.stop()
        activity = self.activity
        activity.test = None
        activity.phase = "finish"
        activity.fixture = None
        self.watchdog.sample_activity()
        if self.stalls is not None:
            self.stalls.check(now())  # a stall in the last test ends here
        # Armed only once the run might have containers (never imported otherwise).
        portwatch = sys.modules.get(f"{__package__}.probes.portwatch")
        reached: list[ev.PortReached] = []
        if portwatch is not None:
            # ours: a bug here must not cost the worker its last word (or the run its status)
            try:
                reached = portwatch.unmatched()
            except Exception as exc:  # noqa: BLE001
                msg = f"ports reached not sent: {exc!r}"
                self.emit(ev.Notice(ts=now(), level="warning", source="containers", msg=msg))
        self.sender.emit_always(
            ev.WorkerFinished(
                ts=now(),
                sent=self.sender.sent + self.sender.pending + 1,
                dropped=self.sender.dropped,
                exitstatus=exitstatus,
                reached=reached,
            )
        )
        self.sender.close(FINAL_FLUSH_SECONDS)
        if self.dump_signal is not None:
            self.dump_signal.close()

    def handle_command(self, command: ev.Command) -> None:
        """Answer a viewer's command (arrives through the hub)."""
        if command.cmd == "ping":
            activity = self.activity
            self.emit(
                ev.CommandReply(
                    ts=now(),
                    request=command.id,
                    cmd="ping",
                    result={
                        "pid": REAL.getpid(),
                        "test": activity.test,
                        "phase": activity.phase,
                        "pending": self.sender.pending,
                    },
                )
            )
            return
        if command.cmd == "ports":
            # The controller's list of running containers' mapped ports (port -> id).
            from .probes import portwatch

            ports: dict[int, tuple[str, float]] = {}
            for port, value in command.args.items():
                cid, _, created = value.partition(" ")
                with contextlib.suppress(ValueError):
                    ports[int(port)] = (cid, float(created or 0))
            portwatch.watch(ports, self.emit, self.activity)
            return
        if command.cmd == "dump":
            self.sender.emit_always(
                dump(
                    self.activity,
                    # the thread answering (execnet's receiver, or the viewer's) is ours too
                    self._own_threads() | {REAL.get_ident()},
                    request=command.id,
                    root=self.root,
                )
            )
            return
        self.emit(
            ev.CommandReply(
                ts=now(),
                request=command.id,
                cmd=command.cmd,
                ok=False,
                error=f"unknown command {command.cmd!r} (this worker knows: ping, dump)",
            )
        )

    def on_channel_message(self, data: Any) -> None:
        """execnet channel callback (receiver thread): decode, dispatch, never raise."""
        if not isinstance(data, bytes):
            return
        try:
            message = ev.decode_control(data)
        except ev.DecodeError as exc:
            self.emit(ev.Notice(ts=now(), source=self.worker_id, msg=f"bad command: {exc}"))
            return
        if isinstance(message, ev.Command):
            self.handle_command(message)
