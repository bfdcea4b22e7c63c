"""Other books (exercise 8): models of one book scored on another, beside a 5-gram."""

from __future__ import annotations

from experiments.common import load
from experiments.sections.figures import pm
from experiments.sections.seeds import table


def other_books_section() -> list[str]:
    """Each model scored on each book, final and early-stopped, against a 5-gram fit on the same characters."""
    rec = load("other_books")
    if rec is None:
        return []
    out = [
        "## Other books (exercise 2)",
        "",
        "Models trained on the first 10,000 characters of one book (500 epochs, the seeds above), scored on the "
        "last 10% of each book, both after the last epoch and at the checkpoint that scored best on their own "
        "book's held-out text (early stopping); a 5-gram (interpolated Kneser-Ney) fit on the same 10,000 "
        "characters for comparison.",
        "",
        "| trained on | tested on | RNN, final | RNN, early-stopped | 5-gram | <unk> characters |",
        "|---|---|---|---|---|---|",
    ]
    for r in rec["rows"]:
        out.append(
            f"| {r['trained_on']} | {r['tested_on']} | {pm(r['final'], 1)} | {pm(r['early_stopped'])} | "
            f"{r['ngram5_same_training']:.3f} | {r['unknown_chars']} |"
        )
    if load("wotw"):
        out += ["", "Training on The War of the Worlds directly, against The Time Machine:", ""] + table(
            ["seq", "wotw"]
        )
    rows = {(r["trained_on"], r["tested_on"]): r for r in rec["rows"]}
    own = rows[("timemachine", "timemachine")]["early_stopped"]["mean"]
    other = rows[("timemachine", "war_of_the_worlds")]["early_stopped"]["mean"]
    gram = min(r["ngram5_same_training"] for r in rec["rows"])
    best_rnn = min(r["early_stopped"]["mean"] for r in rec["rows"])
    out += [
        "",
        f"Early-stopped, the Time Machine model scores {own:.2f} on its own book's unseen end and "
        f"{other:.2f} on The War of the Worlds: what transfers is the letter and short-word statistics of "
        "English, which both books share. After 500 epochs both models have memorised their 10,000 characters "
        "and score far worse on any unseen text. "
        + (
            f"The 5-gram fit on the same characters stays ahead of every RNN ({gram:.2f} at best against "
            f"{best_rnn:.2f}): from 10,000 characters, smoothed counting generalises better than this RNN."
            if gram < best_rnn
            else f"The best RNN ({best_rnn:.2f}) beats the 5-gram fit on the same characters ({gram:.2f})."
        ),
        "",
    ]
    return out
