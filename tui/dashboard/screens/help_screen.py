"""``?`` or ``f1``: every key of the view that has the keys, then every key of the app.

The lists are read from the bindings active when help was asked for (what the footer
shows, and what it hides for want of room), so they cannot drift from what the keys do:
:func:`key_sections` builds them, :class:`HelpScreen` shows them over the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import ActiveBinding, Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

MOUSE = "a click on a tab shows it; the wheel scrolls the view under the pointer"


@dataclass(frozen=True)
class KeySection:
    title: str
    keys: tuple[tuple[str, str], ...]
    """(the keys, what they do), in the order they are bound."""


def key_sections(
    active: Iterable[ActiveBinding],
    view_title: str,
    key_display: Callable[[Binding], str],
) -> list[KeySection]:
    """The keys of the focused view (bindings of widgets) and of the app (of the app or
    its screen), each action once with all of its keys (``+ =  zoom in``)."""
    view: dict[str, tuple[str, list[str]]] = {}
    everywhere: dict[str, tuple[str, list[str]]] = {}
    for node, binding, enabled, _tooltip in active:
        if binding.system or not enabled or not binding.description:
            continue
        into = everywhere if _is_app_level(node) else view
        what = binding.description[:1].lower() + binding.description[1:]
        into.setdefault(binding.action, (what, []))[1].append(key_display(binding))
    sections = []
    if view:
        sections.append(KeySection(view_title, _joined(view)))
    sections.append(KeySection("everywhere", _joined(everywhere)))
    return sections


def _is_app_level(node: DOMNode) -> bool:
    return isinstance(node, (App, Screen))


def _joined(found: dict[str, tuple[str, list[str]]]) -> tuple[tuple[str, str], ...]:
    """Each action once: all its keys, and the words of the first binding found."""
    return tuple((" ".join(dict.fromkeys(keys)), what) for what, keys in found.values())


def help_text(sections: list[KeySection], about: str) -> Text:
    text = Text()
    text.append(f"{about}\n", style="bold")
    width = max((len(k) for s in sections for k, _ in s.keys), default=4) + 2
    for section in sections:
        text.append(f"\n{section.title}\n", style="bold")
        for keys, what in section.keys:
            text.append(f"  {keys:<{width}}", style="bold")
            text.append(f"{what}\n")
    text.append(f"\nmouse: {MOUSE}\n")
    return text


class HelpScreen(ModalScreen[None]):
    """The keys, over the dashboard; escape, q, ? or f1 closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss", "close", key_display="esc"),
    ]

    def __init__(self, sections: list[KeySection], about: str) -> None:
        super().__init__()
        self.sections = sections
        self.body = help_text(sections, about)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(self.body, id="help-text")
        yield Footer()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
