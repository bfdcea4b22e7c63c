"""Exercise 8, other books: train on The Time Machine and test on The War of the Worlds, and train on
The War of the Worlds directly (its Project Gutenberg header and licence stripped), each over seeds.

    python experiments/other_books.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a file: this checkout's experiments package, never one found elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import RUNS, entry, load, parser, results_dir, run_seeds, runs_root, write
from rnn_jax import baselines, data, heldout, model, stats
from rnn_jax import experiments as experiments_lib
from rnn_jax.runs import load_run


def held_out(path: Path, vocab: data.Vocab, cfg) -> tuple:
    """The last 10% of a book in a model's vocabulary, with the text before it, and the <unk> count."""
    text = data.load_text(path, cfg.preprocess)
    tokens = vocab.encode(text)
    train, val, _ = data.split_corpus(tokens, 0.1)
    return val, train, sum(vocab.unknown(text).values())


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    data_dir = Path(args.data_dir or Path(__file__).resolve().parents[2] / "shared" / "data")
    books = {"timemachine": data_dir / "timemachine.txt", "war_of_the_worlds": data_dir / "war_of_the_worlds.txt"}
    if load("wotw") is None or args.epochs:
        run_seeds("wotw", "seq", experiments_lib.EXPERIMENTS["seq"], args, corpus=str(books["war_of_the_worlds"]))
    trained = {
        "timemachine": sorted((RUNS / "seq").glob("seed_*")),
        "war_of_the_worlds": sorted((runs_root("wotw", args) / "wotw").glob("seed_*")),
    }
    table = []
    for train_book, runs in trained.items():
        if not runs:
            raise SystemExit(f"no models trained on {train_book}; run experiments/ablations.py seq first")
        for test_book, path in books.items():
            ppl: dict[str, list[float]] = {"final": [], "early_stopped": []}
            unknown = 0
            for run in runs[: args.seeds]:
                for which, best in (("final", False), ("early_stopped", True)):
                    cfg, vocab, params, _ = load_run(run, best=best)
                    val, context, unknown = held_out(path, vocab, cfg)
                    ppl[which].append(
                        heldout.evaluate(params, val, model.ModelSpec.from_config(cfg), context=context)["perplexity"]
                    )
            # a 5-gram fit on the same 10,000 training characters, scored on the same text
            train_tokens = data.load_corpus(books[train_book], 10_000)[0]
            val, _, _ = held_out(path, data.load_corpus(books[train_book])[1], cfg)
            ngram = baselines.evaluate_baselines(train_tokens, val, len(vocab), context_from_train=False)["5-gram"]
            row: dict[str, Any] = {
                "trained_on": train_book,
                "tested_on": test_book,
                "unknown_chars": unknown,
                "ngram5_same_training": ngram["perplexity"],
                **{k: {**stats.mean_std(v), "n": len(v)} for k, v in ppl.items()},
            }
            table.append(row)
            print(
                f"trained on {train_book:<18} tested on {test_book:<18} final {row['final']['mean']:.2f}  "
                f"early-stopped {row['early_stopped']['mean']:.2f}  (5-gram {ngram['perplexity']:.3f})"
            )
    write(
        "other_books",
        {
            "name": "other_books",
            "held_out": "last 10% of each book",
            "rows": table,
            "early_stopping": "each run's checkpoint with the lowest perplexity on its own book's "
            "held-out text (scored every 50 epochs)",
        },
        results_dir("other_books", args),
    )


if __name__ == "__main__":
    entry(main)
