"""The recurrences section: the linear recurrences (every cell with `Cell.linear`) in residual blocks beside the
LSTM 1x512 of the tiny Shakespeare recipe at an equal parameter count, each with lax.scan and with
lax.associative_scan, in the recipe's training epoch (batch 64 x 100, Adam, dropout), alternating; every row's
FLOPs per token (`rnn_jax.flops`) against the host's measured rate of large float32 products."""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp

from rnn_jax import config as config_lib
from rnn_jax import flops, model
from rnn_jax.bench.common import measured, spread
from rnn_jax.bench.recipe import VOCAB, recipe_config, synthetic_batches
from rnn_jax.bench.variants import build
from rnn_jax.cells import CELLS

REFERENCE = "lstm 1x512"
LAYERS = 3  # Feng et al.'s and nanoGPT's baby GPT's depth for tiny Shakespeare


def parameter_count(cfg: config_lib.Config, vocab_size: int = VOCAB) -> int:
    """Trained parameters of cfg's model, from shapes alone."""
    spec = model.ModelSpec.from_config(cfg)
    init = lambda key: model.init_params(key, vocab_size, cfg.hidden, spec, embed_dim=cfg.embed_dim)
    return sum(a.size for a in jax.tree.leaves(jax.eval_shape(init, jax.random.key(0))))


def cell_config(base: config_lib.Config, cell: str, **fields) -> config_lib.Config:
    """base with another cell: the options a cell cannot take (a forget-gate bias, DropConnect of recurrent
    weights it lacks) turned off for it."""
    core = CELLS[cell]
    return dataclasses.replace(
        base,
        cell=cell,
        forget_bias=base.forget_bias if core.forget_gate else 0.0,
        weight_drop=base.weight_drop if core.recurrent else 0.0,
        **fields,
    )


def equal_width(cfg: config_lib.Config, target: int, multiple: int = 8, vocab_size: int = VOCAB) -> int:
    """The width (a multiple of `multiple`) whose model has the parameter count nearest `target` on a vocabulary
    of vocab_size (the count grows with the width: a bisection)."""
    lo, hi = 1, 4096 // multiple
    while lo < hi:
        mid = (lo + hi) // 2
        if parameter_count(dataclasses.replace(cfg, hidden=mid * multiple), vocab_size) < target:
            lo = mid + 1
        else:
            hi = mid
    widths = [w * multiple for w in (max(lo - 1, 1), lo)]
    return min(widths, key=lambda w: abs(parameter_count(dataclasses.replace(cfg, hidden=w), vocab_size) - target))


def configs(dtype: str = "float32", hidden: int = 512, layers: int = LAYERS) -> dict[str, config_lib.Config]:
    """name -> Config: the recipe's LSTM, the LSTM in residual blocks, and each linear recurrence in residual blocks
    with either scan, every one as wide as gives the recipe's LSTM's parameter count."""
    base = recipe_config(dtype, hidden)
    target = parameter_count(base)
    out = {f"lstm 1x{hidden}": base}
    for cell in ["lstm", *(c for c, core in CELLS.items() if core.linear is not None)]:
        blocks = cell_config(base, cell, block="residual", num_layers=layers)
        width = equal_width(blocks, target)
        scans = ("linear", "associative") if CELLS[cell].linear is not None else ("linear",)
        for scan in scans:
            out[f"{cell} residual {layers}x{width} {scan}"] = dataclasses.replace(blocks, hidden=width, scan=scan)
    return out


def dense_limit(size: int, rows: int = 6400, clock=time.perf_counter):
    """run() -> GFLOP/s of a (rows, size) @ (size, 3 size) float32 product, the shape of a block's hoisted
    input part (64 x 100 rows): what the products outside any sequential chain can reach on this host."""
    a = jax.random.normal(jax.random.key(0), (rows, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, 3 * size), jnp.float32) / size
    product = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(product(a, b))

    def run() -> float:
        t0 = clock()
        for _ in range(5):
            jax.block_until_ready(product(a, b))
        return 5 * 2 * rows * size * 3 * size / (clock() - t0) / 1e9

    return run


def recurrences(args) -> dict:
    """Every configuration's epoch once per repetition, alternating, then the dense limit; medians, the ratio to
    the recipe's LSTM, FLOPs per token and the fraction of the limit."""
    cfgs = configs(hidden=args.hidden)
    runs = {name: build(cfg, VOCAB, synthetic_batches(cfg), per_step=False)[0] for name, cfg in cfgs.items()}
    limit = dense_limit(args.hidden)
    reps: dict[str, list[float]] = {name: [] for name in cfgs}
    other: list[float | None] = []
    gflops = []
    for _ in range(args.reps):
        for name, run in runs.items():
            tokens_per_s, load = measured(lambda run=run: run(args.epochs))
            reps[name].append(tokens_per_s)
            other.append(load)
        gflops.append(limit())
    reference = statistics.median(reps[f"lstm 1x{args.hidden}"])
    rows = []
    for name, cfg in cfgs.items():
        med, flop = statistics.median(reps[name]), flops.flop_per_token(cfg, VOCAB)
        rows.append(
            {
                "name": name,
                "cell": cfg.cell,
                "block": cfg.block,
                "scan": cfg.scan,
                "hidden": cfg.hidden,
                "num_layers": cfg.num_layers,
                "params": parameter_count(cfg),
                "tokens_per_s": spread(reps[name]),
                "ratio_to_lstm": med / reference,
                "flop_per_token": flop,
                "gflop_per_s": med * flop / 1e9,
                "fraction_of_dense_limit": med * flop / 1e9 / statistics.median(gflops),
            }
        )
    return {
        "rows": rows,
        "limit": {"gflop_per_s": spread(gflops)},
        "other_cores": statistics.median([o for o in other if o is not None] or [0.0]),
    }
