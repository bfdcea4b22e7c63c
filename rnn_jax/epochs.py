"""The per-epoch record and stop rule of a run, shared by a single run and each seed of a vmapped sweep
(`rnn_jax.trainer.Trainer` and `Seeds`), so both turn one epoch's step metrics into the same row and stop on the
same steps.

The jitted epoch already leaves the parameters unchanged at a non-finite step (`rnn_jax.step`); this rule decides
whether the run may go on: with --on-nonfinite stop, not after any such step; with skip, not after more than
--max-skips of them in a row (counted across epochs). A finite loss whose exp overflows stops it too.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import numpy as np

from rnn_jax import scoring
from rnn_jax.config import Config
from rnn_jax.exitcodes import Exit

HINT = "try gradient clipping (--clip-norm 1) or a lower --lr"


class Diverged(RuntimeError):
    """The loss or the gradient became NaN/Inf; the message names the epoch and step. `row` is the metrics row that
    records the bad step (None when the validation text diverged)."""

    exit_status = Exit.DIVERGED

    def __init__(self, message: str, row: dict | None = None):
        super().__init__(message)
        self.row = row


def due(cfg: Config, epoch: int, every: int) -> bool:
    """Whether something done every `every` epochs (0: never) happens at `epoch`; the last epoch always does."""
    return epoch == cfg.epochs or bool(every and epoch % every == 0)


def count_skips(ok: np.ndarray, skips_in_a_row: int, cfg: Config) -> tuple[int, int | None]:
    """(non-finite steps in a row at the end of this epoch, index of the step the run must stop at or None)."""
    if ok.all():
        return 0, None
    if cfg.on_nonfinite == "stop":
        return skips_in_a_row, int(np.argmin(ok))
    for i, good in enumerate(ok):
        skips_in_a_row = 0 if good else skips_in_a_row + 1
        if skips_in_a_row > cfg.max_skips:
            return skips_in_a_row, i
    return skips_in_a_row, None


class EpochRule:
    """One run's step counter and skip counter (both checkpointed), and the row each epoch's metrics make."""

    def __init__(self, cfg: Config, *, step: int = 0, skips_in_a_row: int = 0):
        self.cfg, self.step, self.skips_in_a_row = cfg, step, skips_in_a_row

    def row(self, epoch: int, metrics: dict, tokens_per_sec: float, seconds: float) -> dict:
        """The metrics row of an epoch (host arrays `finite`, `loss`, `grad_norm` per step); raises Diverged."""
        ok = metrics["finite"]
        self.step += len(ok)
        self.skips_in_a_row, stop_at = count_skips(ok, self.skips_in_a_row, self.cfg)
        if stop_at is not None:
            self._diverged(epoch, self.step - len(ok) + stop_at + 1, metrics, stop_at, int((~ok).sum()))
        # minibatches have equal size, so the plain mean is the token-weighted mean
        loss = float(np.mean(metrics["loss"][ok])) if ok.any() else None
        if loss is not None and loss > math.log(sys.float_info.max):  # finite, but exp overflows
            self._diverged(epoch, self.step, metrics, int(np.argmax(metrics["loss"])), int((~ok).sum()))
        row = {
            "epoch": epoch,
            "step": self.step,
            "loss": loss,
            "perplexity": None if loss is None else math.exp(loss),
            "grad_norm": float(np.mean(metrics["grad_norm"][ok])) if ok.any() else None,
            "tokens_per_sec": tokens_per_sec,
            "seconds": seconds,
        }
        if not ok.all():
            row["skipped"] = int((~ok).sum())
        return row

    def _diverged(self, epoch: int, bad_step: int, metrics: dict, i: int, skipped: int):
        loss, norm = float(metrics["loss"][i]), float(metrics["grad_norm"][i])
        row = {"epoch": epoch, "step": bad_step, "nonfinite": True, "loss": loss, "grad_norm": norm, "skipped": skipped}
        why = (
            f"more than {self.cfg.max_skips} updates in a row were skipped"
            if self.cfg.on_nonfinite == "skip"
            else "no checkpoint was written for it"
        )
        raise Diverged(
            f"diverged at epoch {epoch}, step {bad_step}: loss {loss}, gradient norm {norm} ({why}); {HINT}", row
        )

    def validate(self, epoch: int, row: dict, evaluate: Callable[[], dict]) -> None:
        """Adds validation loss, perplexity and bits/char (from `evaluate()`) to the row when this epoch evaluates;
        a non-finite validation loss raises Diverged."""
        if not due(self.cfg, epoch, self.cfg.eval_every):
            return
        try:
            val = evaluate()
        except scoring.NonFinite as e:
            raise Diverged(f"diverged at epoch {epoch}: on the validation text {e}; {HINT}") from None
        row.update(val_loss=val["loss"], val_perplexity=val["perplexity"], val_bits_per_char=val["bits_per_char"])
