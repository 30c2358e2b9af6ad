"""Text output of a document: prose, bullets and tables fitted to the width of the
terminal, at least :data:`WIDTH` columns; long ids and messages are squeezed, not wrapped.
Into a pipe or a file nothing is cut (unless ``$COLUMNS`` asks for a width).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

from .document import (
    Block,
    Bullets,
    Code,
    Column,
    Line,
    Section,
    Table,
    Verbatim,
    printable_sections,
)
from .formatting import cut, shorten_nodeid, squeeze_cell

WIDTH = 100
"""Text output for a terminal fits this many columns (more if the terminal has them)."""
UNLIMITED = 1 << 20
"""The width of text that goes to a pipe or a file: whole lines, nothing cut."""


GAP = "  "
INDENT = "  "
MIN_SQUEEZED = 12
MIN_CODE_KEPT = 32
"""Code parts of prose (ids, paths) shorter than this are never shortened."""


def _text_line(parts: Line, width: int) -> str:
    """One line of prose; too long, its longest code parts (ids, paths) lose their start."""
    flat = [p.replace("\n", " ") for p in parts]
    over = sum(map(len, flat)) - width
    codes = sorted(
        (i for i, p in enumerate(parts) if isinstance(p, Code)), key=lambda i: -len(flat[i])
    )
    for i in codes:
        if over <= 0:
            break
        keep = max(MIN_CODE_KEPT, len(flat[i]) - over)
        if keep < len(flat[i]):
            over -= len(flat[i]) - keep
            flat[i] = shorten_nodeid(flat[i], keep)
    return cut("".join(flat), width)


def _fit(widths: list[int], columns: Sequence[Column], budget: int) -> list[int]:
    """Shrink squeezable columns, widest first, until the row fits ``budget``."""
    widths = list(widths)
    floors = [
        min(w, max(MIN_SQUEEZED, len(c.title))) if c.squeeze else w
        for c, w in zip(columns, widths, strict=True)
    ]
    while (over := sum(widths) - budget) > 0:
        candidates = [i for i, w in enumerate(widths) if w > floors[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        second = max((widths[i] for i in candidates if i != widest), default=0)
        target = max(floors[widest], second, widths[widest] - over)
        widths[widest] = min(target, widths[widest] - 1)
    return widths


def _pad(text: str, width: int, right: bool) -> str:
    return text.rjust(width) if right else text.ljust(width)


def text_table(table: Table, width: int = WIDTH, indent: str = INDENT) -> list[str]:
    """Aligned columns in ``width``; ``below`` cells go on their own line under their row."""
    inline = [i for i, c in enumerate(table.columns) if not c.below]
    below = [i for i, c in enumerate(table.columns) if c.below]
    columns = [table.columns[i] for i in inline]
    rows = [[cell.replace("\n", " ") for cell in row] for row in table.rows]
    natural = [
        max([len(c.title), *(len(r[i]) for r in rows)])
        for i, c in zip(inline, columns, strict=True)
    ]
    budget = width - len(indent) - len(GAP) * (len(columns) - 1)
    widths = _fit(natural, columns, budget)
    head = (_pad(c.title, w, c.right) for c, w in zip(columns, widths, strict=True))
    lines = [indent + GAP.join(head).rstrip()]
    for row in rows:
        cells = (
            _pad(squeeze_cell(row[i], c, w) if len(row[i]) > w else row[i], w, c.right)
            for i, c, w in zip(inline, columns, widths, strict=True)
        )
        lines.append(cut(indent + GAP.join(cells).rstrip(), width))
        lines.extend(cut(indent * 3 + row[i], width) for i in below if row[i])
    return lines


def _text_block(block: Block, width: int) -> list[str]:
    if isinstance(block, Table):
        return text_table(block, width)
    if isinstance(block, Verbatim):
        return [INDENT + line for line in block.lines]
    if isinstance(block, Bullets):
        mark = "! " if block.warn else "- "
        return [_text_line((INDENT, mark, *item), width) for item in block.items]
    return [_text_line((INDENT, *line), width) for line in block.lines]


def text_width() -> int:
    """:data:`WIDTH`, or the terminal's (or ``$COLUMNS``) when wider: nothing is cut that
    the screen could show. Not to a terminal and without ``$COLUMNS``: :data:`UNLIMITED`
    (a CI log, a file or ``grep`` gets whole node ids and paths)."""
    if not os.environ.get("COLUMNS", "").strip().isdigit() and not _to_terminal():
        return UNLIMITED
    return max(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)


def _to_terminal() -> bool:
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


def render_text(found: Sequence[Section], width: int | None = None) -> str:
    width = text_width() if width is None else width
    out: list[str] = []
    for number, section in enumerate(printable_sections(found)):
        if number:
            out.append("")
        out.append(_text_line(section.title, width))
        for block in section.blocks:
            out.extend(_text_block(block, width))
    return "\n".join(out) + "\n"
