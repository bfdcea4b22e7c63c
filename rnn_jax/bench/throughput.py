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
from rnn_jax.cells import CELLS
from rnn_jax.cells.common import mm

PEERS = {"torch-scratch": [], "torch-nn.RNN": ["--concise"]}  # the book's §8.5 pipeline, §8.6 nn.RNN


def peers(cell: str) -> dict:
    """name -> flags of the PyTorch peers of a cell: the book's scratch code and torch's fused layer."""
    if cell == "rnn":
        return PEERS
    return {f"{cell} torch-scratch": ["--cell", cell], f"{cell} torch-nn.{cell.upper()}": ["--cell", cell, "--concise"]}


def row_name(cell: str, name: str) -> str:
    return name if cell == "rnn" else f"{cell} {name}"


def matmul_limit(
    hidden: int,
    batch_size: int = 32,
    steps: int = 2000,
    clock=time.perf_counter,
    cell: str = "rnn",
    dtype: str = "float32",
):
    """run() -> GFLOP/s of the hot products: a lax.scan chain of the cell's (B, H) @ (H, kH) matmuls, one per
    entry k of its `Cell.products` (the GRU: h [W_hz|W_hr] then (r*h) W_hh, one after the other), with operands in
    `dtype` and float32 accumulation as the cells' products have them (`--matmul-dtype`)."""
    products = CELLS[cell].products
    Q_HH = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (hidden, hidden)))[0]  # orthogonal: |h| stays put
    Ws = [jnp.tile(Q_HH, (1, k)) / k for k in products]  # the k blocks of h W sum back to h Q
    h_BH = jax.random.normal(jax.random.key(1), (batch_size, hidden))

    def link(h_BH, _):
        for W in Ws:
            hW = mm(h_BH, W, dtype)
            h_BH = hW.reshape(batch_size, -1, hidden).sum(1) if W.shape[1] > hidden else hW
        return h_BH, None

    chain = jax.jit(lambda h_BH: jax.lax.scan(link, h_BH, None, length=steps)[0])
    jax.block_until_ready(chain(h_BH))

    def run() -> float:
        t0 = clock()
        jax.block_until_ready(chain(h_BH))
        return 2 * batch_size * hidden * hidden * sum(products) * steps / (clock() - t0) / 1e9

    run.program = lambda: chain.lower(h_BH).as_text()  # type: ignore[attr-defined]  # the timed program, to inspect
    return run


def variant_rows(args, tokens: np.ndarray, vocab_size: int, sampling: str, cell: str = "rnn") -> dict:
    """name -> row of each compiled and warmed-up variant; row["measure"]() -> (tokens/s, peak RSS MiB)."""
    rows = {}
    for name in args.variants:
        cfg = variant_config(name, hidden=args.hidden, sampling=sampling, cell=cell)
        run, compile_s, xla = build(
            cfg, vocab_size, lambda e, cfg=cfg: data.epoch_batches(tokens, cfg, e), VARIANTS[name][1]
        )
        rows[f"{row_name(cell, name)} {sampling}"] = {
            "measure": lambda run=run: (run(args.epochs), rss_mb()),
            "compile_s": compile_s,
            "xla_mb": xla_mb(xla),
        }
    return rows


def peer_rows(args, corpus: Path, sampling: str, cell: str = "rnn") -> dict:
    """name -> row of each PyTorch peer (none without --peer-python); row["measure"]() as in variant_rows."""
    rows = {}
    for name, flags in peers(cell).items() if args.peer_python else ():
        flags = flags + ["--random"] * (sampling == "random")
        rows[f"{name} {sampling}"] = {"measure": lambda flags=flags: peer_tokens_per_s(args, corpus, flags)}
    return rows


def measure_alternating(rows: dict, reps: int, limits: dict) -> dict[str, list[float]]:
    """Every row once per repetition, then each limit; appends to each row's reps, rss, other; returns
    GFLOP/s per limit."""
    gflops: dict[str, list[float]] = {name: [] for name in limits}
    for _ in range(reps):
        for row in rows.values():
            (tokens_per_s, rss), other = measured(row["measure"])
            for key, value in (("reps", tokens_per_s), ("rss", rss), ("other", other)):
                row.setdefault(key, []).append(value)
        for name, limit in limits.items():
            gflops[name].append(limit())
    return gflops


def summarise(rows: dict, gflops: list[float], flop: int, cell: str = "rnn") -> dict:
    """Medians of one cell's measured rows, each as a ratio to the same sampling's torch-scratch, to torch's
    fused layer, and to the fp32 limit."""
    limit_tokens_per_s = statistics.median(gflops) * 1e9 / flop
    out = []
    for name, row in rows.items():
        sampling = name.split()[-1]
        median, ref = statistics.median(row["reps"]), rows.get(f"{row_name(cell, 'torch-scratch')} {sampling}")
        fused = rows.get(f"{row_name(cell, 'torch-nn.' + cell.upper())} {sampling}")
        out.append(
            {
                "name": name,
                "cell": cell,
                "tokens_per_s": spread(row["reps"]),
                "ratio_to_torch_scratch": median / statistics.median(ref["reps"]) if ref else None,
                "ratio_to_torch_fused": median / statistics.median(fused["reps"]) if fused else None,
                "fraction_of_fp32_limit": median / limit_tokens_per_s,
                "compile_s": row.get("compile_s"),
                "xla_mb": row.get("xla_mb"),
                "peak_rss_mb": max(row["rss"]),
                "other_cores": median_or_none(row["other"]),
            }
        )
    return {
        "rows": out,
        "limit": {"gflop_per_s": spread(gflops), "tokens_per_s": limit_tokens_per_s, "flop_per_token": flop},
    }


def throughput(args, corpus: Path, tokens: np.ndarray, vocab: data.Vocab) -> dict:
    """Every cell's variants and peers once per repetition, alternating; medians, ratios, limit fractions."""
    rows: dict[str, dict] = {cell: {} for cell in args.cells}
    for cell in args.cells:
        for sampling in args.samplings:
            rows[cell] |= variant_rows(args, tokens, len(vocab), sampling, cell) | peer_rows(
                args, corpus, sampling, cell
            )
    limits = {cell: matmul_limit(args.hidden, steps=args.limit_steps, cell=cell) for cell in args.cells}
    gflops = measure_alternating({name: row for r in rows.values() for name, row in r.items()}, args.reps, limits)
    per_cell = {
        cell: summarise(rows[cell], gflops[cell], flop_per_token(args.hidden, len(vocab), cell), cell)
        for cell in args.cells
    }
    first = per_cell[args.cells[0]]
    return {
        "rows": [r for out in per_cell.values() for r in out["rows"]],
        "limit": first["limit"],
        "limits": {cell: out["limit"] for cell, out in per_cell.items()},
    }
