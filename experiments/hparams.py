"""Exercise 7, "how low can you go?": hidden size, num_steps, learning rate and epochs, one factor at a
time around the book's settings, judged on held-out perplexity (the last 10% of the book), several seeds.
Epochs come from the validation curve of each run (scored every 25 epochs).

    python experiments/hparams.py
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a file: this checkout's experiments package, never one found elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import HELD_OUT, entry, parser, run_seeds
from rnn_jax import experiments as experiments_lib

GRID: dict[str, tuple[Any, ...]] = {"hidden": (64, 128, 256), "num_steps": (16, 70), "lr": (0.5, 2.0)}


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    HELD_OUT["eval_every"] = 25
    run_seeds("hp_base", "seq", experiments_lib.BASE, args)
    for field, values in GRID.items():
        for value in values:
            run_seeds(f"hp_{field}_{value}", "seq", dataclasses.replace(experiments_lib.BASE, **{field: value}), args)


if __name__ == "__main__":
    entry(main)
