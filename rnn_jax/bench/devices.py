"""The devices section: data-parallel fused-epoch over 1, 2, 4, ... local devices at one global batch."""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from rnn_jax import config as config_lib
from rnn_jax import data, distributed
from rnn_jax import experiments as experiments_lib
from rnn_jax.bench.variants import fresh_state, jitted_train


def device_counts(available: int) -> list[int]:
    """Powers of two up to the devices available (128 at most)."""
    return [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= available]


def speedups(rows: list[dict]) -> list[dict]:
    """Each row with its tokens/s over the first row's."""
    return [{**r, "speedup": r["tokens_per_s"] / rows[0]["tokens_per_s"]} for r in rows]


def tokens_per_s_on(
    num_devices: int, cfg: config_lib.Config, vocab_size: int, tokens: np.ndarray, epochs: int
) -> float:
    """Tokens/s of fused-epoch with the rows of each minibatch sharded over the first num_devices devices."""
    mesh = distributed.make_mesh(num_devices)
    tx, state = fresh_state(cfg, vocab_size)
    state = distributed.replicate(state, mesh)
    epoch = jitted_train(cfg, tx, per_step=False)
    batches = [
        tuple(distributed.shard_rows(a, mesh) for a in data.epoch_batches(tokens, cfg, e)) for e in range(epochs + 1)
    ]
    state = epoch(state, *batches[0])[0]  # compile and warm up
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for X_NBT, Y_NBT in batches[1:]:
        state, _, metrics = epoch(state, X_NBT, Y_NBT)
        distributed.to_host(metrics)
    return sum(b[0].size for b in batches[1:]) / (time.perf_counter() - t0)


def device_scaling(args, vocab_size: int, tokens: np.ndarray) -> dict:
    """Data-parallel fused-epoch over 1, 2, 4, ... local devices at one global batch (32 rows per device at most)."""
    available = jax.device_count()
    counts = device_counts(available)
    cfg = dataclasses.replace(experiments_lib.BASE, hidden=args.hidden, batch_size=32 * counts[-1])
    rows = [
        {
            "devices": n,
            "batch_size": cfg.batch_size,
            "tokens_per_s": tokens_per_s_on(n, cfg, vocab_size, tokens, args.epochs),
        }
        for n in counts
    ]
    return {
        "note": f"{available} {jax.devices()[0].platform} device(s); global batch {cfg.batch_size}",
        "rows": speedups(rows),
    }
