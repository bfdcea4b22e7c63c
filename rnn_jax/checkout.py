"""The checkout a command runs in, found from the current folder, never from where the package was installed.

A checkout is a folder holding pyproject.toml and the rnn_jax package. Its experiments/results/ keeps the test log,
and the folder beside it, ../shared, the benchmark's peer scripts: an environment installed from one clone and
used in another writes into the clone it runs in.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_ENV = "RNN_JAX_SHARED"  # names the shared folder (peer scripts) where it is not the checkout's ../shared


def root(start: Path | None = None) -> Path | None:
    """The checkout holding `start` (default: the current folder): the nearest folder at or above it with
    pyproject.toml and rnn_jax/; None outside one."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "rnn_jax").is_dir():
            return folder
    return None


def shared(start: Path | None = None) -> Path:
    """The shared folder beside the checkout: $RNN_JAX_SHARED, else <checkout>/../shared (the current folder's
    ../shared outside a checkout)."""
    if os.environ.get(SHARED_ENV):
        return Path(os.environ[SHARED_ENV])
    return (root(start) or (start or Path.cwd()).resolve()).parent / "shared"
