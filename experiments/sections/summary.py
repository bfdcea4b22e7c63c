"""The one-line summary of every experiment that opens RESULTS.md."""

from __future__ import annotations

import math

from experiments import common
from experiments.common import load
from experiments.sections.figures import best_val, loaded, pm, seeds_text
from experiments.sections.models import COUNTING, best_by_val

SEED_RECORDS = (
    "seq",
    "random",
    "book_random",
    "relu",
    "relu_noclip",
    "embed",
    "noclip",
    "nodetach",
    "bf16",
    "gru",
    "lstm",
    "deep",
    "wotw",
)  # the records over seeds of one configuration each, in the summary's order


def seed_rows() -> list[str]:
    """A line per record over seeds: its training perplexity and best held-out point."""
    rows = []
    for name in SEED_RECORDS:
        rec = load(name)
        if rec:
            best = best_val(rec)
            held = f"; best held-out {best['mean']:.2f} (epoch {best['epoch']:.0f})" if best else ""
            rows.append(
                f"| `{name}` | training perplexity {pm(rec['summary'].get('perplexity'))} after "
                f"{rec['config']['epochs']} epochs ({seeds_text(rec)}){held} |"
            )
    return rows


def hparams_row() -> list[str]:
    """The sweep's configuration with the lowest held-out perplexity."""
    hp = sorted(p.stem for p in common.RESULTS.glob("hp_*.json"))
    if not hp:
        return []
    top = min(hp, key=lambda n: (best_val(loaded(n)) or {"mean": math.inf})["mean"])
    top_best = best_val(loaded(top))
    assert top_best is not None  # some configuration has a held-out curve
    return [
        f"| `hp_*` ({len(hp)} configurations) | lowest held-out perplexity: `{top}`, {pm(top_best)} "
        f"at about epoch {top_best['epoch']:.0f} |"
    ]


def study_rows() -> list[str]:
    """Sampling, other books and the cost of seeds, a line each."""
    rows = []
    rec = load("sampling")
    if rec:
        r: dict = {str(x["alpha"]): x for x in rec["rows"]}
        rows.append(
            f"| `sampling` | words that occur in the book: {r['1.0']['words_in_book']['mean']:.0%} sampling "
            f"from p, {r['greedy']['words_in_book']['mean']:.0%} greedy |"
        )
    rec = load("other_books")
    if rec:
        r = {(x["trained_on"], x["tested_on"]): x for x in rec["rows"]}
        own, other = r[("timemachine", "timemachine")], r[("timemachine", "war_of_the_worlds")]
        rows.append(
            f"| `other_books` | the Time Machine model, early-stopped: {pm(own['early_stopped'], 2)} on its "
            f"own book's end, {pm(other['early_stopped'], 2)} on The War of the Worlds' |"
        )
    rec = load("seed_cost")
    if rec:
        best = max(rec["rows"], key=lambda x: x["speedup"])
        rows.append(
            f"| `seed_cost` | {rec['seeds']} seeds: fastest as {best['mode']}, {best['speedup']:.2f}x the "
            "speed of one after another |"
        )
    return rows


def race_rows() -> list[str]:
    """The held-out races: the best recurrent model and the best static counting model of each."""
    rows = []
    for name, corpus in (("heldout", "the book, 80/10/10"), ("shakespeare", "tiny Shakespeare")):
        rec = load(name)
        b, c = (
            rec and best_by_val(rec["models"], ("rnn",), "static"),
            rec and best_by_val(rec["models"], COUNTING, "static"),
        )
        if b and c:
            key, unit = ("test_perplexity", "perplexity") if name == "heldout" else ("test_loss", "nats/char")
            rows.append(
                f"| `{name}` | {corpus}: best recurrent model by validation {b[0]}, test {unit} "
                f"{pm(b[1][key])}; best static counting model {c[0]}, {c[1][key]['mean']:.3f} |"
            )
    return rows


def summary_table() -> list[str]:
    """One line per experiment record: what it ran and its headline number."""
    rows = seed_rows() + hparams_row() + study_rows() + race_rows()
    if not rows:
        return []
    return [
        "Each experiment in one line (details in the sections below):",
        "",
        "| experiment | result |",
        "|---|---|",
        *rows,
    ]
