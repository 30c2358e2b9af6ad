"""Containers through testcontainers, against a real engine (Podman or Docker), under ``-n 2``.

The engine is whatever ``DOCKER_HOST`` names (``scripts/podman-setup --env`` prints it; the
socket it starts is used when the variable is unset). The image is built locally by that
script: nothing is pulled. The tests that need it are marked ``engine``: without an engine
they skip, except under ``CI=true`` where a missing engine is a failure (tests/conftest.py).
"""

from __future__ import annotations

import json
import sys

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
    assert {u.w for u in uses} == {other}
    assert all(u.cid == create.cid and u.owner == owner for u in uses)
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
