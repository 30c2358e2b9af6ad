"""A worker's connections to a container's mapped ports, seen as they are made.

The controller reads the workers' open connections from outside (``/proc``, see
:mod:`.container_engine`) a few times a second: a connection opened and closed between two
looks escapes it. So the worker notes its connections itself, once the run may have
containers:

- armed (:func:`arm`) when the worker imports testcontainers or the docker SDK (the shared
  container recipe's conftest does, in every worker), or when the controller first tells
  it ports: ``socket.socket.connect`` / ``connect_ex`` are wrapped on the Python class (every
  Python client: requests, httpx, redis, PyMySQL, asyncio's ``sock_connect``...). Before
  that nothing is wrapped: a run without containers pays nothing, and with them only a
  connect pays (a dict lookup, a small dict kept of the ports it reached, per test);
- connections made in C (libpq under psycopg / psycopg2) are told by the DB-API probe when
  it announces them (:func:`seen_url`);
- the controller tells each local worker the running containers' mapped ports, with when
  each container was created (a ``ports`` command, whenever they change): connects to them
  are reported at once, and the ones made before the worker was told (the first tests,
  right after the container became ready) from what the worker kept, if made after the
  container was created.

Each (container, test) is reported once, as a ``use`` of the container by this worker in
that test (``by="connect"``). An empty map (every container ended) reports nothing more.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from .. import events as ev
from ..activity import WorkerActivity
from ..clock import now

__tracebackhide__ = True
"""pytest leaves this module's frames out of the traceback of a failure: the wrapper sits
between the user's code and the socket it connects, and a refused connection reads as
without the monitor."""

_ports: dict[int, str] = {}
"""Mapped host port -> short id of the container (empty: none known yet, or all ended)."""
_told: set[tuple[str, str | None]] = set()
"""(container, test) already reported."""
_sink: list[tuple[Callable[[ev.Event], None], WorkerActivity]] = []
"""Where a use goes, and whose test it is: the worker's emit and activity (set: armed)."""
_reached: dict[tuple[int, str | None], float] = {}
"""(port, test) -> when this worker last connected to it, for ports not (yet) known as a
container's: what the controller's word may match later."""
REACHED_KEPT = 4096
"""Entries of :data:`_reached` at most (beyond, new ones are not kept)."""


def arm(emit: Callable[[ev.Event], None], activity: Any) -> None:
    """Note this worker's connections from now on (wraps ``socket.socket`` once)."""
    _sink[:] = [(emit, activity)]
    _patch()


def watch(
    ports: dict[int, tuple[str, float]], emit: Callable[[ev.Event], None], activity: Any
) -> None:
    """The running containers' mapped ports (port -> (container, when it was created)):
    report connects to them, the ones already made since each was created included."""
    arm(emit, activity)
    _ports.clear()
    _ports.update({port: cid for port, (cid, _created) in ports.items()})
    for (port, test), at in list(_reached.items()):
        known = ports.get(port)
        if known is not None and at >= known[1]:
            _report(known[0], test)


def seen_port(port: int) -> None:
    """A connection to ``port`` was made in this process (by whatever means)."""
    if not _sink:
        return
    test = _sink[0][1].test
    cid = _ports.get(port)
    if cid is not None:
        _report(cid, test)
    elif len(_reached) < REACHED_KEPT or (port, test) in _reached:
        _reached[(port, test)] = now()


def _report(cid: str, test: str | None) -> None:
    if (cid, test) in _told:
        return
    _told.add((cid, test))
    _sink[0][0](ev.ContainerEvent(ts=now(), action="use", cid=cid, test=test, by="connect"))


def _port_of(address: Any) -> int | None:
    if type(address) is tuple and len(address) >= 2 and type(address[1]) is int:
        return address[1]
    return None


def _patch() -> None:
    cls = socket.socket
    if getattr(cls, "_testmon_live_patched", False):
        return
    connect, connect_ex = cls.connect, cls.connect_ex

    def wrapped_connect(self: Any, address: Any, /) -> None:
        try:
            connect(self, address)
        except (BlockingIOError, InterruptedError):
            # A non-blocking connect under way (asyncio): it is being made.
            _note(address)
            raise
        _note(address)

    def wrapped_connect_ex(self: Any, address: Any, /) -> int:
        code: int = connect_ex(self, address)
        if code in _MADE:
            _note(address)
        return code

    wrapped_connect.__wrapped__ = connect  # type: ignore[attr-defined]
    wrapped_connect.__name__ = wrapped_connect.__qualname__ = "connect"
    wrapped_connect.__doc__ = connect.__doc__
    wrapped_connect_ex.__wrapped__ = connect_ex  # type: ignore[attr-defined]
    wrapped_connect_ex.__name__ = wrapped_connect_ex.__qualname__ = "connect_ex"
    wrapped_connect_ex.__doc__ = connect_ex.__doc__
    cls.connect = wrapped_connect  # type: ignore[method-assign]
    cls.connect_ex = wrapped_connect_ex  # type: ignore[method-assign]
    cls._testmon_live_patched = True  # type: ignore[attr-defined]


def _note(address: Any) -> None:
    # Ours: a bug here must not become the user's connection error; it is said instead.
    try:
        port = _port_of(address)
        if port is not None:
            seen_port(port)
    except Exception as exc:  # noqa: BLE001
        if _sink:
            _sink[0][0](
                ev.Notice(ts=now(), level="info", source="containers", msg=f"connect: {exc!r}")
            )


REACHED_SENT = 1000
"""Unmatched connects a worker's last word carries at most (the latest)."""
REACHED_ID_CHARS = 1000
"""A test id in them is cut to this: the last word stays far below the batch limit."""


def unmatched() -> list[ev.PortReached]:
    """This worker's connects to ports not known as a container's now (at most
    :data:`REACHED_SENT`, the latest): its last word carries them, for the controller to
    match against the containers it knows of (:attr:`ev.WorkerFinished.reached`). Once all
    containers ended (none known), connects already reported come again: the controller's
    uses are a set, so that says nothing twice.

    A copy is read: a user's thread may still connect while the session finishes."""
    left = [
        ev.PortReached(port, ev.clip(test, REACHED_ID_CHARS), at)
        for (port, test), at in list(_reached.items())
        if port not in _ports
    ]
    if len(left) > REACHED_SENT:
        left.sort(key=lambda r: r.at)
        del left[:-REACHED_SENT]
    return left


def seen_url(url: str) -> None:
    """A database connection to ``url`` (``dialect://host:port/name``) was made here."""
    port = url.partition("://")[2].partition("/")[0].rpartition(":")[2]
    if port.isdigit():
        seen_port(int(port))


_MADE = frozenset({0, errno.EINPROGRESS, errno.EINTR})
"""``connect_ex`` results of a connection made or under way."""
