"""The monitor stays out of the user's failure text.

The same suite runs with and without ``--monitor`` (with ``-n 2`` and without xdist); the
failure sections of pytest's output must be the same, apart from timings and addresses,
and so must the failure text the monitor stores. The suite fails the ways integration
suites do: fixtures that raise (function and session scope), a filelock timeout, SQL
errors through sqlite3 and through SQLAlchemy (whose execution the monitor wraps) and a
container that cannot start (testcontainers, against an engine that is not there).
"""

from __future__ import annotations

import re

import pytest

from testmon_live.plugin import events as ev

from .conftest import only_run

CONFTEST = """
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("the fixture broke")

@pytest.fixture(scope="session")
def broken_session():
    raise ValueError("the session fixture broke")

@pytest.fixture
def broken_teardown():
    yield
    raise KeyError("teardown broke")
"""

SUITE = """
import sqlite3, threading
import filelock, pytest, sqlalchemy

def test_fixture_raises(broken):
    pass

def test_session_fixture_raises(broken_session):
    pass

def test_teardown_raises(broken_teardown):
    pass

def test_filelock_times_out(tmp_path):
    path = str(tmp_path / "migrations.lock")
    held, done = threading.Event(), threading.Event()

    def holder():
        with filelock.FileLock(path):
            held.set()
            done.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(30)
    try:
        filelock.FileLock(path).acquire(timeout=0.1)
    finally:
        done.set()
        thread.join()

def test_sqlite3_error():
    sqlite3.connect(":memory:").execute("select * from missing_table")

def test_sqlalchemy_error():
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("select * from missing_table"))

def test_container_cannot_start():
    from testcontainers.core.container import DockerContainer
    DockerContainer("localhost/no-such-image:1").start()

def test_assertion():
    assert [1, 2] == [1, 3]
"""

_SECTION = re.compile(r"^_{3,} (.+?) _{3,}$")
_BANNER = re.compile(r"^={3,} .* ={3,}$|^-{3,} (testmon-live|generated) .*-{3,}$")
_VOLATILE = (
    (re.compile(r"0x[0-9a-f]+"), "0x?"),  # addresses
    (re.compile(r"pytest-\d+"), "pytest-N"),  # pytester's numbered base directory
    (re.compile(r"\d+\.\d+s\b|\b\d{10}\.\d+"), "T"),  # timings, time.time()
    (re.compile(r"\b(start_time|lock_generation)=[0-9.]+"), r"\1=N"),
    (re.compile(r"\bgw\d+\b"), "gwN"),
)
"""Differences that are not the monitor's: addresses, timings, which worker ran a test; and
filelock's count of lock attempts in its context (the monitor's probe tries once without
blocking before the caller's own blocking acquire, so one more attempt is counted)."""


def failure_sections(output: str) -> dict[str, str]:
    """Each failure section of pytest's output (ERRORS and FAILURES), by its title."""
    sections: dict[str, str] = {}
    title: str | None = None
    for line in output.splitlines():
        heading = _SECTION.match(line)
        if heading:
            title = heading.group(1)
            sections[title] = ""
            continue
        if _BANNER.match(line):
            title = None
            continue
        if title is not None:
            for pattern, replacement in _VOLATILE:
                line = pattern.sub(replacement, line)
            sections[title] += line + "\n"
    return sections


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["no-xdist", "n2"])
@pytest.mark.parametrize("tb", ["auto", "long"])
def test_failure_sections_are_the_same_with_and_without_the_monitor(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xdist: tuple[str, ...], tb: str
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/no-engine.sock")
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
    args = ("-p", "no:cacheprovider", "-p", "no:randomly", f"--tb={tb}", *xdist)
    plain = pytester.runpytest_subprocess(*args)
    monitored = pytester.runpytest_subprocess(*args, "--monitor")
    outcomes = {"failed": 5, "errors": 3, "passed": 1}
    plain.assert_outcomes(**outcomes)
    monitored.assert_outcomes(**outcomes)

    expected = failure_sections(plain.stdout.str())
    got = failure_sections(monitored.stdout.str())
    assert len(expected) == 8, list(expected)
    assert got.keys() == expected.keys()
    for title, text in expected.items():
        assert got[title] == text, title
    assert "testmon_live" not in monitored.stdout.str().split("testmon-live ---")[0]

    # the failure text the monitor stored is pytest's own, without the monitor's frames
    stored = [t for t in only_run(pytester).of(ev.TestFinished) if t.longrepr]
    assert len(stored) == 8
    for record in stored:
        assert record.longrepr is not None
        assert "probes" not in record.longrepr, record.nodeid
        assert "testmon_live" not in record.longrepr, record.nodeid
