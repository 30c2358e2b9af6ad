"""Wiring: which recorders a process gets when ``--monitor`` is on.

- xdist controller: a hub (log, viewers) and a :class:`ControllerRecorder`.
- xdist worker: a :class:`WorkerRecorder` shipping through the channel the controller
  put into ``workerinput``.
- no xdist: both in one process; the worker records itself as ``main``.

Starting the monitor may fail (read-only disk, say): the run then goes on unrecorded,
with a line in pytest's terminal summary that says why - never a warning (the user's
warning filters may turn it into an error) and never an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from .settings import WORKERINPUT_KEY, Settings

if TYPE_CHECKING:
    from .controller import ControllerRecorder
    from .worker import WorkerRecorder

controller_key: pytest.StashKey[ControllerRecorder] = pytest.StashKey()
worker_key: pytest.StashKey[WorkerRecorder] = pytest.StashKey()

LOCAL_WORKER = "main"


class NotRecording:
    """Says in the terminal summary that, and why, this run is not recorded."""

    def __init__(self, why: str) -> None:
        self.why = why

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_line(f"testmon-live: not recording this run: {self.why}")


def docker_sdk_available() -> bool:
    """Is the docker SDK installed (checked without importing it)?"""
    import importlib.util

    try:
        return importlib.util.find_spec("docker") is not None
    except (ImportError, ValueError):
        return False


def install(config: pytest.Config, settings: Settings) -> None:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        _install_worker(config, settings, workerinput)
        return
    _install_controller(config, settings)


def _install_worker(config: pytest.Config, settings: Settings, workerinput: dict[str, Any]) -> None:
    from .worker import WorkerRecorder

    link = workerinput.get(WORKERINPUT_KEY)
    if not link:
        return  # the controller is not recording (e.g. --monitor only in this worker's args)
    channel = link["channel"]

    def ship(data: bytes, _events: list[Any]) -> None:
        channel.send(data)

    recorder = WorkerRecorder(
        str(workerinput["workerid"]),
        ship,
        spec=str(link.get("spec", "")),
        remote=bool(link.get("remote", False)),
        run_id=str(link.get("run_id", "")),
        capacity=settings.queue,
        flush_interval=settings.flush,
        stall=settings.stall,
        dump_signal=True,
        fixture_detail=settings.fixture_detail,
    )
    channel.setcallback(recorder.on_channel_message)
    config.pluginmanager.register(recorder, "testmon-live-worker")
    config.stash[worker_key] = recorder
    recorder.start(config)


def _install_controller(config: pytest.Config, settings: Settings) -> None:
    from .controller import ControllerRecorder
    from .hub import Hub
    from .runinfo import build_header, xdist_active
    from .runlog import MonitorDir, new_run_id

    run_id = new_run_id()
    header = build_header(config, run_id, settings.stall, settings.env_keep, settings.order)
    hub = Hub(MonitorDir(settings.directory), header, listen=settings.listen, keep=settings.keep)
    try:
        hub.start()
    except OSError as exc:
        # Not a warning: under -W error / filterwarnings = error that would become the
        # user's INTERNALERROR. A line of the terminal summary, which no filter touches.
        config.pluginmanager.register(NotRecording(f"{exc}"), "testmon-live-not-recording")
        return
    controller = ControllerRecorder(hub, config)
    config.pluginmanager.register(controller, "testmon-live-controller")
    config.stash[controller_key] = controller
    from .live import LiveNotices

    live = LiveNotices(hub, controller, config, settings)
    config.pluginmanager.register(live, "testmon-live-notices")
    live.start()
    if docker_sdk_available():
        # The watch's module and thread only once the run has a container (never, in most
        # runs): the engine's events are asked for from the run's start, nothing is missed.
        def watch_engine() -> None:
            if hub.closed:
                return  # a container reported as the run ends: nothing left to watch
            from .probes.container_engine import EngineWatch

            engine = EngineWatch(hub, run_id, header.ts)
            controller.engine = engine
            engine.start()

        hub.when_container(watch_engine)
    if xdist_active(config):
        if settings.stall > 0:
            hub.watch_silence(settings.stall, controller.running)
        return
    from .worker import WorkerRecorder

    recorder = WorkerRecorder(
        LOCAL_WORKER,
        hub.ingest_local,
        run_id=run_id,
        capacity=settings.queue,
        flush_interval=settings.flush,
        stall=settings.stall,
        fixture_detail=settings.fixture_detail,
    )
    hub.attach_local(LOCAL_WORKER, recorder.handle_command)
    controller.local_worker = recorder
    config.pluginmanager.register(recorder, "testmon-live-worker")
    config.stash[worker_key] = recorder
    recorder.start(config)
