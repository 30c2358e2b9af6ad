"""Which recorded runs are of the same suite as another: the one place both readers of
older runs (:mod:`.predict.overheads` and the dashboard's ETA, :mod:`.dashboard.eta`) find
them.

A run's suite is told from its log's header (:func:`read_header`, which reads only the
first line) and the number of distinct tests it ran (:class:`Suite`). How much of it must
match depends on the use: start-up and exit need all of it (a run of one file starts up
differently, so does another machine); durations of tests need only the rootdir (a run of
a subset still says what its tests took; a run of another rootdir says nothing of these).

A log is untrusted input: a header that does not decode is no suite's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import LOG_SUFFIX, RunLogError, open_log

HEADER_BYTES = 1024 * 1024
"""A header line longer than this is not a header this build wrote."""


@dataclass(frozen=True)
class Suite:
    """What makes two runs' start-up and exit comparable."""

    rootdir: str
    python: str
    implementation: str
    hostname: str
    cpus: int
    tests: int
    """Distinct tests run."""


def suite_of(header: ev.RunStarted, tests: int) -> Suite:
    return Suite(
        header.rootdir, header.python, header.implementation, header.hostname, header.cpus, tests
    )


def read_header(path: Path) -> ev.RunStarted | None:
    """A log's header, or None when it has none this build reads."""
    try:
        with open_log(path) as handle:
            line = handle.readline(HEADER_BYTES)
    except (RunLogError, OSError):
        return None
    try:
        header = ev.decode_event(line.rstrip(b"\n"))
    except ev.DecodeError:
        return None
    if not isinstance(header, ev.RunStarted) or header.schema > ev.SCHEMA_VERSION:
        return None
    return header


def older_logs(path: Path, scanned: int) -> list[Path]:
    """The newest ``scanned`` logs recorded before ``path`` in its folder, newest first (a
    log's name starts with its start time, so it sorts as the runs started)."""
    name = path.name
    try:
        siblings = sorted(
            (p for p in path.parent.iterdir() if p.name.endswith(LOG_SUFFIX) and p.name < name),
            reverse=True,
        )
    except OSError:
        return []
    return siblings[:scanned]
