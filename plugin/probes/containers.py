"""Containers started through testcontainers-python, seen from the worker that starts them.

Installed in every recording worker, but it patches nothing until ``testcontainers`` is
imported: if it already is (a conftest imported it), the patches go on at once; otherwise
a post-import hook on ``testcontainers.core.container`` puts them on when the suite first
imports it. A suite that never imports testcontainers pays one dictionary lookup per
module import, and nothing per test.

What is patched (class attributes, so code that imported the names earlier is covered):

- ``DockerContainer.__init__``: an unreachable engine fails here (``fail``, phase ``engine``).
- ``DockerContainer.start``: the whole start, during which the worker's activity says
  ``waiting: container:<name>``; ``DockerClient.create`` and ``DockerClient.start`` inside
  it give the ``create`` and ``start`` phases (and the run's labels go onto the container
  in ``create``); whatever follows is the wait strategy, reported as ``ready``.
- every ``WaitStrategy.wait_until_ready`` (existing subclasses and, through
  ``__init_subclass__``, those defined later, such as the legacy ``wait_container_is_ready``
  decorator's), and ``waiting_utils.wait_for_logs``: a wait outside ``start`` (the older
  ``start(); wait_for_logs(c, ...)`` style) is a ``ready`` of its own.
- ``DockerContainer.stop``: ``stop`` when asked, ``remove`` (with its duration) when done.
- ``docker``'s ``Container.stop``, ``kill`` and ``remove`` on a container of this run, from
  whichever worker calls them (the last one out of a shared container usually does):
  ``stop`` with the call and the worker's phase, and ``remove`` when a removal is done.
- ``docker``'s ``ContainerCollection.get``: a worker that looks up a container this run
  started on another worker (the usual way to share one across xdist workers) is a ``use``.

Every wrapper calls the original and re-raises what it raised: the probe never changes
what the suite sees, only what is recorded.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from .. import events as ev
from ..activity import WorkerActivity
from ..clock import now
from ..guard import REAL, exc_text, repr_of, text_of

__tracebackhide__ = True
"""pytest leaves this module's frames out of the traceback of a failure: its wrappers sit
between the user's code and the library it called, and a failure reads as without the
monitor."""

Emit = Callable[[ev.Event], None]

RUN_LABEL = "testmon.run"
"""Label on every container this run starts: the run id (the controller watches by it)."""
WORKER_LABEL = "testmon.worker"
TEST_LABEL = "testmon.test"
FIXTURE_LABEL = "testmon.fixture"

HOOK_MODULE = "testcontainers.core.container"
MAX_LABEL = 500
"""Longest test id / fixture name put into a label."""


def short(cid: str | None) -> str:
    return (cid or "")[:12]


def describe_wait(strategy: Any) -> str:
    """``LogMessageWaitStrategy('ready to accept', timeout 30s)``: the strategy and its target."""
    name = type(strategy).__name__
    parts: list[str] = []
    children = getattr(strategy, "_strategies", None)
    if isinstance(children, list):
        parts.append(" + ".join(describe_wait(child) for child in children))
    message = getattr(strategy, "_message", None)
    if message is not None:
        parts.append(repr_of(getattr(message, "pattern", message), 200))
    port = getattr(strategy, "_port", None)
    if port is not None:
        path = getattr(strategy, "_path", None)
        parts.append(f"port {port}" + (f" {path}" if path else ""))
    for attr in ("_file_path", "_command"):
        value = getattr(strategy, attr, None)
        if value is not None:
            parts.append(text_of(value, 200))
    func = getattr(strategy, "func", None)
    if func is not None:
        parts.append(text_of(getattr(func, "__qualname__", None) or repr_of(func, 200)))
    timeout = getattr(strategy, "_startup_timeout", None)
    if isinstance(timeout, (int, float)):
        parts.append(f"timeout {timeout:g}s")
    return f"{name}({', '.join(parts)})" if parts else name


def error_text(exc: BaseException) -> str:
    """The engine's own message when there is one (docker's APIError carries it)."""
    explanation = getattr(exc, "explanation", None)
    text = f"{type(exc).__name__}: {text_of(explanation)}" if explanation else exc_text(exc)
    return ev.clip(text, 2000) or type(exc).__name__


def mapped_ports(container: Any) -> dict[str, str]:
    """``{"8080/tcp": "0.0.0.0:40947"}`` from a docker SDK container's (reloaded) attrs."""
    out: dict[str, str] = {}
    try:
        container.reload()
        ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
    except Exception:  # noqa: BLE001 - ports are a nicety; the container is still reported
        return out
    for exposed, bindings in ports.items():
        if bindings:
            first = bindings[0]
            out[str(exposed)] = f"{first.get('HostIp') or '0.0.0.0'}:{first.get('HostPort')}"
        else:
            out[str(exposed)] = ""
    return out


class _Start:
    """One ``DockerContainer.start`` in progress on this thread."""

    __slots__ = ("cid", "image", "name", "phase", "phase_start", "wait")

    def __init__(self, image: str, name: str) -> None:
        self.image = image
        self.name = name
        self.cid = ""
        self.phase = "create"
        self.phase_start = now()
        self.wait: str | None = None


class _PostImportHook(importlib.abc.MetaPathFinder):
    """Runs a callback right after one module has been executed."""

    def __init__(self, module: str, callback: Callable[[ModuleType], None]) -> None:
        self.module = module
        self.callback = callback

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.module:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            loader = spec.loader
            exec_module = getattr(loader, "exec_module", None)
            if exec_module is not None:
                # Shadow the method on this loader instance only: the loader is this module's.
                loader.exec_module = self._then_callback(exec_module)  # type: ignore[union-attr,method-assign]
            return spec
        return None

    def _then_callback(self, exec_module: Callable[[ModuleType], None]) -> Callable[..., None]:
        callback = self.callback

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            callback(module)

        return exec_and_patch

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


class ContainerProbe:
    """Records the containers this worker starts, and the ones it uses that others started."""

    def __init__(self, emit: Emit, activity: WorkerActivity, worker_id: str, run_id: str) -> None:
        self.emit = emit
        self.activity = activity
        self.worker_id = worker_id
        self.run_id = run_id
        self.installed = False
        self.failures = 0
        self._tls = threading.local()
        self._hook: _PostImportHook | None = None
        self._restore: list[tuple[Any, str, Any]] = []
        self._mine: set[str] = set()
        """Short ids of the containers this worker created."""
        self._used: set[tuple[str, str | None]] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------- installation

    def install(self) -> None:
        """Patch now if testcontainers is loaded, else when it first is."""
        module = sys.modules.get(HOOK_MODULE)
        if module is not None:
            self._patch(module)
            return
        self._hook = _PostImportHook(HOOK_MODULE, self._patch)
        sys.meta_path.insert(0, self._hook)

    def uninstall(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for owner, attr, original in reversed(self._restore):
            if original is _ABSENT:
                with contextlib.suppress(AttributeError):
                    delattr(owner, attr)
            else:
                setattr(owner, attr, original)
        self._restore.clear()
        self.installed = False

    def _set(self, owner: Any, attr: str, value: Any) -> None:
        self._restore.append((owner, attr, owner.__dict__.get(attr, _ABSENT)))
        setattr(owner, attr, value)

    def _patch(self, container_module: ModuleType) -> None:
        if self.installed:
            return
        try:
            from testcontainers.core import docker_client, waiting_utils
        except ImportError as exc:
            self._notice(f"testcontainers found but not instrumented: {exc_text(exc)}")
            return
        self.installed = True
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        dc = getattr(container_module, "DockerContainer", None)
        client = getattr(docker_client, "DockerClient", None)
        if dc is None or client is None:
            self._notice("testcontainers: DockerContainer/DockerClient not found; not instrumented")
            return
        probe = self
        self._wrap_init(dc)
        self._wrap_start(dc)
        self._wrap_stop(dc)
        self._wrap_create(client)
        self._wrap_client_start(client)
        base = getattr(waiting_utils, "WaitStrategy", None)
        if isinstance(base, type):
            self._wrap_strategies(base)
        self._wrap_wait_for_logs(waiting_utils)
        try:
            from docker.models.containers import Container, ContainerCollection
        except ImportError:
            return
        self._wrap_sdk_ends(Container)
        original_get = ContainerCollection.get

        def get(collection: Any, container_id: str, *args: Any, **kwargs: Any) -> Any:
            found = original_get(collection, container_id, *args, **kwargs)
            probe._maybe_used(found)
            return found

        self._set(ContainerCollection, "get", get)

    # ------------------------------------------------------------------ wrappers

    def _wrap_init(self, dc: Any) -> None:
        original = dc.__init__
        probe = self

        def __init__(container: Any, image: str, *args: Any, **kwargs: Any) -> None:
            try:
                original(container, image, *args, **kwargs)
            except Exception as exc:
                probe._fail("", text_of(image), text_of(kwargs.get("name") or ""), "engine", exc)
                raise

        self._set(dc, "__init__", __init__)

    def _wrap_start(self, dc: Any) -> None:
        original = dc.start
        probe = self

        def start(container: Any, *args: Any, **kwargs: Any) -> Any:
            tls = probe._tls
            if getattr(tls, "start", None) is not None:
                return original(container, *args, **kwargs)  # a subclass calling super().start
            image = text_of(getattr(container, "image", ""))
            name = text_of(getattr(container, "_name", None) or "")
            record = tls.start = _Start(image, name)
            activity = probe.activity
            previous = activity.waiting
            activity.waiting = f"container:{name or image}"
            try:
                result = original(container, *args, **kwargs)
            except BaseException as exc:
                probe._fail(record.cid, image, name, record.phase, exc, record.wait)
                raise
            finally:
                tls.start = None
                activity.waiting = previous
            probe._ready(container, record)
            return result

        self._set(dc, "start", start)

    def _wrap_stop(self, dc: Any) -> None:
        original = dc.stop
        probe = self

        def stop(container: Any, *args: Any, **kwargs: Any) -> Any:
            wrapped = getattr(container, "_container", None)
            cid = short(getattr(wrapped, "id", None))
            if not cid or getattr(probe._tls, "ending", False):
                return original(container, *args, **kwargs)
            return probe._ending(
                cid, "DockerContainer.stop", True, lambda: original(container, *args, **kwargs)
            )

        self._set(dc, "stop", stop)

    def _wrap_sdk_ends(self, sdk_container: type) -> None:
        """``Container.stop/kill/remove`` of the docker SDK, on this run's containers."""
        probe = self
        for method in ("stop", "kill", "remove"):
            original = sdk_container.__dict__.get(method)
            if original is None:
                continue

            def end(
                container: Any,
                *args: Any,
                _original: Callable[..., Any] = original,
                _method: str = method,
                **kwargs: Any,
            ) -> Any:
                if getattr(probe._tls, "ending", False):
                    return _original(container, *args, **kwargs)  # inside a stop we record
                try:
                    ours = (container.labels or {}).get(RUN_LABEL) == probe.run_id
                except Exception:  # noqa: BLE001 - no attrs: not one we can tell is ours
                    ours = False
                if not ours:
                    return _original(container, *args, **kwargs)
                call = _method
                if _method == "remove" and kwargs.get("force"):
                    call = "remove(force=True)"
                return probe._ending(
                    short(getattr(container, "id", None)),
                    call,
                    _method == "remove",
                    lambda: _original(container, *args, **kwargs),
                )

            end.__wrapped__ = original  # type: ignore[attr-defined]
            self._set(sdk_container, method, end)

    def _ending(self, cid: str, call: str, removes: bool, run: Callable[[], Any]) -> Any:
        """A stop, kill or removal asked on this worker: who asked, how, and how long."""
        tls = self._tls
        self._event("stop", cid, call=call, phase=self.activity.phase)
        tls.ending = True
        t0 = REAL.perf_counter()
        try:
            result = run()
        except BaseException as exc:
            self._fail(cid, "", "", "remove", exc)
            raise
        finally:
            tls.ending = False
        if removes:
            self._event("remove", cid, dur=REAL.perf_counter() - t0)
        return result

    def _wrap_create(self, client: type) -> None:
        original = client.create  # type: ignore[attr-defined]
        probe = self

        def create(docker_client: Any, image: str, *args: Any, **kwargs: Any) -> Any:
            if len(args) < 4:  # labels were not passed positionally
                kwargs["labels"] = {**probe.labels(), **(kwargs.get("labels") or {})}
            record: _Start | None = getattr(probe._tls, "start", None)
            t0 = REAL.perf_counter()
            try:
                container = original(docker_client, image, *args, **kwargs)
            except BaseException as exc:
                if record is None:
                    probe._fail("", text_of(image), "", "create", exc)
                raise
            dur = REAL.perf_counter() - t0
            cid = short(getattr(container, "id", None))
            with probe._lock:
                probe._mine.add(cid)
            ports = kwargs.get("ports") or {}
            exposed = {str(port) if "/" in str(port) else f"{port}/tcp": "" for port in ports}
            name = text_of(kwargs.get("name") or "")
            if record is not None:
                record.cid = cid
                record.name = record.name or name
                record.phase = "start"
            probe._event(
                "create",
                cid,
                image=text_of(image),
                name=name,
                ports=exposed,
                labels=dict(kwargs.get("labels") or {}),
                dur=dur,
                owner=probe.worker_id,
            )
            return container

        self._set(client, "create", create)

    def _wrap_client_start(self, client: type) -> None:
        original = client.start  # type: ignore[attr-defined]
        probe = self

        def start(docker_client: Any, container: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = REAL.perf_counter()
            result = original(docker_client, container, *args, **kwargs)
            dur = REAL.perf_counter() - t0
            record: _Start | None = getattr(probe._tls, "start", None)
            if record is not None:
                record.phase = "ready"
                record.phase_start = now()
            probe._event("start", short(getattr(container, "id", None)), dur=dur)
            return result

        self._set(client, "start", start)

    def _wrap_strategies(self, base: Any) -> None:
        probe = self
        seen: set[type] = set()

        def wrap(cls: type) -> None:
            if cls in seen:
                return
            seen.add(cls)
            original = cls.__dict__.get("wait_until_ready")
            if original is None or getattr(original, "_testmon_wrapped", False):
                return

            def wait_until_ready(strategy: Any, container: Any, *args: Any, **kwargs: Any) -> Any:
                return probe._wait(original, strategy, container, args, kwargs)

            wait_until_ready._testmon_wrapped = True  # type: ignore[attr-defined]
            probe._set(cls, "wait_until_ready", wait_until_ready)

        stack = [base]
        while stack:
            cls = stack.pop()
            wrap(cls)
            stack.extend(cls.__subclasses__())
        previous = base.__dict__.get("__init_subclass__")

        def __init_subclass__(cls: type, /, **kwargs: Any) -> None:
            super(base, cls).__init_subclass__(**kwargs)  # type: ignore[misc]
            if probe.installed:
                wrap(cls)

        self._set(base, "__init_subclass__", classmethod(__init_subclass__))
        del previous

    def _wrap_wait_for_logs(self, waiting_utils: ModuleType) -> None:
        original = getattr(waiting_utils, "wait_for_logs", None)
        if original is None:
            return
        probe = self

        def wait_for_logs(container: Any, predicate: Any, *args: Any, **kwargs: Any) -> Any:
            if not isinstance(predicate, (str, bytes)) and not callable(predicate):
                return original(container, predicate, *args, **kwargs)  # a WaitStrategy
            what = (
                f"wait_for_logs({repr_of(predicate, 200)})"
                if isinstance(predicate, str)
                else (f"wait_for_logs({getattr(predicate, '__qualname__', 'predicate')})")
            )
            return probe._timed_wait(
                what, container, lambda: original(container, predicate, *args, **kwargs)
            )

        wait_for_logs.__doc__ = original.__doc__
        wait_for_logs.__wrapped__ = original  # type: ignore[attr-defined]
        # Modules that bound the name before we came (a conftest's `from ... import`).
        for module in list(sys.modules.values()):
            namespace = getattr(module, "__dict__", None)
            if isinstance(namespace, dict) and namespace.get("wait_for_logs") is original:
                self._set(module, "wait_for_logs", wait_for_logs)

    # ------------------------------------------------------------------- waits

    def _wait(
        self,
        original: Callable[..., Any],
        strategy: Any,
        container: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        tls = self._tls
        if getattr(tls, "waiting", False):
            return original(strategy, container, *args, **kwargs)  # nested (composite, ports)
        record: _Start | None = getattr(tls, "start", None)
        if record is not None:
            if record.wait is None:
                record.wait = describe_wait(strategy)
            tls.waiting = True
            try:
                return original(strategy, container, *args, **kwargs)
            finally:
                tls.waiting = False
        if type(strategy).__name__ == "ContainerStatusWaitStrategy":
            return original(strategy, container, *args, **kwargs)  # every get_exposed_port
        return self._timed_wait(
            describe_wait(strategy),
            container,
            lambda: original(strategy, container, *args, **kwargs),
        )

    def _timed_wait(self, what: str, container: Any, call: Callable[[], Any]) -> Any:
        """A wait outside ``start``: the worker is waiting on this container."""
        tls = self._tls
        if getattr(tls, "waiting", False) or getattr(tls, "start", None) is not None:
            return call()
        wrapped = getattr(container, "_container", None)
        cid = short(getattr(wrapped, "id", None))
        name = text_of(getattr(container, "_name", None) or getattr(container, "image", "") or cid)
        activity = self.activity
        previous = activity.waiting
        activity.waiting = f"container:{name}"
        tls.waiting = True
        t0 = REAL.perf_counter()
        try:
            result = call()
        except BaseException as exc:
            self._fail(cid, "", "", "ready", exc, what)
            raise
        finally:
            tls.waiting = False
            activity.waiting = previous
        self._event("ready", cid, wait=what, dur=REAL.perf_counter() - t0)
        return result

    # ------------------------------------------------------------------ events

    def labels(self) -> dict[str, str]:
        activity = self.activity
        labels = {RUN_LABEL: self.run_id, WORKER_LABEL: self.worker_id}
        if activity.test:
            labels[TEST_LABEL] = activity.test[:MAX_LABEL]
        if activity.fixture:
            labels[FIXTURE_LABEL] = activity.fixture[:MAX_LABEL]
        return labels

    def _event(self, action: str, cid: str, **fields: Any) -> None:
        activity = self.activity
        try:
            self.emit(
                ev.ContainerEvent(
                    ts=now(),
                    action=action,
                    cid=cid,
                    test=activity.test,
                    fixture=activity.fixture,
                    **fields,
                )
            )
        except Exception as exc:  # noqa: BLE001 - recording must never break the suite
            self.failures += 1
            self._notice(f"container event lost: {exc_text(exc)}")

    def _ready(self, container: Any, record: _Start) -> None:
        wrapped = getattr(container, "_container", None)
        cid = record.cid or short(getattr(wrapped, "id", None))
        ports = mapped_ports(wrapped) if wrapped is not None else {}
        name = record.name or text_of(getattr(wrapped, "name", "") or "")
        self._event(
            "ready",
            cid,
            image=record.image,
            name=name,
            ports=ports,
            wait=record.wait or "none (no wait strategy)",
            dur=now() - record.phase_start,
        )

    def _fail(
        self,
        cid: str,
        image: str,
        name: str,
        phase: str,
        exc: BaseException,
        wait: str | None = None,
    ) -> None:
        if not cid:
            with self._lock:
                self.failures += 1
                cid = f"{self.worker_id}~{self.failures}"  # failed before the engine gave an id
        self._event(
            "fail",
            cid,
            image=image,
            name=name,
            phase=phase,
            wait=wait,
            error=error_text(exc),
            owner=self.worker_id,
        )

    def _maybe_used(self, container: Any) -> None:
        """A docker SDK lookup: a ``use`` if another worker of this run started it."""
        try:
            labels = container.labels or {}
        except Exception:  # noqa: BLE001 - a container without attrs is simply not ours
            return
        if labels.get(RUN_LABEL) != self.run_id or labels.get(WORKER_LABEL) == self.worker_id:
            return  # not this run's, or this worker's own (create looks its container up)
        cid = short(getattr(container, "id", None))
        key = (cid, self.activity.test)
        with self._lock:
            if cid in self._mine or key in self._used:
                return
            self._used.add(key)
        self._event(
            "use",
            cid,
            name=text_of(getattr(container, "name", "") or ""),
            owner=labels.get(WORKER_LABEL),
        )

    def _notice(self, msg: str) -> None:
        self.emit(ev.Notice(ts=now(), level="warning", source="containers", msg=msg))


class _Absent:
    pass


_ABSENT = _Absent()
