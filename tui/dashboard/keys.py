"""Footer groups of key bindings (``←→ select``), where the Textual in use has them.

Textual added ``Binding.Group`` after 1.0, the oldest release the dashboard supports:
``Binding(..., **grouped(SELECT))`` groups the keys on a newer Textual and shows them one
by one on an older one.
"""

from __future__ import annotations

from typing import TypedDict

from textual.binding import Binding

HAS_GROUPS = hasattr(Binding, "Group")


class GroupArgument(TypedDict, total=False):
    group: Binding.Group


def grouped(description: str, compact: bool = False) -> GroupArgument:
    """The ``group`` argument of a Binding, or none where Textual has no groups."""
    if not HAS_GROUPS:
        return {}
    return {"group": Binding.Group(description, compact=compact)}
