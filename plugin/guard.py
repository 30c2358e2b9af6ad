"""Defences against the code under test: names it cannot patch, text it cannot break.

**Bound names.** The monitor's hooks and threads run while tests patch the standard library:
``mock.patch("time.perf_counter", side_effect=[10.0, 12.5])``, a call-counting
``monkeypatch`` fake of ``time.monotonic``, ``mock.patch("builtins.open", mock_open())``,
freezegun (which replaces every *module attribute* that is a real clock function, in every
loaded module, ours included). A call of ours through such a name would consume the test's
side effects, show up in its call counts, or read a frozen clock. So the monitor reaches the
standard library at run time only through :data:`REAL`: the functions as they were when this
module was first imported (at pytest start-up, by the plugin's entry point, before any test
can patch), kept as attributes of an object - not of a module, so out of freezegun's reach.

**Text of user objects.** ``str()`` and ``repr()`` of a user's exception, parameter or object run
the user's code, which may raise anything, ``KeyboardInterrupt`` included. The monitor takes
such text only through :func:`text_of` and :func:`exc_text`, which never raise.
"""

from __future__ import annotations

import faulthandler
import io
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


def _unavailable(name: str) -> Callable[..., Any]:
    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(f"{name} is not available on this platform")

    return unavailable


class _Real:
    """The standard library functions the monitor calls while tests run, bound once."""

    __slots__ = (
        "Condition",
        "Event",
        "Lock",
        "RLock",
        "Thread",
        "active_count",
        "close",
        "current_frames",
        "current_thread",
        "dup",
        "enumerate_threads",
        "faulthandler_register",
        "faulthandler_unregister",
        "flock",
        "fstat",
        "ftruncate",
        "get_ident",
        "getcwd",
        "getpid",
        "getsignal",
        "json_dumps",
        "json_loads",
        "kill",
        "listdir",
        "local_offset",
        "main_thread",
        "monotonic",
        "open",
        "os_open",
        "perf_counter",
        "pread",
        "read",
        "readlink",
        "replace",
        "signal",
        "sleep",
        "socket",
        "stat",
        "sysconf",
        "time",
        "times",
        "uname",
        "unlink",
        "write",
    )

    def __init__(self) -> None:
        # time
        self.time = time.time
        self.monotonic = time.monotonic
        self.perf_counter = time.perf_counter
        self.sleep = time.sleep
        # Seconds east of UTC as pytest started: code under test may change the process's
        # time zone (Django calls time.tzset() with settings.TIME_ZONE at import).
        self.local_offset = time.localtime().tm_gmtoff
        # os, files
        self.getpid = os.getpid
        self.getcwd = os.getcwd
        self.times = os.times
        self.uname = getattr(os, "uname", _unavailable("os.uname"))
        self.sysconf = getattr(os, "sysconf", _unavailable("os.sysconf"))
        self.kill = os.kill
        self.stat = os.stat
        self.fstat = os.fstat
        self.dup = os.dup
        self.ftruncate = os.ftruncate
        self.listdir = os.listdir
        self.unlink = os.unlink
        self.replace = os.replace
        self.os_open = os.open
        self.read = os.read
        self.readlink = os.readlink
        self.pread = getattr(os, "pread", _unavailable("os.pread"))
        self.write = os.write
        self.close = os.close
        self.open = io.open
        try:
            from fcntl import flock
        except ImportError:  # not POSIX: what needs flock says it is unavailable
            flock = _unavailable("fcntl.flock")
        self.flock = flock
        # threads
        self.Thread = threading.Thread
        self.Event = threading.Event
        self.Lock = threading.Lock
        self.RLock = threading.RLock
        self.Condition = threading.Condition
        self.get_ident = threading.get_ident
        self.current_thread = threading.current_thread
        self.main_thread = threading.main_thread
        self.enumerate_threads = threading.enumerate
        self.active_count = threading.active_count
        self.current_frames = sys._current_frames
        # signals
        self.signal = signal.signal
        self.getsignal = signal.getsignal
        self.faulthandler_register = getattr(
            faulthandler, "register", _unavailable("faulthandler.register")
        )
        self.faulthandler_unregister = getattr(
            faulthandler, "unregister", _unavailable("faulthandler.unregister")
        )
        # sockets, json
        self.socket = socket.socket
        self.json_dumps = json.dumps
        self.json_loads = json.loads


REAL = _Real()
"""The standard library as it was at start-up: ``REAL.perf_counter()``, ``REAL.getpid()``..."""


def abspath(path: str) -> str:
    """``os.path.abspath`` with the working directory read through :data:`REAL`."""
    if not os.path.isabs(path):
        path = os.path.join(REAL.getcwd(), path)
    return os.path.normpath(path)


# ------------------------------------------------------------------ user text


def text_of(obj: object, limit: int | None = None) -> str:
    """``str(obj)``, or a description of it if that raises (anything at all)."""
    try:
        text = str(obj)
        if type(text) is not str:  # a str subclass, whose methods are the user's too
            text = str.__str__(text)
    except BaseException as exc:  # noqa: BLE001 - the user's __str__ may raise anything
        text = f"<unprintable {_type_name(obj)}: str() raised {_type_name(exc)}>"
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... [{len(text) - limit} more characters]"
    return text


def repr_of(obj: object, limit: int | None = None) -> str:
    """``repr(obj)``, or a description of it if that raises (anything at all)."""
    try:
        text = repr(obj)
        if type(text) is not str:
            text = str.__str__(text)
    except BaseException as exc:  # noqa: BLE001 - the user's __repr__ may raise anything
        text = f"<unprintable {_type_name(obj)}: repr() raised {_type_name(exc)}>"
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 3)] + "..."
    return text


def exc_text(exc: BaseException) -> str:
    """``"ValueError: the message"`` of an exception whose ``__str__`` may raise."""
    message = text_of(exc)
    name = _type_name(exc)
    return f"{name}: {message}" if message else name


def _type_name(obj: Any) -> str:
    try:
        name = type(obj).__name__
    except BaseException:  # noqa: BLE001 - a metaclass may do anything
        return "object"
    return name if isinstance(name, str) else "object"
