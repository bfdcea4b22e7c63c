"""One writer per run directory: an OS lock (fcntl.flock) on RUN/.lock, held for the run's life and released by
the kernel even on kill -9; readers never take it. Nothing deletes a run directory without holding its lock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import IO

from rnn_jax.config import ConfigError


class Lock:
    """fcntl.flock on RUN/.lock for the run's life; a second writer is refused with the holder's pid.

    The lock guards the path: a lock taken on a file that was removed or replaced meanwhile is dropped and taken
    again on the file now at RUN/.lock, and nothing here deletes a run directory without holding its lock."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.f: IO[str] | None = None

    def acquire(self) -> Lock:
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise ConfigError(
                    f"{self.path.parent} is in use by {holder}; wait for it to finish or choose another --run-dir"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            f.close()  # the file was removed while this process waited for it: lock the one at the path now
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.f = f
        return self

    def release(self) -> None:
        if self.f is not None:
            self.f.close()  # closing releases the flock
            self.f = None


def remove_runs(root: Path) -> None:
    """Deletes `root` and the run directories under it, each only while holding its lock: a run another process
    holds is refused (ConfigError naming it) and nothing is deleted."""
    root = Path(root)
    if not root.is_dir():  # nothing there, or a file that is no run directory (left for the caller to report)
        return
    runs = {p.parent for pattern in (".lock", "config.json") for p in root.rglob(pattern)}
    locks = []
    try:
        for run_dir in sorted(runs):
            locks.append(Lock(run_dir).acquire())
        shutil.rmtree(root)
    finally:
        for lock in locks:
            lock.release()
