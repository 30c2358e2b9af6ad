"""JSON output: a model printed as it is (every control character escaped, as JSON can)."""

from __future__ import annotations

import json
import re

import msgspec

from .document import CONTROL


def _unicode_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


def _struct(value: object) -> object:
    """A struct of the fold a model holds (the report's tail) prints as its fields; anything
    else that leaked into a model is a bug, said at once (not printed in some order)."""
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    raise TypeError(f"{type(value).__name__} in a report model is not JSON")


def render_json(model: object) -> str:
    # json escapes C0 controls itself; what is left (DEL, C1, separators, overrides) can
    # only stand inside strings, where a \\u escape keeps the data exact
    text = json.dumps(model, indent=2, ensure_ascii=False, allow_nan=False, default=_struct)
    return CONTROL.sub(_unicode_escape, text) + "\n"
