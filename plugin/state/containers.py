"""The fold's containers: each container's life, and per image what starting it cost.

:class:`ContainerFold` is the part of :class:`~.fold.RunState` that folds container events.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from testmon_live.plugin import events as ev

from .workers import CLOCK_SLACK, WorkerFold, WorkerView, worker_order


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
    """When a worker of this run asked it to stop, kill or be removed (exits after that are
    the teardown, not deaths)."""
    stopped_by: str | None = None
    """The worker that asked first."""
    stop_test: str | None = None
    stop_fixture: str | None = None
    stop_phase: str | None = None
    """The asking worker's test, fixture and phase (``teardown``...) then."""
    stop_scope: str | None = None
    """The scope of ``stop_fixture`` (``session``...), when the run recorded it."""
    stop_call: str | None = None
    """What was called: ``stop``, ``kill``, ``remove(force=True)``, ``DockerContainer.stop``."""
    user_tests: dict[str, set[str]] = msgspec.field(default_factory=dict)
    """worker -> the tests of it seen using the container (a lookup, or a connection to
    one of its mapped ports), the starting worker's included."""
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
    """Other workers that had used it and were in a test's setup or call when it was
    stopped (a worker whose record shows it had left that test by then is taken out)."""
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

    def story(self) -> str:
        """What happened to it, in order: ``started by gw2 (fixture db, test t), used by gw0,
        gw1, gw3 (12 tests), removed by gw3 in session teardown of fixture db
        (remove(force=True)) after the others had finished``."""
        parts = [f"started by {self.owner or '?'}" + _where(self.fixture, self.test)]
        others = sorted(self.users - {self.owner or ""}, key=worker_order)
        if others:
            tests = sum(len(self.user_tests.get(u, ())) for u in others)
            parts.append(
                f"used by {', '.join(others)}" + (f" ({_count(tests, 'test')})" if tests else "")
            )
        if self.stop_requested is not None:
            parts.append(self._ending())
        elif self.died is not None:
            how = "OOM-killed" if self.state == "oom-killed" else f"exit code {self.exit_code}"
            parts.append(f"died ({how}) without anyone of this run asking")
        elif self.removed_by == "engine":
            parts.append("removed without any worker of this run asking")
        elif self.leaked:
            parts.append("left running at the end (leaked)")
        return ", ".join(parts)

    def _ending(self) -> str:
        verb = {"removed": "removed"}.get(self.state) or (
            "killed" if self.stop_call == "kill" else "stopped"
        )
        text = f"{verb} by {self.stopped_by or '?'}"
        if self.stop_phase == "teardown" and self.stop_fixture:
            scope = f"{self.stop_scope} " if self.stop_scope else ""
            text += f" in {scope}teardown of fixture {self.stop_fixture}"
        elif self.stop_test:
            text += f" in {self.stop_test}"
        if self.stop_call:
            text += f" ({self.stop_call})"
        if self.stopped_while_used:
            text += f" while {', '.join(self.stopped_while_used)} still ran tests that used it"
        elif (self.users | {self.owner or ""}) - {self.stopped_by or "", ""}:
            text += " after the others had finished"
        return text


def _where(fixture: str | None, test: str | None) -> str:
    said = [f"fixture {fixture}"] if fixture else []
    if test:
        said.append(f"test {test}")
    return f" ({', '.join(said)})" if said else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


UNMATCHED_KEPT = 20_000
"""Connects kept waiting for a container's ports, at most (a hostile log cannot grow it)."""


def _host_ports(ports: dict[str, str]) -> Iterable[int]:
    """The host ports of a container's mappings (``"80/tcp": "0.0.0.0:49153"``)."""
    for address in ports.values():
        port = address.rpartition(":")[2]
        if port.isdigit():
            yield int(port)


class ContainerFold(WorkerFold):
    """Containers and their images: a part of :class:`~.fold.RunState`."""

    def __init__(self, detail: bool = True) -> None:
        super().__init__(detail)
        self.containers: dict[str, ContainerView] = {}
        self._stops_to_check: list[ContainerView] = []
        """Stopped containers whose ``stopped_while_used`` a late record may still clear."""
        self._unmatched_reaches: list[tuple[str, ev.PortReached]] = []
        """Workers' connects to ports no container known yet had mapped (at most
        :data:`UNMATCHED_KEPT`)."""

    def _ports_reached(self, worker: str, reached: list[ev.PortReached]) -> None:
        """A worker's connects to ports it was never told were a container's (it ended
        before the controller told it): one to a container's mapped port, while that
        container existed, is a use of it in that test. Connects no container known yet
        explains wait for one whose ports come later (another worker's batch, the engine's
        scan)."""
        by_port: dict[int, list[ContainerView]] = {}
        for view in self.containers.values():
            for port in _host_ports(view.ports):
                by_port.setdefault(port, []).append(view)
        for reach in reached:
            views = by_port.get(reach.port, ())
            if any(self._reach(view, worker, reach) for view in views):
                continue
            if len(self._unmatched_reaches) < UNMATCHED_KEPT:
                self._unmatched_reaches.append((worker, reach))

    def _reach(self, view: ContainerView, worker: str, reach: ev.PortReached) -> bool:
        """Whether ``reach`` fell in ``view``'s lifetime (clocks of two workers: a little
        slack): then it is a use of it."""
        if view.created is None or reach.at < view.created - CLOCK_SLACK:
            return False
        if view.ended is not None and reach.at > view.ended + CLOCK_SLACK:
            return False
        if reach.test:
            view.user_tests.setdefault(worker, set()).add(reach.test)
        if worker != view.owner:
            view.users.add(worker)
        return True

    def _ports_known(self, view: ContainerView) -> None:
        """A container's mapped ports are known now: the connects that waited for them."""
        ports = set(_host_ports(view.ports))
        if not self._unmatched_reaches or not ports:
            return
        self._unmatched_reaches = [
            (worker, reach)
            for worker, reach in self._unmatched_reaches
            if reach.port not in ports or not self._reach(view, worker, reach)
        ]

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
            self._ports_known(view)
        if e.owner and view.owner is None:
            view.owner = e.owner
        elif e.w and view.owner is None and e.action in ("create", "start"):
            view.owner = e.w
        if e.action not in ("use", "stop", "remove") or e.by == "engine":
            view.test = view.test or e.test  # where it was started, not where it was used
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
                if e.test:
                    view.user_tests.setdefault(e.w, set()).add(e.test)
                if e.w != view.owner:
                    view.users.add(e.w)
                if view.state in ("stopped", "removed", "exited", "oom-killed") and e.by is None:
                    view.used_after_end.append(e.w)
            return
        if action == "stop":
            if view.stop_requested is not None:
                return  # a second ask (remove after stop): the first one tells the story
            self._stopped(view, e)
        elif action in ("die", "oom"):
            asked = view.stop_requested
            if asked is not None and asked <= e.ts and action == "die":
                if e.exit_code is not None:
                    view.exit_code = e.exit_code
                return  # the exit of a stop a worker of this run asked for: not a death
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

    def _stopped(self, view: ContainerView, e: ev.ContainerEvent) -> None:
        view.stop_requested = e.ts
        view.stopped_by = e.w or None
        view.stop_test = e.test
        view.stop_fixture = e.fixture
        view.stop_phase = e.phase
        view.stop_call = e.call
        if e.fixture:
            scopes = {key[1] for key in self._fixture_keys() if key[0] == e.fixture}
            view.stop_scope = next(iter(scopes)) if len(scopes) == 1 else None
        if view.died is not None and e.ts <= view.died:
            view.died = None  # the engine's exit was this stop, heard before the ask arrived
            view.during = {}
        workers = self.workers
        candidates = view.users | ({view.owner} if view.owner else set())
        view.stopped_while_used = sorted(
            (
                u
                for u in candidates
                if u != e.w
                and u in workers
                and not workers[u].down
                and workers[u].crash is None
                and workers[u].test is not None
                and workers[u].phase in ("setup", "call")
            ),
            key=worker_order,
        )
        if view.stopped_while_used:
            self._stops_to_check.append(view)

    def _fixture_keys(self) -> Iterable[tuple[str, str, str]]:
        """(name, scope, baseid) of the wide-scoped fixtures seen (the run's fold has them)."""
        fixtures = getattr(self, "fixtures", None)
        return list(fixtures) if isinstance(fixtures, dict) else []

    def _seen(self, event: ev.Event) -> WorkerView:
        view = super()._seen(event)
        if self._stops_to_check:
            self._left_before_stop(event)
        return view

    def _left_before_stop(self, e: ev.Event) -> None:
        """A user named as still in a test when the container was stopped, whose own later
        record shows it had left that test before: events of workers arrive in batches, so
        the fold's picture of it was behind."""
        if isinstance(e, ev.TestFinished):  # it left setup/call when its teardown began
            left = e.ts - sum(p.dur for p in e.phases if p.when == "teardown")
        elif isinstance(e, ev.Activity) and e.phase not in ("setup", "call"):
            left = e.since
        else:
            return
        for view in self._stops_to_check:
            asked = view.stop_requested
            if e.w in view.stopped_while_used and asked is not None and left <= asked:
                view.stopped_while_used.remove(e.w)
        self._stops_to_check = [v for v in self._stops_to_check if v.stopped_while_used]

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
