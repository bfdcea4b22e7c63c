"""The train-step variants under test: their configs, compiled and timed runs, FLOP and memory accounting."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from rnn_jax import config as config_lib
from rnn_jax import experiments as experiments_lib
from rnn_jax.cells import CELLS
from rnn_jax.step import init_state, make_optimizer, make_train_epoch, make_train_step, zero_state

# name -> (Config overrides, one jitted step per minibatch from Python (True) or one jit per epoch)
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "autodiff-step": ({"backward": "autodiff"}, True),
    "fused-step": ({"backward": "fused"}, True),
    "fused-epoch": ({"backward": "fused"}, False),
    "fused-epoch-one-chain": ({"backward": "fused", "row_chains": 1}, False),
    "fused-epoch-bf16": ({"backward": "fused", "matmul_dtype": "bfloat16"}, False),
    "autodiff-epoch": ({"backward": "autodiff"}, False),
}


def flop_per_token(hidden: int, vocab: int, cell: str = "rnn", num_layers: int = 1) -> int:
    """The cell's products as it declares them (`Cell.flop_per_token`) and 6 H V for h W_hq (forward 2 H V,
    backward twice that). For a cell of k gates whose recurrent products are k H wide in all, L layers:
    6 H (k (2L - 1) H + V); the book's RNN 6 H (H + V), GRU 6 H (3 H + V), LSTM 6 H (4 H + V)."""
    return CELLS[cell].flop_per_token(hidden, num_layers) + 6 * hidden * vocab


def xla_mb(xla: dict) -> float:
    return (xla["argument"] + xla["output"] + xla["temp"] - xla["alias"]) / 2**20


def variant_config(name: str, **fields) -> config_lib.Config:
    """The book's Config with the variant's overrides and the given fields."""
    return dataclasses.replace(experiments_lib.BASE, **fields, **VARIANTS[name][0])


def fresh_state(cfg: config_lib.Config, vocab_size: int):
    """(optimizer, initial TrainState) of cfg."""
    tx = make_optimizer(cfg)
    return tx, init_state(cfg, vocab_size, tx)


def jitted_train(cfg: config_lib.Config, tx, per_step: bool):
    """The jitted train step (per_step) or train epoch, as train.run uses them."""
    return make_train_step(cfg, tx) if per_step else make_train_epoch(cfg, tx)


def fixed_batches(tokens: np.ndarray, num_batches: int, batch_size: int, num_steps: int):
    """(X_NBT, Y_NBT) from consecutive windows at the start of the corpus, the same every epoch."""
    n = num_batches * batch_size * num_steps
    cut = lambda a: a[:n].reshape(batch_size, num_batches, num_steps).transpose(1, 0, 2)
    return cut(tokens), cut(tokens[1:])


def build(cfg: config_lib.Config, vocab_size: int, batches, per_step: bool):
    """Compiles one variant, runs a warm-up epoch; returns (run(epochs) -> tokens/s, compile s, XLA bytes)."""
    tx, state = fresh_state(cfg, vocab_size)
    box = {"state": state, "epoch": 0}
    X_NBT, Y_NBT = batches(0)
    h0_BH = zero_state(cfg, cfg.batch_size)
    jitted = jitted_train(cfg, tx, per_step)
    example = (box["state"], h0_BH, X_NBT[0], Y_NBT[0]) if per_step else (box["state"], X_NBT, Y_NBT)
    t0 = time.perf_counter()
    mem = jitted.lower(*example).compile().memory_analysis()  # the jit's cache keeps the executable
    compile_s = time.perf_counter() - t0
    xla = {k: getattr(mem, f"{k}_size_in_bytes") for k in ("argument", "output", "temp", "alias")}

    def epoch_loop(state, X_NBT, Y_NBT):
        h_BH = h0_BH
        for X_BT, Y_BT in zip(X_NBT, Y_NBT, strict=True):
            state, h_BH, metrics = jitted(state, h0_BH if cfg.sampling == "random" else h_BH, X_BT, Y_BT)
        return state, metrics

    def run(num_epochs: int) -> float:
        num_tokens, t0 = 0, time.perf_counter()
        for _ in range(num_epochs):
            box["epoch"] += 1
            X_NBT, Y_NBT = batches(box["epoch"])
            out = (epoch_loop if per_step else jitted)(box["state"], X_NBT, Y_NBT)
            box["state"], metrics = out[0], out[-1]  # train's epoch returns (state, [h_last,] metrics)
            jax.device_get(metrics)  # one host sync per epoch, as train.run
            num_tokens += X_NBT.size
        return num_tokens / (time.perf_counter() - t0)

    run(1)
    return run, compile_s, xla
