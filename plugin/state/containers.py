"""The fold's containers: each container's life, and per image what starting it cost.

:class:`ContainerFold` is the part of :class:`~.fold.RunState` that folds container events.
"""

from __future__ import annotations

import msgspec

from testmon_live.plugin import events as ev

from .workers import WorkerFold


class ContainerView(msgspec.Struct):
    cid: str
    image: str = ""
    name: str = ""
    state: str = "created"
    owner: str | None = None
    test: str | None = None
    fixture: str | None = None
    created: float | None = None
    ready: float | None = None
    ended: float | None = None
    ports: dict[str, str] = msgspec.field(default_factory=dict)
    phases: dict[str, float] = msgspec.field(default_factory=dict)
    """action -> seconds it took (create, start, ready, stop, remove)."""
    users: set[str] = msgspec.field(default_factory=set)
    exit_code: int | None = None
    health: str | None = None
    error: str | None = None
    wait: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    stop_requested: float | None = None
    """When its owner asked it to stop (exits after that are the teardown)."""
    failed_phase: str | None = None
    """For a failed container: engine, create, start, ready or remove."""
    died: float | None = None
    """When the engine saw it exit (or be OOM-killed) without its owner stopping it."""
    during: dict[str, str] = msgspec.field(default_factory=dict)
    """worker -> the test it was running when the container died."""
    leaked: bool = False
    """Still there when the run ended."""
    removed_by: str | None = None
    """``engine``: removed, but not by the worker that started it."""
    stopped_while_used: list[str] = msgspec.field(default_factory=list)
    """Other workers that had used it and were still running when its owner stopped it."""
    used_after_end: list[str] = msgspec.field(default_factory=list)
    """Workers that looked it up after it had stopped or died."""

    @property
    def startup(self) -> float:
        """Seconds from create to ready (the cost a worker paid to have it)."""
        phases = self.phases
        return phases.get("create", 0.0) + phases.get("start", 0.0) + phases.get("ready", 0.0)

    @property
    def shared(self) -> bool:
        """Used by tests on a worker other than the one that started it."""
        return any(user != self.owner for user in self.users)


class ImageStats(msgspec.Struct):
    """How often one image was started over the run, and what that cost."""

    image: str
    starts: int = 0
    workers: set[str] = msgspec.field(default_factory=set)
    startup_total: float = 0.0
    startup_max: float = 0.0
    failures: int = 0

    @property
    def per_worker(self) -> bool:
        """Started on several workers: each paid the startup (the costly surprise)."""
        return len(self.workers) > 1


class ContainerFold(WorkerFold):
    """Containers and their images: a part of :class:`~.fold.RunState`."""

    def __init__(self, detail: bool = True) -> None:
        super().__init__(detail)
        self.containers: dict[str, ContainerView] = {}

    def _container(self, e: ev.ContainerEvent) -> None:
        if e.w:
            self._seen(e)
        view = self.containers.get(e.cid)
        if view is None:
            view = self.containers[e.cid] = ContainerView(cid=e.cid, created=e.ts)
        view.image = e.image or view.image
        view.name = e.name or view.name
        if e.ports:
            view.ports = dict(e.ports)
        if e.owner and view.owner is None:
            view.owner = e.owner
        elif e.w and view.owner is None and e.action in ("create", "start"):
            view.owner = e.w
        view.test = view.test or e.test
        view.fixture = view.fixture or e.fixture
        if e.dur is not None:
            view.phases[e.action] = e.dur
        if e.wait:
            view.wait = e.wait
        if e.labels:
            view.labels = dict(e.labels)
        action = e.action
        if action == "use":
            if e.w:
                view.users.add(e.w)
                if view.state in ("stopped", "removed", "exited", "oom-killed"):
                    view.used_after_end.append(e.w)
            return
        if action == "stop":
            if view.stop_requested is None:
                view.stop_requested = e.ts
            workers = self.workers
            view.stopped_while_used = sorted(
                u
                for u in view.users
                if u != view.owner and u in workers and not workers[u].down and not workers[u].crash
            )
        elif action in ("die", "oom"):
            view.died = e.ts
            view.during = dict(e.during)
        elif action == "leak":
            view.leaked = True
        elif action == "fail":
            view.failed_phase = e.phase
        elif action == "remove" and e.by:
            view.removed_by = e.by
        if action == "ready":
            view.ready = e.ts
        if action in ("stop", "remove", "die", "oom"):
            view.ended = e.ts
        if e.exit_code is not None:
            view.exit_code = e.exit_code
        if e.health:
            view.health = e.health
        if e.error:
            view.error = e.error
        if action in ("die", "oom", "remove") and e.by and view.state in ("stopped", "removed"):
            return  # the engine's late word on a container its owner has already torn down
        view.state = {
            "create": "created",
            "start": "running",
            "ready": "ready",
            "stop": "stopped",
            "remove": "removed",
            "die": "exited",
            "oom": "oom-killed",
            "fail": "failed",
            "leak": "leaked",
            "health": view.state,
        }.get(action, view.state)

    def container_images(self) -> list[ImageStats]:
        """Per image: starts, on how many workers, startup cost; costliest first."""
        images: dict[str, ImageStats] = {}
        for view in self.containers.values():
            key = view.image or "(unknown image)"
            stats = images.get(key)
            if stats is None:
                stats = images[key] = ImageStats(key)
            if view.state == "failed":
                stats.failures += 1
            if view.owner is None or "create" not in view.phases:
                continue  # never created, or seen only by the engine watch
            stats.starts += 1
            stats.workers.add(view.owner)
            startup = view.startup
            stats.startup_total += startup
            if startup > stats.startup_max:
                stats.startup_max = startup
        return sorted(images.values(), key=lambda s: s.startup_total, reverse=True)

    def leaked_containers(self) -> list[ContainerView]:
        return [c for c in self.containers.values() if c.leaked]

    def dead_containers(self) -> list[ContainerView]:
        """Containers that exited or were OOM-killed while their owner still needed them."""
        return [c for c in self.containers.values() if c.died is not None]
