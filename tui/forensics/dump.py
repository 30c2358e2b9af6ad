"""``testmon dump RUN WORKER``: ask a live worker for every thread's stack now.

The command goes through the hub to the worker (a ``dump`` :class:`Command`); the worker
answers with a :class:`~testmon_live.plugin.events.Stall` whose ``request`` is the
command's id (``reason="dump"``). A worker the hub found unresponsive (native code holding
the GIL) is dumped by the hub from outside, when it is a local process. Also used to
print any stall as text (:func:`stall_text`).
"""

from __future__ import annotations

import json
import os

from testmon_live.plugin import events as ev
from testmon_live.plugin.probes.stacks import frame_text
from testmon_live.plugin.runlog import LiveRun, MonitorDir, live_runs
from testmon_live.tui.hub_client import LiveConnection, SourceError
from testmon_live.tui.reports.document import printable

DUMP_TIMEOUT = 10.0
"""Seconds to wait for the worker's answer."""
OUTER_FRAMES = 2
"""Frames shown above a thread's first frame of user code (the rest is pytest machinery)."""


class DumpError(Exception):
    """Why no stacks came back: meant for the user."""


def find_live(mdir: MonitorDir, spec: str) -> LiveRun:
    """A live run by id, unique id prefix or ``latest``."""
    runs = live_runs(mdir)
    if not runs:
        raise DumpError(f"no live run in {mdir.root}: dumps need a run in progress")
    if spec == "latest":
        return runs[0]
    exact = [r for r in runs if r.run_id == spec]
    found = exact or [r for r in runs if r.run_id.startswith(spec)]
    if not found:
        live = ", ".join(r.run_id for r in runs)
        raise DumpError(f"no live run {spec!r} (live now: {live})")
    if len(found) > 1:
        raise DumpError(f"{spec!r} matches several live runs: give more of the id")
    return found[0]


def request_dump(live: LiveRun, worker: str, timeout: float = DUMP_TIMEOUT) -> ev.Stall:
    """Send ``dump`` to ``worker`` of a live run and wait for its stacks."""
    request = int.from_bytes(os.urandom(4), "big") or 1
    try:
        with LiveConnection(live, client="testmon dump") as conn:
            conn.settimeout(timeout)
            conn.send(ev.Command(worker=worker, cmd="dump", id=request))
            for message in conn.messages():
                if isinstance(message, ev.ControlError):
                    raise DumpError(message.msg)
                if isinstance(message, ev.Stall) and message.request == request:
                    return message
                if isinstance(message, ev.Bye):
                    raise DumpError(f"the run ended before {worker} answered ({message.reason})")
    except TimeoutError:
        raise DumpError(f"{worker} did not answer within {timeout:.0f}s") from None
    except SourceError as exc:
        raise DumpError(str(exc)) from None
    raise DumpError(f"the hub closed the connection before {worker} answered")


def _frame(frame: ev.Frame, root: str | None) -> str:
    return ("> " if frame.user else "  ") + frame_text(frame, root)


def _frames(frames: list[ev.Frame], root: str | None, indent: str) -> list[str]:
    first_user = next((i for i, f in enumerate(frames) if f.user), None)
    start = max(0, (first_user if first_user is not None else len(frames) - 6) - OUTER_FRAMES)
    lines = [f"{indent}... {start} outer frames" for _ in range(1) if start]
    lines += [indent + _frame(f, root) for f in frames[start:]]
    return lines


def live_root(live: LiveRun) -> str | None:
    """The run's rootdir, from its live file (frames below it are shown relative)."""
    try:
        root = json.loads(live.path.read_text()).get("rootdir")
    except (OSError, ValueError):
        return None
    return str(root) if root else None


def stall_text(stall: ev.Stall, root: str | None = None) -> str:
    """Every thread of a stall or dump: verdict, detail, frames (user frames marked ``>``)."""
    head = f"{stall.w}  {stall.test or '(no test)'}  ({stall.phase}"
    if stall.fixture:
        head += f", fixture {stall.fixture}"
    head += f", {stall.elapsed:.1f}s in this phase)"
    lines = [head]
    if stall.location:
        lines.append(f"at {stall.location}")
    for thread in stall.threads:
        daemon = " daemon" if thread.daemon else ""
        lines.append("")
        lines.append(
            f"{thread.name}{daemon}: {thread.verdict}"
            + (f" - {thread.detail}" if thread.detail else "")
        )
        lines.extend(_frames(thread.frames, root, "    "))
        for task in thread.tasks:
            waits = f" awaiting {task.awaiting}" if task.awaiting else ""
            lines.append(f"    task {task.name} ({task.coro}){waits}")
            lines.extend(_frames(task.frames, root, "        "))
    return printable("\n".join(lines)) + "\n"
