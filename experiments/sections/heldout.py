"""Beating counting: the whole book split 80/10/10, every model's test figures, the screening and the targets."""

from __future__ import annotations

import numpy as np

from experiments.common import load
from experiments.sections import plots
from experiments.sections.figures import pm
from experiments.sections.models import COUNTING, best_by_val, chosen, test_scorings
from experiments.sections.plots import save_figure


def heldout_section(name: str = "heldout") -> list[str]:
    """Beating counting: test perplexity of every model under the 80/10/10 protocol, the targets, the curves."""
    rec = load(name)
    if rec is None:
        return []
    models = sorted(rec["models"].items(), key=lambda kv: kv[1]["test_perplexity"]["mean"])
    sizes = rec["split_tokens"]
    out = [
        "## Beating counting",
        "",
        f"The whole book split by position: train {sizes['train']:,}, validation {sizes['val']:,}, test "
        f"{sizes['test']:,} characters. Every choice is made on validation (each run's epoch by its best "
        "checkpoint, each family's regularisation by a one-seed screening, dynamic evaluation's rule, step and "
        "segment on seed 0, each counting model's order and discount); the test part is scored as one stream "
        "continuing the text before it. Two classes race: *static* models are fixed after training (the RNN "
        "evaluated as it is; Kneser-Ney n-grams, interpolated and modified), *adaptive* ones learn from the text "
        "they score (the RNN with dynamic evaluation; PPMd, the compressor's text model, and the chosen n-gram "
        "refitted as it reads). RNNs: mean ± std over "
        f"{max(len(m['test_perplexity']['seeds']) for _, m in models)} seeds; counting models are deterministic.",
        "",
        *test_scorings("timemachine", rec),
        "",
        "| model | class | test perplexity | test nats/char | test bits/char | validation perplexity | "
        "chosen on validation |",
        "|---|---|---|---|---|---|---|",
    ]
    fig = lambda m, k: f"{m[k]['mean']:.3f}" if m["kind"] in COUNTING else pm(m[k])
    loss = lambda m: (
        (f"{m['test_loss']['mean']:.4f}" if m["kind"] in COUNTING else pm(m["test_loss"], 4))
        if "test_loss" in m
        else "-"
    )
    out += [
        f"| {n} | {m['evaluation']} | {fig(m, 'test_perplexity')} | {loss(m)} | {fig(m, 'test_bits_per_char')} | "
        f"{fig(m, 'val_perplexity')} | {chosen(m)} |"
        for n, m in models
    ]
    out += ["", val_curves_heldout(rec), "", *heldout_screening(rec), *heldout_targets(rec), ""]
    return out + [*residual_race(rec["models"]), ""]


def val_curves_heldout(rec: dict) -> str:
    """Validation perplexity per epoch: each screened configuration (seed 0, thin) and each chosen one (mean over
    seeds, thick), against the best n-gram's (a flat line)."""
    fig, ax = plots.plt.subplots(figsize=(7.2, 4.4), dpi=110)
    for n, m in rec["models"].items():
        if m["kind"] == "rnn" and m["evaluation"] == "static":
            k = min(len(c) for c in m["val_curves"])
            ax.plot(
                np.arange(1, k + 1),
                np.mean([c[:k] for c in m["val_curves"]], 0),
                lw=2.5,
                label=f"{n} {m['regulariser']} ({len(m['val_curves'])} seeds)",
            )
    chosen = {f"{n} {m['regulariser']}" for n, m in rec["models"].items() if m["kind"] == "rnn"}
    for n, s in rec["screening"].items():
        if s.get("val_curve") and n not in chosen:  # a chosen configuration's seed 0 is in its mean already
            ax.plot(np.arange(1, len(s["val_curve"]) + 1), s["val_curve"], lw=0.9, alpha=0.8, label=f"{n} (seed 0)")
    static = [(n, m) for n, m in rec["models"].items() if m["kind"] in COUNTING and m["evaluation"] == "static"]
    name, best = min(static, key=lambda nm: nm[1]["val_perplexity"]["mean"])
    ax.axhline(best["val_perplexity"]["mean"], color="k", ls="--", lw=1, label=f"{name} (best static counting)")
    return save_figure(
        fig,
        ax,
        plots.figures_dir() / f"{rec['name']}.png",
        "Validation perplexity (the book, 80/10/10)",
        "validation perplexity",
        legend_size=7,
    )


def heldout_screening(rec: dict) -> list[str]:
    """The one-seed screening each family's regularisation was chosen from."""
    out = [
        "Screening (seed 0, lowest validation perplexity over the epochs; `cosine`: the step size falls to about "
        "zero over the run's epochs):",
        "",
        "| family and regularisation | epochs | step size | best validation perplexity | at epoch |",
        "|---|---|---|---|---|",
    ]
    for n, s in rec["screening"].items():
        c, curve = s["config"], s.get("val_curve") or []
        at = int(np.argmin(curve)) + 1 if curve else "—"
        out.append(
            f"| {n} | {c['epochs']} | {c['optimizer']} {c['lr']:g}, {c.get('lr_schedule', 'constant')} | "
            f"{s['best_val_perplexity']:.3f} | {at} |"
        )
    return out + [""]


def heldout_targets(rec: dict) -> list[str]:
    """The best recurrent models against the counting model of their class that validation chose."""
    models = rec["models"]
    static, adaptive = best_by_val(models, COUNTING, "static"), best_by_val(models, COUNTING, "adaptive")
    assert static is not None  # the counting models are always fitted
    ref = static[1]["test_perplexity"]["mean"]
    lines = [
        f"The static counting model chosen on validation is the {static[0]} ({chosen(static[1])}): test "
        f"perplexity {ref:.3f}."
    ]
    if adaptive:
        lines.append(
            f"The adaptive one is {adaptive[0]} ({chosen(adaptive[1])}): {adaptive[1]['test_perplexity']['mean']:.3f}."
        )
    for label, ev, against in (("static", "static", static), ("dynamic", "dynamic", adaptive or static)):
        b = best_by_val({n: m for n, m in models.items() if "ensemble" not in m and "mixture" not in m}, ("rnn",), ev)
        if b:
            ratio = b[1]["test_perplexity"]["mean"] / against[1]["test_perplexity"]["mean"]
            lines.append(
                f"Best recurrent model by validation, {label} evaluation: {b[0]}, test "
                f"{pm(b[1]['test_perplexity'])}, {ratio:.3f}x the {against[0]}."
            )
    for ev in ("static", "dynamic"):
        b = best_by_val({n: m for n, m in models.items() if n.startswith("rnn-tanh")}, ("rnn",), ev)
        if b:
            t = b[1]["test_perplexity"]["mean"]
            lines.append(
                f"The book's tanh RNN, regularised, {ev}: {t:.3f} against the static {ref:.3f} "
                f"({'at or below' if t <= ref else 'above'} the best static counting model)."
            )
    return [" ".join(lines)]


def residual_race(models: dict, equal: str = "lstm-1x256") -> list[str]:
    """The recurrences in residual blocks (static evaluation, single models) against each other, and the best of them
    against the plain stack of the same parameter count (`equal`, whose count heldout_grid sizes them to) and the
    best plain stack by validation, each at its test perplexity over seeds."""
    static = {
        n: m
        for n, m in models.items()
        if m["kind"] == "rnn" and m["evaluation"] == "static" and "ensemble" not in m and "mixture" not in m
    }
    race = sorted(
        ((n, m) for n, m in static.items() if m["config"].get("block") == "residual"),
        key=lambda nm: nm[1]["test_perplexity"]["mean"],
    )
    if not race:
        return []
    plain = best_by_val({n: m for n, m in static.items() if m["config"].get("block") != "residual"}, ("rnn",), "static")
    ranked = "; ".join(f"{n} {pm(m['test_perplexity'])}" for n, m in race)
    text = (
        f"The recurrences in {race[0][1]['config']['num_layers']} residual blocks (`--block residual`, each as wide "
        f"as gives {equal}'s parameter count), static, test perplexity from best to worst: {ranked}."
    )
    t = race[0][1]["test_perplexity"]["mean"]
    refs = [(f"{equal}, the plain stack of the same parameter count", static.get(equal))]
    refs += [(f"{plain[0]}, the best plain stack by validation", plain[1])] if plain and plain[0] != equal else []
    against = [
        f"{t / m['test_perplexity']['mean']:.3f}x {label} ({pm(m['test_perplexity'])})" for label, m in refs if m
    ]
    if against:
        text += f" The best of them, {race[0][0]}, is " + " and ".join(against) + "."
    return [text]
