"""The dashboard's main views as SVG, from a recorded run of the demo suite.

``python -m testmon_live.tui.dashboard.screenshots [DIR]`` writes ``DIR/<scene>.svg`` (default
``screenshots/``) from :data:`DEMO_LOG`, one real ``testmon demo`` run
(``pytest -n 4 --monitor --monitor-stall=2`` over ``examples/demo``) kept in the source tree.
Each scene is a moment of that run: its events up to that many seconds in, shown at that
time. The snapshot tests (``tests/test_tui_snapshots.py``) drive the very same scenes
through the same :func:`~.app.make_app` and the same driver (:func:`play`), so the README's
pictures cannot drift from what the tests check.

``python -m testmon_live.tui.dashboard.screenshots --record`` records the run again: it copies the
demo suite to :data:`RECORD_FOLDER` (a neutral path, as it shows in the log) and runs it
there; start the container engine first (``eval "$(scripts/podman-setup --env)"``) or the
container tests skip. Then pick the scenes' moments anew: they are seconds into the run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import DEFAULT_DIRNAME, MonitorDir
from testmon_live.tui import demo

from .app import MonitorApp, make_app
from .sources import ReplaySource

SIZE = (110, 32)
DEMO_LOG = Path(__file__).resolve().parents[2] / "tests" / "data" / "demo-run.jsonl"
"""The recorded demo run the scenes show (in the source tree, beside the tests)."""
RECORD_FOLDER = Path("/tmp/testmon-demo")
"""Where ``--record`` runs the demo suite: its paths are in the log, so a neutral one."""
RECORD_TIMEOUT = 300.0
RECORD_ENV = ("DOCKER_HOST", "CONTAINER_HOST", "TC_HOST", "TESTMON_TEST_IMAGE")
"""What ``--record`` passes on of this environment (and ``TESTCONTAINERS_*``): the run's
header lists its environment, and a committed log should not carry the recording
machine's."""


RECORD_PLUGINS = "xdist.plugin,xdist.looponfail,testmon_live.plugin.pytest_plugin"
"""The only pytest plugins of the recorded run: a user's demo has no pytest-django, syrupy or
pytest-asyncio, which a development venv would otherwise load into it."""


def record_environ(folder: Path) -> dict[str, str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(folder)}
    env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTEST_PLUGINS=RECORD_PLUGINS)
    env.update(
        (name, value)
        for name, value in os.environ.items()
        if name in RECORD_ENV or name.startswith("TESTCONTAINERS_")
    )
    return env


@dataclass(frozen=True)
class Scene:
    name: str
    title: str
    keys: tuple[str, ...]
    """Keys pressed once the run is loaded (tab numbers, filters...)."""
    seconds: float | None = None
    """Show the run as it was this many seconds in; None: its end."""
    size: tuple[int, int] = SIZE
    then: Callable[[MonitorApp], None] | None = field(default=None, compare=False)


def _open_failure(app: MonitorApp) -> None:
    app.open_test(app.ingest.state.failures[0])


WAITING_AT = 2.5
"""Seconds into the recorded demo run when workers wait on the migration lock and one starts
the shared container (the scenes and the tests that show that moment use this)."""
STALLED_AT = 12.5
"""... and when two workers are stalled and two are done."""
SHARED_AT = 9.5
"""... and when the shared container is up and used by a second worker."""

SCENES: tuple[Scene, ...] = (
    Scene("workers", f"Workers {STALLED_AT} s in: two stalled, two done", ("1",), STALLED_AT),
    Scene(
        "lock-contention",
        f"Workers {WAITING_AT} s in: two wait on the migration lock, one on its container",
        ("1",),
        WAITING_AT,
    ),
    Scene("timeline", "Timeline of the finished run", ("2",)),
    Scene("parallelism", "Parallelism: busy workers, efficiency, where time went", ("3",)),
    Scene("locks", "Locks: the migration lock, who held it, who waited", ("4",)),
    Scene(
        "containers",
        f"Containers {SHARED_AT} s in: the shared web server, up, used by two workers",
        ("5",),
        SHARED_AT,
    ),
    Scene(
        "stuck",
        f"Stuck threads {STALLED_AT} s in: two stalls with their stacks",
        ("6",),
        STALLED_AT,
    ),
    Scene("failures", "Failures with their text", ("7",)),
    Scene("test-detail", "A test in detail", ("7",), then=_open_failure),
    Scene("events", "Events, filtered by typing", ("8", "l", "o", "c", "k", "enter")),
    Scene("small-terminal", f"At 80x24, {WAITING_AT} s in", ("1",), WAITING_AT, size=(80, 24)),
    Scene("help", "? lists the keys of the view and of the app", ("2", "question_mark")),
    Scene("events-small", "Events at 80x24, one line each", ("8",), size=(80, 24)),
)


@cache
def demo_events(path: Path = DEMO_LOG) -> tuple[ev.Event, ...]:
    if not path.is_file():
        raise SystemExit(
            f"no recorded demo run at {path}: run `python -m "
            "testmon_live.tui.dashboard.screenshots --record` in the testmon-live source tree"
        )
    return tuple(ev.decode_events(path.read_bytes()))


def scene_time(scene: Scene) -> float:
    """The moment the scene shows (wall clock): its seconds into the run, or the run's end."""
    events = demo_events()
    start = events[0].ts
    if scene.seconds is None:
        return max(e.ts for e in events)
    return start + scene.seconds


def scene_events(scene: Scene) -> list[ev.Event]:
    """The events of the run up to the scene's moment: how it looked live then."""
    limit = scene_time(scene)
    return [e for e in demo_events() if e.ts <= limit]


def scene_app(scene: Scene, folder: Path) -> MonitorApp:
    """The app on the scene's run, written as a log into ``folder``, its clock fixed."""
    run_id = DEMO_LOG.name.removesuffix(".jsonl")
    path = folder / "runs" / f"{run_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ev.encode_lines(scene_events(scene)))
    moment = scene_time(scene)
    # a moment of the run is shown as it looked live: the log was still being written
    source = ReplaySource(
        path, live=scene.seconds is not None, until=moment if scene.seconds is not None else None
    )
    return make_app(source, clock=lambda: moment)


def record(dest: Path = DEMO_LOG, folder: Path = RECORD_FOLDER) -> Path:
    """Run the demo suite as ``testmon demo`` does and keep its run log as ``dest``."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(
        demo.demo_dir(),
        folder,
        ignore=shutil.ignore_patterns("__pycache__", DEFAULT_DIRNAME, ".pytest_cache"),
    )
    print(f"record: running `{' '.join(demo.pytest_command()[1:])}` in {folder}")
    process = demo.start(folder, environ=record_environ(folder))
    try:
        process.wait(RECORD_TIMEOUT)
    finally:
        demo.stop(process)
    logs = MonitorDir(folder / DEFAULT_DIRNAME).logs()
    if not logs:
        raise SystemExit(f"record: the demo run left no log in {folder / DEFAULT_DIRNAME}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(logs[-1], dest)
    kinds = {type(e).__name__ for e in ev.decode_events(dest.read_bytes())}
    if "ContainerEvent" not in kinds:
        print("record: no container events (is the engine up? scripts/podman-setup --env)")
    print(f"record: wrote {dest} ({dest.stat().st_size} bytes)")
    return dest


async def settle(app: MonitorApp, pilot: object) -> None:
    """Wait until the replay reached its end state and the screen shows it."""
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    for _ in range(200):
        if app.ingest.replay_now is not None:
            break
        await pilot.pause(0.02)
    app.redraw(force=True)
    await pilot.pause()


async def play(scene: Scene, app: MonitorApp, pilot: object) -> None:
    """The scene driver, for the screenshots and the snapshot tests alike: the run loaded,
    the scene's keys pressed, its last step taken, the screen drawn."""
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    await settle(app, pilot)
    await pilot.press(*scene.keys)
    if scene.then is not None:
        scene.then(app)
    await pilot.pause()
    app.redraw(force=True)
    await pilot.pause()


async def _shoot(scene: Scene, folder: Path, out: Path) -> None:
    app = scene_app(scene, folder)
    async with app.run_test(size=scene.size) as pilot:
        await play(scene, app, pilot)
        app.save_screenshot(str(out / f"{scene.name}.svg"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--record"]:
        record()
        return 0
    out = Path(args[0]) if args else Path("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for scene in SCENES:
            asyncio.run(_shoot(scene, Path(tmp) / scene.name, out))
            print(f"wrote {out / scene.name}.svg  ({scene.title})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
