"""Tiny Shakespeare as nanoGPT splits it: recurrent models against counting models, in nats per character.

    python experiments/shakespeare.py                 # counting baselines, then every model over 3 seeds
    python experiments/shakespeare.py --models lstm-1x512 --seeds 1
    python experiments/shakespeare.py --smoke         # two tiny models, 1 epoch, on a short slice (a check)

The corpus is char-rnn's tinyshakespeare.txt, every character kept (65 symbols). nanoGPT trains on the first
int(0.9 n) characters and reports loss on the rest; here that rest is the test part, scored once per final
model, each character given all the true text before it. Every choice is made on a validation part, the 5% of
the corpus just before the test part, by models that did not train on it: a selection run of each recurrent
model (seed 0) shows whether its epochs are enough and chooses dynamic evaluation's rule, step and segment and
the weight of its mixture with the n-gram; the n-gram's order and discount and PPM's variant and order are
chosen the same way. The final models then train, with those settings, on all of nanoGPT's 90% (validation
included, as nanoGPT's own models do), 3 seeds each, and are scored once on the test part at their last epoch.
Resumable: finished runs are kept, unfinished ones continued, and each run's scores are stored in its directory
(scores.json, token_losses.npz), so a test part is never scored twice for the same checkpoint.
Writes results/shakespeare.json (results/shakespeare_smoke.json with --smoke) for report.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

if __name__ == "__main__":  # run as a file: this checkout's experiments package, never one found elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import scored
from experiments.classes import class_of
from experiments.common import entry, parser, results_dir, runs_root, test_log, write
from experiments.counting import counting_models, stat
from experiments.heldout import parts, train
from experiments.shakespeare_families import FAMILIES, RACE_EPOCHS
from experiments.shakespeare_figures import (  # noqa: F401  (the record's figures; MIX_WEIGHTS read by tests)
    MIX_WEIGHTS,
    ensemble,
    flop_per_token,
    kn_losses,
    kn_window_losses,
    mix,
    mixture,
    training_flop,
    wall_curve,
    window_stat,
    with_figures,
)
from experiments.shakespeare_record import load_record, merged, print_models, samples, split_record
from rnn_jax import config, corpora, data, rundir, scoring, sweep, testlog
from rnn_jax import experiments as experiments_lib
from rnn_jax.files import read_json, read_metrics, write_atomic
from rnn_jax.runs import load_run

CORPUS = "shakespeare"
BASE = experiments_lib.EXPERIMENTS["shakespeare"]
# name -> overrides of BASE (the LSTM of --exp shakespeare)
MODELS: dict[str, dict[str, Any]] = {
    "lstm-1x512": {},
    # the book's cell and initialisation (with the scaled one the validation loss rose in epoch 2 at this step
    # size), regularised like the LSTM: lighter (dropout 0.1, no DropConnect) it learned slower (validation 1.844
    # against 1.660 at epoch 22 of the selection run, its gradients twice as large)
    # nanoGPT's protocol's candidate (experiments/shakespeare_levers.py): wider, a tenth of the rows starting each
    # minibatch from zeros, 32 epochs (4.4e14 training FLOPs, under a tenth of nanoGPT's baby GPT's)
    "lstm-1x768": {"hidden": 768, "reset_fraction": 0.1, "epochs": 32, "val_windows": 1280},
    "rnn-tanh-1x1024": {"cell": "rnn", "hidden": 1024, "init": "book", "forget_bias": 0.0, "epochs": 30},
}
# the race of the recurrences (experiments/shakespeare_families.py), each within the recipe's training budget
MODELS |= {n: {**FAMILIES[n], "epochs": e, "val_windows": 1280} for n, e in RACE_EPOCHS.items()}
SMOKE_MODELS: dict[str, dict[str, Any]] = {
    "lstm-1x32": {"hidden": 32, "epochs": 1, "batch_size": 16, "num_steps": 32},
    "rnn-tanh-1x32": {"cell": "rnn", "hidden": 32, "forget_bias": 0.0, "epochs": 1, "batch_size": 16, "num_steps": 32},
}
KN_ORDERS = range(3, 10)
ADAPTIVE_EVERY = 5000  # characters between refits of the adaptive n-gram
DYNAMIC_GRID: tuple[tuple[str, float, int], ...] = (
    ("rms", 1e-4, 50),
    ("rms", 2e-4, 50),
    ("rms", 4e-4, 50),
    ("rms", 2e-4, 100),
    ("sgd", 0.02, 50),
)
# nanoGPT's estimate_loss: 200 batches of 64 windows of 256 characters, each from an empty context (seed 0 here)
DRAW = {"windows": scoring.WINDOWS, "length": scoring.WINDOW_LENGTH, "seed": scoring.WINDOW_SEED}
SMOKE_DRAW = {"windows": 256, "length": 64, "seed": 0}


def split(data_dir: str | None, smoke: bool, root: Path) -> dict:
    """The corpus's parts as token ids, each with the text before it, and a decoder back to text. The smoke check
    uses the first 60,000 characters, written as a file of its own that its runs train on."""
    path = corpora.resolve_corpus(CORPUS, data_dir)
    if smoke:
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(root / "corpus.txt", corpora.read_text(path)[:60_000])
        path = root / "corpus.txt"
    tokens, vocab = data.load_corpus(path, -1, BASE.preprocess)
    return {
        **parts(tokens, vocab, BASE),
        "corpus": path,
        "sha1": corpora.sha1_of(path),
        "n": len(tokens),
        "draw": SMOKE_DRAW if smoke else DRAW,
    }


def scores(run_dir: Path, part: str, text: dict, setting: dict | None, *, best: bool) -> float:
    """The stream loss of one part under a finished run's checkpoint (experiments/scored.py keeps it)."""
    return scored.score(run_dir, part, text, setting, best=best, corpus=CORPUS)


def windows(run_dir: Path, part: str, text: dict, *, best: bool) -> np.ndarray:
    """The windows protocol's (windows, length) losses of one part under a finished run's checkpoint."""
    return scored.window_losses(run_dir, part, text, best=best, corpus=CORPUS, draw=text["draw"])


def dynamic_choice(run_dir: Path, text: dict, grid) -> tuple[dict, list[dict]]:
    """The dynamic-evaluation setting with the lowest validation loss for a selection run's best checkpoint."""
    rows = [
        {
            "rule": rule,
            "lr": lr,
            "segment": seg,
            "val_loss": scores(run_dir, "val", text, {"rule": rule, "lr": lr, "segment": seg}, best=True),
        }
        for rule, lr, seg in grid
    ]
    best = min(rows, key=lambda r: r["val_loss"])
    return {k: best[k] for k in ("rule", "lr", "segment")}, rows


def finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


def token_losses(run_dir: Path, part: str, text: dict, *, best: bool) -> np.ndarray:
    """-ln P of every character of one part as one stream under a finished run's checkpoint."""
    return scored.token_losses(run_dir, part, text, best=best, corpus=CORPUS)


def final_cfg(cfg: config.Config, seed: int) -> config.Config:
    """A final run of a model: seed `seed`, trained on validation too (nanoGPT's 90%), so with no validation part
    to score windows of."""
    return dataclasses.replace(cfg, val_fraction=0.0, seed=seed, val_windows=0)


def matching(cfg: config.Config, run_dir: Path) -> bool:
    """Whether run_dir is a finished run of exactly cfg (fields a resume may change aside), so that a record made
    from it states what the run did."""
    return finished(run_dir) and sweep.job_state("shakespeare", cfg, run_dir) == "done"


def rnn_models(name: str, cfg: config.Config, select: Path, finals: list[Path], text: dict, grid, kn) -> dict:
    """The entries of one recurrent model: static and dynamic evaluation of its final runs (settings chosen on
    validation with the selection run), the seeds' ensemble, and each final run mixed with the n-gram; the static
    ones under both protocols (stream and windows), dynamic evaluation under stream alone (it follows one stream)."""
    finals = [d for s, d in enumerate(finals) if matching(final_cfg(cfg, s), d)]  # run dirs seed_0, seed_1, ...
    if not matching(cfg, select) or not finals:
        print(f"{name}: no finished runs of this configuration under {select.parent}: not scored", flush=True)
        return {}
    setting, dyn_grid = dynamic_choice(select, text, grid)
    summaries = [read_json(d / "summary.json", "a finished run's summary") for d in finals]
    rows = read_metrics(select)
    common: dict[str, Any] = {
        "kind": "rnn",
        "config": config.to_dict(final_cfg(cfg, 0)),
        "seeds": [int(rundir.saved_config(d)["config"]["seed"]) for d in finals],
        "params": sum(int(np.prod(p.shape)) for p in jax.tree.leaves(load_run(finals[0])[2])),
        "wall_seconds": float(np.mean([s["wall_seconds"] for s in summaries])),
        "tokens_per_sec": float(np.mean([s["tokens_per_sec"] for s in summaries])),
        "cpu_cores": cores.pop() if len(cores := {s.get("cpu_cores") for s in summaries}) == 1 else None,
        "train_flop": training_flop(cfg, text, finals[0]),
        "selection": {
            "run": str(select),
            "best_epoch": int(min(rows, key=lambda r: r.get("val_loss", np.inf))["epoch"]),
            "epochs": cfg.epochs,
        },
        "wall_curves": [wall_curve(select, flop_per_token(cfg, text["vocab_size"]))],
    }
    entry = lambda ev, val, tests, extra: with_figures(
        {**common, "evaluation": ev, "test_loss": stat(tests), "val_loss": stat([val]), **extra}
    )
    val_w = windows(select, "val", text, best=True)
    tests_w = [windows(d, "test", text, best=False) for d in finals]
    out = {
        name: entry(
            "static",
            scores(select, "val", text, None, best=True),
            [scores(d, "test", text, None, best=False) for d in finals],
            {"val_loss_windows": window_stat([val_w]), "test_loss_windows": window_stat(tests_w)},
        ),
        f"{name} dynamic": entry(
            "dynamic",
            min(r["val_loss"] for r in dyn_grid),
            [scores(d, "test", text, setting, best=False) for d in finals],
            {"dynamic": {**setting, "grid": dyn_grid}, "test_loss_windows": None},
        ),
    }
    if kn:  # the mixture weight is chosen on validation (per protocol) with the selection run and the n-gram
        out.update(combined(name, common, entry, select, finals, text, kn, (val_w, tests_w)))
    return out


def combined(name, common, entry, select, finals, text, kn, windowed) -> dict:
    """Each final run mixed with the n-gram (the weight chosen on validation, per protocol), and the seeds'
    ensemble: the combined class."""
    val_nll = token_losses(select, "val", text, best=True)
    kn_val, kn_test = kn_losses(kn, text, "val"), kn_losses(kn, text, "test")
    tests = [token_losses(d, "test", text, best=False) for d in finals]
    val_w, tests_w = windowed
    kn_val_w, kn_test_w = kn_window_losses(kn, text, "val"), kn_window_losses(kn, text, "test")
    weight = min(MIX_WEIGHTS, key=lambda w: mix(val_nll, kn_val, w))
    weight_w = min(MIX_WEIGHTS, key=lambda w: mix(val_w, kn_val_w, w))
    out = {
        f"{name} + {kn['n']}-gram": entry(
            "static",
            mix(val_nll, kn_val, weight),
            [mix(t, kn_test, weight) for t in tests],
            {
                "mixture": {"ngram": kn, "weight": weight, "weight_windows": weight_w},
                "val_loss_windows": window_stat([mixture(val_w, kn_val_w, weight_w)]),
                "test_loss_windows": window_stat([mixture(t, kn_test_w, weight_w) for t in tests_w]),
            },
        )
    }
    if len(tests) > 1:
        out[f"{name} ensemble of {len(tests)}"] = entry(
            "static",
            float(val_nll.mean()),
            [float(ensemble(tests).mean())],
            {
                "ensemble": len(tests),
                "params": common["params"] * len(tests),
                "val_loss_windows": window_stat([val_w]),
                "test_loss_windows": window_stat([ensemble(tests_w)]),
            },
        )
    return out


def arguments(argv=None) -> argparse.Namespace:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="recurrent models to run")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="two tiny models, 1 epoch, 2 seeds, on a 60k-character slice (writes results/shakespeare_smoke.json)",
    )
    p.add_argument("--no-baselines", action="store_true", help="keep the counting models of the last results file")
    p.add_argument("--score-only", action="store_true", help="train nothing: score the runs that have finished")
    return p.parse_args(argv)


def counting_part(args, text: dict, previous: dict, kn_orders, every: int) -> tuple[dict, dict]:
    """The counting models (fit and chosen now, or with --no-baselines those of the last record), each static
    n-gram with its windows-protocol figures."""
    if args.no_baselines and previous:
        counting = {k: v for k, v in previous["models"].items() if v["kind"] != "rnn"}
        grids = previous.get("counting_grids", {})
    else:
        counting, grids = counting_models(
            text, CORPUS, kn_orders, every=every, refit=True, log=lambda s: print(s, flush=True)
        )
    for name, m in counting.items():
        m["class"] = class_of(m)
        if m["class"] == "counting static" and "test_loss_windows" not in m:
            m.update(ngram_windows(name, m, text))
        elif m["class"] == "counting adaptive":
            m["test_loss_windows"] = None  # it learns along one stream
    return counting, grids


def ngram_windows(name: str, m: dict, text: dict) -> dict:
    """A static n-gram's windows-protocol figures: validation (fit on train) and test (fit on train + val)."""
    kn = chosen_ngram({name: m})
    assert kn is not None
    val, test = kn_window_losses(kn, text, "val"), kn_window_losses(kn, text, "test")
    r = scoring.window_figures(test, text["draw"]["seed"])
    testlog.record(CORPUS, "test", name, m["config"], r, test_log(), protocol="windows")
    return {"val_loss_windows": window_stat([val]), "test_loss_windows": window_stat([test])}


def main(argv=None) -> None:
    args = arguments(argv)
    models_cfg, out, grid = {m: MODELS[m] for m in args.models}, "shakespeare", DYNAMIC_GRID
    kn_orders, every = KN_ORDERS, ADAPTIVE_EVERY
    if args.smoke:
        models_cfg, out, grid, kn_orders, every = SMOKE_MODELS, "shakespeare_smoke", DYNAMIC_GRID[:1], range(2, 4), 2000
        args.seeds = min(args.seeds, 2)
    t0 = time.perf_counter()
    root = runs_root(out, args) / out
    text = split(args.data_dir, args.smoke, root)
    previous = load_record(results_dir(out, args) / f"{out}.json")
    counting, grids = counting_part(args, text, previous, kn_orders, every)
    epochs = {"epochs": args.epochs} if args.epochs else {}
    named = {m: dataclasses.replace(BASE, **{**o, **epochs}) for m, o in models_cfg.items()}
    select = {m: root / m / "select" for m in named}
    finals = {m: [root / m / f"seed_{s}" for s in range(args.seeds)] for m in named}
    # every selection run first, then the final seeds in turn: a stopped sweep has something whole to show
    jobs = [("shakespeare", c, select[m]) for m, c in named.items()]
    jobs += [("shakespeare", final_cfg(c, s), finals[m][s]) for s in range(args.seeds) for m, c in named.items()]
    if not args.score_only:
        train(jobs, argparse.Namespace(**{**vars(args), "corpus": str(text["corpus"]) if args.smoke else None}))
    kn = chosen_ngram(counting)
    scored_now: dict = {}
    for m, c in named.items():
        scored_now.update(rnn_models(m, c, select[m], finals[m], text, grid, kn))
    models = merged(previous.get("models", {}), {**counting, **scored_now})
    trained = [m for m in named if m in scored_now]  # a model with a finished selection run and final seed
    best = min(trained, key=lambda k: models[k]["val_loss"]["mean"]) if trained else None
    result = {
        "name": out,
        "split": split_record(text),
        "models": models,
        "counting_grids": grids,
        "samples": samples(next(d for d in finals[best] if finished(d))) if best else previous.get("samples"),
        "test_scorings": testlog.counts(testlog.read(test_log()))[(CORPUS, "test")],
        "wall_seconds": time.perf_counter() - t0,
    }
    write(out, result, results_dir(out, args))
    print_models(models)


def chosen_ngram(counting: dict) -> dict | None:
    """The static n-gram validation chose, as the mixtures use it: {n, discount}."""
    static_kn = min(
        (v for v in counting.values() if v["kind"] == "ngram" and v["evaluation"] == "static"),
        key=lambda v: v["val_loss"]["mean"],
        default=None,
    )
    if static_kn is None:
        return None
    d = static_kn["config"]["discount"]
    return {"n": static_kn["config"]["n"], "discount": None if d == "Ney estimate" else d}


if __name__ == "__main__":
    entry(main)
