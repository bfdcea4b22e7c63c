"""The book's random-sampling result as its code produces it: the sequential run, then 500 more epochs from
its parameters on the same sequential windows with the state reset to zeros every minibatch (`--exp
book_random`), over several seeds; beside it, `random` is the fresh model on random windows the prose
describes. Records land in experiments/results/book_random*.json.

    python experiments/book_random.py               # 3 seeds, two 500-epoch stages each (pinned, one per core)
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

if __name__ == "__main__":  # run as a file: this checkout's experiments package, never one found elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import HELD_OUT, entry, parser, record, results_dir, runs_root, write
from rnn_jax import experiments as experiments_lib
from rnn_jax import sweep


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    root, seeds = runs_root("book_random", args) / "book_random", list(range(args.seeds))
    out = results_dir("book_random", args)
    over = {**HELD_OUT, **({"epochs": args.epochs} if args.epochs else {})}
    stages = experiments_lib.CHAINS["book_random"]
    cfgs = [dataclasses.replace(experiments_lib.EXPERIMENTS[stage], **over) for stage in stages]
    previous = None
    for k, (stage, cfg) in enumerate(zip(stages, cfgs, strict=True)):
        t0 = time.perf_counter()
        jobs: list[tuple] = [
            (
                stage,
                dataclasses.replace(cfg, seed=s),
                root / f"seed_{s}" / stage,
                ["--init-from", str(root / f"seed_{s}" / previous)] if previous else [],
            )
            for s in seeds
        ]
        records = sweep.run_jobs(jobs, data_dir=args.data_dir)  # finished stages read back, stopped ones continued
        name = "book_random" if k == len(stages) - 1 else f"book_random_{stage}"
        result = record(name, stage, cfg, records, "processes", time.perf_counter() - t0)
        write(name, result, out)
        ppl = result["summary"].get("perplexity", {})
        print(
            f"{name:<20} ppl {ppl.get('mean', float('nan')):.3f} ± {ppl.get('std', float('nan')):.3f}  "
            f"({result['wall_seconds']:.0f} s)",
            flush=True,
        )
        previous = stage


if __name__ == "__main__":
    entry(main)
