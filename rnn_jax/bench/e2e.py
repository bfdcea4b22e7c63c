"""The e2e section: wall time, process start to exit, of a whole training run and of the peer's."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from rnn_jax.bench.common import run_child, run_peer


def e2e(args, corpus: Path) -> list[dict]:
    """Wall time, process start to exit, of `python -m rnn_jax.train --exp seq` and of the peer's run."""
    epochs = ["--epochs", str(args.e2e_epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        _, wall, rss = run_child(
            [
                sys.executable,
                "-m",
                "rnn_jax.train",
                "--exp",
                "seq",
                *epochs,
                "--run-dir",
                f"{tmp}/run",
                "--data-dir",
                str(corpus.parent),
                "--hidden",
                str(args.hidden),
            ]
        )
        summary = json.loads(Path(tmp, "run", "summary.json").read_text())
    out = [{"name": "rnn_jax.train --exp seq", "wall_s": wall, "perplexity": summary["perplexity"], "peak_rss_mb": rss}]
    if args.peer_python:
        report, wall, rss = run_peer(args, corpus, epochs)
        out.append(
            {
                "name": "torch-scratch (book) seq",
                "wall_s": wall,
                "perplexity": report["final_perplexity"],
                "peak_rss_mb": rss,
            }
        )
    return out
