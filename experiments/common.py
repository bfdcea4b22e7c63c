"""Shared by the experiment scripts: run one configuration over several seeds and store its record."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

from rnn_jax import config, data, sweep

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE / "runs"  # run directories (ignored by git); results/ keeps the small JSON records
# Every ablation also scores the last 10% of the book; training data and trajectory are unchanged by it
# (the first 10,000 tokens lie in the first 90%).
HELD_OUT = {"val_fraction": 0.1, "eval_every": 50, "predict_every": 0, "checkpoint_every": 0}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration (0, 1, ...)")
    p.add_argument("--mode", choices=("auto", *sweep.MODES), default="auto",
                   help="several seeds as pinned processes or one vmapped program (auto: by backend)")
    p.add_argument("--data-dir", default=os.environ.get("RNN_JAX_DATA_DIR"), help="folder of timemachine.txt")
    p.add_argument("--epochs", type=int, default=None, help="override every configuration's epochs (smoke runs)")
    return p


def run_named(names: tuple[str, ...], description: str, argv=None) -> None:
    """Each named experiment given on the command line (default: all of `names`) over seeds, one after another."""
    p = parser(description)
    p.add_argument("names", nargs="*", default=list(names), help=f"any of {', '.join(names)}")
    args = p.parse_args(argv)
    for name in args.names:
        run_seeds(name, name, config.EXPERIMENTS[name], args)


def run_seeds(name: str, exp: str, cfg: config.Config, args, *, corpus: str | None = None) -> dict:
    """Trains cfg for args.seeds seeds, writes results/<name>.json and returns the record."""
    cfg = dataclasses.replace(cfg, **HELD_OUT, **({"epochs": args.epochs} if args.epochs else {}))
    seeds = list(range(args.seeds))
    mode = sweep.default_mode() if args.mode == "auto" else args.mode
    t0 = time.perf_counter()
    if mode == "processes":
        records = sweep.run_processes(exp, cfg, seeds, fresh(RUNS / name), corpus=corpus, data_dir=args.data_dir)
    else:
        path = data.resolve_corpus(corpus, args.data_dir)
        tokens, vocab = data.load_corpus(path, -1, cfg.preprocess)
        parts = data.splits(tokens, cfg)
        records = sweep.run_vmap(cfg, seeds, parts["train"][0], vocab, val=parts["val"])
    result = {"name": name, "experiment": exp, "config": config.to_dict(cfg), "mode": mode,
              "wall_seconds": time.perf_counter() - t0, "corpus": Path(corpus).name if corpus else "timemachine.txt",
              "summary": sweep.summarize(records), "seeds": records}
    write(name, result)
    s = result["summary"]
    ppl = s.get("perplexity", {})
    print(f"{name:<14} ppl {ppl.get('mean', float('nan')):.3f} ± {ppl.get('std', float('nan')):.3f}  "
          f"diverged {s['diverged']}  ({result['wall_seconds']:.0f} s, {mode})", flush=True)
    return result


def fresh(root: Path) -> Path:
    """An empty scratch folder for a script's run directories (their records live in results/)."""
    shutil.rmtree(root, ignore_errors=True)
    return root


def record(name: str, exp: str, cfg: config.Config, records: list[dict], mode: str, seconds: float) -> dict:
    """The JSON record of one configuration over seeds, as report.py reads it."""
    return {"name": name, "experiment": exp, "config": config.to_dict(cfg), "mode": mode, "wall_seconds": seconds,
            "corpus": "timemachine.txt", "summary": sweep.summarize(records), "seeds": records}


def write(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None
