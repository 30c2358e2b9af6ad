"""Find a worker or a test from the command palette (``/`` or ctrl+p).

Tests are ranked before anything is cut: a name equal to what was typed first (the test
function, its class, its module: ``test_lockmode`` finds every test of
``test_lockmode.py``), then names that start with it, then node ids that contain it, then
fuzzy matches; within a rank, in the order they ran. Only then is the list cut to
:data:`FIND_LIMIT` (never cutting an exact match): keeping the first fuzzy hits in the
log's order once dropped every exact match of a big suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.text import Text
from textual.command import Hit, Hits, Provider

from testmon_live.plugin import events as ev
from testmon_live.tui.reports.document import printable

if TYPE_CHECKING:
    from .app import MonitorApp

FIND_LIMIT = 100
"""Tests listed at most, besides the exact matches (all of them are)."""
EXACT, PREFIX, CONTAINS, FUZZY = range(4)
RANK_SCORE = {EXACT: 1.0, PREFIX: 0.9, CONTAINS: 0.8}
"""The palette orders hits by score: each rank above every hit of the next."""
FUZZY_TOP = 0.7


def names(nodeid: str) -> list[str]:
    """The names a node id is made of, lower case: module stem, classes, the test with and
    without its parameters (``a/test_x.py::T::test_y[1]`` -> test_x, t, test_y[1], test_y)."""
    path, *rest = nodeid.lower().split("::")
    stem = path.rsplit("/", 1)[-1].removesuffix(".py")
    found = [stem, *rest]
    if rest and "[" in rest[-1]:
        found.append(rest[-1].split("[", 1)[0])
    return found


def rank(query: str, nodeid: str) -> int | None:
    """EXACT, PREFIX or CONTAINS, or None (left to the fuzzy matcher)."""
    needle = query.lower()
    lower = nodeid.lower()
    if lower == needle:
        return EXACT
    parts = names(nodeid)
    if needle in parts:
        return EXACT
    if any(part.startswith(needle) for part in parts):
        return PREFIX
    if needle in lower:
        return CONTAINS
    return None


def in_order(needle: str, text: str) -> bool:
    """Are the characters of ``needle`` in ``text``, in order? (cheap, before the fuzzy
    matcher, which is not)."""
    at = 0
    for char in needle:
        at = text.find(char, at) + 1
        if not at:
            return False
    return True


@dataclass(frozen=True)
class Found:
    nodeid: str
    rank: int
    score: float
    """The palette's score: by rank, fuzzy ones by how well they match."""


def find_tests(
    query: str,
    nodeids: Iterable[str],
    fuzzy: Callable[[str], float],
    limit: int = FIND_LIMIT,
) -> list[Found]:
    """The tests to list for ``query``, best first (``nodeids`` in the order they ran):
    all exact matches, then the rest up to ``limit``."""
    ranked: dict[int, list[Found]] = {EXACT: [], PREFIX: [], CONTAINS: [], FUZZY: []}
    left: list[str] = []
    for nodeid in nodeids:
        where = rank(query, nodeid)
        if where is None:
            left.append(nodeid)
        else:
            ranked[where].append(Found(nodeid, where, RANK_SCORE[where]))
    found = ranked[EXACT] + ranked[PREFIX] + ranked[CONTAINS]
    if len(found) < limit:
        needle = query.lower().replace(" ", "")
        for nodeid in left:
            if in_order(needle, nodeid.lower()):
                score = fuzzy(nodeid)
                if score > 0:
                    ranked[FUZZY].append(Found(nodeid, FUZZY, FUZZY_TOP * min(score, 1.0)))
        found += sorted(ranked[FUZZY], key=lambda f: -f.score)
    return found[: max(limit, len(ranked[EXACT]))]


def shown(name: str, query: str) -> Text:
    """A name from the log as the palette shows it: a Text (never markup: ``[csv]`` is a
    parameter, not a style), what was typed in bold where it is found whole."""
    text = Text(printable(name))
    at = text.plain.lower().find(query.lower())
    if at >= 0:
        text.stylize("bold underline", at, at + len(query))
    return text


class FindProvider(Provider):
    """Command palette: find a worker or a test by typing its name or part of it."""

    async def search(self, query: str) -> Hits:
        from .app import MonitorApp

        app = self.app
        if not isinstance(app, MonitorApp) or not query.strip():
            return
        for hit in self._hits(app, query.strip()):
            yield hit

    def _hits(self, app: MonitorApp, query: str) -> Iterator[Hit]:
        matcher = self.matcher(query)
        with app.ingest.lock:
            workers = [w.id for w in app.ingest.state.active_workers()]
            tests: dict[str, ev.TestFinished] = {}
            for test in app.ingest.state.tests:
                tests[test.nodeid] = test
        for wid in workers:
            score = 1.0 if wid == query.lower() else matcher.match(wid)
            if score > 0:
                yield Hit(score, shown(wid, query), partial(app.show_worker, wid), help="worker")
        for found in find_tests(query, tests, matcher.match):
            test = tests[found.nodeid]
            yield Hit(
                found.score,
                shown(found.nodeid, query),
                partial(app.open_test, test),
                help=escape(printable(f"test, {test.outcome} on {test.w}")),
            )
