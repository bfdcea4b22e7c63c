"""Data parallelism with JAX's own machinery: a Mesh with a `data` axis, parameters replicated, the
minibatch rows (and so the carried state) sharded; the same program from 1 device to many hosts.

`jit` partitions the epoch's scan by the shardings of its inputs (GSPMD) and inserts the all-reduce
of the gradients; nothing here is a hand-written collective.
"""

from __future__ import annotations

import math
import os
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnn_jax.config import ConfigError
from rnn_jax.exitcodes import Exit

MIN_ROWS_PER_DEVICE = 32  # below this a device's share is too small to pay for the per-step all-reduce
INIT_TIMEOUT = 300.0  # seconds every process has to join a multi-process run


def cpu_cores() -> int:
    """The CPU cores this process may run on (a `taskset` narrows them): beside wall seconds, what they were
    bought with."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_flags(coordinator: str | None, num_processes: int | None, process_id: int | None, timeout: float) -> None:
    """Raises ConfigError for multi-process flags that cannot form a run."""
    if not (coordinator and num_processes is not None and process_id is not None):
        raise ConfigError(
            "a multi-process run needs --coordinator HOST:PORT, --num-processes N and "
            "--process-id I (0 .. N-1) on every process"
        )
    if num_processes < 1:
        raise ConfigError(f"--num-processes must be at least 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id must be in 0 .. {num_processes - 1}, got {process_id}")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--coordinator must be HOST:PORT with a port in 1 .. 65535, got {coordinator!r}")
    if not (math.isfinite(timeout) and 1 <= timeout <= 2**31 - 1):
        raise ConfigError(f"--init-timeout must be a number of seconds >= 1, got {timeout}")


def initialize(
    coordinator: str | None, num_processes: int | None, process_id: int | None, timeout: float = INIT_TIMEOUT
) -> None:
    """Joins a multi-process run (every process runs the same program); no-op for a single process."""
    if coordinator or num_processes is not None or process_id is not None:
        check_flags(coordinator, num_processes, process_id, timeout)
        assert coordinator and num_processes is not None and process_id is not None  # check_flags raised otherwise
        _join(coordinator, num_processes, process_id, timeout)


def _join(coordinator: str, num_processes: int, process_id: int, timeout: float) -> None:
    """jax.distributed.initialize, bounded: the runtime aborts the process on its own timeout, so a watchdog
    that fires first says in one line that the peers did not join."""

    def give_up():
        os.write(
            2,
            f"error: the {num_processes} processes did not all join at {coordinator} within {timeout:g} s; "
            "start every process with the same --coordinator and --num-processes, or raise "
            "--init-timeout\n".encode(),
        )
        os._exit(Exit.USAGE)

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator, num_processes=num_processes, process_id=process_id, initialization_timeout=int(timeout) + 60
        )
    finally:
        watchdog.cancel()


def choose_devices(requested: int, batch_size: int) -> int:
    """`requested` devices (0: auto = all of them when each gets >= 32 rows or there are several processes)."""
    available = jax.device_count()
    if requested == 0:
        if jax.process_count() > 1 or batch_size // available >= MIN_ROWS_PER_DEVICE:
            requested = available
        else:
            requested = 1
    if requested > available:
        raise ConfigError(f"--devices {requested}: only {available} device(s) here ({jax.devices()[0].platform})")
    if jax.process_count() > 1 and requested != available:
        raise ConfigError(f"a multi-process run uses every device ({available}); drop --devices or set it to that")
    if batch_size % requested:
        raise ConfigError(
            f"batch_size {batch_size} is not divisible by the {requested} devices; use a multiple of "
            f"{requested} or --devices that divides it"
        )
    return requested


def make_mesh(num_devices: int) -> Mesh | None:
    """A 1-D mesh over the first num_devices devices, or None for a plain single-device run."""
    if num_devices == 1 and jax.process_count() == 1:
        return None
    return Mesh(np.asarray(jax.devices()[:num_devices]), ("data",))


def _put(x, mesh: Mesh, spec: PartitionSpec):
    x = np.asarray(x)  # every process holds the same host value; each places its own shards
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda idx: x[idx])


def replicate(tree, mesh: Mesh | None):
    return tree if mesh is None else jax.tree.map(lambda x: _put(x, mesh, PartitionSpec()), tree)


def shard_rows(X_NBT: np.ndarray, mesh: Mesh | None):
    """Minibatches (N, B, T) with the batch rows split over the `data` axis."""
    return X_NBT if mesh is None else _put(X_NBT, mesh, PartitionSpec(None, "data"))


def to_host(tree):
    """NumPy copies of (possibly multi-process) arrays: replicated ones read locally, sharded ones gathered."""

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def barrier(name: str) -> None:
    """Every process reaches this point before any goes on (no-op for a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def is_primary() -> bool:
    """Only process 0 writes metrics, logs and run-directory files."""
    return jax.process_index() == 0
