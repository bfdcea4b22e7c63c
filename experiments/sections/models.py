"""Words shared by the model tables (held-out race, tiny Shakespeare): what validation chose, the test log's count."""

from __future__ import annotations

from experiments import classes
from experiments.common import test_log
from rnn_jax import testlog

COUNTING = ("ngram", "ppm")


def best_by_val(models: dict, kinds, evaluation: str) -> tuple[str, dict] | None:
    """The model of these kinds and evaluation class with the lowest validation loss, as (name, record)."""
    ms = [(n, m) for n, m in models.items() if m["kind"] in kinds and m["evaluation"] == evaluation]
    return min(ms, key=lambda nm: nm[1]["val_perplexity"]["mean"]) if ms else None


def chosen(m: dict) -> str:
    """What validation chose for a model, in a few words."""
    if m["kind"] == "ppm":
        return f"variant {m['config']['variant']}, order {m['config']['order']}"
    if m["kind"] == "ngram":
        text = f"order {m['config']['n']}, discount {m['config']['discount']}"
        text += f", fit on {m['config']['fit_on']}" if "fit_on" in m["config"] else ""
        return text + (f", refit every {m['config']['refit_every']}" if "refit_every" in m["config"] else "")
    text = (
        f"{m['regulariser']}, epoch {m['best_epoch']['mean']:.0f}"
        if "regulariser" in m
        else (
            f"{m['selection']['epochs']} epochs (the selection run's best: {m['selection']['best_epoch']})"
            if "selection" in m
            else ""
        )
    )
    if m["evaluation"] == "dynamic":
        d = m["dynamic"]
        text += f"; {d['rule']} step {d['lr']:g}, segments of {d['segment']}"
    if "mixture" in m:
        text += f"; weight {m['mixture']['weight']} on the RNN, the rest on the {m['mixture']['ngram']['n']}-gram"
    if "ensemble" in m:
        text += f"; the mean of {m['ensemble']} seeds' distributions"
    return text


def no_windows(klass: str) -> str:
    """Why a model has no windows figure: its class scores only a stream, or it was not scored so."""
    return "stream only" if klass in classes.STREAM_ONLY else "not scored"


def test_scorings(corpus: str, rec: dict) -> list[str]:
    """How many times this table's test part has been scored: the test log's count, and earlier sweeps'."""
    logged = testlog.counts(testlog.read(test_log()))[(corpus, "test")]
    prior = rec.get("prior_test_scorings")
    text = f"Test-part scorings recorded in `results/test_log.jsonl`: {logged}."
    if prior:
        text += (
            f" Before the log existed, {prior['sweeps']} sweeps (results committed in "
            f"{', '.join(prior['commits'])}) scored this test part {prior['model_seed_scorings']} times in all "
            "(each model of their tables, once per seed), while the screening grew between them; the "
            "recurrent figures below come from the last of them."
        )
    return [text]
