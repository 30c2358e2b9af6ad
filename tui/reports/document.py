"""The document that reports are made of: sections of prose lines, bullet lists, verbatim
lines and tables, with :class:`Code` parts.

The run report and the runs list (:mod:`.sections`) and the forensics build one;
:mod:`.render_text` and :mod:`.render_markdown` draw it, after :func:`printable_sections`:
text from a log is untrusted, and no escape sequence in it reaches a terminal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

CONTROL = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
"""What a terminal acts on instead of showing: C0 controls but the newline (ESC starts the
sequences that clear the screen, move the cursor, set the title, make OSC 8 links), DEL,
C1 controls (0x9b is an 8-bit CSI), Unicode line separators, bidirectional overrides, lone
surrogates."""


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    if code == 0x09:
        return " "
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every :data:`CONTROL` character shown escaped (``\\x1b``; a tab as a
    space); newlines are kept. The one helper for all text a log brings to a screen."""
    if text.isprintable():
        return text
    return CONTROL.sub(_escaped, text.replace("\r\n", "\n"))


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


def _line(parts: Line) -> Line:
    return tuple(Code(printable(p)) if isinstance(p, Code) else printable(p) for p in parts)


def _block(block: Block) -> Block:
    if isinstance(block, Table):
        return replace(block, rows=[[printable(cell) for cell in row] for row in block.rows])
    if isinstance(block, Prose):
        return replace(block, lines=[_line(line) for line in block.lines])
    if isinstance(block, Bullets):
        return replace(block, items=[_line(item) for item in block.items])
    return replace(block, lines=[printable(line) for line in block.lines])


def printable_sections(found: Sequence[Section]) -> list[Section]:
    """The document with all its text :func:`printable`: what the renderers draw."""
    return [Section(_line(s.title), [_block(b) for b in s.blocks]) for s in found]
