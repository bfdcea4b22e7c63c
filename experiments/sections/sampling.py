"""Sampling from p^alpha against argmax (exercise 3, experiments/sampling.py)."""

from __future__ import annotations

from experiments.common import load
from experiments.sections.figures import pm


def sampling_section() -> list[str]:
    """The samples' properties for each alpha, examples, and what flattening and sharpening trade."""
    rec = load("sampling")
    if rec is None:
        return []
    out = [
        "## Sampling instead of argmax, from p^alpha (exercise 3)",
        "",
        f"{rec['num_samples']} samples of {rec['num_chars']} characters after `{rec['prefix']}` per alpha from "
        f"each `seq` model ({len(rec['models'])} seeds); alpha = 1 is plain sampling, 'greedy' the book's argmax. "
        "Distinct words and repeated word 4-grams are measured within each sample; 'distinct samples' is the "
        "share of the samples that differ from every other.",
        "",
        "| alpha | distinct-word ratio | words that occur in the book | repeated word 4-grams | distinct samples |",
        "|---|---|---|---|---|",
    ]
    for r in rec["rows"]:
        out.append(
            f"| {r['alpha']} | {pm(r['distinct_word_ratio'], 2)} | {pm(r['words_in_book'], 2)} | "
            f"{pm(r['repeated_4grams'], 2)} | {pm(r['distinct_samples'], 2)} |"
        )
    rows = {str(r["alpha"]): {k: v["mean"] for k, v in r.items() if isinstance(v, dict)} for r in rec["rows"]}
    low, one, high, greedy = (
        rows[str(rec["rows"][0]["alpha"])],
        rows["1.0"],
        rows[str(rec["rows"][-2]["alpha"])],
        rows["greedy"],
    )
    out += (
        ["", "Examples (seed 0, first sample):", "", "```"]
        + [f"alpha {a:>6}: {t}" for a, t in rec["examples"].items()]
        + [
            "```",
            "",
            f"Flattening (alpha {rec['rows'][0]['alpha']}) makes up words: {low['words_in_book']:.0%} of them occur in "
            f"the book, against {one['words_in_book']:.0%} for plain sampling. Sharpening (alpha "
            f"{rec['rows'][-2]['alpha']}) raises that to {high['words_in_book']:.0%} but the samples collapse onto the "
            f"same memorised passages: {high['distinct_samples']:.0%} of them differ from the others"
            + (
                f", and {high['repeated_4grams']:.0%} of word 4-grams repeat within a sample"
                if high["repeated_4grams"] >= 0.05
                else " (within a sample it does not loop: it recites the book)"
            )
            + ". Greedy decoding is the limit: "
            f"one text for every call ({greedy['distinct_samples']:.0%} distinct), {greedy['words_in_book']:.0%} real "
            "words, a passage of the book the model memorised. Sampling trades fidelity for variety, and alpha sets "
            "the exchange rate.",
            "",
        ]
    )
    return out
