"""Lines that fit a panel: a line too long for it goes on under itself, indented (under
the text after its label, if it starts with one), broken where its phrases part (after
``, `` or ``; ``, before `` (``), else between words; never inside a word while a word
boundary is near. Panels draw through :func:`fit_lines`, so a narrow screen reads in
phrases, and a wide one cuts nothing."""

from __future__ import annotations

import re

from rich.text import Text

HANG = 4
"""Cells a continued line is indented by, beyond its first line's indent."""
_PHRASE_ENDS = (", ", "; ", " (", " — ", " → ", " at ", " held by ")
_LABEL = re.compile(r" *\S+ {2,}(?=\S)")
"""A line that starts with a label in a column of its own (a word, then two spaces or
more): its continuations line up with what follows the label."""


def fit_lines(text: Text, width: int) -> Text:
    """``text`` with every line longer than ``width`` cells broken as the module says."""
    if width <= 8 or all(len(line) <= width for line in text.plain.split("\n")):
        return text
    out = Text(end="", no_wrap=True, overflow="ellipsis")
    lines = text.split("\n", allow_blank=True)
    for n, line in enumerate(lines):
        if n:
            out.append("\n")
        out.append_text(_fit(line, width))
    return out


def _fit(line: Text, width: int) -> Text:
    plain = line.plain
    if len(plain) <= width:
        return line
    labelled = _LABEL.match(plain)
    if labelled is not None and labelled.end() <= width // 2:  # "WAITING      gw3 on ..."
        indent = labelled.end()
    else:
        indent = min(width // 3, len(plain) - len(plain.lstrip(" ")) + HANG)
    out = Text()
    first = True
    while len(line.plain) > width:
        cut = _break_at(line.plain, width, indent if not first else 0)
        head, rest = line.divide([cut])
        head.rstrip()
        out.append_text(head)
        out.append("\n")
        rest_plain = rest.plain
        stripped = len(rest_plain) - len(rest_plain.lstrip(" "))
        line = Text(" " * indent) + rest[stripped:]
        first = False
    out.append_text(line)
    return out


def _break_at(plain: str, width: int, floor: int) -> int:
    """Where to break ``plain`` to fit ``width``: after the last phrase end in its second
    half, else at the last space, else at ``width``."""
    window = plain[: width + 1]
    for mark in _PHRASE_ENDS:
        at = window.rfind(mark, 0, width)
        if at > max(floor, width // 2):
            return at + (len(mark) if mark in (", ", "; ") else 1)
    at = window.rfind(" ", 0, width + 1)
    if at > floor + 1:
        return at + 1
    return width
