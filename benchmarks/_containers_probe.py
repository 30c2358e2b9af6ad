"""What the container probe costs a suite that never uses testcontainers.

Worker side: the probe only puts a post-import hook at the front of ``sys.meta_path``; every
later import asks it once (one string comparison) and nothing happens per test. Controller
side: if the docker SDK is installed, one daemon thread imports it and pings the engine,
off the main thread. This script times each of those pieces.

    .venv/bin/python benchmarks/_containers_probe.py
"""

from __future__ import annotations

import subprocess
import sys
import timeit

from testmon_live.plugin.activity import WorkerActivity
from testmon_live.plugin.probes.containers import ContainerProbe, _PostImportHook
from testmon_live.plugin.session import docker_sdk_available

CALLS = 1_000_000


def main() -> None:
    hook = _PostImportHook("testcontainers.core.container", lambda module: None)
    per_call = timeit.timeit(lambda: hook.find_spec("some.module", None), number=CALLS) / CALLS
    print(f"post-import hook, per import of another module: {per_call * 1e9:.0f} ns")

    def install_uninstall() -> None:
        probe = ContainerProbe(lambda event: None, WorkerActivity(0.0), "gw0", "run")
        probe.install()
        probe.uninstall()

    per_install = timeit.timeit(install_uninstall, number=10_000) / 10_000
    print(f"probe install + uninstall, once per worker: {per_install * 1e6:.1f} us")
    per_check = timeit.timeit(docker_sdk_available, number=1_000) / 1_000
    print(f"docker SDK installed? (controller, once): {per_check * 1e6:.0f} us")
    code = "import time; t = time.perf_counter(); import docker; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode == 0:
        seconds = float(out.stdout.strip())
        where = "engine-watch thread, controller, only once a container is seen"
        print(f"import docker ({where}): {seconds * 1e3:.0f} ms")
    else:
        print("docker SDK not importable: the engine watch is not started")


if __name__ == "__main__":
    main()
