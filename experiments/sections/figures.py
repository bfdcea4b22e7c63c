"""A record's figures in words: mean ± std over seeds, the best held-out point, comparisons between records."""

from __future__ import annotations

import math

import numpy as np

from experiments.common import load
from rnn_jax import stats


def loaded(name: str) -> dict:
    """load() of a record the caller has seen exists."""
    rec = load(name)
    assert rec is not None, name
    return rec


def pm(stat: dict | None, digits: int = 3) -> str:
    """mean ± std of a figure, or - where there is none."""
    if not stat:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def best_val(record: dict) -> dict | None:
    """Mean ± std over seeds of the lowest held-out perplexity on each seed's curve, and the mean epoch."""
    best = [
        min(r["val_curve"], key=lambda ev: ev[1])
        for r in record["seeds"]
        if r["diverged_epoch"] is None and r["val_curve"]
    ]
    if not best:
        return None
    vals = [b[1] for b in best]
    return {**stats.mean_std(vals), "epoch": float(np.mean([b[0] for b in best]))}


def at_epoch(record: dict, epoch: int) -> dict | None:
    """Mean ± std over seeds of the training perplexity after `epoch` epochs (seeds that got there)."""
    vals = [r["curve"][epoch - 1] for r in record["seeds"] if len(r["curve"]) >= epoch]
    if not vals:
        return None
    return stats.mean_std(vals)


def mean_of(name: str, key: str = "perplexity") -> float:
    """The mean over seeds of a record's figure (nan when there is none)."""
    rec = load(name)
    return rec["summary"][key]["mean"] if rec and key in rec["summary"] else math.nan


def diverged(name: str) -> bool:
    """Whether any seed of the record diverged."""
    rec = load(name)
    return bool(rec and rec["summary"]["diverged"])


def versus(a: str, b: str) -> str:
    """'lower than' / 'higher than' / 'level with' by final perplexity, level when within one std of each."""
    ra, rb = load(a), load(b)
    if not ra or not rb or "perplexity" not in ra["summary"] or "perplexity" not in rb["summary"]:
        return "not comparable with"
    x, y = ra["summary"]["perplexity"], rb["summary"]["perplexity"]
    if min(x["n"], y["n"]) < 2:
        return "from a single surviving seed, against"
    if abs(x["mean"] - y["mean"]) <= x["std"] + y["std"]:
        return "level with (within one standard deviation of)"
    return "lower than" if x["mean"] < y["mean"] else "higher than"


def diverged_text(name: str) -> str:
    """How many seeds of the record diverged, and at which epochs."""
    rec = load(name)
    if rec is None:
        return "not run"
    d = rec["summary"]["diverged"]
    return f"{len(d)} of {rec['summary']['seeds']} seeds diverged" + (
        f" (at epochs {', '.join(str(e) for _, e in d)})" if d else ""
    )


def seeds_text(rec: dict) -> str:
    """The seeds a record ran, and how many diverged."""
    s = rec["summary"]
    d = s["diverged"]
    return f"{s['seeds']} seeds" + (f", {len(d)} diverged" if d else "")
