"""A run log is untrusted input: crafted logs must not hang, crash, flood or take over the
terminal of the viewer that reads them (issue 11: items 12 to 16)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testmon_live.plugin import events as ev
from testmon_live.plugin.runlog import MonitorDir, RunLogError, SkippedLines, iter_log
from testmon_live.plugin.state import RunState
from testmon_live.tui import cli
from testmon_live.tui.dashboard.app import TABS, make_app
from testmon_live.tui.dashboard.screenshots import settle
from testmon_live.tui.dashboard.sources import ReplaySource
from testmon_live.tui.reports.logs import load_run, read_header
from testmon_live.tui.reports.model import build_report
from testmon_live.tui.reports.render import render
from testmon_live.tui.reports.run_list import build_runs, list_runs
from testmon_live.tui.reports.sections import runs_sections, sections
from testmon_live.tui.testing import sample_runs

from .test_cli_report import synthetic_events

RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
"""What a terminal acts on instead of showing (tab included: it moves the cursor)."""

HOSTILE = "\x1b[2J\x1b]8;;https://evil.invalid/\x07click\x1b]8;;\x07\x07\x9b31m\r\x08"
"""Clear the screen, an OSC 8 hyperlink, a bell, an 8-bit CSI, a carriage return, a
backspace."""

TEXT_FIELDS = frozenset(
    {
        "w", "nodeid", "message", "longrepr", "name", "key", "error", "msg", "statement",
        "image", "location", "detail", "func", "file", "test", "fixture", "rootdir", "source",
        "text", "holds", "waits_for", "coro", "awaiting", "cid", "url", "baseid",
    }
)  # fmt: skip
"""Fields a hostile log fills with escape sequences (the same suffix everywhere, so the
ids that tie events together still match)."""


def poisoned(value: object, field: str = "") -> object:
    if isinstance(value, str):
        return value + HOSTILE if value and field in TEXT_FIELDS else value
    if isinstance(value, msgspec.Struct):
        changes = {name: poisoned(getattr(value, name), name) for name in value.__struct_fields__}
        return msgspec.structs.replace(value, **changes)
    if isinstance(value, list):
        return [poisoned(item, field) for item in value]
    return value


def poisoned_run() -> list[ev.Event]:
    events = [poisoned(e) for e in sample_runs.demo_run()]
    assert all(isinstance(e, ev.Event) for e in events)
    return events  # type: ignore[return-value]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------- 12: escape sequences


def test_escape_sequences_in_a_log_never_reach_the_terminal_of_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sample_runs.write_log(
        tmp_path / ".testmon" / "runs" / f"{sample_runs.RUN_ID}.jsonl", poisoned_run()
    )
    for fmt in ("text", "markdown"):
        code, out, err = run_cli(capsys, "report", str(path), "-f", fmt)
        assert code == 0, err
        assert "click" in out  # the text is shown...
        assert not RAW_CONTROL.findall(out), fmt  # ...its escape sequences are not
        assert "\\x1b[2J" in out  # shown escaped, so the reader sees something was there
    code, out, _ = run_cli(capsys, "report", str(path), "-f", "json")
    assert code == 0
    assert not RAW_CONTROL.findall(out)
    model = json.loads(out)
    # JSON keeps the data exactly (escaped as JSON escapes it)
    assert any(f["nodeid"].endswith(HOSTILE) for f in model["failures"])
    for args in (("runs", "--dir", str(path.parent.parent)), ("diff", str(path), str(path))):
        code, out, err = run_cli(capsys, *args)
        assert not RAW_CONTROL.findall(out + err), args


async def test_escape_sequences_in_a_log_never_reach_the_dashboard(tmp_path: Path) -> None:
    path = sample_runs.write_log(tmp_path / ".testmon" / "runs" / "hostile.jsonl", poisoned_run())
    app = make_app(ReplaySource(path), clock=lambda: sample_runs.T0)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(app, pilot)
        seen = []
        for number in range(1, len(TABS) + 1):
            await pilot.press(str(number))
            await pilot.pause()
            seen.append(app.export_screenshot())
        app.open_test(app.ingest.state.failures[0])
        await pilot.pause()
        seen.append(app.export_screenshot())
    screens = "".join(seen)
    assert "click" in screens
    assert not RAW_CONTROL.findall(screens.replace("\n", ""))


# -------------------------------------------------------- 13: nesting that recurses


def test_a_deeply_nested_line_is_skipped_and_the_rest_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [ev.encode_line(e) for e in synthetic_events()]
    deep = b'{"t":"notice","msg":"x","extra":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    lines.insert(3, deep)
    path = MonitorDir(tmp_path / ".testmon").log_path("20260101-120000-abcd")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(lines))
    problems = SkippedLines()
    events = list(iter_log(path, problems))
    assert len(events) == len(lines) - 1
    assert [line for line, _ in problems] == [4]
    code, out, err = run_cli(capsys, "report", str(path), "-f", "json")
    assert code == 0, err
    model = json.loads(out)
    assert [s["line"] for s in model["skipped_lines"]] == [4]
    assert "nest" in model["skipped_lines"][0]["reason"]
    assert model["run"]["status"] == "finished"


# ------------------------------------------------------------ 14: floods of garbage

GARBAGE_LINES = 300_000

MEASURE = """
import sys
from testmon_live.tui.cli import main
with open(sys.argv[2], "w") as out:
    sys.stdout = out
    code = main(["report", sys.argv[1]] + sys.argv[3:])
sys.stdout = sys.__stdout__
# VmHWM, not getrusage's ru_maxrss: that one keeps the RSS the parent had when it forked
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(code, peak.split()[1])
"""


def _report_rss(log: Path, out: Path, *args: str) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(log), str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    code, kib = done.stdout.split()
    return int(code), int(kib)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_a_flood_of_garbage_lines_is_counted_in_bounded_memory(tmp_path: Path) -> None:
    mdir = MonitorDir(tmp_path / ".testmon")
    clean = sample_runs.write_log(mdir.log_path("20260101-120000-abcd"), synthetic_events())
    lines = [ev.encode_line(e) for e in synthetic_events("20260101-120001-abcd")]
    flood = lines[:3] + [b"x\n"] * GARBAGE_LINES + lines[3:]
    dirty = mdir.log_path("20260101-120001-abcd")
    dirty.write_bytes(b"".join(flood))

    _, clean_kib = _report_rss(clean, tmp_path / "clean.txt")
    code, dirty_kib = _report_rss(dirty, tmp_path / "dirty.txt")
    assert code == 0
    # 300,000 skipped lines once cost ~200 MB here; the count and a few examples cost nothing
    assert dirty_kib - clean_kib < 40 * 1024, (clean_kib, dirty_kib)
    text = (tmp_path / "dirty.txt").read_text()
    assert f"the reader skipped {GARBAGE_LINES:,} lines of the log" in text
    assert len(text.splitlines()) < 200
    _report_rss(dirty, tmp_path / "dirty.json", "-f", "json")
    model = json.loads((tmp_path / "dirty.json").read_text())
    assert model["skipped_total"] == GARBAGE_LINES
    assert 0 < len(model["skipped_lines"]) <= 20
    assert model["skipped_lines"][0]["line"] == 4
    assert model["run"]["status"] == "finished"


# ------------------------------------------------------ 15: numbers out of any range

EXTREMES = ("1e308", "-1e308", "1e999", "-1e999", "NaN", "Infinity", "null", str(10**30))


def _with_value(
    objs: list[dict[str, object]], where: Callable[[list[dict[str, object]]], None]
) -> str:
    where(objs)
    return "".join(json.dumps(o) + "\n" for o in objs)


def _extreme_logs(value: str) -> list[str]:
    """Logs with ``value`` as a timestamp, a duration, a phase time and the end's numbers."""
    marker = "@@VALUE@@"

    def header_ts(objs: list[dict[str, object]]) -> None:
        objs[0]["ts"] = marker

    def test_times(objs: list[dict[str, object]]) -> None:
        for o in objs:
            if o["t"] == "test":
                o["duration"] = marker
                o["phases"][0][1] = marker  # type: ignore[index]
                o["phases"][1][2] = marker  # type: ignore[index]

    def end(objs: list[dict[str, object]]) -> None:
        objs[-1]["duration"] = marker
        objs[-1]["test_time"] = marker
        objs[-1]["ts"] = marker

    def everywhere(objs: list[dict[str, object]]) -> None:
        for o in objs[1:]:
            o["ts"] = marker
            o["seq"] = marker

    logs = []
    for n, change in enumerate((header_ts, test_times, end, everywhere)):
        objs = [json.loads(ev.encode(e)) for e in synthetic_events(f"2026010{n}-120000-abcd")]
        logs.append(_with_value(objs, change).replace(f'"{marker}"', value))
    return logs


@pytest.mark.parametrize("value", EXTREMES)
def test_extreme_numbers_are_clamped_and_every_command_survives(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mdir = MonitorDir(tmp_path / ".testmon")
    mdir.ensure()
    reference = sample_runs.write_log(
        mdir.log_path("20251231-120000-abcd"), synthetic_events("reference")
    )
    paths = []
    for n, text in enumerate(_extreme_logs(value)):
        path = mdir.log_path(f"20260101-12000{n}-abcd")
        path.write_text(text)
        paths.append(path)
    commands: list[tuple[str, ...]] = [("runs", "--dir", str(mdir.root))]
    for path in paths:
        commands += [
            ("report", str(path)),
            ("report", str(path), "-f", "markdown"),
            ("report", str(path), "-f", "json"),
            ("export", str(path), "-o", str(tmp_path / "trace.json")),
            ("export", str(path), "-f", "junit", "-o", str(tmp_path / "junit.xml")),
            ("diff", str(reference), str(path)),
            ("suspects", str(path), "test_ok"),
        ]
    for args in commands:
        code, _, err = run_cli(capsys, *args)
        assert code == 0, (args, err)
        assert "error" not in err, (args, err)
    for path in paths:  # nothing was lost: every test record and the end were kept
        events = list(iter_log(path))
        assert sum(isinstance(e, ev.TestFinished) for e in events) == 2, path.read_text()
        assert isinstance(events[-1], ev.RunFinished)
        for event in events:
            for name in ("ts", "duration", "test_time"):
                number = getattr(event, name, None) or 0.0
                assert abs(number) <= ev.MAX_SECONDS, (name, event)


def test_what_the_writer_makes_of_inf_and_nan_reads_back() -> None:
    """The encoder writes inf and nan as null: a test record or an end record holding one
    (a test's patched clock) was a line no reader took back, and the record was lost."""
    inf, nan = float("inf"), float("nan")
    test = ev.TestFinished(
        w="gw0",
        ts=inf,
        nodeid="test_clock.py::test_infinite_clock",
        outcome="passed",
        duration=inf,
        phases=[ev.Phase("call", nan, inf, "passed")],
        fixtures=[ev.FixtureRun("clock", -inf, inf)],
    )
    end = ev.RunFinished(exitstatus=0, status="ok", duration=nan, test_time=inf)
    data = ev.encode_lines([test, end])
    assert b"null" in data
    good, bad = ev.decode_events_tolerant(data)  # what the hub and the reader do
    assert bad == []
    kept, finished = good
    assert isinstance(kept, ev.TestFinished)
    assert kept.nodeid == test.nodeid
    assert (kept.ts, kept.duration, kept.phases[0].start) == (0.0, 0.0, 0.0)
    assert kept.fixtures[0].setup_start == 0.0
    assert isinstance(finished, ev.RunFinished)
    assert (finished.duration, finished.test_time) == (0.0, 0.0)
    assert ev.decode_stream_line(ev.encode(test)) == kept


# --------------------------------------------------------- 16: files that are no logs


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_a_log_is_not_read(tmp_path: Path) -> None:
    mdir = MonitorDir(tmp_path / ".testmon")
    sample_runs.write_log(mdir.log_path("20260101-120000-abcd"), synthetic_events())
    fifo = mdir.log_path("20990101-000000-fifo")
    os.mkfifo(fifo)
    (mdir.runs / "20990101-000001-link.jsonl").symlink_to("/dev/zero")
    for args in (
        ("runs", "--dir", str(mdir.root)),
        ("report", "--dir", str(mdir.root)),
        ("report", str(fifo)),
        ("report", "--dir", str(mdir.root), "20990101-000001"),
    ):
        try:
            done = subprocess.run(
                [sys.executable, "-m", "testmon_live.tui.cli", *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"testmon {' '.join(args)} hung on a FIFO")
        assert "Traceback" not in done.stderr
        if args[0] == "runs":
            assert done.returncode == 0
            assert "20260101-120000-abcd" in done.stdout
            assert "not a regular file" in done.stdout
        elif len(args) == 3:
            assert done.returncode == 0
            assert "20260101-120000-abcd" in done.stdout
        else:
            assert done.returncode == cli.EXIT_ERROR
            assert "not a regular file" in done.stderr


# ------------------------------------ a test's phases: out of order, overlapping, none


def _odd_phases() -> list[ev.Event]:
    """Two workers' tests whose phases no pytest writes: out of order, overlapping, none,
    negative, starting after the record's end or long before the run."""
    t = sample_runs.T0 + 1.0

    def test(w: str, n: int, ts: float, duration: float, *phases: ev.Phase) -> ev.TestFinished:
        return ev.TestFinished(
            w=w,
            ts=ts,
            nodeid=f"test_odd.py::test_{n}",
            outcome="failed",
            duration=duration,
            phases=list(phases),
            failed_when="call",
            message="odd",
        )

    return [
        ev.RunStarted(
            ts=sample_runs.T0,
            schema=ev.SCHEMA_VERSION,
            run_id="20260101-120000-odd",
            rootdir="/odd",
            workers=2,
            dist="load",
            cpus=2,
        ),
        ev.WorkerStarted(w="gw0", ts=t - 0.5, schema=ev.SCHEMA_VERSION, pid=1),
        ev.WorkerStarted(w="gw1", ts=t - 0.5, schema=ev.SCHEMA_VERSION, pid=2),
        # out of order: the teardown first
        test(
            "gw0",
            0,
            t + 1.0,
            0.3,
            ev.Phase("teardown", t + 0.9, 0.1, "passed"),
            ev.Phase("setup", t, 0.1, "passed"),
            ev.Phase("call", t + 0.1, 0.1, "failed"),
        ),
        # overlapping phases: longer in all than from the first's start to the last's end
        test(
            "gw0",
            1,
            t + 2.0,
            1.5,
            ev.Phase("setup", t + 1.0, 1.0, "passed"),
            ev.Phase("call", t + 1.2, 0.5, "failed"),
        ),
        test("gw1", 2, t + 0.2, 0.2),  # no phases (a crashed test's note)
        test("gw1", 3, t + 0.4, -5.0, ev.Phase("call", t + 10.0, -3.0, "failed")),
        test("gw1", 4, t + 0.6, 0.1, ev.Phase("call", t + 0.7, 0.1, "failed")),  # after its end
        test("gw1", 5, t + 0.8, 0.1, ev.Phase("call", -ev.MAX_SECONDS, 0.1, "failed")),
        ev.RunFinished(ts=t + 3.0, exitstatus=1, status="tests_failed", duration=4.0, tests=6),
    ]


def test_odd_phases_never_make_a_negative_time_and_every_view_survives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _odd_phases()
    tests = [e for e in events if isinstance(e, ev.TestFinished)]
    spans = [ev.test_span(t) for t in tests]
    # a test began with the first phase listed: listed out of order, never less than its
    # duration; overlapping, its duration; none, its duration; negative, 0
    assert spans[:5] == pytest.approx([0.3, 1.5, 0.2, 0.0, 0.1])
    assert spans[5] == tests[5].duration  # a phase long before the run: a clock that moved
    assert all(span >= max(0.0, t.duration) for span, t in zip(spans, tests, strict=True))
    state = RunState(detail=True).apply_all(events)
    for view in state.active_workers():
        assert view.busy >= 0.0
        assert view.reporting_time >= 0.0
        assert 0.0 <= state.busy_share(view) <= 1.0
    assert 0.0 <= state.efficiency() <= 1.0
    path = sample_runs.write_log(
        tmp_path / ".testmon" / "runs" / "20260101-120000-odd.jsonl", events
    )
    for args in (
        ("report", str(path)),
        ("report", str(path), "-f", "json"),
        ("whatif", str(path), "--dir", str(tmp_path / ".testmon"), "-f", "json"),
    ):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, (args, err)
        assert "Traceback" not in err
        if args[0] == "whatif":
            answer = json.loads(out)
            assert answer["prediction"]["wall"] >= 0.0
            assert answer["check"]["accounted"] is None or answer["check"]["accounted"] >= 0.0


async def test_odd_phases_are_drawn_without_error(tmp_path: Path) -> None:
    path = sample_runs.write_log(tmp_path / ".testmon" / "runs" / "odd.jsonl", _odd_phases())
    app = make_app(ReplaySource(path), clock=lambda: sample_runs.T0)
    async with app.run_test(size=(140, 40)) as pilot:
        await settle(app, pilot)
        for number in range(1, len(TABS) + 1):
            await pilot.press(str(number))
            await pilot.pause()
        for test in app.ingest.state.tests:
            app.open_test(test)
            await pilot.pause()
            await pilot.press("escape")


# ------------------------------------------- fuzz: the reader, the fold, the reports

T0 = sample_runs.T0
MORE_SHAPES: tuple[ev.Event, ...] = (
    ev.DbConnected(w="gw0", ts=T0 + 1, dialect="postgresql", url="postgresql://db", backend=7),
    ev.CollectionReport(ts=T0 + 0.5, nodeid="test_x.py", outcome="error",
                        message="ModuleNotFoundError: \x1b[2Jno module"),
    ev.FixtureTeardown(w="gw0", ts=T0 + 2, name="db", scope="session", test=None, start=T0,
                       dur=1.0),
    ev.CommandReply(w="gw0", ts=T0 + 3, request=1, cmd="ping", result={"rss": 1, "x": 0.5}),
    ev.FixtureTotals(w="gw0", ts=T0 + 4, fixtures=[
        ev.FixtureTally("db\x1b[2J", "function", "", 3, 0.002, 0.001, 0.0)]),
)  # fmt: skip
DEEP = b'{"t":"hb","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def _shapes() -> list[dict[str, object]]:
    """One of every kind of event, as JSON objects, a real run's header first."""
    seen: dict[str, dict[str, object]] = {}
    for event in (*sample_runs.demo_run(), *synthetic_events(), *MORE_SHAPES):
        seen.setdefault(ev.kind(event), json.loads(ev.encode(event)))
    return list(seen.values())


SHAPES = _shapes()
SPECIAL_TEXT = ("\x1b[2J", "\x1b]8;;x\x07y\x1b]8;;\x07", "\x07", "\x9b1m", "\ud800", "\u202e", "")
SPECIAL_NUMBERS = (1e308, -1e308, float("inf"), float("-inf"), float("nan"), 2**64, -(2**63) - 1)

texts = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),
    st.sampled_from(SPECIAL_TEXT),
    st.builds(lambda a, b: a + b, st.sampled_from(SPECIAL_TEXT), st.text(max_size=6)),
)
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.sampled_from(SPECIAL_NUMBERS),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)


def _like(value: object) -> st.SearchStrategy[object]:
    """A value of the same JSON type as ``value`` (what passes validation and reaches the
    fold), or of any type."""
    if isinstance(value, str):
        return texts | json_values
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return numbers | json_values
    return json_values


@st.composite
def hostile_logs(draw: st.DrawFn) -> bytes:
    objs = [json.loads(json.dumps(shape)) for shape in SHAPES]
    for _ in range(draw(st.integers(0, 12))):
        obj = draw(st.sampled_from(objs))
        key = draw(st.sampled_from(sorted(obj)) | st.just("unknown"))
        if key != "t":
            obj[key] = draw(_like(obj.get(key)))
    lines = [json.dumps(o, allow_nan=True, ensure_ascii=draw(st.booleans())) for o in objs]
    raw = [line.encode("utf-8", "surrogatepass") for line in lines]
    if draw(st.booleans()):  # nesting deeper than any stack
        raw.insert(
            draw(st.integers(1, len(raw))),
            b'{"t":"hb","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        )
    for garbage in draw(
        st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b), max_size=3)
    ):
        raw.insert(draw(st.integers(1, len(raw))), garbage)
    return b"\n".join(raw) + b"\n"


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=hostile_logs())
def test_fuzz_no_log_breaks_the_reader_the_fold_or_a_report(data: bytes) -> None:
    """Real event shapes with fields replaced by anything JSON holds (nesting, huge numbers,
    nan, surrogates, escape sequences), garbage lines and a line nested 100,000 deep: every
    log either reads, folds and renders in every format without a raw control character,
    or is refused with a RunLogError (when its header is what was broken)."""
    with tempfile.TemporaryDirectory() as folder:
        mdir = MonitorDir(Path(folder) / ".testmon")
        mdir.ensure()
        path = mdir.log_path("20260101-120000-fuzz")
        path.write_bytes(data)
        try:
            run = load_run(path, mdir)
        except RunLogError:
            with pytest.raises(RunLogError):
                read_header(path)  # only a broken header makes a log unreadable
            return
        RunState(detail=True).apply_all(iter_log(path))
        report = build_report(run)
        for fmt in ("text", "markdown", "json"):
            out = render(fmt, report, sections)
            assert not RAW_CONTROL.search(out), (fmt, out)
        json.loads(render("json", report, sections))
        listing = render("text", build_runs(list_runs(mdir)), runs_sections)
        assert not RAW_CONTROL.search(listing)
