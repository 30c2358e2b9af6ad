"""One renderer per format behind one small protocol, as coverage.py has one reporter
per format: every command that prints a model (the report, the runs list, diff, suspects,
bisect) goes through :func:`render`, so ``--format`` means the same everywhere.

JSON prints the model as it is; text and markdown draw the document of
:class:`~.document.Section` built from it (only when asked for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from .document import Format, Section
from .render_json import render_json
from .render_markdown import render_markdown
from .render_text import render_text

Model = TypeVar("Model")


class Renderer(Protocol):
    def __call__(self, model: object, document: Callable[[], list[Section]], /) -> str:
        """The model's text in one format; ``document`` builds its sections."""
        ...


def _text(model: object, document: Callable[[], list[Section]], /) -> str:
    return render_text(document())


def _markdown(model: object, document: Callable[[], list[Section]], /) -> str:
    return render_markdown(document())


def _json(model: object, document: Callable[[], list[Section]], /) -> str:
    return render_json(model)


RENDERERS: dict[Format, Renderer] = {"text": _text, "markdown": _markdown, "json": _json}


def render(fmt: Format, model: Model, document: Callable[[Model], list[Section]]) -> str:
    """``model`` in ``fmt``; ``document(model)`` gives the sections text and markdown draw."""
    return RENDERERS[fmt](model, lambda: document(model))
