"""Counting baselines under a held-out protocol, in the two classes a recurrent model races.

Static (fitted on the training part, then frozen; they race the RNN's static evaluation):
interpolated Kneser-Ney (order and discount chosen on validation) and modified Kneser-Ney (Chen & Goodman
1998: three discounts per order from count-of-counts, no tuning; order chosen on validation).
Adaptive (they read the text they score, as dynamic evaluation does): PPMd, variants H and I, orders 2-16
(the order chosen on validation), scored as the code length of the scored text given everything before it;
and the chosen static KN model refitted on everything before each block of `every` characters.
Every choice is made on validation; each model's test part is scored once and recorded in the test log.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from experiments.common import test_log
from rnn_jax import baselines, stats, testlog

KN_DISCOUNTS = (None, 0.6, 0.7, 0.8, 0.9, 1.0)  # None: Ney's estimate per order
PPM_ORDERS = range(2, 17)
PPM_VARIANTS = ("H", "I")


def stat(values: list[float]) -> dict:
    """mean, sample std and the values themselves (over seeds; one value for a deterministic model)."""
    return {**stats.mean_std(values), "seeds": [float(v) for v in values]}


def entry(
    kind: str,
    evaluation: str,
    val: float,
    test: float,
    config: dict,
    *,
    params: int | None,
    seconds: float,
    tokens: int,
) -> dict:
    """One model's record (losses in nats per character)."""
    return {
        "kind": kind,
        "evaluation": evaluation,
        "test_loss": stat([test]),
        "val_loss": stat([val]),
        "test_perplexity": stat([float(np.exp(test))]),
        "test_bits_per_char": stat([test / np.log(2)]),
        "val_perplexity": stat([float(np.exp(val))]),
        "params": params,
        "wall_seconds": seconds,
        "tokens_per_sec": tokens / seconds if seconds else None,
        "config": config,
    }


def table_size(m: baselines.CountLM) -> int:
    """The number of probabilities a count model stores (its 'parameters')."""
    return int(sum(p.size for p in m.probs))


def score_test(corpus: str, name: str, cfg: dict, loss_fn) -> float:
    """A counting model's test loss (loss_fn()), recorded in the test log."""
    loss = loss_fn()
    testlog.record(corpus, "test", name, cfg, {"loss": loss, "perplexity": float(np.exp(loss))}, test_log())
    return loss


def static_ngrams(text: dict, corpus: str, orders, refit: bool, log) -> tuple[dict, dict]:
    """The interpolated and modified Kneser-Ney n-grams, order and discount chosen on validation, scored on test:
    (models by name, the validation grids)."""
    train, (val, val_ctx), (test, test_ctx), V = text["train"], text["val"], text["test"], text["vocab_size"]
    models, grids = {}, {}
    for label, discounts in (("KN", KN_DISCOUNTS), ("modified KN", ("modified",))):
        t0 = time.perf_counter()
        best, rows = baselines.select_ngram(train, val, V, orders, discounts, context=val_ctx)
        grids[label] = rows
        m = baselines.fit_ngram(test_ctx if refit else train, V, best["n"], best["discount"])
        cfg = {
            "n": best["n"],
            "discount": "Ney estimate" if best["discount"] is None else best["discount"],
            "fit_on": "train + val" if refit else "train",
        }
        name = f"{best['n']}-gram {label}"
        test_loss = score_test(corpus, name, cfg, lambda m=m: baselines.cross_entropy(m, test, test_ctx))
        models[name] = entry(
            "ngram",
            "static",
            best["loss"],
            test_loss,
            cfg,
            params=table_size(m),
            seconds=time.perf_counter() - t0,
            tokens=len(val) * len(discounts) * len(orders) + len(test),
        )
        log(f"{label}: order {best['n']} chosen on validation, test {test_loss:.4f} nats")
    return models, grids


def adaptive_ngram(text: dict, corpus: str, static: dict, every: int, log) -> dict:
    """The adaptive KN: the static KN (of either kind) that validation preferred, refitted every `every` characters
    as it reads; {name: model}."""
    (val, val_ctx), (test, test_ctx), V = text["val"], text["test"], text["vocab_size"]
    n, d = static["config"]["n"], static["config"]["discount"]
    d = None if d == "Ney estimate" else d
    t0 = time.perf_counter()
    whole = np.concatenate([test_ctx, test])
    val_whole = np.concatenate([val_ctx, val])
    cfg = {"n": n, "discount": static["config"]["discount"], "refit_every": every}
    val_loss = baselines.adaptive_cross_entropy(val_whole, len(val_ctx), V, n, d, every)
    test_loss = score_test(
        corpus,
        f"{n}-gram KN adaptive",
        cfg,
        lambda: baselines.adaptive_cross_entropy(whole, len(test_ctx), V, n, d, every),
    )
    model = entry(
        "ngram",
        "adaptive",
        val_loss,
        test_loss,
        cfg,
        params=None,
        seconds=time.perf_counter() - t0,
        tokens=len(val) + len(test),
    )
    log(f"adaptive {n}-gram KN (refit every {every}): test {test_loss:.4f} nats")
    return {f"{n}-gram KN adaptive": model}


def ppm_models(text: dict, corpus: str, log) -> tuple[dict, list[dict]]:
    """PPMd of each variant, its order chosen on validation: the code length of the text given everything before
    it; (models by name, the validation grid)."""
    decode = text["decode"]
    (val, val_ctx), (test, test_ctx) = text["val"], text["test"]
    val_text, val_before, test_text, test_before = decode(val), decode(val_ctx), decode(test), decode(test_ctx)
    rows: list[dict[str, Any]] = []
    for variant in PPM_VARIANTS:
        for order in PPM_ORDERS:
            rows.append(
                {
                    "variant": variant,
                    "order": order,
                    "loss": baselines.ppm_cross_entropy(val_before, val_text, order, variant),
                }
            )
    models = {}
    for variant in PPM_VARIANTS:
        t0 = time.perf_counter()
        best = min((r for r in rows if r["variant"] == variant), key=lambda r: r["loss"])
        cfg = {"variant": variant, "order": best["order"], "context": "all the text before the scored part"}
        name = f"PPMd {variant} order {best['order']}"
        test_loss = score_test(
            corpus,
            name,
            cfg,
            lambda b=best, v=variant: baselines.ppm_cross_entropy(test_before, test_text, b["order"], v),
        )
        models[name] = entry(
            "ppm",
            "adaptive",
            best["loss"],
            test_loss,
            cfg,
            params=None,
            seconds=time.perf_counter() - t0,
            tokens=len(test),
        )
        log(f"PPMd {variant}: order {best['order']} chosen on validation, test {test_loss:.4f} nats")
    return models, rows


def counting_models(
    text: dict, corpus: str, orders, *, every: int, refit: bool = False, log=print
) -> tuple[dict, dict]:
    """The static and adaptive counting models of one split. `text`: train ids, (val, context), (test, context),
    vocab_size and `decode` (ids -> str). refit: the static models scored on test are fit, with the order and
    discount chosen on validation, on all the text before the test part (validation included); else on train.
    Returns (models by name, the validation grids)."""
    models, grids = static_ngrams(text, corpus, orders, refit, log)
    preferred = min((m for m in models.values()), key=lambda m: m["val_loss"]["mean"])
    models.update(adaptive_ngram(text, corpus, preferred, every, log))
    ppm, grids["PPMd"] = ppm_models(text, corpus, log)
    models.update(ppm)
    return models, grids
