"""The recipe section: the tiny Shakespeare recipe's training epoch at its own shape (one-hot 66 -> LSTM 512 -> 66,
batch 64 x 100, Adam, cosine, variational dropout, DropConnect, clipping) in float32 and bfloat16 products, beside
torch's nn.LSTM at the same shape and dtype (bf16 by autocast), alternating, against the LSTM's limit in float32
and in its own dtype (the chain of the cell's products with bfloat16 operands)."""

from __future__ import annotations

import dataclasses
import re
import statistics

import numpy as np

from rnn_jax import config as config_lib
from rnn_jax import experiments as experiments_lib
from rnn_jax.bench.common import ChildFailed, measured, run_child, spread
from rnn_jax.bench.throughput import matmul_limit
from rnn_jax.bench.variants import build, flop_per_token

DTYPES = ("float32", "bfloat16")
VOCAB = 66  # tiny Shakespeare's 65 symbols and <unk>
BATCHES_PER_EPOCH = 4  # minibatches of one timed epoch (25,600 tokens)


def recipe_config(dtype: str, hidden: int) -> config_lib.Config:
    """--exp shakespeare with the given product dtype (the recipe trains with bfloat16)."""
    return dataclasses.replace(experiments_lib.EXPERIMENTS["shakespeare"], matmul_dtype=dtype, hidden=hidden)


def synthetic_batches(cfg: config_lib.Config):
    """epoch -> (X_NBT, Y_NBT) of random characters: the step's cost does not depend on the text."""

    def batches(epoch: int):
        rng = np.random.default_rng(epoch)
        shape = (BATCHES_PER_EPOCH, cfg.batch_size, cfg.num_steps)
        return rng.integers(0, VOCAB, shape, dtype=np.int32), rng.integers(0, VOCAB, shape, dtype=np.int32)

    return batches


def peer_tokens_per_s(args) -> dict[str, float]:
    """One run of the torch peer (both dtypes, its own warm-up): dtype -> tokens/s."""
    threads = ["--threads", str(args.peer_threads)] if args.peer_threads else []
    steps = str(args.epochs * BATCHES_PER_EPOCH)
    peer = args.peer_script.with_name("recipe_torch_peer.py")
    text, _, _ = run_child([args.peer_python, str(peer), "--hidden", str(args.hidden), "--steps", steps, *threads])
    found = dict(re.findall(r"torch nn\.LSTM (\w+) threads \d+: ([\d,.]+) tokens/s", text))
    if set(found) != set(DTYPES):
        raise ChildFailed(f"{peer} printed no tokens/s for {sorted(set(DTYPES) - set(found))}: {text[-300:]}")
    return {d: float(found[d].replace(",", "")) for d in DTYPES}


def recipe(args) -> dict:
    """Every dtype's epoch and the peer once per repetition, then the limit; medians, ratios, limit fractions."""
    runs = {}
    for dtype in DTYPES:
        cfg = recipe_config(dtype, args.hidden)
        runs[dtype] = build(cfg, VOCAB, synthetic_batches(cfg), per_step=False)[0]
    limits = {d: matmul_limit(args.hidden, batch_size=64, steps=args.limit_steps, cell="lstm", dtype=d) for d in DTYPES}
    ours: dict[str, list[float]] = {d: [] for d in DTYPES}
    torch: dict[str, list[float]] = {d: [] for d in DTYPES}
    other: list[float | None] = []
    gflops: dict[str, list[float]] = {d: [] for d in DTYPES}
    for _ in range(args.reps):
        for dtype in DTYPES:
            tokens_per_s, load = measured(lambda dtype=dtype: runs[dtype](args.epochs))
            ours[dtype].append(tokens_per_s)
            other.append(load)
        if args.peer_python:
            for dtype, v in peer_tokens_per_s(args).items():
                torch[dtype].append(v)
        for dtype, limit in limits.items():
            gflops[dtype].append(limit())
    flop = flop_per_token(args.hidden, VOCAB, "lstm")
    limit_tokens_per_s = {d: statistics.median(g) * 1e9 / flop for d, g in gflops.items()}
    rows = []
    for dtype in DTYPES:
        med = statistics.median(ours[dtype])
        rows.append(
            {
                "name": f"recipe {dtype}",
                "tokens_per_s": spread(ours[dtype]),
                "torch_tokens_per_s": spread(torch[dtype]) if torch[dtype] else None,
                "ratio_to_torch": med / statistics.median(torch[dtype]) if torch[dtype] else None,
                "fraction_of_fp32_limit": med / limit_tokens_per_s["float32"],
                "fraction_of_own_limit": med / limit_tokens_per_s[dtype],
            }
        )
    lim = lambda d: {"gflop_per_s": spread(gflops[d]), "tokens_per_s": limit_tokens_per_s[d]}
    return {
        "rows": rows,
        "limit": {**lim("float32"), "flop_per_token": flop},  # float32's, as every section's limit is
        "limit_bfloat16": lim("bfloat16"),
        "other_cores": statistics.median([o for o in other if o is not None] or [0.0]),
    }
