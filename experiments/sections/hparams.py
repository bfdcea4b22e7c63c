"""How low can you go (exercise 7): the one-factor sweep around the book's settings, ranked on held-out."""

from __future__ import annotations

import math

from experiments import common
from experiments.sections import plots
from experiments.sections.figures import best_val, diverged, diverged_text, loaded
from experiments.sections.plots import val_curves
from experiments.sections.seeds import table


def hparams_section() -> list[str]:
    """The one-factor sweep ranked by best held-out perplexity: its table, curves and answer."""
    names = sorted(p.stem for p in common.RESULTS.glob("hp_*.json"))
    if not names:
        return []
    ranked = sorted(names, key=lambda n: (best_val(loaded(n)) or {"mean": math.inf})["mean"])
    best, base = best_val(loaded(ranked[0])), best_val(loaded("hp_base"))
    assert best is not None and base is not None  # held-out curves of the sweep
    out = (
        [
            "## How low can you go? (exercise 7)",
            "",
            "One factor at a time around the book's settings (hidden 512, 35 steps, lr 1, 500 epochs), judged on "
            "held-out perplexity scored every 25 epochs; 'best held-out' is the lowest point of each seed's curve "
            "and its epoch (the epochs axis of the sweep). Sorted by it.",
            "",
        ]
        + table(ranked)
        + [""]
    )
    out += [val_curves(ranked, plots.figures_dir() / "hparams.png", "Held-out perplexity while training"), ""]
    blown = [n for n in ranked if diverged(n)]
    out.append(
        f"Held-out perplexity bottoms out early and then rises while training perplexity keeps falling: "
        f"10,000 characters are memorised, not generalised. The best configuration, `{ranked[0]}`, reaches "
        f"{best['mean']:.3f} ± {best['std']:.3f} at about epoch {best['epoch']:.0f}; the book's settings "
        f"reach {base['mean']:.3f} ± {base['std']:.3f} at about epoch {base['epoch']:.0f}. The lowest "
        "training perplexity and the lowest held-out perplexity come from different settings."
        + (f" Diverged: {'; '.join(f'`{n}` ({diverged_text(n)})' for n in blown)}." if blown else "")
    )
    return out + [""]
