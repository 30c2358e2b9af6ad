"""Colours of the dashboard, taken from the app's theme variables (never hex literals), so
every theme works and ``NO_COLOR`` (Textual turns the screen monochrome) stays readable:
every state and outcome is also written as a word or drawn with its own character."""

from __future__ import annotations

from textual.app import App

STATE_VARIABLE = {
    "starting": "foreground-muted",
    "collecting": "text-secondary",
    "idle": "foreground-muted",
    "setup": "primary",
    "call": "success",
    "teardown": "primary",
    "finishing": "foreground-muted",
    "waiting on lock": "warning",
    "waiting on container": "accent",
    "stalled": "error",
    "unresponsive": "error",
    "crashed": "error",
    "done": "foreground-muted",
    "no end recorded": "warning",
}
"""Worker state -> theme variable."""

OUTCOME_VARIABLE = {
    "passed": "success",
    "failed": "error",
    "error": "error",
    "skipped": "warning",
    "xfailed": "text-primary",
    "xpassed": "accent",
}

STATUS_VARIABLE = {
    "running": "primary",
    "finished": "success",
    "interrupted": "warning",
    "crashed": "error",
    "incomplete": "warning",
    "waiting": "secondary",
}

LEVEL_VARIABLE = {"info": "foreground-muted", "warning": "warning", "error": "error"}


_cache: dict[tuple[int, str], dict[str, str]] = {}


def colour(app: App[object], variable: str) -> str:
    """A theme variable as a Rich colour (alpha dropped: Rich has none)."""
    key = (id(app), app.theme)
    variables = _cache.get(key)
    if variables is None:
        variables = _cache[key] = app.get_css_variables()
    value = variables.get(variable, "")
    if value.startswith("#") and len(value) == 9:
        value = value[:7]
    return value or "default"


def state_style(app: App[object], state: str) -> str:
    return colour(app, STATE_VARIABLE.get(state, "foreground"))


def outcome_style(app: App[object], outcome: str) -> str:
    return colour(app, OUTCOME_VARIABLE.get(outcome, "foreground"))
