"""The one parser of the hub's stream, and what a live source makes of the stream's end:
typed states (ended, lost, fell behind) and a bounded start-over for a slow viewer."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir, write_live_file
from testmon_live.tui.dashboard.sources import MAX_RECONNECTS, LiveSource, StreamState
from testmon_live.tui.hub_client import StreamParser, Unreadable

RUN_ID = "20261206-090000-slow"
DEADLINE = 30.0


def test_parser_joins_lines_cut_between_chunks_and_names_a_line_it_cannot_read() -> None:
    header = ev.encode_line(ev.RunStarted(schema=ev.SCHEMA_VERSION, run_id="r", rootdir="/"))
    bye = ev.encode_line(ev.Bye(reason="run finished"))
    stream = header + b"{not json}\n" + bye
    parser = StreamParser()
    got: list[object] = []
    for at in range(0, len(stream), 7):  # cut anywhere, mid-line too
        got += parser.feed(stream[at : at + 7])
    assert [type(m) for m in got] == [ev.RunStarted, Unreadable, ev.Bye]
    assert parser.feed(b"") == []


class Recorder:
    """A sink that keeps what the source told it."""

    def __init__(self) -> None:
        self.resets = 0
        self.states: list[tuple[StreamState, str]] = []
        self.lines: list[str] = []
        self.changed = threading.Event()

    def reset(self, label: str, path: Path | None) -> None:
        self.resets += 1

    def events(self, batch: list[ev.Event]) -> None:
        pass

    def status(self, text: str, level: str = "info") -> None:
        self.lines.append(text)

    def clock(self, now: float) -> None:
        pass

    def incomplete(self) -> None:
        pass

    def stream_state(self, state: StreamState, text: str) -> None:
        self.states.append((state, text))
        self.changed.set()


@pytest.fixture
def slow_viewer_hub(tmp_path: Path) -> Iterator[tuple[MonitorDir, list[int]]]:
    """A hub that drops every viewer at once for falling behind (after the header)."""
    folder = Path(tempfile.mkdtemp(prefix="tm-", dir="/tmp"))  # a unix socket path is short
    address = folder / "hub.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(address))
    server.listen()
    server.settimeout(0.2)
    attached: list[int] = []
    closing = threading.Event()
    header = ev.RunStarted(schema=ev.SCHEMA_VERSION, run_id=RUN_ID, rootdir="/")
    bye = ev.Bye(reason="viewer fell behind by more than 64 MiB; reconnect to resume")

    def serve() -> None:
        while not closing.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(DEADLINE)
                conn.recv(4096)  # the hello
                attached.append(1)
                conn.sendall(ev.encode_line(header) + ev.encode_line(bye))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    mdir = MonitorDir(tmp_path / ".testmon")
    mdir.live.mkdir(parents=True, exist_ok=True)
    info = {
        "run_id": RUN_ID,
        "pid": os.getpid(),
        "token": "t",
        "address": {"unix": str(address)},
        "log": str(mdir.log_path(RUN_ID)),
    }
    write_live_file(mdir.live_path(RUN_ID), info)
    yield mdir, attached
    closing.set()
    thread.join(DEADLINE)
    server.close()
    address.unlink(missing_ok=True)
    folder.rmdir()


def test_a_viewer_that_keeps_falling_behind_starts_over_a_bounded_number_of_times(
    slow_viewer_hub: tuple[MonitorDir, list[int]],
) -> None:
    mdir, attached = slow_viewer_hub
    sink = Recorder()
    stop = threading.Event()
    source = LiveSource(mdir, show_last=False)
    thread = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    thread.start()
    try:
        assert sink.changed.wait(DEADLINE)
        while not any(state is StreamState.GAVE_UP for state, _ in sink.states):
            sink.changed.clear()
            assert sink.changed.wait(DEADLINE), f"no end to the reconnects: {sink.states}"
    finally:
        stop.set()
        thread.join(DEADLINE)
    assert not thread.is_alive()
    states = [state for state, _ in sink.states]
    assert states == [StreamState.FELL_BEHIND] * (MAX_RECONNECTS + 1) + [StreamState.GAVE_UP]
    assert len(attached) == MAX_RECONNECTS + 1
    assert sink.resets == MAX_RECONNECTS + 1  # each start-over begins from an empty state
    assert f"fell behind {MAX_RECONNECTS + 1} times" in sink.states[-1][1]
