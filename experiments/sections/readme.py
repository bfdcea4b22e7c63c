"""The README's results block: the book's runs against its printed figures, and the held-out races."""

from __future__ import annotations

from pathlib import Path

from experiments import classes
from experiments.common import load
from experiments.sections.figures import best_val, loaded, pm
from experiments.sections.heldout import residual_race
from experiments.sections.models import no_windows
from experiments.sections.shakespeare import NANOGPT, race_targets

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


# The perplexities the book prints after 500 epochs (8.5: sequential and random sampling; 9.1-9.3), for comparison.
BOOK = {"seq": "1.0", "random": "1.3-1.5", "book_random": "1.3-1.4", "gru": "1.1", "lstm": "1.1", "deep": "1.0"}


BOOK_RUNS = {
    "seq": "8.5, sequential partitioning",
    "random": "8.5, a fresh model on random windows",
    "book_random": "8.5, `seq` then the state reset (the book's code)",
    "gru": "9.1, GRU, 256 units",
    "lstm": "9.2, LSTM, 256 units",
    "deep": "9.3, two LSTM layers, lr 2",
}


def readme_results() -> list[str]:
    """The README's headline tables: the book's runs against its printed figures, and the held-out races."""
    out = []
    rec: dict | None
    book = [n for n in BOOK if load(n)]
    if book:
        out += [
            "The book's settings, 500 epochs, mean ± std over seeds (`make ablations`):",
            "",
            "| run | section | training perplexity | the book | best held-out perplexity (epoch) |",
            "|---|---|---|---|---|",
        ]
        for n in book:
            rec, best = loaded(n), best_val(loaded(n))
            held = f"{pm(best, 2)} ({best['epoch']:.0f})" if best else "-"
            out.append(f"| `{n}` | {BOOK_RUNS[n]} | {pm(rec['summary'].get('perplexity'))} | {BOOK[n]} | {held} |")
        out.append("")
    rec = load("heldout")
    if rec:
        out += race_table(
            rec["models"],
            "The whole book, 80/10/10 by position (`python experiments/heldout.py`), scored as one stream",
            "test_perplexity",
            "test perplexity",
        )
        out += [line for text in residual_race(rec["models"]) for line in (text, "")]
    rec = load("shakespeare")
    if rec:
        out += race_table(
            rec["models"],
            "Tiny Shakespeare, nanoGPT's split (`python experiments/shakespeare.py`), test nats/char under both "
            "protocols: *stream* (the test part as one stream, each character given all the text before it) and "
            "*windows* (nanoGPT's estimate_loss: 12,800 random 256-character windows, each from an empty context)",
            "test_loss",
            "stream",
            windows=True,
        )
        gpt_name, gpt = next(iter(NANOGPT.items()))
        out += [f"The {gpt_name.split(' (')[0]} reports {gpt:.4f} under its own protocol, *windows*.", ""]
        race = [line for line in race_targets(rec["models"]) if line]
        out += [*race, ""] if race else []
    return out + ["Every table, with seeds, curves and samples: [experiments/RESULTS.md](experiments/RESULTS.md)."]


def race_table(models: dict, title: str, key: str, unit: str, windows: bool = False) -> list[str]:
    """The best model of each class by validation, each against the best counting model of the class it is
    measured against (classes.REFERENCE), under the protocols it has."""
    picks = [(c, p) for c in classes.CLASSES if (p := classes.best_of(models, c))]
    best = dict(picks)
    head = f"| class | model | {unit} |" + (" windows |" if windows else "")
    head += f" vs the best counting model of its class{' (stream)' if windows else ''} |"
    out = [f"{title}; each the best of its class by validation:", "", head, "|---" * (4 + windows) + "|"]
    for c, (n, m) in picks:
        fig = f"{m[key]['mean']:.3f}" if len(m[key]["seeds"]) == 1 else pm(m[key])
        ref = best.get(classes.REFERENCE[c])
        ratio = f"{m[key]['mean'] / ref[1][key]['mean']:.3f}x the {ref[0]}" if ref and ref[0] != n else "-"
        if windows:
            w = m.get("test_loss_windows")
            fig += " | " + (pm(w) if w and len(w["seeds"]) > 1 else f"{w['mean']:.3f}" if w else no_windows(c))
        seeds = len(m[key]["seeds"]) if m.get("kind") == "rnn" else 0  # a recurrent entry's final runs
        name = f"{n} ({seeds} seed{'s' * (seeds > 1)})" if seeds else n
        out.append(f"| {c} | {name} | {fig} | {ratio} |")
    return out + [""]


def write_readme_results(path: Path) -> bool:
    """Rewrites the block between the results markers of `path` (False when it has none)."""
    if not path.is_file():
        return False
    text = path.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(head + README_START + "\n" + "\n".join(readme_results()) + "\n" + README_END + tail)
    return True
