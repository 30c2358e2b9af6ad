"""Colours of the dashboard, taken from the app's theme variables (never hex literals), so
every theme works and ``NO_COLOR`` (Textual turns the screen monochrome) stays readable:
every state and outcome is also written as a word or drawn with its own character.

A widget that draws Rich text in these colours declares :data:`TONE_CLASSES` as its
``COMPONENT_CLASSES``; ``app.tcss`` gives each ``tone--<variable>`` its theme variable, and
:func:`colour` reads the widget's component style (Textual restyles it when the theme
changes)."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from textual.widget import Widget

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


TONES = frozenset(
    {
        *STATE_VARIABLE.values(),
        *OUTCOME_VARIABLE.values(),
        *STATUS_VARIABLE.values(),
        *LEVEL_VARIABLE.values(),
        *("foreground", "primary", "accent", "success", "warning", "error"),
    }
)
"""Every theme variable the dashboard draws text in."""
TONE_CLASSES: frozenset[str] = frozenset(f"tone--{variable}" for variable in TONES)
"""The component classes of a widget that draws in :data:`TONES` (styled in app.tcss)."""

_drawn: WeakKeyDictionary[Widget, tuple[str, dict[str, str]]] = WeakKeyDictionary()
"""Widget -> (the theme, the colours read for it): a redraw paints many cells in a few
colours, and a component style costs a lookup through the CSS."""


def colour(widget: Widget, variable: str) -> str:
    """A theme variable as a Rich colour, from ``widget``'s ``tone--<variable>`` component
    class (alpha dropped: Rich has none)."""
    theme = widget.app.theme
    drawn = _drawn.get(widget)
    if drawn is None or drawn[0] != theme:
        drawn = _drawn[widget] = (theme, {})
    found = drawn[1].get(variable)
    if found is None:
        found = drawn[1][variable] = widget.get_component_styles(f"tone--{variable}").color.hex6
    return found


def state_style(widget: Widget, state: str) -> str:
    return colour(widget, STATE_VARIABLE.get(state, "foreground"))


def outcome_style(widget: Widget, outcome: str) -> str:
    return colour(widget, OUTCOME_VARIABLE.get(outcome, "foreground"))
