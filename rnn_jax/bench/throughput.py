"""The throughput section: variants and PyTorch peers in alternating repetitions, against the fp32 matmul limit."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import data
from rnn_jax.bench.common import measured, median_or_none, peer_tokens_per_s, rss_mb, spread
from rnn_jax.bench.variants import VARIANTS, build, flop_per_token, variant_config, xla_mb

PEERS = {"torch-scratch": [], "torch-nn.RNN": ["--concise"]}  # the book's §8.5 pipeline, §8.6 nn.RNN


def matmul_limit(hidden: int, batch_size: int = 32, steps: int = 2000, clock=time.perf_counter):
    """run() -> GFLOP/s of the hot product: a lax.scan chain of (B, H) @ (H, H) f32 matmuls."""
    W_HH = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (hidden, hidden)))[0]  # orthogonal: |h| stays put
    h_BH = jax.random.normal(jax.random.key(1), (batch_size, hidden))
    chain = jax.jit(lambda W_HH, h_BH: jax.lax.scan(lambda h, _: (h @ W_HH, None), h_BH, None, length=steps)[0])
    jax.block_until_ready(chain(W_HH, h_BH))

    def run() -> float:
        t0 = clock()
        jax.block_until_ready(chain(W_HH, h_BH))
        return 2 * batch_size * hidden * hidden * steps / (clock() - t0) / 1e9
    return run


def variant_rows(args, tokens: np.ndarray, vocab_size: int, sampling: str) -> dict:
    """name -> row of each compiled and warmed-up variant; row["measure"]() -> (tokens/s, peak RSS MiB)."""
    rows = {}
    for name in args.variants:
        cfg = variant_config(name, hidden=args.hidden, sampling=sampling)
        run, compile_s, xla = build(cfg, vocab_size, lambda e, cfg=cfg: data.epoch_batches(tokens, cfg, e),
                                    VARIANTS[name][1])
        rows[f"{name} {sampling}"] = {"measure": lambda run=run: (run(args.epochs), rss_mb()),
                                      "compile_s": compile_s, "xla_mb": xla_mb(xla)}
    return rows


def peer_rows(args, corpus: Path, sampling: str) -> dict:
    """name -> row of each PyTorch peer (none without --peer-python); row["measure"]() as in variant_rows."""
    rows = {}
    for name, flags in PEERS.items() if args.peer_python else ():
        flags = flags + ["--random"] * (sampling == "random")
        rows[f"{name} {sampling}"] = {"measure": lambda flags=flags: peer_tokens_per_s(args, corpus, flags)}
    return rows


def measure_alternating(rows: dict, reps: int, limit) -> list[float]:
    """Every row once per repetition, then the limit; appends to each row's reps, rss, other; returns GFLOP/s."""
    gflops = []
    for _ in range(reps):
        for row in rows.values():
            (tokens_per_s, rss), other = measured(row["measure"])
            for key, value in (("reps", tokens_per_s), ("rss", rss), ("other", other)):
                row.setdefault(key, []).append(value)
        gflops.append(limit())
    return gflops


def summarise(rows: dict, gflops: list[float], flop: int) -> dict:
    """Medians of the measured rows, each as a ratio to the same sampling's torch-scratch and to the fp32 limit."""
    limit_tokens_per_s = statistics.median(gflops) * 1e9 / flop
    out = []
    for name, row in rows.items():
        median, ref = statistics.median(row["reps"]), rows.get(f"torch-scratch {name.split()[-1]}")
        out.append({"name": name, "tokens_per_s": spread(row["reps"]),
                    "ratio_to_torch_scratch": median / statistics.median(ref["reps"]) if ref else None,
                    "fraction_of_fp32_limit": median / limit_tokens_per_s, "compile_s": row.get("compile_s"),
                    "xla_mb": row.get("xla_mb"), "peak_rss_mb": max(row["rss"]),
                    "other_cores": median_or_none(row["other"])})
    return {"rows": out, "limit": {"gflop_per_s": spread(gflops), "tokens_per_s": limit_tokens_per_s,
                                   "flop_per_token": flop}}


def throughput(args, corpus: Path, tokens: np.ndarray, vocab: data.Vocab) -> dict:
    """Every variant and peer once per repetition, alternating; medians, ratios, limit fractions."""
    rows = {}
    for sampling in args.samplings:
        rows |= variant_rows(args, tokens, len(vocab), sampling) | peer_rows(args, corpus, sampling)
    gflops = measure_alternating(rows, args.reps, matmul_limit(args.hidden, steps=args.limit_steps))
    return summarise(rows, gflops, flop_per_token(args.hidden, len(vocab)))
