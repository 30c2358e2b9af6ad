"""How fast the dashboard takes in events (not part of the test run; read the output).

1. replay: a synthetic 1,000,000-event log (``tui/testing/sample_runs.py``) opened with
   ``testmon replay``'s source and ingest, to its end state: wall time and peak RSS, measured
   in a fresh child process (so RSS is the replay's own); then the same through the whole
   headless app.
2. live: a stand-in hub on a unix socket streams events at 20,000 events/s, stamped with the
   time they are sent; the app (headless, 120x36, workers tab) attaches through the real
   ``LiveSource``. At every redraw the lag is ``now - ts of the newest event folded``: hub
   to screen, including socket, decode, fold, message and render.
3. keys: during that load, tab switches are pressed (a Key event posted to the app, as
   the terminal driver does); latency is the time until the tab in view has changed.

    .venv/bin/python benchmarks/tui_ingest.py [--events 1000000] [--rate 20000] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from textual import events
from textual.widgets import TabbedContent

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir, write_live_file
from testmon_live.tui.dashboard.app import TABS, make_app
from testmon_live.tui.dashboard.ingest import Ingest
from testmon_live.tui.dashboard.sources import LiveSource, ReplaySource
from testmon_live.tui.testing import sample_runs


def write_synthetic(path: Path, n: int) -> int:
    count = 0
    with path.open("wb") as handle:
        batch: list[ev.Event] = []
        for event in sample_runs.synthetic_run(n):
            batch.append(event)
            if len(batch) >= 50_000:
                handle.write(ev.encode_lines(batch))
                count += len(batch)
                batch = []
        handle.write(ev.encode_lines(batch))
        count += len(batch)
    return count


def replay_child(path: Path) -> None:
    """Runs in a fresh process: source + ingest to the end state, prints seconds."""
    start = time.perf_counter()
    ingest = Ingest(lambda message: None)
    stop = threading.Event()
    source = ReplaySource(path)
    thread = threading.Thread(target=source.run, args=(ingest, stop), daemon=True)
    thread.start()
    while ingest.replay_now is None:  # set once the end state is folded
        time.sleep(0.005)
    took = time.perf_counter() - start
    stop.set()
    thread.join()
    state = ingest.state
    assert state.end is not None, "the replay did not reach the end"
    print(f"{took:.3f} {state.events} {state.tests_done}")


async def replay_app(path: Path) -> float:
    app = make_app(ReplaySource(path))
    start = time.perf_counter()
    async with app.run_test(size=(120, 36)) as pilot:
        while app.ingest.replay_now is None:
            await pilot.pause(0.01)
        app.redraw(force=True)
        await pilot.pause()
        return time.perf_counter() - start


class FakeHub:
    """Speaks the viewer side of the hub's protocol; streams events at ``rate`` a second."""

    def __init__(self, folder: Path, rate: int, seconds: float) -> None:
        self.rate = rate
        self.seconds = seconds
        self.sent = 0
        self.mdir = MonitorDir(folder / ".testmon")
        self.mdir.ensure()
        self.sock_path = folder / "hub.sock"
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.sock_path))
        self.server.listen(1)
        self.run_id = "20261117-070640-live"
        write_live_file(
            self.mdir.live_path(self.run_id),
            {
                "run_id": self.run_id,
                "pid": os.getpid(),
                "token": "t",
                "address": {"unix": str(self.sock_path)},
                "log": "",
            },
        )
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        conn.recv(4096)  # hello
        now = time.time()
        conn.sendall(
            ev.encode_line(
                ev.Welcome(schema=ev.SCHEMA_VERSION, run_id=self.run_id, backlog_bytes=0)
            )
        )
        conn.sendall(
            ev.encode_line(
                ev.RunStarted(
                    ts=now, schema=ev.SCHEMA_VERSION, run_id=self.run_id, rootdir="/", workers=8
                )
            )
        )
        tick = 0.01
        per_tick = max(1, int(self.rate * tick))
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < self.seconds:
            stamp = time.time()
            batch: list[ev.Event] = []
            for _ in range(per_tick):
                wid = f"gw{n % 8}"
                nodeid = f"tests/test_m{n // 100}.py::test_{n}"
                if n % 3 == 2:
                    batch.append(
                        ev.TestFinished(
                            w=wid,
                            ts=stamp,
                            nodeid=nodeid,
                            outcome="passed",
                            duration=0.001,
                            phases=[ev.Phase("call", stamp, 0.001, "passed")],
                        )
                    )
                elif n % 3 == 1:
                    batch.append(
                        ev.Heartbeat(
                            w=wid, ts=stamp, test=nodeid, phase="call", rss=10**8, cpu=n / 1e4
                        )
                    )
                else:
                    batch.append(
                        ev.Activity(w=wid, ts=stamp, test=nodeid, phase="call", since=stamp)
                    )
                n += 1
            conn.sendall(ev.encode_lines(batch))
            self.sent += len(batch)
            delay = start + (self.sent / self.rate) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        end = time.time()
        conn.sendall(
            ev.encode_line(ev.RunFinished(ts=end, exitstatus=0, status="ok", duration=end - now))
        )
        conn.sendall(ev.encode_line(ev.Bye(reason="run finished")))
        conn.close()


async def live(rate: int, seconds: float) -> tuple[list[float], list[float], int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        hub = FakeHub(Path(tmp), rate, seconds)
        app = make_app(LiveSource(hub.mdir))
        lags: list[float] = []
        keys: list[float] = []
        original = app.redraw

        def measured(force: bool = False) -> None:
            original(force)
            last = app.ingest.state.last_ts
            if last and app.ingest.state.end is None:
                lags.append(time.time() - last)

        app.redraw = measured  # type: ignore[method-assign]
        async with app.run_test(size=(120, 36)) as pilot:
            while app.ingest.state.events < 1000:
                await pilot.pause(0.01)
            tabs = "2134"
            k = 0
            pane = app.main.query_one(TabbedContent)
            while app.ingest.state.end is None:
                key = tabs[k % len(tabs)]
                want = TABS[int(key) - 1][0]
                start = time.perf_counter()
                # what the terminal driver does with a key press
                app.post_message(events.Key(key, key))
                while pane.active != want:
                    await asyncio.sleep(0.001)
                keys.append(time.perf_counter() - start)
                k += 1
                await asyncio.sleep(0.2)
            folded = app.ingest.state.events
        return lags, keys, hub.sent, folded


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        replay_child(args.child)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs" / "20261117-070640-big.jsonl"
        path.parent.mkdir()
        n = write_synthetic(path, args.events)
        size = path.stat().st_size / 1e6
        print(f"replay: {n:,} events, {size:.0f} MB log")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        peak = max(rss, before) / 1024
        print(
            f"  source + ingest to end state: {float(out[0]):.2f} s, peak RSS {peak:.0f} MB"
            f" ({int(out[1]):,} events folded, {int(out[2]):,} tests)"
        )
        took = asyncio.run(replay_app(path))
        print(f"  whole app (headless) to end state drawn: {took:.2f} s")
    lags, keys, sent, folded = asyncio.run(live(args.rate, args.seconds))
    print(f"live: {sent:,} events at {args.rate:,}/s for {args.seconds:g} s; {folded:,} folded")
    print(
        f"  lag hub -> screen: median {statistics.median(lags) * 1000:.0f} ms, "
        f"p95 {pct(lags, 0.95) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms ({len(lags)} redraws)"
    )
    print(
        f"  keystroke (tab switch) latency: median {statistics.median(keys) * 1000:.0f} ms, "
        f"p95 {pct(keys, 0.95) * 1000:.0f} ms, max {max(keys) * 1000:.0f} ms ({len(keys)} keys)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
