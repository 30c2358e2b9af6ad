"""The controller's recorder: opens a channel to each xdist worker, notes workers going down
or crashing, ends the log and prints the summary.

Without xdist the single process runs this and a :class:`~.worker.WorkerRecorder` for
itself (worker id ``main``).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import signal
import subprocess
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import pytest

from . import events as ev
from . import pytest_plugin
from .clock import now
from .guard import repr_of, text_of
from .hub import Hub
from .probes.lifecycle import RERUN, TestAssembler, short_text
from .settings import WORKERINPUT_KEY
from .summary import summary_lines

if TYPE_CHECKING:
    # Imported by session.py only when the docker SDK is installed.
    from .probes.container_engine import EngineWatch

CRASH_EXIT_WAIT = 1.0


def describe_exit(returncode: int | None) -> tuple[int | None, str | None]:
    """(exit code, signal name) from a Popen returncode."""
    if returncode is None:
        return None, None
    if returncode < 0:
        try:
            return None, signal.Signals(-returncode).name
        except ValueError:
            return None, f"signal {-returncode}"
    return returncode, None


def describe_spec(spec: Any) -> str:
    """``popen``, ``socket=host:port``, ``ssh=host``: the gateway as a user wrote it."""
    for kind in ("ssh", "socket", "vagrant_ssh"):
        value = getattr(spec, kind, None)
        if value:
            return f"{kind}={value}"
    if getattr(spec, "popen", False):
        via = getattr(spec, "via", None)
        return f"popen//via={via}" if via else "popen"
    return str(spec)


_ABSENT = object()
_REPORT_WATCH = "testmon-live-reports"


class _ReportWatch:
    """The fallback of :meth:`ControllerRecorder._watch_reports`: each xdist node's last
    report, as a hook implementation."""

    def __init__(self, last: dict[Any, pytest.TestReport]) -> None:
        self.last = last

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        node = getattr(report, "node", None)
        if node is not None:  # from an xdist worker
            self.last[node] = report


def _collect_message(report: pytest.CollectReport) -> str | None:
    """Why a collector failed or skipped, in a line. pytest's text of a module that failed
    to import (a ``CollectErrorRepr`` around it; plain text once xdist sent it, as is xdist's
    own of workers that collected different tests) has no exception to read: its exception
    line (``E   ModuleNotFoundError: ...``), else its first line. Any other as a test's
    (:func:`short_text`)."""
    longrepr = report.longrepr
    text = longrepr if isinstance(longrepr, str) else getattr(longrepr, "longrepr", None)
    if not isinstance(text, str):
        return short_text(report)
    lines = [line for line in text.splitlines() if line.strip()]
    raised = [line for line in lines if line.startswith("E ")]
    if raised:
        return raised[-1][1:].strip()
    return lines[0].strip() if lines else None


def _attempt(report: pytest.TestReport) -> int:
    """Which attempt of its test a report is of: pytest-rerunfailures numbers them from 0
    (``report.rerun``); 0 without it."""
    attempt = getattr(report, "rerun", 0)
    return attempt if isinstance(attempt, int) else 0


class ControllerRecorder:
    """pytest plugin object of the process that owns the hub."""

    def __init__(self, hub: Hub, config: pytest.Config) -> None:
        self.hub = hub
        self.config = config
        self.local_worker: Any = None
        self.engine: EngineWatch | None = None
        """The watch of the container engine, when the docker SDK is installed."""
        self.summary_done = False
        self._last_report: dict[Any, pytest.TestReport] = {}
        """xdist node -> the last phase report it sent. xdist's own reports leave a worker
        from its main thread as each phase ends: right even when the worker went silent
        before its watchdog could tell (native code grabbed the GIL). Kept as the report
        itself (3 reports a test pass here); :meth:`running` reads it when asked."""
        self._crashes: dict[str, ev.WorkerCrashed] = {}
        """Crashes seen in testnodedown, held until xdist names the test (handlecrashitem)."""
        self._to_replace: list[str] = []
        """Crashed workers, oldest first: xdist starts a worker in place of each (unless
        --max-worker-restart is reached), configuring it right after the crash."""

    # ------------------------------------------------------------------ xdist

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        self._flush_crashes()
        gateway = node.gateway
        worker = str(gateway.id)
        spec = gateway.spec
        if self._to_replace:
            replaces = self._to_replace.pop(0)
            self.hub.emit(ev.WorkerReplaced(w=worker, ts=now(), replaces=replaces))
        try:
            channel = gateway.newchannel()
            self.hub.attach_channel(worker, channel)
        except Exception as exc:  # noqa: BLE001 - the run goes on unmonitored for this worker
            self.hub.note(
                "error", f"cannot open a channel to {worker}: {repr_of(exc)}; it is not recorded"
            )
            return
        node.workerinput[WORKERINPUT_KEY] = {
            "channel": channel,
            "spec": describe_spec(spec),
            "remote": not getattr(spec, "popen", False) or bool(getattr(spec, "via", None)),
            "run_id": self.hub.run_id,
        }

    def _watch_reports(self) -> Callable[[], None] | None:
        """Keep each xdist worker's last phase report (for :meth:`running`) as xdist's loop
        takes it: on xdist's own ``worker_testreport``, wrapped for the loop, instead of a
        ``pytest_runtest_logreport`` implementation of ours (pluggy's dispatch of one more
        implementation, three times a test, costs more than the wrapper). An xdist whose
        ``worker_testreport`` takes other arguments gets the hook implementation instead.
        Returns what undoes the wrapping (None: nothing to undo)."""
        last = self._last_report
        dsession: Any = self.config.pluginmanager.get_plugin("dsession")
        original: Any = getattr(dsession, "worker_testreport", None)
        try:
            params = list(inspect.signature(original).parameters)
        except (TypeError, ValueError):
            params = []
        if params != ["node", "rep"]:
            if not self.config.pluginmanager.has_plugin(_REPORT_WATCH):
                self.config.pluginmanager.register(_ReportWatch(last), _REPORT_WATCH)
            return None
        own = vars(dsession).get("worker_testreport", _ABSENT)

        def worker_testreport(node: Any, rep: pytest.TestReport) -> object:
            last[node] = rep
            return original(node=node, rep=rep)

        dsession.worker_testreport = worker_testreport

        def undo() -> None:
            if vars(dsession).get("worker_testreport") is worker_testreport:
                if own is _ABSENT:
                    del dsession.worker_testreport
                else:
                    dsession.worker_testreport = own

        return undo

    def running(self, worker: str) -> tuple[str, str, float] | None:
        """(test, phase, since) of ``worker`` from xdist's reports; past a test's teardown
        (or before its first test), the setup of the next one its scheduler gave it (a
        worker frozen in a setup); None if it has none."""
        last: pytest.TestReport | None = None
        for node, report in list(self._last_report.items()):
            if str(node.gateway.id) == worker:
                last = report
                break
        if last is not None and last.when != "teardown":
            phase = "call" if last.when == "setup" and last.passed else "teardown"
            return last.nodeid, phase, last.stop
        test = self._scheduled(worker)
        if test is None:
            return None
        return test, "setup", last.stop if last is not None else 0.0

    def _scheduled(self, worker: str) -> str | None:
        """The test xdist's scheduler has ``worker`` on: the first it has not completed
        (the one xdist itself names when that worker crashes). Read from the hub's thread
        while xdist changes it: anything unexpected is no answer."""
        dsession = self.config.pluginmanager.get_plugin("dsession")
        sched: Any = getattr(dsession, "sched", None)
        try:
            pending = getattr(sched, "node2pending", None)
            if isinstance(pending, dict):
                for node, indices in list(pending.items()):
                    if str(node.gateway.id) == worker and indices:
                        collection = getattr(sched, "collection", None)
                        if collection is None:  # --dist each: a collection a node
                            collection = sched.node2collection[node]
                        return str(collection[indices[0]])
            assigned = getattr(sched, "assigned_work", None)
            if isinstance(assigned, dict):  # loadscope, loadfile, loadgroup
                for node, scopes in list(assigned.items()):
                    if str(node.gateway.id) == worker:
                        for tests in list(scopes.values()):
                            for nodeid, completed in list(tests.items()):
                                if not completed:
                                    return str(nodeid)
        except Exception:  # noqa: BLE001 - xdist's internals, changing under us
            return None
        return None

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        self._flush_crashes()
        worker = str(node.gateway.id)
        self.hub.detach(worker)
        if error is None:
            self.hub.emit(ev.WorkerDown(w=worker, ts=now()))
            return
        exitcode, signame, note = self._exit_of(node)
        self._to_replace.append(worker)
        self._recover_lost_tests(node, worker)
        view = self.hub.state.workers.get(worker)
        self._crashes[worker] = ev.WorkerCrashed(
            w=worker,
            ts=now(),
            error=ev.clip(text_of(error), 2000) or "worker went away",
            test=view.test if view is not None else None,
            exitcode=exitcode,
            signal=signame,
            note=note,
        )

    def _flush_crashes(self) -> None:
        while self._crashes:
            _, crash = self._crashes.popitem()
            self.hub.emit(crash)

    # after pytest-rerunfailures' own, which may put the test back to run again ("rerun")
    @pytest.hookimpl(optionalhook=True, trylast=True)
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        node = getattr(report, "node", None)
        worker = str(node.gateway.id) if node is not None else ""
        # its attempts run again before the crash, on that worker: never shipped
        earlier = self._reruns_of(crashitem, node)
        again = getattr(report, "outcome", None) == RERUN
        crash = self._crashes.pop(worker, None)
        if crash is not None:
            crash.test = crashitem
            if again:  # the test runs again elsewhere: this attempt is a rerun, no failure
                crash.reruns = earlier + 1
            self.hub.emit(crash)
        if again:
            return
        record = ev.TestFinished(
            w=worker,
            ts=now(),
            nodeid=crashitem,
            outcome="failed",
            message=text_of(report.longrepr),
            failed_when="call",
            crashed=True,
        )
        if earlier:
            record.reruns = earlier
        self.hub.emit(record)

    # ------------------------------------------------------------------ collection

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A collector that failed or skipped: counted as pytest's terminal reporter counts
        it, from the same reports (under xdist, those xdist passes on to this process's
        hooks: a failure shared by several workers once). Every collector of a run without
        xdist comes here, one per module or class: the passed ones cost a check."""
        if report.passed:
            return
        if report.skipped and self.config.option.collectonly:
            return  # pytest's line after --collect-only counts no skipped
        local = self.local_worker
        self.hub.emit(
            ev.CollectionReport(
                w=local.worker_id if local is not None else "",
                ts=now(),
                nodeid=report.nodeid,
                outcome="error" if report.failed else "skipped",
                message=ev.clip(_collect_message(report), 2000),
            )
        )

    def _reports(self) -> dict[str, list[Any]]:
        """The reports pytest's terminal reporter kept, by category (xdist's from every
        worker among them)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        return getattr(reporter, "stats", None) or {}

    def _reruns_of(self, nodeid: str, node: Any) -> int:
        """pytest-rerunfailures' ``rerun`` reports of a test on one worker (pytest's count)."""
        if node is None:
            return 0
        stats = self._reports()
        return sum(
            1
            for rep in stats.get(RERUN, ())
            if getattr(rep, "node", None) is node and getattr(rep, "nodeid", None) == nodeid
        )

    def _recover_lost_tests(self, node: Any, worker: str) -> None:
        """A dead worker's last batch (up to one flush interval) never arrived; xdist's own
        reports of those tests did. Rebuild them, marked ``recovered``."""
        stats = self._reports()
        mine = [
            rep
            for reports in stats.values()
            for rep in reports
            if getattr(rep, "node", None) is node
            and isinstance(rep, pytest.TestReport)
            and rep.when in ("setup", "call", "teardown")
        ]
        view = self.hub.state.workers.get(worker)
        last = view.last_test if view is not None else None
        # The worker ships in order: what ended after the last test that arrived was lost.
        after = max(
            (r.stop for r in mine if r.nodeid == last and r.when == "teardown"), default=0.0
        )
        by_test: dict[str, list[pytest.TestReport]] = {}
        for rep in mine:
            if rep.stop > after:
                by_test.setdefault(rep.nodeid, []).append(rep)
        order = {"setup": 0, "call": 1, "teardown": 2}
        for nodeid, reports in sorted(by_test.items(), key=lambda kv: min(r.start for r in kv[1])):
            # attempt by attempt (pytest-rerunfailures numbers them ``rerun``), phase by phase
            reports.sort(key=lambda r: (_attempt(r), order[r.when]))
            if reports[-1].when != "teardown":
                continue  # the test the worker died in: handle_crashitem reports it
            assembler = TestAssembler()
            attempt = _attempt(reports[0])
            for rep in reports:
                if _attempt(rep) != attempt:  # a new attempt starts as its logstart would
                    attempt = _attempt(rep)
                    assembler.reset()
                assembler.add(rep, rep.start)
            record = assembler.finish(nodeid, reports[-1].stop)
            if record is None:  # its last attempt was to run again: the worker died first
                continue
            record.w = worker
            record.recovered = True
            self.hub.emit(record)

    def _exit_of(self, node: Any) -> tuple[int | None, str | None, str | None]:
        io = getattr(node.gateway, "_io", None)
        popen = getattr(io, "popen", None)
        if not isinstance(popen, subprocess.Popen):
            return None, None, "remote worker: its exit code is not known to the controller"
        try:
            returncode = popen.wait(CRASH_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            return None, None, "the worker process had not exited when its channel closed"
        code, signame = describe_exit(returncode)
        return code, signame, None

    # ------------------------------------------------------------------ session

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, None, object]:
        # An xdist controller runs no test: what it holds when its loop starts (pytest, its
        # plugins, the hub) lives to the end. Frozen, the collector no longer walks it again
        # in each full collection while the loop takes the workers' reports: the hub's
        # allocations per event pushed a 3,000-test run's controller into one more full
        # collection (~80 ms on a slow day). Only for the loop: every sessionfinish hook
        # (a user's cleanup may count on gc.collect()) runs unfrozen. Never where tests run
        # (no xdist; a pytest run inside a test's process), nor when the process froze
        # objects of its own.
        froze = (
            self.local_worker is None
            and len(pytest_plugin.CONFIGURED) == 1
            and gc.isenabled()
            and gc.get_freeze_count() == 0
        )
        # Reports are taken in the loop: watched for its length only (not without xdist).
        unwatch = self._watch_reports() if self.local_worker is None else None
        if froze:
            gc.freeze()
        try:
            return (yield)
        finally:
            if froze:
                gc.unfreeze()
            if unwatch is not None:
                unwatch()

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(
        self, session: pytest.Session, exitstatus: int
    ) -> Generator[None, None, None]:
        # Innermost wrapper: every plain sessionfinish (xdist tearing nodes down, the local
        # worker's last flush) has run; the terminal summary has not been printed yet.
        try:
            return (yield)
        finally:
            self.finish(int(session.exitstatus))

    def finish(self, exitstatus: int | None) -> None:
        self._flush_crashes()
        if self.local_worker is not None:
            self.local_worker.finish(exitstatus)
            self.hub.emit(ev.WorkerDown(w=self.local_worker.worker_id, ts=now()))
            self.local_worker = None
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.finish()
        self.hub.close(exitstatus)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.summary_done:
            return
        self.summary_done = True
        verbosity = int(self.config.get_verbosity())
        lines = summary_lines(self.hub.state, self.hub.log_path, self.hub.problems, verbosity)
        if verbosity < -1:
            terminalreporter.write_line(lines[-1])
            return
        terminalreporter.write_sep("-", "testmon-live")
        for line in lines:
            terminalreporter.write_line(line)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # A session that never reached sessionfinish (usage error, crash in collection).
        with contextlib.suppress(Exception):
            self.finish(None)
