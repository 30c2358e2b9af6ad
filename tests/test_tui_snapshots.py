"""SVG snapshots of the dashboard's main views: the scenes of `tui/dashboard/screenshots.py`, which
also makes `screenshots/`, through the same app factory and scene driver (`play`). Update with
`pytest tests/test_tui_snapshots.py --snapshot-update` and look at the diff report.
The scenes are moments of a real recorded demo run, ``tests/data/demo-run.jsonl``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from testmon_live.plugin import events as ev
from testmon_live.tui.dashboard.screenshots import (
    DEMO_LOG,
    SCENES,
    STALLED_AT,
    WAITING_AT,
    Scene,
    demo_events,
    play,
    scene_app,
    scene_events,
)

SnapCompare = Callable[..., bool]


@pytest.mark.parametrize("scene", SCENES, ids=[s.name for s in SCENES])
def test_view(scene: Scene, tmp_path: Path, snap_compare: SnapCompare) -> None:
    app = scene_app(scene, tmp_path)

    async def prepare(pilot: Pilot[None]) -> None:
        await play(scene, app, pilot)

    assert snap_compare(app, terminal_size=scene.size, run_before=prepare)


LAYOUT_SIZES = ((160, 50), (80, 24))
"""A tall wide terminal and the smallest usual one: each view uses the room, or gives up
what matters least (issue 16)."""
LAYOUT_VIEWS = (
    ("workers", ("1",), STALLED_AT),
    ("workers-waiting", ("1",), WAITING_AT),
    ("timeline", ("2", "down", "right", "right"), None),
    ("parallelism", ("3",), STALLED_AT),
    ("locks", ("4",), WAITING_AT),
    ("stuck", ("6",), STALLED_AT),
)
LAYOUTS = tuple(
    Scene(f"{name}-{w}x{h}", name, keys, seconds, size=(w, h))
    for name, keys, seconds in LAYOUT_VIEWS
    for w, h in LAYOUT_SIZES
)


@pytest.mark.parametrize("scene", LAYOUTS, ids=[s.name for s in LAYOUTS])
def test_layout(scene: Scene, tmp_path: Path, snap_compare: SnapCompare) -> None:
    """The views at 160x50 and 80x24, as moments of the recorded demo run."""
    app = scene_app(scene, tmp_path)

    async def prepare(pilot: Pilot[None]) -> None:
        await play(scene, app, pilot)

    assert snap_compare(app, terminal_size=scene.size, run_before=prepare)


def test_recording_is_a_whole_demo_run_with_what_the_scenes_show() -> None:
    """A re-recording without the engine (no containers) or cut short fails here, not in
    a picture nobody looks at."""
    events = demo_events()
    assert DEMO_LOG.stat().st_size < 1_000_000
    (header,) = [e for e in events if isinstance(e, ev.RunStarted)]
    assert header.workers == 4
    assert "--monitor-stall=2" in header.args
    assert not {"HOSTNAME", "USER", "PWD", "OLDPWD"} & set(header.env)  # trimmed at record
    assert any(isinstance(e, ev.RunFinished) for e in events)
    kinds = {type(e) for e in events}
    assert {ev.LockEvent, ev.ContainerEvent, ev.Stall, ev.StallEnded} <= kinds
    outcomes = {e.outcome for e in events if isinstance(e, ev.TestFinished)}
    assert {"passed", "failed", "skipped"} <= outcomes
    waits = [e for e in events if isinstance(e, ev.LockEvent) and e.action == "wait"]
    assert len({e.w for e in waits}) >= 2  # contention on the migration lock
    # each moment is inside the run: some events before it, some after
    cut = [len(scene_events(s)) for s in SCENES if s.seconds is not None]
    assert all(0 < n < len(events) for n in cut)
