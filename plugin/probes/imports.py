"""Run a callback when a library is imported, without importing it ourselves.

Probes patch optional libraries (filelock, SQLAlchemy, Alembic). Importing them eagerly
would cost every worker tens of milliseconds even when the suite never uses them, so a
probe asks :func:`when_imported` instead: the callback runs at once if the module is
already loaded, else right after its first import. The finder costs one dict lookup per
import statement of a module not yet loaded.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

__tracebackhide__ = True
"""pytest leaves this module's frames out of the traceback of a failure: its wrappers sit
between the user's code and the library it called, and a failure reads as without the
monitor."""

Callback = Callable[[ModuleType], None]


class _Loader:
    """The module's own loader, plus the callbacks after ``exec_module``. Everything else
    (``get_source`` for tracebacks, ``get_resource_reader``...) is the inner loader's."""

    def __init__(self, inner: importlib.abc.Loader, callbacks: list[Callback]) -> None:
        self._inner = inner
        self._callbacks = callbacks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        for callback in self._callbacks:
            callback(module)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.pending: dict[str, list[Callback]] = {}
        self._busy = threading.local()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        callbacks = self.pending.get(fullname)
        if callbacks is None or getattr(self._busy, "name", None) == fullname:
            return None
        self._busy.name = fullname
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.name = None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        del self.pending[fullname]
        spec.loader = _Loader(spec.loader, callbacks)  # type: ignore[assignment]
        return spec


_finder = _Finder()


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` now if ``name`` is loaded, else right after it is imported."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    _finder.pending.setdefault(name, []).append(callback)
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def forget(name: str) -> None:
    """Drop pending callbacks for ``name`` (the recorder is shutting down)."""
    _finder.pending.pop(name, None)
