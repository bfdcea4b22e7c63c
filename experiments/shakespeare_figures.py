"""The figures of the tiny Shakespeare record's entries: windows statistics over seeds, mixtures and ensembles of
per-character losses, the n-gram's losses under both protocols, training FLOPs and a run's curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.classes import class_of
from experiments.counting import stat
from rnn_jax import baselines, config, flops, rundir, scoring
from rnn_jax.files import read_metrics


def wall_curve(run_dir: Path, flop_per_token: float | None = None) -> list[list[float | None]]:
    """[training seconds so far, training FLOPs so far, validation loss (stream), validation loss (windows, when the
    run scored it: --val-windows)] per validated epoch (nanoGPT's way of showing a run); FLOPs None when not given."""
    cfg = config.from_dict(rundir.saved_config(run_dir)["config"])
    out, seconds = [], 0.0
    for r in read_metrics(run_dir):
        seconds += r.get("seconds") or 0.0
        if "val_loss" in r:
            flop = flop_per_token * r["step"] * cfg.batch_size * cfg.num_steps if flop_per_token else None
            out.append([seconds, flop, r["val_loss"], r.get("val_loss_windows")])
    return out


def mixture(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """-ln of weight * P_a + (1 - weight) * P_b, from per-character -ln P of the two models (any shape)."""
    if weight >= 1 or weight <= 0:
        return a if weight >= 1 else b
    return -np.logaddexp(np.log(weight) - a, np.log1p(-weight) - b)


def mix(a: np.ndarray, b: np.ndarray, weight: float) -> float:
    """The mean loss of `mixture`."""
    return float(np.mean(mixture(a, b, weight)))


MIX_WEIGHTS = tuple(float(w) for w in np.round(np.arange(0.05, 1.0001, 0.05), 2))


def with_figures(m: dict) -> dict:
    """Adds perplexity and bits per character to a record's losses (nats per character), and its class."""
    return {
        **m,
        "test_perplexity": stat(list(np.exp(m["test_loss"]["seeds"]))),
        "test_bits_per_char": stat(list(np.array(m["test_loss"]["seeds"]) / np.log(2))),
        "val_perplexity": stat(list(np.exp(m["val_loss"]["seeds"]))),
        "class": class_of(m),
    }


def window_stat(nlls: list[np.ndarray]) -> dict:
    """`stat` over seeds of the windows protocol's loss, with each seed's standard error over its windows and the
    standard error of the seeds' mean from the windows drawn (`se`), and the mean loss by window position."""
    figs = [scoring.window_figures(n) for n in nlls]
    se = [f["se"] for f in figs]
    return {
        **stat([f["loss"] for f in figs]),
        "se": float(np.sqrt(np.sum(np.square(se))) / len(se)),
        "se_seeds": se,
        "by_position": {k: float(np.mean([f["by_position"][k] for f in figs])) for k in figs[0]["by_position"]},
        "windows": figs[0]["windows"],
        "window_length": figs[0]["window_length"],
    }


def ensemble(nlls: list[np.ndarray]) -> np.ndarray:
    """-ln of the mean probability the models give each character, from each model's -ln P."""
    return -(np.logaddexp.reduce(-np.stack(nlls), 0) - np.log(len(nlls)))


def flop_per_token(cfg: config.Config, vocab_size: int) -> float:
    """Training FLOPs per token of every matrix product of the model (`rnn_jax.flops`), blocks included."""
    return float(flops.flop_per_token(cfg, vocab_size))


def training_flop(cfg: config.Config, text: dict, run_dir: Path) -> float:
    """Training compute of a run: flop_per_token times the tokens it trained on (updates x batch x steps)."""
    steps = max((r["step"] for r in read_metrics(run_dir)), default=0)
    return flop_per_token(cfg, text["vocab_size"]) * steps * cfg.batch_size * cfg.num_steps


def kn_window_losses(kn: dict, text: dict, part: str) -> np.ndarray:
    """The n-gram's windows-protocol losses of one part (fit on all the text before the part)."""
    tokens, context = text[part]
    ngram = baselines.fit_ngram(context, text["vocab_size"], kn["n"], kn["discount"])
    d = text["draw"]
    starts = scoring.window_starts(len(tokens), d["windows"], d["length"], d["seed"])
    return baselines.window_losses(ngram, tokens, starts, d["length"])


def kn_losses(kn: dict, text: dict, part: str) -> np.ndarray:
    """-ln P of every character of one part under the chosen n-gram, fit on all the text before that part."""
    tokens, context = text[part]
    ngram = baselines.fit_ngram(context, text["vocab_size"], kn["n"], kn["discount"])
    tail = context[len(context) - (kn["n"] - 1) :]
    return -baselines.log_probs(ngram, np.concatenate([tail, tokens]), len(tail))
