"""The figures of RESULTS.md: training and held-out perplexity curves over seeds, saved under results/figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from experiments import common
from experiments.common import load
from experiments.sections.figures import loaded


def figures_dir() -> Path:
    """Where the figures go: results/figures of the checkout's experiments."""
    return common.RESULTS / "figures"


def curves(names: list[str], path: Path, title: str) -> str | None:
    """Mean training perplexity per epoch with the seeds' min-max band, log scale."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for name in names:
        rec = load(name)
        if rec is None:
            continue
        runs = [r["curve"] for r in rec["seeds"] if r["curve"] and r["diverged_epoch"] is None]
        n = min(len(c) for c in runs) if runs else 0
        color = None
        if n:
            arr = np.array([c[:n] for c in runs])
            x = np.arange(1, n + 1)
            (line,) = ax.plot(x, arr.mean(0), label=f"{name} ({len(runs)} seeds)")
            ax.fill_between(x, arr.min(0), arr.max(0), color=line.get_color(), alpha=0.2)
            color = line.get_color()
        for r in rec["seeds"]:  # a diverged seed: its curve up to the divergence, marked with an x
            if r["diverged_epoch"] is not None and r["curve"]:
                e = min(r["diverged_epoch"], len(r["curve"]))
                (line,) = ax.plot(
                    np.arange(1, e + 1),
                    r["curve"][:e],
                    "--",
                    lw=0.8,
                    color=color,
                    label=f"{name} seed {r['seed']} (diverged)",
                )
                ax.plot([e], [r["curve"][e - 1]], "x", color=line.get_color())
    if not ax.lines:
        plt.close(fig)
        return None
    return save_figure(fig, ax, path, title, "training perplexity")


def save_figure(fig, ax, path: Path, title: str, ylabel: str, legend_size=None) -> str:
    """Log-scale axes, legend, PNG under results/figures; returns the Markdown that shows it."""
    ax.set(xlabel="epoch", ylabel=ylabel, yscale="log", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return f"![{title}]({path.relative_to(common.HERE)})"


def val_curves(names: list[str], path: Path, title: str) -> str:
    """Mean held-out perplexity against epoch for each configuration (seeds that did not diverge)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    for name in names:
        runs = [r["val_curve"] for r in loaded(name)["seeds"] if r["diverged_epoch"] is None and r["val_curve"]]
        if runs:
            n = min(len(c) for c in runs)
            arr = np.array([[v for _, v in c[:n]] for c in runs])
            ax.plot([e for e, _ in runs[0][:n]], arr.mean(0), marker=".", label=name.removeprefix("hp_"))
    return save_figure(fig, ax, path, title, "held-out perplexity", legend_size=8)
