"""Markdown output of a document (GitHub's: tables, inline code, code blocks), for CI
summaries and pull requests.
"""

from __future__ import annotations

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
from .formatting import squeeze_cell

MD_CELL = 120
"""Markdown cells that may shrink are cut to this length (a CI summary stays concise)."""
_MD_SPECIAL = frozenset("\\`*_[]<>|#~")


def md_escape(text: str) -> str:
    flat = text.replace("\r", " ").replace("\n", " ")
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in flat)


def md_code(text: str, in_table: bool = False) -> str:
    flat = text.replace("\r", " ").replace("\n", " ")
    if not flat:
        return ""
    fence = "``" if "`" in flat else "`"
    body = flat.replace("|", "\\|") if in_table else flat
    pad = " " if fence == "``" or body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def _md_parts(parts: Line, in_table: bool = False) -> str:
    return "".join(
        md_code(p, in_table) if isinstance(p, Code) else md_escape(p) for p in parts if p
    )


def _md_cell(text: str, column: Column) -> str:
    shown = squeeze_cell(text, column, MD_CELL) if column.squeeze and len(text) > MD_CELL else text
    return md_code(shown, in_table=True) if column.code else md_escape(shown)


def markdown_table(table: Table) -> list[str]:
    columns = table.columns
    head = "| " + " | ".join(md_escape(c.title) for c in columns) + " |"
    rule = "|" + "|".join(" ---: " if c.right else " --- " for c in columns) + "|"
    body = [
        "| " + " | ".join(_md_cell(cell, c) for cell, c in zip(row, columns, strict=True)) + " |"
        for row in table.rows
    ]
    return [head, rule, *body]


def _md_block(block: Block) -> list[str]:
    if isinstance(block, Table):
        return markdown_table(block)
    if isinstance(block, Verbatim):
        return ["```", *block.lines, "```"]
    if isinstance(block, Bullets):
        mark = "- ⚠️ " if block.warn else "- "
        return [mark + _md_parts(item) for item in block.items]
    return ["  \n".join(_md_parts(line) for line in block.lines)]


def render_markdown(found: Sequence[Section]) -> str:
    out: list[str] = []
    for number, section in enumerate(printable_sections(found)):
        out.append(("### " if number == 0 else "#### ") + _md_parts(section.title))
        for block in section.blocks:
            out.append("")
            out.extend(_md_block(block))
        out.append("")
    return "\n".join(out)
