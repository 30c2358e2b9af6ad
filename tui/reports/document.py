"""The document that reports are made of: sections of prose lines, bullet lists, verbatim
lines and tables, with :class:`Code` parts.

The run report and the runs list (:mod:`.sections`) and the forensics build one;
:mod:`.render_text` and :mod:`.render_markdown` draw it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Format = Literal["text", "markdown", "json"]


class Code(str):
    """Text shown as inline code in markdown (ids, node ids, fixture names)."""

    __slots__ = ()


Line = tuple[str, ...]
"""Prose: plain parts and :class:`Code` parts, joined without separators."""


@dataclass(frozen=True)
class Column:
    title: str
    right: bool = False
    squeeze: Literal["", "end", "start"] = ""
    """How cells shrink when the table is too wide: keep the end (node ids, paths: see
    :func:`shorten_nodeid`) or the start (messages)."""
    code: bool = False
    """Markdown shows the cells as inline code."""
    below: bool = False
    """Text puts the cell on its own line under the row (long messages); markdown keeps it
    a column."""


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Prose:
    lines: list[Line]


@dataclass(frozen=True)
class Bullets:
    items: list[Line]
    warn: bool = False


@dataclass(frozen=True)
class Verbatim:
    """Lines shown exactly, never cut (commands to copy): a code block in markdown."""

    lines: list[str]


Block = Prose | Table | Bullets | Verbatim


@dataclass(frozen=True)
class Section:
    title: Line
    blocks: list[Block]
