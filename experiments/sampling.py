"""Exercise 6: sampling instead of argmax, from p^alpha (alpha > 1 sharpens, alpha < 1 flattens).

Uses the `seq` models trained by ablations.py (experiments/runs/seq/seed_*): for each alpha, several
samples from the same prefix, and properties of the text they make.

    python experiments/sampling.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

if __name__ == "__main__":  # run as a file: this checkout's experiments package, never one found elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import RUNS, entry, parser, results_dir, write
from rnn_jax import corpora, generate, stats
from rnn_jax.runs import load_run

ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, "greedy")
PREFIX = "time traveller "


def text_properties(samples: list[str], book_words: set[str]) -> dict:
    """Per sample: distinct-word ratio and repeated word 4-grams; overall: words found in the book and how
    many of the samples (all drawn from the same prefix) differ from each other."""

    def words(s):  # the generated words; the last one may be cut off
        return s[len(PREFIX) :].split()[:-1]

    def repeated(ws):
        grams = [tuple(ws[i : i + 4]) for i in range(len(ws) - 3)]
        return 1 - len(set(grams)) / len(grams) if grams else 0.0

    all_words = [w for s in samples for w in words(s)]
    return {
        "distinct_word_ratio": float(np.mean([len(set(words(s))) / max(len(words(s)), 1) for s in samples])),
        "words_in_book": float(np.mean([w in book_words for w in all_words])) if all_words else 0.0,
        "repeated_4grams": float(np.mean([repeated(words(s)) for s in samples])),
        "distinct_samples": len(set(samples)) / len(samples),
    }


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--num-chars", type=int, default=300)
    args = p.parse_args(argv)
    raw = corpora.read_text(corpora.resolve_corpus(None, args.data_dir))
    book_words = set(re.findall(r"[a-z]+", raw.lower()))
    runs = sorted((RUNS / "seq").glob("seed_*"))[: args.seeds]
    if not runs:
        raise SystemExit(f"no trained seq models in {RUNS / 'seq'}; run experiments/ablations.py seq first")
    rows: list[dict] = []
    examples: dict[str, str] = {}
    for alpha in ALPHAS:
        per_seed = []
        for i, run in enumerate(runs):
            cfg, vocab, params, _ = load_run(run)
            temperature = 0.0 if alpha == "greedy" else 1.0 / cast(float, alpha)
            ids = generate.generate_ids(
                params,
                jnp.asarray(vocab.encode(PREFIX)),
                jax.random.key(i),
                num_chars=args.num_chars,
                num_samples=args.num_samples,
                temperature=temperature,
            )
            samples = [PREFIX + vocab.decode(r) for r in jax.device_get(ids)]
            per_seed.append(text_properties(samples, book_words))
            if i == 0:
                examples[str(alpha)] = samples[0]
        row: dict[str, Any] = {"alpha": alpha}
        for key in per_seed[0]:
            vals = [s[key] for s in per_seed]
            row[key] = stats.mean_std(vals)
        rows.append(row)
        print(
            f"alpha {alpha!s:>6}: distinct words {row['distinct_word_ratio']['mean']:.2f}  in book "
            f"{row['words_in_book']['mean']:.2f}  repeated 4-grams {row['repeated_4grams']['mean']:.2f}  "
            f"distinct samples {row['distinct_samples']['mean']:.2f}"
        )
    write(
        "sampling",
        {
            "name": "sampling",
            "prefix": PREFIX,
            "num_chars": args.num_chars,
            "num_samples": args.num_samples,
            "models": [r.name for r in runs],
            "rows": rows,
            "examples": examples,
        },
        results_dir("sampling", args),
    )


if __name__ == "__main__":
    entry(main)
