"""The controller's watch of the container engine (Docker or Podman, whatever ``DOCKER_HOST``
names), through the docker SDK that testcontainers brings.

It listens to the engine's event stream filtered by this run's label (``testmon.run``,
put on every container by the workers' :mod:`.containers` probe), so it sees only the
run's containers and says:

- ``die`` with the exit code, when a container exits that no worker of the run asked to
  stop, kill or remove (an exit after such an ask is the teardown and is not reported),
  with the test each
  worker was running at that moment (``during``);
- ``oom`` (the kernel killed it) and ``health`` (health status changes);
- ``remove`` (``by="engine"``) when a container disappears that no worker of the run asked
  to remove;
- ``use`` (``by="connection"``) for each local worker, and the test it runs, seen with a TCP
  connection open to one of a running container's mapped ports: read from outside the
  worker (``/proc``, :mod:`.connections`) a few times a second, so the workers pay nothing;
  and since a connection opened and closed between two looks escapes that, each local
  worker is told the mapped ports (a ``ports`` command, when they change) and notes its
  own connects to them (:mod:`.portwatch`, ``by="connect"``);
- at the end of the run, every container of the run still there: a ``leak``, named with
  the worker, test and fixture that started it (from its labels).

Everything runs in one daemon thread, and only once the run has a container: the hub
starts it when its fold first holds one (:meth:`~..hub.Hub.when_container`), so a suite
that never starts a container has no such thread, never imports the SDK nor talks to an
engine (and the controller does not even import this module: see ``session.py``). Events are asked
for from the start of the run, so nothing that happened before is missed. No engine: one
notice, nothing else. The end-of-run listing is bounded by the client's timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .. import events as ev
from ..clock import now
from ..guard import REAL
from .connections import connected_ports
from .containers import FIXTURE_LABEL, RUN_LABEL, TEST_LABEL, WORKER_LABEL, short

ENGINE_TIMEOUT = 5.0
"""Seconds any single call to the engine may take."""
DIE_GRACE = 1.5
"""Seconds to wait before calling an exit a death: the owner's ``stop`` may still be on
its way (workers ship in batches)."""
POLL = 0.25
"""Seconds :meth:`EngineWatch.finish` waits (four times over) for the thread to begin."""
ENDED = frozenset({"stopped", "removed", "exited", "oom-killed", "failed", "leaked"})
"""Container states in which nobody's connections are looked for."""
MAX_PENDING = 1000
"""Deaths/removals awaiting their grace period; beyond that they are reported at once."""


class EngineWatch:
    """Watches the engine for this run's containers; owned by the controller."""

    def __init__(self, hub: Any, run_id: str, started: float) -> None:
        self.hub = hub
        self.run_id = run_id
        self.started = started
        self.reachable: bool | None = None
        """None until the thread has tried; then whether the engine answered."""
        self.handled = 0
        self._client: Any = None
        self._stream: Any = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._engaged = threading.Event()
        self._pending: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._health: dict[str, str] = {}
        self._uses: set[tuple[str, str, str | None]] = set()
        """(container, worker, test) already reported as a ``use`` seen by connection."""
        self._told: dict[str, dict[str, str]] = {}
        """Worker -> the mapped ports it was last told (port -> container)."""
        self._thread = threading.Thread(target=self._run, name="testmon-engine", daemon=True)
        self._settler = threading.Thread(target=self._settle_loop, name="testmon-engine-settle")
        self._settler.daemon = True

    def start(self) -> None:
        """Begin watching once the run has a container (at once if it has one)."""
        self.hub.when_container(self._begin)

    def _begin(self) -> None:
        if not self._stop.is_set() and self._thread.ident is None:
            self._thread.start()

    # ----------------------------------------------------------------- thread

    def _run(self) -> None:
        self._engaged.set()
        try:
            import docker
        except ImportError:
            self.reachable = False
            self._ready.set()
            return
        try:
            client = docker.from_env(timeout=ENGINE_TIMEOUT)
            client.ping()
            stream = client.events(
                decode=True,
                filters={"label": [f"{RUN_LABEL}={self.run_id}"], "type": "container"},
                since=int(self.started) - 1,
            )
        except Exception as exc:  # noqa: BLE001 - any failure means: no engine to watch
            self.reachable = False
            self._ready.set()
            self.hub.note(
                "info",
                f"containers: no container engine reachable ({type(exc).__name__}: "
                f"{str(exc)[:300]}); containers are not watched",
            )
            return
        self._client = client
        self._stream = stream
        self.reachable = True
        self._ready.set()
        self._settler.start()
        try:
            for raw in stream:
                if self._stop.is_set():
                    break
                if isinstance(raw, dict):
                    self._handle(raw)
        except Exception as exc:  # noqa: BLE001 - a stream closed by finish() ends here too
            if not self._stop.is_set():
                self.hub.note("warning", f"containers: engine event stream lost: {exc!r}")

    def _handle(self, raw: dict[str, Any]) -> None:
        self.handled += 1
        action = str(raw.get("Action") or raw.get("status") or "")
        actor = raw.get("Actor") or {}
        attrs: dict[str, Any] = dict(actor.get("Attributes") or {})
        cid = short(str(actor.get("ID") or raw.get("id") or ""))
        if not cid:
            return
        if action in ("die", "destroy", "remove"):
            item = {**attrs, "cid": cid, "at": now(), "during": self._running_tests()}
            with self._lock:
                if len(self._pending) < MAX_PENDING:
                    self._pending.append((REAL.monotonic() + DIE_GRACE, action, item))
                    return
            self._settle(action, item)
        elif action == "oom":
            self._emit("oom", cid, attrs, error="killed by the kernel: out of memory")
        elif action.startswith("health_status"):
            status = action.partition(":")[2].strip() or self._health_now(cid, raw, attrs)
            if status and self._health.get(cid) != status:
                self._health[cid] = status
                self._emit("health", cid, attrs, health=status)

    def _health_now(self, cid: str, raw: dict[str, Any], attrs: dict[str, Any]) -> str:
        """The health status of a bare ``health_status`` event. Docker says it in the action
        (``health_status: unhealthy``); Podman (4.3) sends a ``HealthStatus`` taken before the
        check's result was stored, so the container is asked (health events are rare)."""
        said = str(attrs.get("health_status") or raw.get("HealthStatus") or "")
        try:
            state = self._client.api.inspect_container(cid)["State"]
            return str((state.get("Health") or {}).get("Status") or said)
        except Exception as exc:  # noqa: BLE001 - gone already, engine busy: say what was lost
            self.hub.note("info", f"containers: health of {cid} not read ({exc!r})")
            return said

    def _settle_loop(self) -> None:
        while not self._stop.wait(0.2):
            self._settle_due(REAL.monotonic())
            try:
                self.sample_connections()
            except Exception as exc:  # noqa: BLE001 - a lost look must not end the watch
                self.hub.note("info", f"containers: reading workers' connections: {exc!r}")

    def sample_connections(self) -> None:
        """Report each local worker connected to a running container's mapped port."""
        state = self.hub.state
        ports: dict[int, str] = {}
        created: dict[str, float] = {}
        for view in list(state.containers.values()):
            if view.state in ENDED:
                continue
            created[view.cid] = view.created
            for address in list(view.ports.values()):
                port = address.rpartition(":")[2]
                if port.isdigit():
                    ports[int(port)] = view.cid
        with self.hub._lock:
            workers = [
                (w.id, w.pid, w.test)
                for w in state.workers.values()
                if w.pid and not w.remote and not w.down and w.crash is None
            ]
        self._tell_ports(ports, created, [w for w, _pid, _test in workers])
        if not ports:
            return
        for worker, pid, test in workers:
            assert pid is not None
            for port in connected_ports(pid, ports):
                key = (ports[port], worker, test)
                if key in self._uses:
                    continue
                self._uses.add(key)
                self.hub.emit(
                    ev.ContainerEvent(
                        w=worker, ts=now(), action="use", cid=key[0], test=test, by="connection"
                    )
                )

    def _tell_ports(
        self, ports: dict[int, str], created: dict[str, float], workers: list[str]
    ) -> None:
        """Each local worker learns the running containers' mapped ports (with when each
        was created) whenever they change: it then reports its connections to them, those
        it made before it was told included (:mod:`.portwatch`), which the look above
        misses if they open and close between two looks."""
        args = {str(port): f"{cid} {created[cid]!r}" for port, cid in sorted(ports.items())}
        for worker in workers:
            if self._told.get(worker, {}) != args and self.hub.tell(worker, "ports", args):
                self._told[worker] = args

    def _settle_due(self, limit: float) -> None:
        with self._lock:
            due = [p for p in self._pending if p[0] <= limit]
            self._pending = [p for p in self._pending if p[0] > limit]
        for _, action, attrs in due:
            self._settle(action, attrs)

    def _settle(self, action: str, attrs: dict[str, Any]) -> None:
        cid = str(attrs.pop("cid"))
        at = float(attrs.pop("at"))
        during = attrs.pop("during")
        view = self.hub.state.containers.get(cid)
        asked = view.stop_requested if view is not None else None
        if asked is not None and asked <= at:
            return  # its owner had asked it to stop before we heard: teardown, not a death
        if action == "die":
            code = str(attrs.get("exitCode", attrs.get("containerExitCode", "")))
            self._emit(
                "die",
                cid,
                attrs,
                exit_code=int(code)
                if code.lstrip("-").isascii() and code.lstrip("-").isdigit()
                else None,
                during=during,
            )
        else:
            self._emit("remove", cid, attrs, error="removed without any worker of this run asking")

    def _running_tests(self) -> dict[str, str]:
        with self.hub._lock:
            return {w.id: w.test for w in self.hub.state.workers.values() if w.test}

    def _emit(self, action: str, cid: str, attrs: dict[str, Any], **fields: Any) -> None:
        self.hub.emit(
            ev.ContainerEvent(
                ts=now(),
                action=action,
                cid=cid,
                image=str(attrs.get("image") or ""),
                name=str(attrs.get("name") or ""),
                owner=_opt(attrs.get(WORKER_LABEL)),
                test=_opt(attrs.get(TEST_LABEL)),
                fixture=_opt(attrs.get(FIXTURE_LABEL)),
                by="engine",
                **fields,
            )
        )

    # ----------------------------------------------------------------- the end

    def finish(self, wait: float = ENGINE_TIMEOUT) -> list[ev.ContainerEvent]:
        """Settle what is pending, list the run's containers still there (leaks), stop."""
        leaks: list[ev.ContainerEvent] = []
        if self.hub.state.containers and self._engaged.wait(POLL * 4):
            self._ready.wait(wait)
        if self.reachable:
            self._settle_due(float("inf"))
            leaks = self._leaks()
        self._stop.set()
        stream = self._stream
        if stream is not None:
            close: Callable[[], None] | None = getattr(stream, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - closing a dead stream is fine
                    self.hub.note("info", f"containers: closing the event stream: {exc!r}")
        if self._thread.ident is not None:  # started: the run had a container
            self._thread.join(1.0)
        client = self._client
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001
                self.hub.note("info", f"containers: closing the engine client: {exc!r}")
        return leaks

    def _leaks(self) -> list[ev.ContainerEvent]:
        try:
            found = self._client.containers.list(
                all=True, filters={"label": f"{RUN_LABEL}={self.run_id}"}
            )
        except Exception as exc:  # noqa: BLE001 - the leak check is lost, and says so
            self.hub.note("warning", f"containers: could not list leftover containers: {exc!r}")
            return []
        leaks: list[ev.ContainerEvent] = []
        for container in found:
            labels: dict[str, str] = dict(getattr(container, "labels", None) or {})
            status = str(getattr(container, "status", "") or "")
            tags = getattr(getattr(container, "image", None), "tags", None) or []
            image = tags[0] if tags else str(labels.get("image", ""))
            exit_code: int | None = None
            if status != "running":
                state = (getattr(container, "attrs", None) or {}).get("State") or {}
                code = state.get("ExitCode")
                exit_code = int(code) if isinstance(code, int) else None
            event = ev.ContainerEvent(
                ts=now(),
                action="leak",
                cid=short(container.id),
                image=image,
                name=str(getattr(container, "name", "") or ""),
                owner=labels.get(WORKER_LABEL),
                test=labels.get(TEST_LABEL),
                fixture=labels.get(FIXTURE_LABEL),
                exit_code=exit_code,
                error=f"still {status or 'there'} at the end of the run",
                by="engine",
            )
            self.hub.emit(event)
            leaks.append(event)
        return leaks


def _opt(value: object) -> str | None:
    return str(value) if value else None
