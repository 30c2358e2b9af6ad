"""Containers through testcontainers, against a real engine (Podman or Docker), under ``-n 2``.

The engine is whatever ``DOCKER_HOST`` names (``scripts/podman-setup --env`` prints it; the
socket it starts is used when the variable is unset). The image is built locally by that
script: nothing is pulled. The tests that need it are marked ``engine``: without an engine
they skip, except under ``CI=true`` where a missing engine is a failure (tests/conftest.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from testmon_live.plugin import events as ev
from testmon_live.plugin.probes.containers import (
    FIXTURE_LABEL,
    RUN_LABEL,
    TEST_LABEL,
    WORKER_LABEL,
    describe_wait,
)
from testmon_live.plugin.state import RunState

from .conftest import TEST_IMAGE, Recorded, engine_environ, only_run

IMAGE = TEST_IMAGE
INNER_TIMEOUT = 90

pytestmark = pytest.mark.slow


def _cleanup(recorded: Recorded) -> None:
    """Remove what an inner run left behind (the leak test leaks on purpose)."""
    import docker

    client = docker.DockerClient(base_url=engine_environ().get("DOCKER_HOST"), timeout=10)
    try:
        label = f"{RUN_LABEL}={recorded.header.run_id}"
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)
    finally:
        client.close()


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Recorded]:
    result = pytester.runpytest_subprocess(
        "--monitor", "-p", "no:cacheprovider", *args, timeout=INNER_TIMEOUT
    )
    recorded = only_run(pytester)
    _cleanup(recorded)
    return result, recorded


def containers(recorded: Recorded, action: str | None = None) -> list[ev.ContainerEvent]:
    return [e for e in recorded.of(ev.ContainerEvent) if action is None or e.action == action]


WEB = f"""
import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

IMAGE = {IMAGE!r}

def web_container(delay="1"):
    return (
        DockerContainer(IMAGE)
        .with_command(["sh", "-c", "sleep %s; echo serving; exec httpd -f -p 8080 -h /www" % delay])
        .with_exposed_ports(8080)
        .waiting_for(LogMessageWaitStrategy("serving").with_startup_timeout(20))
    )
"""


@pytest.mark.engine
def test_per_worker_container_is_recorded_on_each_worker(
    pytester: pytest.Pytester, engine: None
) -> None:
    pytester.makeconftest(
        WEB
        + """
@pytest.fixture(scope="session")
def web():
    container = web_container()
    container.start()
    yield container
    container.stop()
"""
    )
    pytester.makepyfile(
        test_web="""
import time, urllib.request
import pytest

@pytest.mark.parametrize("n", range(6))
def test_get(web, n):
    port = web.get_exposed_port(8080)
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html").read() == b"ok\\n"
    time.sleep(0.2)
"""
    )
    result, recorded = _run(pytester, "-n", "2")
    result.assert_outcomes(passed=6)
    run_id = recorded.header.run_id
    created = containers(recorded, "create")
    assert sorted(e.w for e in created) == ["gw0", "gw1"], created
    for create in created:
        assert create.image == IMAGE
        assert create.labels[RUN_LABEL] == run_id
        assert create.labels[WORKER_LABEL] == create.w
        assert create.labels[TEST_LABEL].startswith("test_web.py::test_get")
        assert create.labels[FIXTURE_LABEL] == "web"
        assert create.fixture == "web"
        assert create.ports == {"8080/tcp": ""}
        assert create.dur is not None
        assert create.dur > 0
    state = recorded.state
    assert len(state.containers) == 2
    for view in state.containers.values():
        assert view.state == "removed"
        assert set(view.phases) >= {"create", "start", "ready", "remove"}
        assert view.phases["ready"] >= 0.9  # the container sleeps 1 s before it serves
        assert view.wait == "LogMessageWaitStrategy('serving', timeout 20s)"
        assert view.ports["8080/tcp"].endswith(tuple("0123456789"))
        assert not view.leaked
        assert view.died is None
    (image,) = state.container_images()
    assert image.starts == 2
    assert image.per_worker
    # Each worker was seen waiting on its container while it started.
    waiting = {e.w for e in recorded.of(ev.Activity) if (e.waiting or "").startswith("container:")}
    assert waiting == {"gw0", "gw1"}
    assert f"container {IMAGE} started 2x on 2 workers" in result.stdout.str()


@pytest.mark.engine
def test_container_shared_across_workers_behind_a_file_lock(
    pytester: pytest.Pytester, engine: None
) -> None:
    pytester.makeconftest(
        WEB
        + """
import fcntl, json, os, time
from pathlib import Path
import docker

SHARED = Path(__file__).parent / "shared"

@pytest.fixture(scope="session")
def shared_web():
    # The usual recipe for one container across xdist workers: the first worker to get
    # the lock starts it and writes where it is; the others wait, then look it up.
    with open(SHARED.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if SHARED.exists():
            started = None
            cid = json.loads(SHARED.read_text())["id"]
        else:
            started = web_container("2").start()  # long enough for the others to queue
            cid = started.get_wrapped_container().id
            SHARED.write_text(json.dumps({"id": cid}))
    client = docker.from_env()
    found = client.containers.get(cid)
    ports = found.attrs["NetworkSettings"]["Ports"]["8080/tcp"]
    yield int(ports[0]["HostPort"])
    if started is not None:
        time.sleep(1.5)  # let the other worker finish with it
        started.stop()
"""
    )
    pytester.makepyfile(
        test_shared="""
import time, urllib.request
import pytest

@pytest.mark.parametrize("n", range(4))
def test_get(shared_web, n):
    assert urllib.request.urlopen(f"http://127.0.0.1:{shared_web}/").status == 200
    time.sleep(0.3)
"""
    )
    result, recorded = _run(pytester, "-n", "2")
    result.assert_outcomes(passed=4)
    (create,) = containers(recorded, "create")
    owner = create.w
    other = "gw1" if owner == "gw0" else "gw0"
    uses = containers(recorded, "use")
    assert uses, "the other worker's lookup was not recorded"
    # the other worker's lookup; the owner's own connections to it are uses as well
    assert {u.w for u in uses if u.by != "connect"} == {other}
    assert other in {u.w for u in uses}
    assert all(u.cid == create.cid for u in uses)
    assert all(u.owner == owner for u in uses if u.by != "connect")
    view = recorded.state.containers[create.cid]
    assert view.owner == owner
    assert view.shared
    assert other in view.users
    assert view.state == "removed"
    # The other worker waited on the lock while the owner started the container.
    waited = [f for f in recorded.of(ev.FixtureSetup) if f.name == "shared_web" and f.w == other]
    assert waited
    assert waited[0].dur >= 0.8, waited
    report = pytester.run(
        sys.executable, "-m", "testmon_live.tui.cli", "report", "--format", "json"
    )
    (row,) = json.loads(report.stdout.str())["containers"]
    assert row["cid"] == create.cid
    assert row["owner"] == owner
    assert row["users"] == [other]


SHARED_STOPPED_EARLY = """
import fcntl, json, time
from pathlib import Path
import docker

SHARED = Path(__file__).parent / "shared"

@pytest.fixture(scope="session")
def shared_web():
    # testcontainers-python #567: the worker that started the shared container stops it at
    # its own session end, while the other worker still runs tests that use it.
    with open(SHARED.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if SHARED.exists():
            started = None
            cid = json.loads(SHARED.read_text())["id"]
        else:
            started = web_container("0").start()
            cid = started.get_wrapped_container().id
            SHARED.write_text(json.dumps({"id": cid}))
    found = docker.from_env().containers.get(cid)
    port = int(found.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
    yield {"id": cid, "port": port, "owner": started is not None}
    if started is not None:
        started.stop()
"""


@pytest.mark.engine
def test_shared_container_stopped_by_its_owner_while_another_worker_uses_it(
    pytester: pytest.Pytester, engine: None
) -> None:
    pytester.makeconftest(WEB + SHARED_STOPPED_EARLY)
    pytester.makepyfile(
        test_shared="""
import time, urllib.error, urllib.request
from pathlib import Path
import docker
import pytest

USED = Path(__file__).parent / "used-by-the-other"

def test_get(shared_web):
    deadline = time.monotonic() + 10  # "serving" is logged just before httpd listens
    while True:
        try:
            got = urllib.request.urlopen(f"http://127.0.0.1:{shared_web['port']}/", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert got.status == 200
    if not shared_web["owner"]:
        USED.touch()

def test_after_the_owner_is_done(shared_web):
    if shared_web["owner"]:
        # The owner's last test: its session ends next and it stops the container -- once
        # the other worker has used it (and that was recorded: events go out in batches).
        deadline = time.monotonic() + 30
        while not USED.exists():
            assert time.monotonic() < deadline, "the other worker never used the container"
            time.sleep(0.05)
        time.sleep(0.5)
        return
    client = docker.from_env()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:  # (a stop that has begun is not enough: httpd answers until it is killed)
            if client.containers.get(shared_web["id"]).status in ("exited", "dead"):
                break
        except docker.errors.APIError:  # gone (Podman says 500 while it removes it)
            break
        time.sleep(0.1)
    else:
        pytest.fail("the owner never stopped the shared container")
    with pytest.raises(OSError):  # what #567 looks like to the other worker's tests
        urllib.request.urlopen(f"http://127.0.0.1:{shared_web['port']}/", timeout=2)
"""
    )
    result, recorded = _run(pytester, "-n", "2", "--dist", "each", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    (create,) = containers(recorded, "create")
    owner = create.w
    other = "gw1" if owner == "gw0" else "gw0"
    view = recorded.state.containers[create.cid]
    assert view.owner == owner
    assert view.shared
    assert view.stopped_while_used == [other]
    label = view.name or view.cid
    line = f"container {label} ({IMAGE}) stopped by {owner} while {other} still ran tests"
    assert line in result.stdout.str()
    report = pytester.run(sys.executable, "-m", "testmon_live.tui.cli", "report")
    assert f"stopped by {owner} while {other} still ran tests that used it" in report.stdout.str()
    report = pytester.run(
        sys.executable, "-m", "testmon_live.tui.cli", "report", "--format", "json"
    )
    (row,) = json.loads(report.stdout.str())["containers"]
    assert row["stopped_while_used"] == [other]


@pytest.mark.engine
def test_wait_timeout_missing_image_and_unreachable_engine_are_failures_with_the_cause(
    pytester: pytest.Pytester, engine: None
) -> None:
    pytester.makepyfile(
        test_fail=f"""
import pytest
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

def test_wait_times_out():
    never = (
        DockerContainer({IMAGE!r})
        .with_command("sleep 30")
        .waiting_for(LogMessageWaitStrategy("never printed").with_startup_timeout(2))
    )
    with pytest.raises(TimeoutError):
        with never:
            pass

def test_image_missing():
    with pytest.raises(Exception):
        DockerContainer("localhost/testmon-no-such-image:1").start()

def test_engine_unreachable(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(Exception):
        DockerContainer({IMAGE!r})
"""
    )
    result, recorded = _run(pytester, "-n", "2")
    result.assert_outcomes(passed=3)
    fails = {e.test: e for e in containers(recorded, "fail")}
    timeout = fails["test_fail.py::test_wait_times_out"]
    assert timeout.phase == "ready"
    assert timeout.wait == "LogMessageWaitStrategy('never printed', timeout 2s)"
    assert timeout.error
    assert timeout.error.startswith("TimeoutError")
    missing = fails["test_fail.py::test_image_missing"]
    assert missing.phase == "create"
    assert missing.image == "localhost/testmon-no-such-image:1"
    assert missing.error
    unreachable = fails["test_fail.py::test_engine_unreachable"]
    assert unreachable.phase == "engine"
    assert unreachable.error
    assert "DockerException" in unreachable.error
    state = recorded.state
    view = state.containers[timeout.cid]
    assert view.state == "removed"  # `with` removed it after the failed start
    assert view.failed_phase == "ready"


@pytest.mark.engine
def test_container_killed_mid_run_by_a_test_is_a_stop_not_a_death(
    pytester: pytest.Pytester, engine: None
) -> None:
    pytester.makeconftest(
        WEB
        + """
@pytest.fixture(scope="session")
def web():
    container = web_container("0")
    container.start()
    yield container
    container.stop()
"""
    )
    pytester.makepyfile(
        test_kill="""
import time
import docker

def test_kill(web):
    docker.from_env().containers.get(web.get_wrapped_container().id).kill()
    time.sleep(2.5)  # the engine's word arrives while this test still runs
"""
    )
    result, recorded = _run(pytester, "-n", "2")
    result.assert_outcomes(passed=1)
    # A kill asked through the docker SDK by a test of this run is a stop with its asker,
    # not a death (issue 13: "died" means nobody of this run asked).
    kills = [e for e in containers(recorded, "stop") if "kill" in (e.call or "")]
    (kill,) = kills
    assert kill.test == "test_kill.py::test_kill"
    assert kill.w in ("gw0", "gw1")
    view = recorded.state.containers[kill.cid]
    assert view.died is None
    assert view.state == "removed"  # then its owner tore it down as usual
    assert "died" not in result.stdout.str()


@pytest.mark.engine
def test_unhealthy_container_is_reported_with_its_owner(
    pytester: pytest.Pytester, engine: None
) -> None:
    pytester.makepyfile(
        test_health=f"""
import shutil, subprocess, time
import docker
from testcontainers.core.container import DockerContainer

SECOND = 1_000_000_000

def test_unhealthy():
    check = {{"test": ["CMD-SHELL", "exit 1"], "interval": SECOND, "timeout": SECOND,
             "retries": 1, "start_period": 0}}
    with DockerContainer({IMAGE!r}).with_command("sleep 60").with_kwargs(healthcheck=check) as c:
        cid = c.get_wrapped_container().id
        if shutil.which("podman"):
            # Podman schedules health checks with systemd timers; without systemd, run one.
            subprocess.run(["podman", "healthcheck", "run", cid], timeout=20)
        client = docker.from_env()
        deadline = time.monotonic() + 20
        while client.containers.get(cid).attrs["State"]["Health"]["Status"] != "unhealthy":
            assert time.monotonic() < deadline, "the health check never failed"
            time.sleep(0.2)
        time.sleep(1.0)  # the engine's event reaches the controller while this test runs
"""
    )
    result, recorded = _run(pytester, "-n", "2")
    result.assert_outcomes(passed=1)
    health = containers(recorded, "health")
    assert health, "no health event from the engine"
    assert health[-1].health == "unhealthy"
    assert health[-1].by == "engine"
    assert health[-1].test == "test_health.py::test_unhealthy"
    (create,) = containers(recorded, "create")
    assert health[-1].owner == create.w
    view = recorded.state.containers[create.cid]
    assert view.health == "unhealthy"
    assert view.state == "removed"  # the health event does not change the lifecycle state
    label = view.name or view.cid
    assert f"container {label} ({IMAGE}) unhealthy, started by {create.w}" in result.stdout.str()
    report = pytester.run(
        sys.executable, "-m", "testmon_live.tui.cli", "report", "--format", "json"
    )
    (row,) = json.loads(report.stdout.str())["containers"]
    assert row["health"] == "unhealthy"


@pytest.mark.engine
def test_leaked_container_is_found_at_the_end_with_its_owner(
    pytester: pytest.Pytester, engine: None
) -> None:
    pytester.makepyfile(
        test_leak=f"""
from testcontainers.core.container import DockerContainer

def test_forgets_to_stop():
    DockerContainer({IMAGE!r}).with_command("sleep 60").start()

def test_cleans_up():
    with DockerContainer({IMAGE!r}).with_command("sleep 60"):
        pass
"""
    )
    result, recorded = _run(pytester, "-n", "2")
    result.assert_outcomes(passed=2)
    (leak,) = containers(recorded, "leak")
    assert leak.by == "engine"
    assert leak.test == "test_leak.py::test_forgets_to_stop"
    (create,) = [c for c in containers(recorded, "create") if c.test == leak.test]
    assert leak.owner == create.w
    assert leak.cid == create.cid
    assert recorded.state.leaked_containers()[0].cid == leak.cid
    out = result.stdout.str()
    assert "leaked containers: 1 still there at the end" in out
    assert f"label={RUN_LABEL}={recorded.header.run_id}" in out


def test_no_engine_is_one_notice_and_nothing_else(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    pytester.makepyfile(
        test_no_engine="""
import pytest
from testcontainers.core.container import DockerContainer

def test_needs_a_container():
    DockerContainer("localhost/whatever:1")

def test_plain():
    pass
"""
    )
    result = pytester.runpytest_subprocess("--monitor", "-n", "2", timeout=INNER_TIMEOUT)
    result.assert_outcomes(passed=1, failed=1)  # the engine's error is the test's, unchanged
    assert "DockerException" in result.stdout.str()
    recorded = only_run(pytester)
    notices = [n for n in recorded.of(ev.Notice) if n.msg.startswith("containers:")]
    assert len(notices) == 1
    assert "no container engine reachable" in notices[0].msg
    (fail,) = containers(recorded)
    assert fail.action == "fail"
    assert fail.phase == "engine"


def test_a_run_without_containers_never_talks_to_the_engine(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
import sys, time

def test_testcontainers_not_imported_by_the_monitor():
    time.sleep(0.6)  # an eager engine watch would have imported the SDK by now
    assert "testcontainers" not in sys.modules
    assert "docker" not in sys.modules
"""
    )
    result = pytester.runpytest_subprocess("--monitor", "-p", "no:xdist", timeout=INNER_TIMEOUT)
    result.assert_outcomes(passed=1)
    recorded = only_run(pytester)
    assert not [n for n in recorded.of(ev.Notice) if n.msg.startswith("containers:")]


def test_fold_keeps_the_owners_teardown_over_a_late_engine_report() -> None:
    state = RunState()
    for event in (
        ev.ContainerEvent(w="gw0", ts=1.0, action="create", cid="c1", image="i", dur=0.1),
        ev.ContainerEvent(w="gw0", ts=2.0, action="ready", cid="c1", dur=0.5),
        ev.ContainerEvent(w="gw1", ts=2.5, action="use", cid="c1", owner="gw0", test="t::a"),
        ev.Activity(w="gw1", ts=2.6, test="t::b", phase="call", since=2.6),
        ev.ContainerEvent(w="gw0", ts=3.0, action="stop", cid="c1", call="DockerContainer.stop"),
        ev.ContainerEvent(w="gw0", ts=3.2, action="remove", cid="c1", dur=0.2),
        ev.ContainerEvent(ts=3.4, action="die", cid="c1", exit_code=137, by="engine"),
        ev.TestFinished(  # gw1's test went on after the stop: it did run under it
            w="gw1",
            ts=3.6,
            nodeid="t::b",
            outcome="failed",
            phases=[ev.Phase("teardown", 3.5, 0.1, "passed")],
        ),
    ):
        state.apply(event)
    view = state.containers["c1"]
    assert view.state == "removed"
    assert view.exit_code == 137
    assert view.died is None
    assert view.startup == pytest.approx(0.6)
    assert view.shared
    assert view.stopped_while_used == ["gw1"]
    assert view.user_tests == {"gw1": {"t::a"}}
    assert view.story() == (
        "started by gw0, used by gw1 (1 test), removed by gw0 (DockerContainer.stop)"
        " while gw1 still ran tests that used it"
    )


def test_fold_takes_the_stop_of_another_worker_for_the_exit_and_the_others_as_done() -> None:
    state = RunState()
    for event in (
        ev.FixtureSetup(
            w="gw2", ts=0.9, name="db", scope="session", test="t::a", start=0.8, dur=0.1
        ),
        ev.ContainerEvent(w="gw2", ts=1.0, action="create", cid="c1", test="t::a", fixture="db"),
        ev.ContainerEvent(w="gw2", ts=2.0, action="ready", cid="c1", ports={"80/tcp": ":1"}),
        ev.ContainerEvent(w="gw0", ts=2.5, action="use", cid="c1", test="t::b", by="connection"),
        ev.ContainerEvent(w="gw3", ts=2.6, action="use", cid="c1", test="t::c", by="connection"),
        ev.ContainerEvent(w="gw3", ts=2.7, action="use", cid="c1", test="t::d", by="connection"),
        ev.ContainerEvent(w="gw2", ts=2.8, action="use", cid="c1", test="t::a", by="connection"),
        ev.Activity(w="gw0", ts=2.9, test="t::b", phase="call", since=2.9),
        # The engine's word on the exit arrives before the batch with the ask in it.
        ev.ContainerEvent(ts=4.9, action="die", cid="c1", exit_code=137, by="engine"),
        ev.ContainerEvent(
            w="gw3",
            ts=3.0,
            action="stop",
            cid="c1",
            test="t::d",
            fixture="db",
            phase="teardown",
            call="remove(force=True)",
        ),
        ev.ContainerEvent(w="gw3", ts=3.1, action="remove", cid="c1", dur=0.1),
        # gw0's record of leaving its test before the removal, shipped late.
        ev.TestFinished(
            w="gw0",
            ts=2.95,
            nodeid="t::b",
            outcome="passed",
            phases=[ev.Phase("teardown", 2.94, 0.01, "passed")],
        ),
    ):
        state.apply(event)
    view = state.containers["c1"]
    assert view.died is None
    assert view.stopped_by == "gw3"
    assert view.stop_scope == "session"
    assert view.stopped_while_used == []
    assert view.users == {"gw0", "gw3"}
    assert view.story() == (
        "started by gw2 (fixture db, test t::a), used by gw0, gw3 (3 tests), removed by gw3"
        " in session teardown of fixture db (remove(force=True)) after the others had finished"
    )


def test_describe_wait_names_the_strategy_and_its_target() -> None:
    from testcontainers.core.wait_strategies import (
        CompositeWaitStrategy,
        HttpWaitStrategy,
        LogMessageWaitStrategy,
        PortWaitStrategy,
    )

    composite = CompositeWaitStrategy(
        PortWaitStrategy(5432), HttpWaitStrategy(8080, "/health")
    ).with_startup_timeout(5)
    assert describe_wait(composite) == (
        "CompositeWaitStrategy(PortWaitStrategy(port 5432, timeout 5s) + "
        "HttpWaitStrategy(port 8080 /health, timeout 5s), timeout 5s)"
    )
    assert describe_wait(LogMessageWaitStrategy("up")).startswith("LogMessageWaitStrategy('up'")


LAST_ONE_OUT = """
import fcntl, json, os
from pathlib import Path
import docker

HERE = Path(__file__).parent
SHARED = HERE / "shared.json"
COUNT = HERE / "registered.json"

@pytest.fixture(scope="session")
def shared_web(worker_id):
    # xdist's recipe for one container across workers (testcontainers-python #567): the
    # first worker starts it under a file lock and writes where it is; the others read the
    # file and never call the engine; each registers, and the last one out removes it.
    with open(HERE / "shared.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if SHARED.exists():
            info = json.loads(SHARED.read_text())
        else:
            started = web_container("0").start()
            info = {
                "host": "127.0.0.1",
                "port": int(started.get_exposed_port(8080)),
                "id": started.get_wrapped_container().id,
            }
            SHARED.write_text(json.dumps(info))
        count = json.loads(COUNT.read_text()) if COUNT.exists() else {"in": 0, "ever": 0}
        count["in"] += 1
        count["ever"] += 1
        COUNT.write_text(json.dumps(count))
    yield info
    with open(HERE / "shared.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        count = json.loads(COUNT.read_text())
        count["in"] -= 1
        COUNT.write_text(json.dumps(count))
        workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        if count["in"] == 0 and count["ever"] == workers:
            docker.from_env().containers.get(info["id"]).remove(force=True)
            (HERE / "removed-by").write_text(worker_id)
"""


@pytest.mark.engine
def test_last_one_out_removal_is_told_in_order_with_every_user(
    pytester: pytest.Pytester, engine: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(WEB + LAST_ONE_OUT)
    pytester.makepyfile(
        test_shared="""
import socket, time
import pytest

@pytest.mark.parametrize("n", range(12))
def test_get(shared_web, n):
    deadline = time.monotonic() + 10  # "serving" is logged just before httpd listens
    while True:
        try:
            conn = socket.create_connection((shared_web["host"], shared_web["port"]), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn:  # a client that keeps its connection while the test works (a pool would)
        conn.sendall(b"GET /index.html HTTP/1.0\\r\\n\\r\\n")
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\\r\\n")[0]
        time.sleep(1.0)
"""
    )
    result, recorded = _run(pytester, "-n", "4", "-p", "no:randomly")
    result.assert_outcomes(passed=12)
    remover = (pytester.path / "removed-by").read_text()
    (create,) = containers(recorded, "create")
    owner = create.w
    assert not containers(recorded, "die"), "the forced removal was taken for a death"
    view = recorded.state.containers[create.cid]
    assert view.died is None
    assert view.removed_by is None
    assert view.state == "removed"
    assert view.stopped_by == remover
    assert view.stop_call == "remove(force=True)"
    assert view.stop_fixture == "shared_web"
    assert view.stop_scope == "session"
    assert view.stopped_while_used == []
    # Every worker ran tests against it; the ones that did not start it are its users, each
    # with the tests that connected (seen from the controller, through /proc).
    ran: dict[str, set[str]] = {}
    for test in recorded.of(ev.TestFinished):
        ran.setdefault(test.w, set()).add(test.nodeid)
    assert sorted(ran) == ["gw0", "gw1", "gw2", "gw3"]
    others = sorted(set(ran) - {owner})
    assert sorted(view.users) == others
    for worker in ran:
        assert view.user_tests.get(worker) == ran[worker], worker
    used = sum(len(ran[w]) for w in others)
    story = (
        f"started by {owner} (fixture shared_web, test {create.test}), "
        f"used by {', '.join(others)} ({used} tests), "
        f"removed by {remover} in session teardown of fixture shared_web (remove(force=True)) "
        "after the others had finished"
    )
    assert view.story() == story
    label = view.name or view.cid
    out = result.stdout.str()
    assert f"container {label} ({IMAGE}): {story}" in out
    assert "died" not in out
    assert "without any worker of this run asking" not in out
    monkeypatch.setenv("COLUMNS", "1000")  # the whole story on one line, whatever the test runs in
    text = pytester.run(sys.executable, "-m", "testmon_live.tui.cli", "report").stdout.str()
    assert f"{label} {story}" in " ".join(text.split()), text
    assert "died" not in text
    report = pytester.run(
        sys.executable, "-m", "testmon_live.tui.cli", "report", "--format", "json"
    )
    (row,) = json.loads(report.stdout.str())["containers"]
    assert row["story"] == story
    assert row["owner"] == owner
    assert row["users"] == others
    assert row["stopped_by"] == remover
    assert row["stop_call"] == "remove(force=True)"
    assert row["user_tests"] == {w: len(ran[w]) for w in sorted(ran)}
    assert row["died"] is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_connections_are_read_from_outside_the_process() -> None:
    import os
    import socket
    import subprocess

    from testmon_live.plugin.probes.connections import connected_ports

    with socket.create_server(("127.0.0.1", 0)) as server, socket.socket() as idle:
        port = server.getsockname()[1]
        idle.bind(("127.0.0.1", 0))
        other = idle.getsockname()[1]
        client = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
                " print('on', flush=True); sys.stdin.read()",
                str(port),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert client.stdout is not None
            assert client.stdout.readline() == "on\n"
            assert connected_ports(client.pid, {port, other}) == {port}
            # The listening end is not a connection to the port.
            assert connected_ports(os.getpid(), {port}) == set()
        finally:
            assert client.stdin is not None
            client.stdin.close()
            client.wait(10)
        assert connected_ports(client.pid, {port}) == set()  # gone: nothing, no error


BRIEF = """
import socket, time
import pytest

@pytest.mark.parametrize("n", range(12))
def test_get(shared_web, n):
    deadline = time.monotonic() + 10  # "serving" is logged just before httpd listens
    while True:
        try:
            conn = socket.create_connection((shared_web["host"], shared_web["port"]), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn:  # one request and gone: far less than the controller's 0.2 s between looks
        conn.sendall(b"GET /index.html HTTP/1.0\\r\\n\\r\\n")
        reply = b""
        while chunk := conn.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\\r\\n")[0]
    # The connection is long closed; the test goes on (as real ones do) so that its worker
    # is still there when the controller tells the workers the container's ports.
    time.sleep(0.5)
"""


@pytest.mark.engine
def test_a_worker_that_talks_to_a_shared_container_only_briefly_is_a_user(
    pytester: pytest.Pytester, engine: None
) -> None:
    pytester.makeconftest(WEB + LAST_ONE_OUT)
    pytester.makepyfile(test_shared=BRIEF)
    result, recorded = _run(pytester, "-n", "4", "-p", "no:randomly")
    result.assert_outcomes(passed=12)
    (create,) = containers(recorded, "create")
    view = recorded.state.containers[create.cid]
    ran: dict[str, set[str]] = {}
    for test in recorded.of(ev.TestFinished):
        ran.setdefault(test.w, set()).add(test.nodeid)
    assert len(ran) == 4
    # Connections too short for the controller's look from outside: each worker saw its own.
    # (Tests that ran before the controller told the workers the ports are the exception:
    # the first ones, while the owner started the container.)
    others = sorted(set(ran) - {create.w})
    assert sorted(view.users) == others
    connects = [e for e in containers(recorded, "use") if e.by == "connect"]
    assert {e.w for e in connects} >= set(others)
    for worker in others:
        assert view.user_tests.get(worker), worker


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="errno values of Linux")
@pytest.mark.isolated  # the watch patches socket.socket for good
def test_connects_to_watched_ports_are_noted_where_they_are_made() -> None:
    import asyncio
    import socket
    import time

    from testmon_live.plugin.activity import WorkerActivity
    from testmon_live.plugin.probes import dblocks, locking, portwatch

    got: list[ev.Event] = []
    activity = WorkerActivity(0.0)
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_server(("127.0.0.1", 0)) as other,
    ):
        port, other_port = server.getsockname()[1], other.getsockname()[1]
        # Not armed yet (no testcontainers, no docker SDK): the socket class is untouched.
        assert not hasattr(socket.socket.connect, "__wrapped__")
        portwatch.arm(got.append, activity)
        assert socket.socket.connect.__name__ == "connect"
        # Before the controller's word: kept, reported once the port is known as a
        # container's, if made after the container was created.
        activity.test = "test_a.py::test_too_early"
        socket.create_connection(("127.0.0.1", port)).close()
        created = time.time()
        activity.test = "test_a.py::test_first"
        socket.create_connection(("127.0.0.1", port)).close()
        assert got == []
        portwatch.watch({port: ("c0ffee", created)}, got.append, activity)
        activity.test = "test_a.py::test_brief"
        socket.create_connection(("127.0.0.1", port)).close()  # opened and closed at once
        socket.create_connection(("127.0.0.1", port)).close()  # the same test: once
        socket.create_connection(("127.0.0.1", other_port)).close()  # not a container's
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) == 0
        activity.test = "test_a.py::test_async"

        async def talk() -> None:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()

        asyncio.run(talk())
        # A refused connection keeps its error, unchanged, and is no use.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        ports = {port: ("c0ffee", created), closed: ("dead00", created)}
        portwatch.watch(ports, got.append, activity)
        activity.test = "test_a.py::test_refused"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", closed))
        # A database connection made in C (libpq) is told by the DB-API probe as announced.
        activity.test = "test_a.py::test_db"
        locking.activate(locking.LockReporter(got.append, activity))
        try:
            dblocks.announce(object(), "postgresql", f"postgresql://127.0.0.1:{port}/db", 42)
        finally:
            locking.activate(None)
        portwatch.watch({}, got.append, activity)  # every container ended: nothing noted
        activity.test = "test_a.py::test_after"
        socket.create_connection(("127.0.0.1", port)).close()
    uses = [(e.cid, e.test, e.by) for e in got if isinstance(e, ev.ContainerEvent)]
    assert uses == [
        ("c0ffee", "test_a.py::test_first", "connect"),
        ("c0ffee", "test_a.py::test_brief", "connect"),
        ("c0ffee", "test_a.py::test_async", "connect"),
        ("c0ffee", "test_a.py::test_db", "connect"),
    ]


def test_a_worker_that_ends_before_it_is_told_the_ports_still_counts_as_a_user(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its last word carries the connects it could not match; the fold matches them to the
    containers' mapped ports, made after the container was created."""
    pytester.makepyfile(
        # any module named docker arms the worker's watch, as the docker SDK would
        docker="",
        conftest="import docker\n",
        test_a="""
import os, socket

def test_talks():
    port = int(os.environ["TALK_PORT"])
    socket.create_connection(("127.0.0.1", port)).close()
""",
    )
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        monkeypatch.setenv("TALK_PORT", str(port))
        outcome = pytester.runpytest_subprocess("--monitor", "-n", "1")
    outcome.assert_outcomes(passed=1)
    run = only_run(pytester)
    (finished,) = run.of(ev.WorkerFinished)
    assert [(r.port, r.test) for r in finished.reached] == [(port, "test_a.py::test_talks")]

    # The fold: a container of gw0 that mapped that port before the connect was made.
    (reach,) = finished.reached
    state = RunState()
    state.apply(
        ev.ContainerEvent(
            w="gw0",
            ts=reach.at - 1.0,
            action="ready",
            cid="c0ffee",
            ports={"80/tcp": f"0.0.0.0:{port}"},
            owner="gw0",
        )
    )
    late = ev.PortReached(port, "test_a.py::test_before", reach.at - 2.0)
    elsewhere = ev.PortReached(port + 1, "test_a.py::test_other", reach.at)
    reached = [reach, late, elsewhere]
    state.apply(ev.WorkerFinished(w="gw1", ts=reach.at + 1, sent=3, reached=reached))
    view = state.containers["c0ffee"]
    assert view.users == {"gw1"}
    assert view.user_tests == {"gw1": {"test_a.py::test_talks"}}


def test_connects_match_the_container_of_their_time_even_when_its_ports_come_later() -> None:
    """Docker hands a host port to one container after another: a connect belongs to the
    one that existed then; and a connect told before its container's ports were known
    (another worker's batch came later) is matched when they come."""
    port = 49153
    mapped = {"5432/tcp": f"0.0.0.0:{port}"}

    def container(cid: str, action: str, ts: float, **more: Any) -> ev.ContainerEvent:
        return ev.ContainerEvent(w="gw0", ts=ts, action=action, cid=cid, owner="gw0", **more)

    state = RunState()
    state.apply(container("first", "ready", 10.0, ports=mapped))
    state.apply(container("first", "remove", 20.0, by="gw0"))
    state.apply(container("second", "ready", 30.0, ports=mapped))
    early = ev.PortReached(port, "t.py::test_early", 15.0)
    late = ev.PortReached(port, "t.py::test_late", 35.0)
    before_ports = ev.PortReached(port + 1, "t.py::test_third", 45.0)
    state.apply(ev.WorkerFinished(w="gw1", ts=50.0, sent=3, reached=[early, late, before_ports]))
    assert state.containers["first"].user_tests == {"gw1": {"t.py::test_early"}}
    assert state.containers["second"].user_tests == {"gw1": {"t.py::test_late"}}
    # the third container's ports arrive after gw1's last word
    state.apply(container("third", "ready", 40.0, ports={"80/tcp": f"0.0.0.0:{port + 1}"}))
    assert state.containers["third"].user_tests == {"gw1": {"t.py::test_third"}}
    assert state.containers["third"].users == {"gw1"}


def test_a_bug_in_the_ports_reached_costs_neither_the_outcome_nor_the_last_word(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        docker="",
        conftest="""
import docker
from testmon_live.plugin.probes import portwatch

def unmatched():
    raise RuntimeError("dictionary changed size during iteration")

portwatch.unmatched = unmatched
""",
        test_a="def test_passes():\n    pass\n",
    )
    outcome = pytester.runpytest_subprocess("--monitor", "-n", "1")
    outcome.assert_outcomes(passed=1)
    assert outcome.ret == 0
    run = only_run(pytester)
    (finished,) = run.of(ev.WorkerFinished)
    assert finished.reached == []
    assert any("ports reached not sent" in n.msg for n in run.of(ev.Notice))


def test_viewers_cannot_send_the_hubs_own_commands(tmp_path: Path) -> None:
    from testmon_live.plugin.hub import Hub
    from testmon_live.plugin.runlog import MonitorDir

    mdir = MonitorDir(tmp_path / ".testmon")
    mdir.ensure()
    header = ev.RunStarted(ts=1.0, schema=ev.SCHEMA_VERSION, run_id="r1", rootdir="/p", workers=1)
    hub = Hub(mdir, header)
    sent: list[ev.Command] = []
    hub.attach_local("gw0", sent.append)
    error = hub.command(ev.Command(worker="gw0", cmd="ports", args={"1": "x"}))
    assert error is not None
    assert "viewers cannot send it" in error
    assert sent == []
    assert hub.tell("gw0", "ports", {"1": "x"})
    assert not hub.tell("gw9", "ports", {"1": "x"})  # no such worker: nothing sent
    assert [(c.cmd, c.args) for c in sent] == [("ports", {"1": "x"})]
