"""The book's next sections at their settings: GRU (9.1) and LSTM (9.2) from scratch, and a two-layer LSTM
(9.3, lr 2), 256 hidden units, 500 epochs; several seeds each. Records land in experiments/results/.

    python experiments/gated.py               # gru, lstm and deep, 3 seeds each
    python experiments/gated.py gru --seeds 5
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a file: this checkout's experiments package, never one found elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import entry, run_named

NAMES = ("gru", "lstm", "deep")


def main(argv=None) -> None:
    run_named(NAMES, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    entry(main)
