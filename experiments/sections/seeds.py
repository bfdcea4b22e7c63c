"""A section over records of seeds: their table, their curves and the answer they give."""

from __future__ import annotations

from experiments.common import load
from experiments.sections import plots
from experiments.sections.figures import best_val, pm


def table(names: list[str]) -> list[str]:
    """A row per record over seeds: epochs, training and held-out perplexity, the best held-out point, speed,
    divergences."""
    lines = [
        "| configuration | epochs | train perplexity | held-out perplexity (final) | best held-out (epoch) "
        "| tokens/s | diverged (seed, epoch) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        rec = load(name)
        if rec is None:
            continue
        s, best = rec["summary"], best_val(rec)
        best_text = f"{best['mean']:.3f} ± {best['std']:.3f} ({best['epoch']:.0f})" if best else "-"
        tps = f"{s['tokens_per_sec']['mean']:,.0f}" if "tokens_per_sec" in s else "-"
        diverged = ", ".join(f"({a}, {b})" for a, b in s["diverged"]) or "none"
        lines.append(
            f"| `{name}` | {rec['config']['epochs']} | {pm(s.get('perplexity'))} | "
            f"{pm(s.get('val_perplexity'))} | {best_text} | {tps} | {diverged} |"
        )
    return lines


def section(title: str, names: list[str], fig: str, answer: str) -> list[str]:
    """A table, the curves and the answer; nothing when the experiment it is about (the last name) has no record."""
    if load(names[-1]) is None:
        return []
    out = [f"## {title}", ""] + table(names) + [""]
    img = plots.curves(names, plots.figures_dir() / f"{fig}.png", title)
    if img:
        out += [img, ""]
    return out + [answer, ""]
