"""Which local process is connected to which TCP port, read from outside it through
``/proc`` (Linux): the process's socket inodes (``/proc/<pid>/fd``) matched against its
network namespace's TCP tables (``/proc/<pid>/net/tcp`` and ``tcp6``).

The controller uses it to see which workers talk to a container's mapped ports without
any code in the workers (nothing on their per-test path). Elsewhere than Linux, or for a
process it may not read, it finds nothing.
"""

from __future__ import annotations

from collections.abc import Collection

from ..guard import REAL

LISTEN = "0A"
"""The kernel's TCP state code of a listening socket (``include/net/tcp_states.h``)."""


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets ``pid`` has open (empty if it cannot be read)."""
    base = f"/proc/{pid}/fd"
    try:
        fds = REAL.listdir(base)
    except OSError:
        return set()
    inodes: set[str] = set()
    for fd in fds:
        try:
            link = REAL.readlink(f"{base}/{fd}")
        except OSError:
            continue  # closed between the listing and the look
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def connected_ports(pid: int, ports: Collection[int]) -> set[int]:
    """Which of ``ports`` (remote TCP ports) ``pid`` has a connection to right now."""
    if not ports:
        return set()
    inodes = socket_inodes(pid)
    if not inodes:
        return set()
    found: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            with REAL.open(f"/proc/{pid}/net/{table}", encoding="ascii", errors="replace") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10 or parts[9] not in inodes or parts[3] == LISTEN:
                continue
            try:
                port = int(parts[2].rpartition(":")[2], 16)
            except ValueError:
                continue
            if port in ports:
                found.add(port)
    return found
