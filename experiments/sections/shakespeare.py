"""Tiny Shakespeare with nanoGPT's split: the models' table, time to quality, the targets and samples."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from experiments import classes, common
from experiments.common import load
from experiments.sections import plots
from experiments.sections.figures import pm
from experiments.sections.levers import LEVER_RECORDS
from experiments.sections.models import COUNTING, chosen, no_windows, test_scorings
from rnn_jax import config, data, flops

# Figures reported by nanoGPT's README for its shakespeare_char configurations, on the same 10% (its "val" part,
# scored in blocks of up to 256 characters of context): quoted for comparison, not measured here.
NANOGPT = {
    "nanoGPT baby GPT (6 layers, 10.7M parameters, ~3 min on an A100 GPU)": 1.4697,
    "nanoGPT CPU configuration (~3 min on a laptop CPU; its windows are 64 characters)": 1.88,
}


# (loss, parameters, training FLOPs = 6 N x tokens) under its protocol: the baby GPT's 10.65M parameters, 5,000
# iterations of 64 x 256 (its config), windows of 256; the CPU configuration's figure is over windows of 64 (its
# block size), its parameter count not stated, so neither is given here
NANOGPT_ROWS = {
    "nanoGPT baby GPT (6 layers, 10.7M parameters, ~3 min on an A100 GPU)": (
        1.4697,
        f"{10_650_000:,}",
        f"{6 * 10_650_000 * 5_000 * 64 * 256:.2e}",
    ),
    "nanoGPT CPU configuration (~3 min on a laptop CPU; its windows are 64 characters)": (1.88, "", ""),
}
# Test losses Feng et al. 2024 ("Were RNNs All We Needed?") report for 3-layer models in nanoGPT's shakespeare_char
# setting: quoted, not measured here, and set beside the windows figures (the protocol of that setting); keyed by
# the cell that races each
FENG = {"mingru": ("minGRU", 1.548), "minlstm": ("minLSTM", 1.555)}
FENG_OTHERS = {"Mamba": 1.575, "Transformer": 1.547}


def shakespeare_section(name: str = "shakespeare") -> list[str]:
    """Tiny Shakespeare with nanoGPT's split: the table, the curves against wall-clock time, targets, samples."""
    rec = load(name)
    if rec is None:
        return []
    sp, models = rec["split"], rec["models"]
    rows = sorted(models.items(), key=lambda kv: kv[1]["test_loss"]["mean"])
    out = [
        "## Tiny Shakespeare (nanoGPT's split)",
        "",
        f"char-rnn's tiny Shakespeare ({sp['characters']:,} characters, every character kept: "
        f"{sp['vocab_size'] - 1} symbols and `<unk>`). Test: the last {sp['test']:,} characters, nanoGPT's "
        "validation part (`data[int(0.9 n):]`), each character scored given all the true text before it. "
        f"Validation: the {sp['val']:,} characters before it, cut from nanoGPT's training 90%. Every choice is "
        "made there by models that did not train on it (a selection run per recurrent model, counting models fit "
        f"on the other {sp['train']:,}); the final models then train with those settings on all of nanoGPT's 90%, "
        "validation included, as nanoGPT's do, so their 'validation' column is the selection run's. Losses in "
        "nats per character (nanoGPT's unit); recurrent models: mean ± std over the final seeds, one training "
        "run each on this 2-core CPU (the cores it used beside its wall seconds, where the runs recorded them). "
        "*static*: fixed after training; *adaptive*/*dynamic*: learn "
        "from the text they score.",
        "",
        *test_scorings("shakespeare", rec),
        "",
        "| model | class | test nats/char, stream | test nats/char, windows | test bits/char, stream | "
        "test perplexity, stream | validation nats/char, stream | validation, windows | parameters | training FLOPs | "
        "training wall s | tokens/s | chosen on validation |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    out += [model_row(n, m) for n, m in rows]
    out += [
        f"| {n} | reported elsewhere | | {v:.4f} | | | | | {p} | {fl} | | | |" for n, (v, p, fl) in NANOGPT_ROWS.items()
    ]
    feng = [*FENG.values(), *FENG_OTHERS.items()]
    out += [
        f"| Feng et al. 2024, {n} (3 layers, nanoGPT's setting) | reported elsewhere | | {v:.3f} | | | | | | | | | |"
        for n, v in feng
    ]
    out += ["", shakespeare_curves(rec), "", *shakespeare_targets(rec), *race_targets(models)]
    return out + samples(rec) + [""]


def model_row(n: str, m: dict) -> str:
    """A model's row of the table: its losses under both protocols, its size, cost and what validation chose."""
    det = m["kind"] in COUNTING or len(m["test_loss"]["seeds"]) == 1
    f = (lambda st, d=4: f"{st['mean']:.{d}f}") if det else (lambda st, d=4: pm(st, d))
    k = m.get("ensemble") or len(m["test_loss"]["seeds"])  # an ensemble is one figure of k seeds' runs
    seeds = "" if m["kind"] in COUNTING else f" ({k} seed{'s' if k > 1 else ''})"
    num = lambda v, fmt: "-" if v is None else format(v, fmt)
    klass = m.get("class") or classes.class_of(m)
    cores = f" ({m['cpu_cores']} cores)" if m.get("cpu_cores") else ""
    return (
        f"| {n}{seeds} | {klass} | {f(m['test_loss'])} | {windows_figure(m, 'test_loss_windows', klass)} | "
        f"{f(m['test_bits_per_char'], 3)} | {f(m['test_perplexity'], 3)} | {f(m['val_loss'])} | "
        f"{windows_figure(m, 'val_loss_windows', klass)} | {num(m.get('params'), ',')} | "
        f"{num(m.get('train_flop'), '.2e')} | {num(m.get('wall_seconds'), ',.0f')}{cores} | "
        f"{num(m.get('tokens_per_sec'), ',.0f')} | {chosen(m)} |"
    )


def samples(rec: dict) -> list[str]:
    """The record's samples from the best model by validation, each in a code block, with the command that prints
    them again (none when the record has none)."""
    if not rec.get("samples"):
        return []
    smp = rec["samples"]
    out = [
        "",
        f"Three samples from the best model by validation (`{Path(smp['run']).parent.name}`, final run "
        f"`{Path(smp['run']).name}`), prompt `{smp['prompt']}`, temperature {smp['temperature']}, "
        "sampling seeds "
        f"{', '.join(map(str, smp['seeds']))}; `{smp['command']}` prints each again:",
        "",
    ]
    for text in smp["texts"]:
        out += ["```", text, "```"]
    return out


def windows_figure(m: dict, key: str, klass: str) -> str:
    """A windows-protocol figure (mean ± std over seeds, ± its standard error over windows when one seed), or why
    there is none."""
    w = m.get(key)
    if not w:
        return no_windows(klass)
    if len(w["seeds"]) > 1:
        return pm(w, 4)
    return f"{w['mean']:.4f}" + (f" (± {w['se']:.4f})" if w.get("se") else "")


def curve_points(curve: list, epoch_flop: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(seconds, FLOPs, validation loss, protocol) of a wall curve: the windows figure where the run scored it,
    else the stream's; rows of earlier records are [seconds, stream loss], one per epoch (FLOPs: epoch_flop each)."""
    rows = [r if len(r) == 4 else [r[0], epoch_flop and epoch_flop * (i + 1), r[1], None] for i, r in enumerate(curve)]
    windowed = all(r[3] is not None for r in rows)
    col = 3 if windowed else 2
    as_array = lambda i: np.array([np.nan if r[i] is None else r[i] for r in rows], float)
    return as_array(0), as_array(1), as_array(col), "windows" if windowed else "stream"


def model_curves(rec: dict, levers: dict | None, shown=()) -> list[tuple[str, list, float | None]]:
    """(label, wall curve, FLOPs of one epoch) of each recurrent model's selection run and each lever's run but
    those named in `shown` (a lever run that is a model's selection run already drawn)."""
    out: list[tuple[str, list, float | None]] = [
        (f"{n} (selection run)", c, epoch_flop(m["config"], rec["split"]))
        for n, m in rec["models"].items()
        if classes.class_of(m) == classes.RECURRENT
        for c in m.get("wall_curves", [])
    ]
    for n, r in (levers or {}).get("levers", {}).items():
        if n in shown:
            continue
        out.append((f"lever {n}, {(levers or {})['epochs']} epochs", r["wall_curve"], None))
    return out


def epoch_flop(cfg: dict, split: dict) -> float:
    """Training FLOPs of one epoch of a selection run (on the train part): the model's FLOPs per token
    (`rnn_jax.flops`), times the minibatches every random offset gives."""
    per_token = flops.flop_per_token(config.from_dict(cfg), split["vocab_size"])
    tokens = data.min_batches(split["train"], cfg["batch_size"], cfg["num_steps"], cfg["sampling"])
    return float(per_token * tokens * cfg["batch_size"] * cfg["num_steps"])


def shakespeare_curves(rec: dict) -> str:
    """Time to quality: validation loss against training seconds and against training FLOPs for each recurrent
    model and lever, the counting models as lines, nanoGPT's baby GPT marked."""
    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    gpt_name, gpt = next(iter(NANOGPT.items()))
    shown = {n for n, m in rec["models"].items() if classes.class_of(m) == classes.RECURRENT}
    curves = [c for name in LEVER_RECORDS for c in model_curves({**rec, "models": {}}, load(name), shown)]
    for label, curve, per_epoch in model_curves(rec, None) + curves:
        t, flop, loss, protocol = curve_points(curve, per_epoch)
        ax_t.plot(t, loss, lw=1.5, label=f"{label}, {protocol}")
        if np.isfinite(flop).all():
            ax_f.plot(flop, loss, lw=1.5, label=f"{label}, {protocol}")
    for style, ev in (("--", classes.COUNTING_STATIC), (":", classes.COUNTING_ADAPTIVE)):
        b = classes.best_of(rec["models"], ev)
        if b:
            for ax in (ax_t, ax_f):
                ax.axhline(b[1]["val_loss"]["mean"], color="k", ls=style, lw=1, label=f"{b[0]} ({ev}, stream)")
    ax_t.axhline(gpt, color="r", ls="-.", lw=1, label=f"{gpt_name.split(' (')[0]}, {gpt} (its test part)")
    ax_f.plot([float(NANOGPT_ROWS[gpt_name][2])], [gpt], "r*", ms=12)
    ax_f.annotate(" nanoGPT baby GPT (its test part)", (float(NANOGPT_ROWS[gpt_name][2]), gpt), fontsize=7)
    ax_t.set(xlabel="training seconds", ylabel="validation loss (nats/char)")
    ax_f.set(xlabel="training FLOPs", xscale="log")
    for ax in (ax_t, ax_f):
        ax.grid(True, alpha=0.3)
    ax_t.legend(fontsize=6)
    fig.suptitle("Tiny Shakespeare: validation loss against time and compute", fontsize=10)
    fig.tight_layout()
    path = plots.figures_dir() / f"{rec['name']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return f"![Tiny Shakespeare: validation loss against time and compute]({path.relative_to(common.HERE)})"


def shakespeare_targets(rec: dict) -> list[str]:
    """The best model of each class by validation against the counting model of its class, and the best pure
    recurrent model against nanoGPT's reported baby GPT under nanoGPT's own protocol (windows) alone."""
    models = rec["models"]
    gpt_name, gpt = next(iter(NANOGPT.items()))
    lines = []
    for klass in (classes.RECURRENT, classes.COMBINED, classes.DYNAMIC):
        b, ref = classes.best_of(models, klass), classes.best_of(models, classes.REFERENCE[klass])
        if not b:
            continue
        t = b[1]["test_loss"]["mean"]
        vs = f", {t / ref[1]['test_loss']['mean']:.3f}x the {ref[0]}'s {ref[1]['test_loss']['mean']:.4f}" if ref else ""
        lines.append(f"Best {klass} model by validation: {b[0]}, test {t:.4f} nats as one stream{vs}.")
    best_w = classes.best_of(models, classes.RECURRENT, "val_loss_windows")
    if best_w and best_w[1].get("test_loss_windows"):
        w = best_w[1]["test_loss_windows"]
        n = len(w["seeds"])
        spread = (
            pm(w, 4) + f" over {n} seeds"
            if n > 1
            else f"{w['mean']:.4f} (one seed; windows' standard error {w['se']:.4f})"
        )
        lines.append(
            f"Under nanoGPT's protocol (windows), the best recurrent model by validation, {best_w[0]}, scores "
            f"{spread} nats ({w['mean'] - gpt:+.4f} against the {gpt:.4f} reported for the "
            f"{gpt_name.split(' (')[0]}); by position in the window: "
            + ", ".join(f"{k} {v:.3f}" for k, v in w["by_position"].items())
            + "."
        )
    else:
        lines.append(
            f"No recurrent model of this record has a windows figure yet, so none is compared with the "
            f"{gpt_name.split(' (')[0]}'s {gpt:.4f}."
        )
    b = classes.best_of({n: m for n, m in models.items() if n.startswith("rnn-tanh")}, classes.RECURRENT)
    static_count = classes.best_of(models, classes.COUNTING_STATIC)
    if b and static_count:
        t, ref = b[1]["test_loss"]["mean"], static_count[1]["test_loss"]["mean"]
        lines.append(
            f"The book's tanh RNN, regularised ({b[0]}): {t:.4f} against the {static_count[0]}'s {ref:.4f} "
            f"({'below' if t < ref else 'not below'} the best static n-gram)."
        )
    return [" ".join(lines)] if lines else []


def race_targets(models: dict) -> list[str]:
    """Each recurrence raced in residual blocks against what is reported for it (Feng et al.'s minGRU and minLSTM)
    and against nanoGPT's baby GPT, under nanoGPT's protocol (windows, the test part, mean over the final seeds)."""
    gpt_name, gpt = next(iter(NANOGPT.items()))
    raced = [
        (n, m)
        for n, m in models.items()
        if classes.class_of(m) == classes.RECURRENT
        and m["config"].get("block") == "residual"
        and m.get("test_loss_windows")
    ]
    if not raced:
        return []
    lines = []
    for n, m in sorted(raced, key=lambda nm: nm[1]["test_loss_windows"]["mean"]):
        w, cell = m["test_loss_windows"], m["config"]["cell"]
        k = len(w["seeds"])
        spread = pm(w, 4) if k > 1 else f"{w['mean']:.4f}"
        fig = f"{n}: {spread} ({k} seed{'s' * (k > 1)})"
        if cell in FENG:
            name, ref = FENG[cell]
            fig += f", {'below' if w['mean'] < ref else 'not below'} the {ref:.3f} Feng et al. report for {name}"
        lines.append(f"{fig}, {w['mean'] - gpt:+.4f} against the {gpt_name.split(' (')[0]}")
    return [
        "",
        "The recurrences' race, each in 3 residual blocks at the recipe's parameter count and within its training "
        "budget (`experiments/shakespeare_families.py`), test nats/char under windows: " + "; ".join(lines) + ".",
    ]
