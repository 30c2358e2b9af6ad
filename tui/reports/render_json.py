"""JSON output: a model printed as it is."""

from __future__ import annotations

import json


def render_json(model: object) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
