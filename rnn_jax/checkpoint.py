"""Thin Orbax wrapper: the latest k checkpoints and the best by validation perplexity, in the run dir.

A checkpoint holds the whole training state (params, optimizer state, step, epoch, carried hidden
state, PRNG key, data-order seed, skip counter) plus the config and vocabulary as JSON, so it is
enough on its own to continue a run exactly or to generate text. Orbax writes each step into a
temporary directory and renames it when complete, so a write cut short is never listed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the path and the reason."""


def abstract(tree):
    """Shapes and dtypes of a tree's leaves, placed on the current device: restores land here whatever saved them."""
    def one(x):
        x = np.asarray(x)
        return jax.ShapeDtypeStruct(x.shape, x.dtype)
    return jax.tree.map(one, tree)


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.absolute(), options=options)


class Checkpoints:
    """`checkpoints/<epoch>` (the latest `keep`) and `best/<epoch>` (lowest validation perplexity)."""

    def __init__(self, run_dir: str | Path, keep: int = 3):
        self.dir = Path(run_dir) / "checkpoints"
        self.latest = _manager(self.dir, keep)
        self.best = _manager(Path(run_dir) / "best", 1)
        self.best_value = float("inf")

    def save(self, epoch: int, state: dict, meta: dict, *, val_perplexity: float | None = None) -> None:
        """Saves host copies (training may donate the device buffers right after)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(jax.device_get(state)), meta=ocp.args.JsonSave(meta))
        if epoch not in self.latest.all_steps():
            self.latest.save(epoch, args=args)
        if val_perplexity is not None and val_perplexity < self.best_value:
            self.best_value = val_perplexity
            self.best.save(epoch, args=args, force=True)

    def latest_epoch(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, abstract_state: dict, epoch: int | None = None) -> tuple[dict, dict]:
        """(state, meta) of the latest complete checkpoint; raises CheckpointError, never re-initialises."""
        epoch = self.latest_epoch() if epoch is None else epoch
        if epoch is None:
            raise CheckpointError(f"no complete checkpoint in {self.dir}; start a new run without --resume")
        return restore_from(self.latest, epoch, abstract_state)

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def restore_from(manager: ocp.CheckpointManager, epoch: int, abstract_state: dict | None) -> tuple[dict, dict]:
    path = Path(manager.directory) / str(epoch)
    state_args = ocp.args.StandardRestore(abstract_state)
    try:
        restored = manager.restore(epoch, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]
    except Exception as e:  # orbax/tensorstore raise many kinds; all mean this checkpoint is unusable
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]
        raise CheckpointError(f"checkpoint {path} cannot be restored ({reason}). Nothing was re-initialised: "
                              "move that directory away to resume from the one before it") from None


def load_params(run_dir: str | Path, *, best: bool = False) -> tuple[dict, dict | None]:
    """Parameters (as NumPy arrays) from the latest checkpoint of a run (or its best by validation), with its
    meta; else params.npz."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / ("best" if best else "checkpoints")
    no_best = CheckpointError(f"{run_dir} has no best checkpoint (one is kept only for runs with --val-fraction)")
    if best and not ckpt_dir.is_dir():
        raise no_best
    if ckpt_dir.is_dir():
        manager = _manager(ckpt_dir, 1_000_000)
        epoch = manager.latest_step()
        if epoch is not None:
            try:
                state, meta = restore_from(manager, epoch, None)
            finally:
                manager.close()
            return {k: np.asarray(v) for k, v in state["params"].items()}, meta
        manager.close()
    if best:
        raise no_best
    if (run_dir / "params.npz").is_file():
        with np.load(run_dir / "params.npz") as f:
            return dict(f), None
    raise CheckpointError(f"{run_dir} holds no checkpoint and no params.npz; is it a run directory of rnn_jax?")
