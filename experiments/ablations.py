"""Exercises 2, 4, 5, 6: sequential vs random, ReLU with and without clipping, embeddings, no clipping,
no detaching; and bf16 matrix products (a speed lever) against float32. Each named configuration runs
over several seeds; records land in experiments/results/.

    python experiments/ablations.py                 # all of them, 3 seeds each
    python experiments/ablations.py relu noclip --seeds 5
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a file: this checkout's experiments package, never one found elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import entry, run_named

NAMES = ("seq", "random", "relu", "relu_noclip", "embed", "noclip", "nodetach", "bf16")


def main(argv=None) -> None:
    run_named(NAMES, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    entry(main)
