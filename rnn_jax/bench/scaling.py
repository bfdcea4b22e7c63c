"""The scaling section: fused-epoch tokens/s, GFLOP/s, XLA memory and compile time over H x T."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

from rnn_jax import data
from rnn_jax import experiments as experiments_lib
from rnn_jax.bench.common import measured, rss_mb
from rnn_jax.bench.variants import build, fixed_batches, flop_per_token, xla_mb


def scaling(args, corpus: Path, vocab_size: int) -> list[dict]:
    """fused-epoch tokens/s, XLA memory and compile time over cell x H x T (epochs of 280 // T minibatches)."""
    tokens, _ = data.load_corpus(corpus, -1)
    return [
        scaling_row(args, tokens, vocab_size, hidden, num_steps, cell)
        for cell in args.cells
        for hidden in args.scale_hidden
        for num_steps in args.scale_steps
    ]


def scaling_row(args, tokens, vocab_size: int, hidden: int, num_steps: int, cell: str = "rnn") -> dict:
    """One (H, T) point: the same fixed minibatches every epoch, about a second's worth, at most --epochs."""
    cfg = dataclasses.replace(experiments_lib.BASE, hidden=hidden, num_steps=num_steps, cell=cell)
    X_NBT, Y_NBT = fixed_batches(tokens, max(1, 280 // num_steps), cfg.batch_size, num_steps)
    run, compile_s, xla = build(cfg, vocab_size, lambda e: (X_NBT, Y_NBT), per_step=False)
    epochs = min(args.epochs, math.ceil(run(1) / X_NBT.size))
    tokens_per_s, other = measured(functools.partial(run, epochs))
    return {
        "cell": cell,
        "hidden": hidden,
        "num_steps": num_steps,
        "tokens_per_s": tokens_per_s,
        "gflop_per_s": tokens_per_s * flop_per_token(hidden, vocab_size, cell) / 1e9,
        "compile_s": compile_s,
        "xla_mb": xla_mb(xla),
        **{f"xla_{k}_mb": v / 2**20 for k, v in xla.items()},
        "peak_rss_mb": rss_mb(),
        "other_cores": other,
    }
