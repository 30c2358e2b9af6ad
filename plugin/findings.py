"""The words for what the fold found, shared by every place that says it.

The live notices and the terminal summary (here, in the plugin) and ``testmon report``
and the dashboard (the viewer side) say a racing setup, a setup that ran once while the
others waited, a wait on another worker's lock and the tail of a run in these words, each
with its own way of writing a duration (``fmt``), so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .state import SetupRace, SetupStory, Tail

Fmt = Callable[[float], str]

FIX = "one worker should set it up while the others wait: monitor.run_once"
"""What to do about a racing setup."""


def dur(seconds: float) -> str:
    """A duration in the terminal's words: ``0.30s``, ``12.5s``, ``2.5 min``."""
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"


def names(workers: Sequence[str]) -> str:
    return ", ".join(workers)


def race_parts(race: SetupRace, fmt: Fmt = dur) -> list[str]:
    """A racing setup: who, how closely, on what, then each outcome (one part each)."""
    resources = [r.text for r in race.resources]
    on = f"on {', '.join(resources)}" if resources else "shared resource not seen"
    outcome = [f"{names(race.succeeded)} succeeded"] if race.succeeded else ["none succeeded"]
    outcome += [f"{w} failed: {error or '(no message)'}" for w, error in race.failed.items()]
    head = f"{names(race.workers)} set up {race.scope} fixture {race.fixture!r} at the same time"
    when = f"began {fmt(race.spread)} apart, overlapping for {fmt(race.overlap)}"
    return [head, when, on, *outcome]


def race_line(parts: Sequence[str]) -> str:
    """The :func:`race_parts` of a racing setup in one line (without :data:`FIX`)."""
    head, when, on, *outcome = parts
    return f"{head} ({when}) {on}: {'; '.join(outcome)}"


def setup_words(
    scope: str, fixture: str, count: int, workers: int, story: SetupStory, fmt: Fmt = dur
) -> str:
    """A wide fixture set up on several workers: its work, and the waits that are none."""
    lock_words = f" ({story.lock})" if story.lock else ""
    if story.ran_once_on is not None:
        return (
            f"{scope} fixture {fixture!r} ran once on {story.ran_once_on}, "
            f"{fmt(story.once_work)}; {names(story.waiters)} waited {fmt(story.waited)} in all "
            f"for its lock{lock_words}"
        )
    text = (
        f"{scope} fixture {fixture!r} set up {count}x on {workers} workers, "
        f"{fmt(story.work)} of setup in all"
    )
    if story.waited > 0:
        text += f", besides {fmt(story.waited)} waiting on locks{lock_words}"
    return text


def wait_words(
    *,
    worker: str,
    waited: float,
    holder: str | None,
    fixture: str | None,
    test: str | None,
    outcome: str,
    lock: str,
    fmt: Fmt = dur,
) -> str:
    """``gw0 waited 2.30s for gw3 in migrated_db (test_a.py::test_x)``."""
    whom = f" for {holder}" if holder else f" on {lock}"
    where = f" in {fixture}" if fixture else ""
    if test:
        where += f" ({test})" if fixture else f" in {test}"
    end = {
        "timeout": ", then timed out",
        "failed": ", then failed",
        "deadlock": ", then failed: a deadlock the server broke",
    }.get(outcome, "")
    return f"{worker} waited {fmt(waited)}{whom}{where}{end}"


def holder_words(worker: str, count: int, held: float, fmt: Fmt = dur) -> str:
    """How long a worker held a lock in all: ``gw3 2.26s`` (``gw3 2.26s ×3`` if taken
    several times)."""
    return f"{worker} {fmt(held)}" + (f" ×{count}" if count != 1 else "")


def tail_parts(tail: Tail, fmt: Fmt = dur) -> list[str]:
    """How the run ended: below full width and who held it, the idle worker time, and
    what the wall time would have been had that test started first (one part each)."""
    held = f"held by {tail.worker}"
    if tail.test is not None:
        duration = f" ({fmt(tail.test_duration)})" if tail.test_duration else ""
        held += f" with {tail.test}{duration}"
    parts = [
        f"the run ran below full width for its last {fmt(tail.below)}, {held}",
        f"{tail.worker} ran alone for the last {fmt(tail.alone)}",
        f"{names(tail.idle_workers)} idle meanwhile, {fmt(tail.idle)} of worker time in all",
    ]
    if tail.estimate is not None:
        parts.append(
            f"had that test started first, about {fmt(tail.estimate)} instead of "
            f"{fmt(tail.wall)} (an estimate from the recorded durations)"
        )
    return parts


def first_at_words(first: str, place: str) -> str:
    """Where a stall was first sampled, told after the place it spent its time at:
    ``first at line 10`` in the same function, else ``first at file:line in func``."""
    path, _, func = first.rpartition(" in ")
    where, _, line = path.rpartition(":")
    now_path, _, now_func = place.rpartition(" in ")
    if func == now_func and where == now_path.rpartition(":")[0]:
        return f"first at line {line}"
    return f"first at {first}"
