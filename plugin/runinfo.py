"""What the run header says about the run: where, what, with which plugins and commit."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from . import __version__
from . import events as ev
from .clock import now
from .redact import header_env, redact_args
from .settings import RUN_KEY_ENV


def git_info(start: Path) -> tuple[str | None, str | None]:
    """(commit, branch) of the repository around ``start``, read from .git without a subprocess."""
    for folder in (start, *start.parents):
        dotgit = folder / ".git"
        if dotgit.is_file():
            try:
                text = dotgit.read_text().strip()
            except OSError:
                return None, None
            if not text.startswith("gitdir:"):
                return None, None
            gitdir = (folder / text.split(":", 1)[1].strip()).resolve()
            return _read_head(gitdir)
        if dotgit.is_dir():
            return _read_head(dotgit)
    return None, None


def _read_head(gitdir: Path) -> tuple[str | None, str | None]:
    try:
        head = (gitdir / "HEAD").read_text().strip()
    except OSError:
        return None, None
    if not head.startswith("ref:"):
        return (head or None), None
    ref = head.split(":", 1)[1].strip()
    branch = ref.removeprefix("refs/heads/")
    commondir = gitdir
    with_common = gitdir / "commondir"
    if with_common.is_file():
        with contextlib.suppress(OSError):
            commondir = (gitdir / with_common.read_text().strip()).resolve()
    for base in (gitdir, commondir):
        try:
            return (base / ref).read_text().strip(), branch
        except OSError:  # noqa: PERF203 - two iterations, once per run
            continue
    for base in (gitdir, commondir):
        try:
            packed = (base / "packed-refs").read_text()
        except OSError:
            continue
        for line in packed.splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0], branch
    return None, branch  # a branch with no commit yet


def plugin_versions(config: pytest.Config) -> dict[str, str]:
    """Distribution -> version of every plugin loaded, read from the dist-info folder names
    (parsing every METADATA file cost more than the rest of the monitor's start-up)."""
    versions: dict[str, str] = {"pytest": pytest.__version__}
    for _plugin, dist in config.pluginmanager.list_plugin_distinfo():
        found = _name_version(dist)
        if found is not None:
            versions[found[0]] = found[1]
    return versions


def _name_version(dist: object) -> tuple[str, str] | None:
    inner = getattr(dist, "_dist", dist)
    folder = getattr(inner, "_path", None)
    if folder is not None:
        stem = Path(str(folder)).name
        for suffix in (".dist-info", ".egg-info"):
            if stem.endswith(suffix):
                name, _, version = stem[: -len(suffix)].partition("-")
                if name and version:
                    return name.replace("_", "-").lower(), version
    project = getattr(dist, "project_name", None)
    release = getattr(dist, "version", None)
    return (str(project), str(release)) if project and release else None


def python_version() -> str:
    return "{}.{}.{}".format(*sys.version_info[:3])


def platform_text() -> str:
    """``Linux-6.1.0-x86_64``: from uname, without platform.platform()'s libc probing."""
    uname = os.uname()
    return f"{uname.sysname}-{uname.release}-{uname.machine}"


def worker_slots(config: pytest.Config) -> tuple[int, str, list[str]]:
    """(workers, dist mode, gateway specs) as xdist will set them up; (0, "", []) without."""
    dist = str(getattr(config.option, "dist", "no") or "no")
    if dist == "no" or getattr(config.option, "collectonly", False):
        return 0, "", []
    specs: list[str] = []
    for spec in getattr(config.option, "tx", None) or []:
        count, star, rest = str(spec).partition("*")
        if star and count.isascii() and count.isdigit():  # int("²") would fail
            specs.extend([rest] * int(count))
        else:
            specs.append(str(spec))
    return len(specs), dist, specs


def xdist_active(config: pytest.Config) -> bool:
    return worker_slots(config)[0] > 0


ORDER_PLUGINS = {
    # plugin name -> option attribute holding its seed
    "randomly": "randomly_seed",
    "random_order": "random_order_seed",
    "pytest_randomly": "randomly_seed",
    "random-order": "random_order_seed",
    "pytest_random_order": "random_order_seed",
}


def ordering(config: pytest.Config) -> tuple[list[str], str | None]:
    """Plugins that reorder tests, and the seed they run with (as pytest -p sees them)."""
    found: list[str] = []
    seed: str | None = None
    for name, attr in ORDER_PLUGINS.items():
        if config.pluginmanager.has_plugin(name):
            found.append(name)
            value = getattr(config.option, attr, None)
            if value not in (None, "", "default"):
                seed = str(value)
    return sorted(set(found)), seed


def build_header(
    config: pytest.Config,
    run_id: str,
    stall_after: float,
    env_keep: tuple[str, ...] = (),
    order: str = "collected",
) -> ev.RunStarted:
    rootdir = Path(str(config.rootpath))
    commit, branch = git_info(rootdir)
    workers, dist, specs = worker_slots(config)
    order_plugins, seed = ordering(config)
    return ev.RunStarted(
        ts=now(),
        schema=ev.SCHEMA_VERSION,
        run_id=run_id,
        rootdir=str(rootdir),
        args=redact_args([str(a) for a in config.invocation_params.args]),
        invocation_dir=str(config.invocation_params.dir),
        python=python_version(),
        implementation=sys.implementation.name,
        platform=platform_text(),
        hostname=os.uname().nodename,
        pid=os.getpid(),
        plugins=plugin_versions(config),
        monitor_version=__version__,
        workers=workers,
        dist=dist,
        tx=specs,
        git_commit=commit,
        git_branch=branch,
        # (the run key the controller sets for monitor.run_once explains nothing of a run)
        env=header_env({k: v for k, v in os.environ.items() if k != RUN_KEY_ENV}, env_keep),
        stall_after=stall_after,
        order_plugins=order_plugins,
        seed=seed,
        order="" if order == "collected" else order,
        cpus=os.cpu_count() or 0,
    )
