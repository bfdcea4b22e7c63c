"""SIGKILL at a named point, for the crash-safety tests.

`python tests/killpoints.py POINT:NAME -m MODULE ARGS...` (or `-c CODE`) runs MODULE as `python -m` would (or
CODE), with the function that reaches the point wrapped to kill the process there:

- `mid-epoch:<epoch>`: as epoch <epoch>'s minibatches are drawn (`data.epoch_batches`): the epochs before it are
  committed, nothing of it is recorded;
- `after-checkpoint:<epoch>`: right after the checkpoint of <epoch> is written (`checkpoint.Checkpoints.save`);
- `before-best:<epoch>`: after `checkpoints/<epoch>` is written, before `best/<epoch>` is (`checkpoint._save`);
- `mid-rewrite:<file>`: a replacement of <file> written and synced, not yet renamed over it (`os.replace`).

Tests build the command with `python(point)`.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def python(point: str | None = None) -> list[str]:
    """The interpreter's command line: plain, or one that is SIGKILLed at `point` ('<point>:<name>')."""
    return [sys.executable] if not point else [sys.executable, str(Path(__file__).resolve()), point]


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(owner, name: str, kill_before, kill_after) -> None:
    """Replaces owner.name by a wrapper that kills the process before or after the call when the test says so."""
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if kill_before(*args, **kwargs):
            _kill()
        out = real(*args, **kwargs)
        if kill_after(*args, **kwargs):
            _kill()
        return out

    setattr(owner, name, wrapper)


def install(point: str, name: str) -> None:
    """Places the SIGKILL of `point` at `name` (an epoch or a file name)."""
    from rnn_jax import checkpoint, data

    never = lambda *args, **kwargs: False
    if point == "mid-epoch":
        _wrap(data, "epoch_batches", lambda tokens, cfg, epoch, *a, **k: epoch == int(name), never)
    elif point == "after-checkpoint":
        _wrap(checkpoint.Checkpoints, "save", never, lambda self, epoch, *a, **k: epoch == int(name))
    elif point == "before-best":
        latest = lambda manager, epoch, *a, **k: epoch == int(name) and Path(manager.directory).name == "checkpoints"
        _wrap(checkpoint, "_save", never, latest)
    elif point == "mid-rewrite":
        _wrap(os, "replace", lambda src, dst, *a, **k: Path(dst).name == name, never)
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> None:
    """python killpoints.py POINT:NAME (-m MODULE | -c CODE) ARGS..."""
    point, _, name = sys.argv[1].partition(":")
    sys.path.insert(0, str(REPO))  # as `python -m` run in the checkout: this checkout's packages
    install(point, name)
    how, what, rest = sys.argv[2], sys.argv[3], sys.argv[4:]
    if how == "-m":
        sys.argv = [what, *rest]
        runpy.run_module(what, run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *rest]
        exec(compile(what, "<string>", "exec"), {"__name__": "__main__"})


if __name__ == "__main__":
    main()
