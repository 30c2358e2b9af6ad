"""How the monitor words an ending, one way for the live notices, the end-of-run summary,
the reports and the exports: a worker's exit, a container's death.

Plain values in, so a reader of a report model (rows, not events) words them the same.
"""

from __future__ import annotations

from . import events as ev


def how_it_ended(signal: str | None, exitcode: int | None) -> str | None:
    """``signal SIGKILL`` or ``exit code 3``; None when neither is known."""
    if signal:
        return f"signal {signal}"
    if exitcode is not None:
        return f"exit code {exitcode}"
    return None


def exit_words(crash: ev.WorkerCrashed) -> str:
    """How a worker died: its signal or exit code, else the first line of what xdist said."""
    first = next(iter(crash.error.splitlines()), "")
    return how_it_ended(crash.signal, crash.exitcode) or first or "worker went away"


def death_words(state: str, exit_code: int | None) -> str:
    """How a container of the run died: ``OOM-killed`` or ``exit code N``."""
    return "OOM-killed" if state == "oom-killed" else f"exit code {exit_code}"
