"""Suites that attack the monitor from inside the run, as real test suites do by accident:
they mock the clock, install signal handlers, make text that is no valid Unicode, turn
warnings into errors, name their gateways oddly and raise exceptions that cannot be printed.
Whatever they do, the run's outcome is what it is without ``--monitor``, and the monitor
keeps recording.
"""

from __future__ import annotations

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.state import worker_order

from .conftest import only_run

TIMEOUT = 120.0
MODES = pytest.mark.parametrize("mode", [["-n", "2"], ["-p", "no:xdist"]], ids=["xdist", "single"])


def outcomes(result: pytest.RunResult) -> tuple[int, dict[str, int]]:
    return int(result.ret), result.parseoutcomes()


def assert_same_outcome(
    pytester: pytest.Pytester, *args: str, monitor: tuple[str, ...] = ("--monitor",)
) -> pytest.RunResult:
    """Run the suite plain and monitored: exit code and counts must be equal."""
    plain = pytester.runpytest_subprocess(*args, timeout=TIMEOUT)
    monitored = pytester.runpytest_subprocess(*monitor, *args, timeout=TIMEOUT)
    assert outcomes(monitored) == outcomes(plain), monitored.stdout.str() + monitored.stderr.str()
    assert "INTERNALERROR" not in monitored.stdout.str() + monitored.stderr.str()
    return monitored


# ----------------------------------------------------------------- 1. the clock

HEARTBEATS = '''
import time
import pytest

_sleep, _monotonic = time.sleep, time.monotonic  # bound before any test patches them


@pytest.fixture
def heartbeats(request):
    """Waits until the monitor's watchdog has beaten ``n`` more times (at once without it)."""
    from testmon_live.plugin.session import worker_key

    recorder = request.config.stash.get(worker_key, None)

    def wait(n=2):
        if recorder is None:
            return
        watchdog = recorder.watchdog
        if not hasattr(watchdog, "beats"):  # an older monitor: give it time to beat
            _sleep(2.5)
            return
        goal = watchdog.beats + n
        deadline = _monotonic() + 60
        while watchdog.beats < goal:
            assert _monotonic() < deadline, "the watchdog did not beat for 60 s"
            _sleep(0.01)

    return wait
'''

CLOCK_TESTS = """
import threading
import time
from unittest import mock


def test_mocked_perf_counter(heartbeats):
    with mock.patch("time.perf_counter", side_effect=[10.0, 12.5]):
        heartbeats()  # the monitor's threads run meanwhile
        start = time.perf_counter()
        end = time.perf_counter()
    assert end - start == 2.5


def test_counting_fake_of_monotonic(monkeypatch, heartbeats):
    calls = []
    real = time.monotonic

    def counting():
        calls.append(threading.get_ident())
        return real()

    monkeypatch.setattr(time, "monotonic", counting)
    heartbeats()
    time.monotonic()
    assert calls == [threading.get_ident()]


def test_the_watchdog_still_beats(heartbeats):
    heartbeats()
"""


@MODES
def test_a_mocked_clock_sees_only_the_tests_own_calls(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    pytester.makeconftest(HEARTBEATS)
    pytester.makepyfile(test_clock=CLOCK_TESTS)
    result = assert_same_outcome(pytester, *mode, "-p", "no:randomly", "--monitor-stall=1")
    result.assert_outcomes(passed=3)
    out = result.stdout.str() + result.stderr.str()
    assert "Exception in thread" not in out
    assert "PytestUnhandledThreadExceptionWarning" not in out
    run = only_run(pytester)
    assert not run.of(ev.Unresponsive)
    assert not [s for s in run.of(ev.Stall) if s.reason == "unresponsive"]
    # the watchdog outlived the mocked clocks: heartbeats during the last test
    last = "test_clock.py::test_the_watchdog_still_beats"
    assert [h for h in run.of(ev.Heartbeat) if h.test == last]
    assert len(run.of(ev.TestFinished)) == 3


FREEZING_TESTS = '''
import sys
import time

import pytest

_sleep = time.sleep
CLOCKS = (time.time, time.monotonic, time.perf_counter)
IGNORED = ("_pytest", "threading", "multiprocessing", "queue", "execnet", "xdist")
"""Left alone, as freezegun leaves pytest's runner and the threading modules."""


@pytest.fixture
def frozen():
    """What freezegun does: every module attribute that is a real clock function, in every
    loaded module but a few, becomes a fake that returns one frozen instant (2012)."""
    swapped = []
    for key, module in list(sys.modules.items()):
        if key.startswith(IGNORED):
            continue
        for name, value in list(getattr(module, "__dict__", {}).items()):
            if any(value is clock for clock in CLOCKS):
                swapped.append((module, name, value))
                setattr(module, name, lambda: 1326542400.0)
    yield
    for module, name, value in swapped:
        setattr(module, name, value)


@pytest.fixture
def db(frozen):
    yield "db"
    _sleep(0.05)  # teardown work done while the clock is frozen


def test_frozen(db):
    assert db == "db"
'''


@MODES
def test_a_clock_frozen_like_freezegun_does_not_reach_the_monitors_timing(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    """freezegun replaces module attributes, ours included: a fixture's teardown run under
    a frozen clock is still timed on the real one."""
    pytester.makepyfile(test_freezing=FREEZING_TESTS)
    assert_same_outcome(pytester, *mode, monitor=("--monitor", "--monitor-fixture-detail=0"))
    run = only_run(pytester)
    (record,) = run.of(ev.TestFinished)
    teardown = next(p for p in record.phases if p.when == "teardown")
    runs = {f.name: f for f in record.fixtures or []}
    db = runs["db"]
    assert db.teardown_dur >= 0.04, db
    assert teardown.start - 1.0 <= db.teardown_start <= teardown.start + teardown.dur + 1.0, db
    assert runs["frozen"].teardown_dur >= 0.0, runs["frozen"]


TRAVELLING_TESTS = '''
import time

import _pytest.timing
import pytest

_real = _pytest.timing.time
YEARS = 850_000_000.0


def _travel(monkeypatch):
    """What time-machine's travel does to pytest's own clock: time.time() in the past."""
    monkeypatch.setattr(_pytest.timing, "time", lambda: _real() - YEARS)


@pytest.fixture(scope="module")
def module_travel():
    mp = pytest.MonkeyPatch()
    _travel(mp)
    yield
    mp.undo()


@pytest.fixture
def travel(monkeypatch):
    _travel(monkeypatch)
    yield


@pytest.mark.parametrize("i", range(3))
def test_in_a_travelling_module(module_travel, i):
    time.sleep(0.01)


def test_travels_in_its_own_fixture(travel):
    time.sleep(0.01)
'''


@MODES
def test_a_wall_clock_that_travels_does_not_move_the_tests(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    """pytest times each phase's start and stop by time.time(), which time-machine moves
    (years back here, in a module fixture and in a function fixture): every phase of the
    record stays within the run, each test's span near its duration."""
    pytester.makepyfile(test_travel=TRAVELLING_TESTS)
    assert_same_outcome(pytester, *mode)
    run = only_run(pytester)
    records = run.of(ev.TestFinished)
    assert len(records) == 4
    first = min(e.ts for e in run.events)
    last = max(e.ts for e in run.events)
    for record in records:
        for phase in record.phases:
            assert first - 1.0 <= phase.start <= last + 1.0, (record.nodeid, phase)
        assert first - 1.0 <= record.ts <= last + 1.0, record
        assert ev.test_span(record) < record.duration + 5.0, record


def test_no_module_of_the_monitor_holds_a_clock_freezegun_would_replace() -> None:
    """The static side of the test above, for every module (a probe imported later, a
    statement's clock): none keeps a real clock function as a module attribute."""
    import importlib
    import pkgutil
    import time

    import testmon_live.plugin as plugin

    clocks = {
        id(getattr(time, name)): name
        for name in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns",
                     "perf_counter_ns", "localtime", "gmtime", "strftime")
    }  # fmt: skip
    found = []
    for info in pkgutil.walk_packages(plugin.__path__, plugin.__name__ + "."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if id(value) in clocks:
                found.append(f"{info.name}.{name} is time.{clocks[id(value)]}")
    assert found == []


AUDIT_CONFTEST = (
    HEARTBEATS
    + '''
import builtins, json, os, signal, socket, sys, sysconfig, threading

_getframe = sys._getframe
_STDLIB = tuple(
    sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib")
)
PATCHED = [
    (time, "time"), (time, "monotonic"), (time, "perf_counter"), (time, "sleep"),
    (time, "time_ns"), (time, "monotonic_ns"), (time, "perf_counter_ns"),
    (os, "getpid"), (os, "getcwd"), (os, "times"), (os, "uname"), (os, "stat"),
    (os, "fstat"), (os, "listdir"), (os, "unlink"), (os, "replace"), (os, "open"),
    (os, "write"), (os, "read"), (os, "close"), (os, "kill"), (os, "urandom"),
    (builtins, "open"), (threading, "get_ident"), (threading, "current_thread"),
    (threading, "main_thread"), (threading, "enumerate"), (threading, "active_count"),
    (sys, "_current_frames"), (signal, "getsignal"), (socket, "create_connection"),
    (json, "dumps"), (json, "loads"),
]


def _caller_module():
    """The module of the first caller outside the standard library (and this file)."""
    frame = _getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        path = frame.f_code.co_filename
        if name != __name__ and not (path.startswith(_STDLIB) and "site-packages" not in path):
            return name, frame.f_code.co_name
        frame = frame.f_back
    return "", ""


@pytest.fixture
def audit(monkeypatch):
    """Patches the standard library the way tests do; lists every call the monitor made."""
    hits = []

    def counting(owner, name, real):
        def fake(*args, **kwargs):
            module, func = _caller_module()
            if module.startswith("testmon_live"):
                hits.append(f"{owner.__name__}.{name} from {module}.{func}")
            return real(*args, **kwargs)
        return fake

    for owner, name in PATCHED:
        monkeypatch.setattr(owner, name, counting(owner, name, getattr(owner, name)))
    yield hits
    monkeypatch.undo()
'''
)

AUDIT_TESTS = """
import os
import time
from pathlib import Path

from filelock import FileLock

from testmon_live.plugin import monitor

_sleep = time.sleep


def test_a_test_that_patches_everything(audit, heartbeats, request):
    from testmon_live.plugin.session import worker_key

    with FileLock(str(Path(__file__).parent / "shared.lock")):
        pass
    with monitor.lock("audit", timeout=5):
        pass
    heartbeats(3)  # the watchdog beats and samples a stall (--monitor-stall=0.5)
    recorder = request.config.stash.get(worker_key, None)
    if recorder is not None and recorder.stalls is not None:
        while recorder.stalls.stalls < 1:
            _sleep(0.01)
        heartbeats(2)
    assert audit == []
"""


@MODES
def test_no_call_of_the_monitor_goes_through_a_patchable_name(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    pytester.makeconftest(AUDIT_CONFTEST)
    pytester.makepyfile(test_audit=AUDIT_TESTS)
    result = pytester.runpytest_subprocess(
        "--monitor", *mode, "--monitor-stall=0.5", timeout=TIMEOUT
    )
    assert result.ret == 0, result.stdout.str()
    run = only_run(pytester)
    # it did stall (so the stacks of every thread were sampled under the patches)
    assert [s for s in run.of(ev.Stall) if s.reason == "stall"]
    assert [e for e in run.of(ev.LockEvent) if e.kind == "filelock"]


# ------------------------------------------------------- 2. the test's own signals

FREEZE = """
import ctypes

LIBC = ctypes.PyDLL(None)  # PyDLL: the GIL stays held during the call


def hold_the_gil(seconds):
    left = seconds
    while left:  # a signal cuts sleep() short: sleep the rest, GIL still held
        left = LIBC.sleep(left)
"""

OWN_HANDLERS = {
    "test_own_handler.py": """
import signal
from freeze import hold_the_gil, HOLD

def test_installs_its_own_handler_then_freezes():
    got = []
    signal.signal(signal.SIGUSR2, lambda signum, frame: got.append(signum))
    hold_the_gil(HOLD)
    assert got == []
""",
    "test_default.py": """
import signal
from freeze import hold_the_gil, HOLD

def test_restores_the_default_then_freezes():
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)  # SIGUSR2 now kills
    hold_the_gil(HOLD)
""",
    "test_around.py": """
import signal
from conftest import set_handler  # bound before the monitor armed: not watched
from freeze import hold_the_gil, HOLD

def test_restores_the_default_by_a_name_bound_early_then_freezes():
    set_handler(signal.SIGUSR2, signal.SIG_DFL)
    hold_the_gil(HOLD)
""",
    "conftest.py": """
from signal import signal as set_handler
""",
}


def test_a_worker_whose_signal_handler_is_the_tests_is_never_signalled(
    pytester: pytest.Pytester,
) -> None:
    # Silent for 2 s (stall 1 s) makes a worker unresponsive: 6 s frozen is well past that.
    pytester.makepyfile(freeze=FREEZE + "HOLD = 6\n", **OWN_HANDLERS)
    args = ("-n", "3", "--dist", "loadfile", "-p", "no:randomly", "--monitor-stall=1")
    result = assert_same_outcome(pytester, *args)
    result.assert_outcomes(passed=3)
    run = only_run(pytester)
    assert not run.of(ev.WorkerCrashed)
    assert not [s for s in run.of(ev.Stall) if s.reason == "unresponsive"]
    # ...though both froze, and the log says why their stacks were not taken
    frozen = {u.test for u in run.of(ev.Unresponsive) if not u.recovered}
    assert frozen == {
        "test_own_handler.py::test_installs_its_own_handler_then_freezes",
        "test_default.py::test_restores_the_default_then_freezes",
        "test_around.py::test_restores_the_default_by_a_name_bound_early_then_freezes",
    }
    notices = [n.msg for n in run.of(ev.Notice)]
    assert [m for m in notices if "signal.signal(SIGUSR2) was called" in m], notices
    refused = [m for m in notices if "no stacks taken from outside" in m]
    assert len(refused) == 3, notices
    # the handler set around the watch is seen from outside: SIGUSR2 is not caught
    assert [m for m in refused if "does not catch SIGUSR2" in m], notices


# ------------------------------------------------- 3. text that is no valid Unicode

UNDECODABLE = """
import os
from filelock import FileLock


def test_locks_a_file_whose_name_is_no_text(tmp_path):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\\xe9.lock")  # a lone surrogate
    with FileLock(name):
        pass


def test_after_it():
    pass
"""

UNDECODABLE_FAILURE = """
import os


def test_fails_with_a_message_that_is_no_text():
    raise ValueError(os.fsdecode(b"caf\\xe9"))
"""


@MODES
def test_text_that_is_no_valid_unicode_does_not_end_the_recording(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    pytester.makepyfile(test_text=UNDECODABLE)
    expected = {
        "test_text.py::test_locks_a_file_whose_name_is_no_text",
        "test_text.py::test_after_it",
    }
    if mode[0] != "-n":  # (under xdist such a failure text is xdist's own INTERNALERROR)
        pytester.makepyfile(test_failure=UNDECODABLE_FAILURE)
        expected.add("test_failure.py::test_fails_with_a_message_that_is_no_text")
    # --tb=no -rN: pytester cannot read back a failure text that is no valid UTF-8
    result = assert_same_outcome(pytester, *mode, "-p", "no:randomly", "--tb=no", "-rN")
    run = only_run(pytester)
    tests = run.tests_by_id()
    assert set(tests) == expected
    if mode[0] != "-n":
        (failed,) = tests["test_failure.py::test_fails_with_a_message_that_is_no_text"]
        assert failed.message == "ValueError: caf\\udce9"  # escaped, not lost
        assert failed.longrepr is not None
        assert "caf\\udce9" in failed.longrepr
    keys = {e.key for e in run.of(ev.LockEvent) if e.kind == "filelock"}
    assert [k for k in keys if k.endswith("/caf\\udce9.lock")], keys
    for finished in run.of(ev.WorkerFinished):
        assert not finished.dropped, finished.dropped
    assert isinstance(run.events[-1], ev.RunFinished)
    assert result.ret == (0 if mode[0] == "-n" else 1)


class _Loop(ev.Notice, tag="loop_test", kw_only=True):
    """An event whose value even escaping cannot encode (it contains itself)."""

    extra: list[object] = []  # noqa: RUF012 - msgspec copies mutable defaults


def test_an_event_that_cannot_be_encoded_is_left_out_and_the_rest_kept() -> None:
    looped: list[object] = []
    looped.append(looped)
    good = ev.Notice(msg="before")
    odd = ev.Notice(msg=object())  # type: ignore[arg-type]  # a value of a foreign type
    surrogate = ev.Notice(msg="caf\udce9")
    bad = _Loop(msg="bad", extra=looped)
    dropped: list[ev.Event] = []
    data = ev.encode_lines([good, odd, surrogate, bad, ev.Notice(msg="after")], dropped)
    assert dropped == [bad]
    lines = [ev.decode_event(line) for line in data.splitlines()]
    assert [n.msg for n in lines if isinstance(n, ev.Notice)] == [
        "before",
        odd.msg,
        "caf\\udce9",
        "after",
    ]
    assert str(odd.msg).startswith("<object object at")
    with pytest.raises(ev.EncodeError):
        ev.encode_lines([bad])


def test_the_sender_keeps_shipping_after_an_event_it_cannot_encode() -> None:
    from testmon_live.plugin.sender import Sender

    shipped: list[bytes] = []
    sender = Sender("gw0", lambda data, _events: shipped.append(data))
    looped: list[object] = []
    looped.append(looped)
    sender.emit(ev.Notice(msg="caf\udce9"))
    sender.emit(_Loop(msg="bad", extra=looped))
    sender.flush()
    sender.emit(ev.Notice(msg="later"))
    sender.flush()
    assert sender.error is None
    assert sender.dropped == {ev.UNENCODABLE: 1}
    got = [ev.decode_event(line) for data in shipped for line in data.splitlines()]
    texts = [e.msg for e in got if isinstance(e, ev.Notice)]
    assert texts[0] == "caf\\udce9"
    assert texts[-1] == "later"
    assert any("cannot be encoded were dropped (_Loop)" in t for t in texts), texts


# ------------------------------------------------------- 4. warnings as errors


@pytest.mark.parametrize(
    "strict", [["-W", "error"], ["-o", "filterwarnings=error"]], ids=["W-error", "ini"]
)
def test_a_monitor_that_cannot_start_is_no_error_under_strict_warnings(
    pytester: pytest.Pytester, strict: list[str]
) -> None:
    pytester.makepyfile(test_x="def test_ok(): pass\ndef test_fails(): assert 0\n")
    (pytester.path / "blocked").write_text("a file, not a folder")
    unstartable = ("--monitor", "--monitor-dir", "blocked/sub")
    result = assert_same_outcome(pytester, *strict, "-n", "2", monitor=unstartable)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["testmon-live: not recording this run: *blocked*"])
    result.assert_outcomes(passed=1, failed=1)  # and no warning added to pytest's counts


# --------------------------------------------------- 5. gateway ids that are odd


async def test_a_gateway_id_with_a_digit_that_is_no_number(pytester: pytest.Pytester) -> None:
    from testmon_live.tui import cli
    from testmon_live.tui.dashboard.app import make_app
    from testmon_live.tui.dashboard.sources import ReplaySource

    pytester.makepyfile(test_x="def test_a(): pass\ndef test_b(): assert 0\n")
    odd = ("--dist", "load", "--tx", "popen//id=gw²", "--tx", "popen//id=gw1²")
    result = assert_same_outcome(pytester, *odd)
    result.stdout.fnmatch_lines(["*- testmon-live -*", "log: *", "*1 failed, 1 passed*"])
    run = only_run(pytester)
    end = run.events[-1]
    assert isinstance(end, ev.RunFinished)
    assert set(end.workers) <= {"gw²", "gw1²"}
    assert end.tests == 2
    assert cli.main(["report", str(run.path)]) == 0
    app = make_app(ReplaySource(run.path, live=False))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for key in "12345678":
            await pilot.press(key)
            await pilot.pause()
    assert app.return_code in (None, 0)


def test_a_listen_port_with_a_digit_that_is_no_number_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_x="def test_x(): pass\n")
    result = pytester.runpytest_subprocess("--monitor", "--monitor-listen", "127.0.0.1:²")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--monitor-listen: '127.0.0.1:²' is not HOST:PORT*"])


@pytest.mark.parametrize(
    "wids",
    [
        ["gw10", "gw2", "main", "gw1"],
        ["gw²", "gw1²", "gw1", "gw٣", "gw"],  # superscript and Arabic-Indic digits
    ],
)
def test_worker_order_is_natural_and_never_fails(wids: list[str]) -> None:
    ordered = sorted(wids, key=worker_order)
    assert sorted(ordered, key=worker_order) == ordered
    if "gw10" in wids:
        assert ordered.index("gw2") < ordered.index("gw10")


# ------------------------------------------- 6. exceptions that cannot be printed

UNPRINTABLE = """
import pytest


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text for you")


class Interrupting(Exception):
    def __str__(self):
        raise KeyboardInterrupt


class Exiting(Exception):
    def __repr__(self):
        raise SystemExit(3)

    __str__ = __repr__


@pytest.fixture
def unprintable():
    raise Unprintable()


@pytest.fixture
def interrupting():
    raise Interrupting()


@pytest.fixture(scope="module")
def exiting():
    raise Exiting()


def test_unprintable_fixture(unprintable):
    pass


def test_interrupting_fixture(interrupting):
    pass


def test_exiting_fixture(exiting):
    pass


def test_raises_unprintable():
    raise Unprintable()


def test_after_them():
    pass
"""


@MODES
def test_exceptions_whose_text_raises_keep_the_users_outcome(
    pytester: pytest.Pytester, mode: list[str]
) -> None:
    pytester.makepyfile(test_unprintable=UNPRINTABLE)
    result = assert_same_outcome(pytester, *mode, "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1, errors=3)
    out = result.stdout.str()
    assert "testmon_live" not in out  # no frame of ours in any failure text
    run = only_run(pytester)
    tests = run.tests_by_id()
    assert len(tests) == 5
    errors = {
        nodeid: records[0].fixtures[0].error if records[0].fixtures else None
        for nodeid, records in tests.items()
        if "fixture" in nodeid and "exiting" not in nodeid
    }
    assert errors == {
        "test_unprintable.py::test_unprintable_fixture": (
            "Unprintable: <unprintable Unprintable: str() raised RuntimeError>"
        ),
        "test_unprintable.py::test_interrupting_fixture": (
            "Interrupting: <unprintable Interrupting: str() raised KeyboardInterrupt>"
        ),
    }
    (module_setup,) = [f for f in run.of(ev.FixtureSetup) if f.name == "exiting"]
    assert module_setup.error == "Exiting: <unprintable Exiting: str() raised SystemExit>"
