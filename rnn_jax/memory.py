"""How much memory this process can allocate: the smallest of available physical memory, the address-space limit
(RLIMIT_AS, ulimit -v) and the cgroup's memory limit."""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
NO_LIMIT = 2**60  # a cgroup v1 limit at or above this means none


def _cgroup_dirs() -> dict[str, str]:
    """This process's cgroup directory per hierarchy ("" for v2's unified one, "memory" for v1's), from /proc."""
    dirs = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                dirs[c] = where.lstrip("/")
    return dirs


def cgroup_memory_limit() -> int | None:
    """The smallest memory limit of this process's cgroup (v2 memory.max, v1 memory.limit_in_bytes), if any."""
    dirs = _cgroup_dirs()
    files = [
        CGROUP_ROOT / dirs.get("", "") / "memory.max",
        CGROUP_ROOT / "memory.max",
        CGROUP_ROOT / "memory" / dirs.get("memory", "") / "memory.limit_in_bytes",
        CGROUP_ROOT / "memory" / "memory.limit_in_bytes",
    ]
    limits = []
    for f in dict.fromkeys(files):
        with contextlib.suppress(OSError, ValueError):
            value = int(f.read_text().strip())  # "max" (no limit) raises ValueError
            if value < NO_LIMIT:
                limits.append(value)
    return min(limits, default=None)


def available_physical_memory() -> int | None:
    """MemAvailable of /proc/meminfo, else the machine's physical memory."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def memory_budget() -> tuple[int, str] | None:
    """(bytes, what sets it) that this process can allocate: the smallest of available physical memory, the
    address-space limit (RLIMIT_AS, ulimit -v) and the cgroup's memory limit; None when none can be read."""
    limits = {
        "available physical memory": available_physical_memory(),
        "the cgroup's memory limit": cgroup_memory_limit(),
    }
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        limits["the address-space limit (ulimit -v)"] = soft
    known = [(v, k) for k, v in limits.items() if v is not None]
    return min(known) if known else None
