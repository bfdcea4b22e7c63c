"""What several seeds cost: n seeds one after another (each process on every core), as pinned parallel
processes (one per core), and as one vmapped program; same configuration, wall time from start to end.

    python experiments/seed_cost.py --seeds 4 --epochs 100
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import jax

if __name__ == "__main__":  # run as a file: this checkout's experiments package, never one found elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import entry, parser, results_dir, runs_root, write
from rnn_jax import corpora, data, sweep
from rnn_jax import experiments as experiments_lib


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    cfg = dataclasses.replace(
        experiments_lib.EXPERIMENTS["seq"], epochs=args.epochs or 100, predict_every=0, checkpoint_every=0
    )
    seeds = list(range(args.seeds))
    root, out = runs_root("seed_cost", args) / "seed_cost", results_dir("seed_cost", args)
    rows: dict[str, float] = {}
    t0 = time.perf_counter()
    for s in seeds:  # one after another, each process free to use every core
        sweep.run_processes("seq", cfg, [s], root / f"sequential_{s}", data_dir=args.data_dir, pin=False, keep=False)
    rows["sequential processes, all cores each"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sweep.run_processes("seq", cfg, seeds, root / "pinned", data_dir=args.data_dir, keep=False)  # timed afresh
    rows["parallel processes, one pinned per core"] = time.perf_counter() - t0
    tokens, vocab = data.load_corpus(corpora.resolve_corpus(None, args.data_dir), cfg.max_tokens)
    t0 = time.perf_counter()
    sweep.run_vmap(cfg, seeds, tokens, vocab)
    rows["one vmapped program"] = time.perf_counter() - t0
    base = rows["sequential processes, all cores each"]
    result: dict[str, Any] = {
        "name": "seed_cost",
        "seeds": len(seeds),
        "epochs": cfg.epochs,
        "backend": jax.default_backend(),
        "rows": [{"mode": k, "wall_seconds": v, "speedup": base / v} for k, v in rows.items()],
    }
    write("seed_cost", result, out)
    for r in result["rows"]:
        print(f"{r['mode']:<42} {r['wall_seconds']:7.1f} s  {r['speedup']:.2f}x")


if __name__ == "__main__":
    entry(main)
