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
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.common import entry, parser, results_dir, runs_root, write
from experiments.counting import counting_models, stat
from experiments.heldout import parts, train
from rnn_jax import baselines, config, data, generate, model, rundir, testlog
from rnn_jax import evaluate as evaluate_lib

CORPUS = "shakespeare"
BASE = config.EXPERIMENTS["shakespeare"]
# name -> overrides of BASE (the LSTM of --exp shakespeare)
MODELS: dict[str, dict[str, Any]] = {
    "lstm-1x512": {},
    # the book's cell and initialisation (with the scaled one the validation loss rose in epoch 2 at this step
    # size), regularised like the LSTM: lighter (dropout 0.1, no DropConnect) it learned slower (validation 1.844
    # against 1.660 at epoch 22 of the selection run, its gradients twice as large)
    "rnn-tanh-1x1024": {"cell": "rnn", "hidden": 1024, "init": "book", "forget_bias": 0.0, "epochs": 30},
}
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
SAMPLES: dict[str, Any] = {"prompt": "ROMEO:", "num_chars": 300, "temperature": 0.8, "seeds": (0, 1, 2)}


def split(data_dir: str | None, smoke: bool, root: Path) -> dict:
    """The corpus's parts as token ids, each with the text before it, and a decoder back to text. The smoke check
    uses the first 60,000 characters, written as a file of its own that its runs train on."""
    path = data.resolve_corpus(CORPUS, data_dir)
    if smoke:
        root.mkdir(parents=True, exist_ok=True)
        rundir.write_atomic(root / "corpus.txt", data.read_text(path)[:60_000])
        path = root / "corpus.txt"
    tokens, vocab = data.load_corpus(path, -1, BASE.preprocess)
    return {
        **parts(tokens, vocab, BASE),
        "corpus": path,
        "sha1": data.sha1_of(path),
        "n": len(tokens),
    }


def scores(run_dir: Path, part: str, text: dict, setting: dict | None, *, best: bool) -> float:
    """The loss of one part (val or test) under a finished run's checkpoint (its best by validation, or its last),
    statically (setting None) or with dynamic evaluation's setting; stored in run_dir/scores.json, so a part is
    scored once per checkpoint and setting (every test scoring goes to the test log)."""
    path = run_dir / "scores.json"
    stored = json.loads(path.read_text()) if path.is_file() else []
    for row in stored:
        if row["part"] == part and row["setting"] == setting and row["best"] == best:
            return row["loss"]
    cfg, _, params, _ = rundir.load_run(run_dir, best=best)
    tokens, context = text[part]
    if setting is None:
        r = evaluate_lib.evaluate(params, tokens, cfg, context=context)
    else:
        r = evaluate_lib.dynamic_evaluate(params, tokens, cfg, **setting, context=context)
    if part == "test":
        testlog.record(
            CORPUS,
            "test",
            f"{run_dir.parent.name} {'dynamic' if setting else 'static'}",
            {"config": config.to_dict(cfg), "dynamic": setting, "run": run_dir.name},
            r,
        )
    rundir.write_json(path, [*stored, {"part": part, "setting": setting, "best": best, "loss": r["loss"]}])
    return r["loss"]


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


def wall_curve(run_dir: Path) -> list[list[float]]:
    """[training seconds so far, validation loss] per validated epoch (nanoGPT's way of showing a run)."""
    out, seconds = [], 0.0
    for r in rundir.read_metrics(run_dir):
        seconds += r.get("seconds") or 0.0
        if "val_loss" in r:
            out.append([seconds, r["val_loss"]])
    return out


def finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file()


def token_losses(run_dir: Path, part: str, text: dict, *, best: bool) -> np.ndarray:
    """-ln P of every character of one part under a finished run's checkpoint, stored in the run directory
    (token_losses_<part>.npz) so a test part is scored once for it."""
    path = run_dir / f"token_losses_{part}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["nll"]
    cfg, _, params, _ = rundir.load_run(run_dir, best=best)
    nll = evaluate_lib.token_losses(params, text[part][0], cfg, context=text[part][1])
    if part == "test":
        testlog.record(
            CORPUS,
            "test",
            f"{run_dir.parent.name} per-character",
            {"config": config.to_dict(cfg), "run": run_dir.name},
            {"loss": float(nll.mean())},
        )
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, nll=nll)
    tmp.replace(path)
    return nll


def mix(a: np.ndarray, b: np.ndarray, weight: float) -> float:
    """Mean -ln of weight * P_a + (1 - weight) * P_b, from per-character -ln P of the two models."""
    if weight >= 1 or weight <= 0:
        return float(np.mean(a if weight >= 1 else b))
    return float(-np.mean(np.logaddexp(np.log(weight) - a, np.log1p(-weight) - b)))


MIX_WEIGHTS = tuple(float(w) for w in np.round(np.arange(0.05, 1.0001, 0.05), 2))


def with_figures(m: dict) -> dict:
    """Adds perplexity and bits per character to a record's losses (nats per character)."""
    return {
        **m,
        "test_perplexity": stat(list(np.exp(m["test_loss"]["seeds"]))),
        "test_bits_per_char": stat(list(np.array(m["test_loss"]["seeds"]) / np.log(2))),
        "val_perplexity": stat(list(np.exp(m["val_loss"]["seeds"]))),
    }


def rnn_models(name: str, cfg: config.Config, select: Path, finals: list[Path], text: dict, grid, kn) -> dict:
    """The entries of one recurrent model: static and dynamic evaluation of its final runs (settings chosen on
    validation with the selection run), the seeds' ensemble, and each final run mixed with the n-gram."""
    finals = [d for d in finals if finished(d)]
    if not finished(select) or not finals:
        return {}
    setting, dyn_grid = dynamic_choice(select, text, grid)
    summaries = [rundir.read_json(d / "summary.json", "a finished run's summary") for d in finals]
    rows = rundir.read_metrics(select)
    common: dict[str, Any] = {
        "kind": "rnn",
        "config": config.to_dict(cfg),
        "seeds": [rundir.saved_config(d)["config"]["seed"] for d in finals],
        "params": sum(int(np.prod(p.shape)) for p in jax.tree.leaves(rundir.load_run(finals[0])[2])),
        "wall_seconds": float(np.mean([s["wall_seconds"] for s in summaries])),
        "tokens_per_sec": float(np.mean([s["tokens_per_sec"] for s in summaries])),
        "selection": {
            "run": str(select),
            "best_epoch": int(min(rows, key=lambda r: r.get("val_loss", np.inf))["epoch"]),
            "epochs": cfg.epochs,
        },
        "wall_curves": [wall_curve(select)],
    }
    entry = lambda ev, val, tests, extra: with_figures(
        {**common, "evaluation": ev, "test_loss": stat(tests), "val_loss": stat([val]), **extra}
    )
    out = {
        name: entry(
            "static",
            scores(select, "val", text, None, best=True),
            [scores(d, "test", text, None, best=False) for d in finals],
            {},
        ),
        f"{name} dynamic": entry(
            "dynamic",
            min(r["val_loss"] for r in dyn_grid),
            [scores(d, "test", text, setting, best=False) for d in finals],
            {"dynamic": {**setting, "grid": dyn_grid}},
        ),
    }
    if kn:  # the mixture weight is chosen on validation with the selection run and the n-gram fit on train
        val_nll = token_losses(select, "val", text, best=True)
        kn_val = kn_losses(kn, text, "val")
        weight = min(MIX_WEIGHTS, key=lambda w: mix(val_nll, kn_val, w))
        kn_test = kn_losses(kn, text, "test")
        tests = [token_losses(d, "test", text, best=False) for d in finals]
        out[f"{name} + {kn['n']}-gram"] = entry(
            "static",
            mix(val_nll, kn_val, weight),
            [mix(t, kn_test, weight) for t in tests],
            {"mixture": {"ngram": kn, "weight": weight}},
        )
        if len(tests) > 1:
            ens = float(-np.mean(np.logaddexp.reduce(-np.stack(tests), 0) - np.log(len(tests))))
            out[f"{name} ensemble of {len(tests)}"] = entry(
                "static",
                float(val_nll.mean()),
                [ens],
                {"ensemble": len(tests), "params": common["params"] * len(tests)},
            )
    return out


def kn_losses(kn: dict, text: dict, part: str) -> np.ndarray:
    """-ln P of every character of one part under the chosen n-gram, fit on all the text before that part."""
    tokens, context = text[part]
    ngram = baselines.fit_ngram(context, text["vocab_size"], kn["n"], kn["discount"])
    tail = context[len(context) - (kn["n"] - 1) :]
    return -baselines.log_probs(ngram, np.concatenate([tail, tokens]), len(tail))


def samples(run_dir: Path) -> dict:
    """Seeded samples from a final run, and the command that prints the same text."""
    cfg, vocab, params, _ = rundir.load_run(run_dir)
    out = []
    for seed in SAMPLES["seeds"]:
        ids = generate.generate_ids(
            params,
            jax.numpy.asarray(vocab.encode(SAMPLES["prompt"])),
            jax.random.key(seed),
            num_chars=SAMPLES["num_chars"],
            num_samples=1,
            temperature=SAMPLES["temperature"],
            top_k=0,
            spec=model.ModelSpec.from_config(cfg),
        )
        out.append(SAMPLES["prompt"] + vocab.decode(np.asarray(ids)[0]))
    run_dir = Path(os.path.relpath(run_dir, Path(__file__).resolve().parent.parent))  # from the repository
    command = (
        f"python -m rnn_jax.generate --run-dir {run_dir} --prefix '{SAMPLES['prompt']}' "
        f"--num-chars {SAMPLES['num_chars']} --temperature {SAMPLES['temperature']} --seed S"
    )
    return {"run": str(run_dir), "command": command, **SAMPLES, "texts": out}


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="recurrent models to run")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="two tiny models, 1 epoch, 2 seeds, on a 60k-character slice (writes results/shakespeare_smoke.json)",
    )
    p.add_argument("--no-baselines", action="store_true", help="keep the counting models of the last results file")
    p.add_argument("--score-only", action="store_true", help="train nothing: score the runs that have finished")
    args = p.parse_args(argv)
    models_cfg, out, grid = {m: MODELS[m] for m in args.models}, "shakespeare", DYNAMIC_GRID
    kn_orders, every = KN_ORDERS, ADAPTIVE_EVERY
    if args.smoke:
        models_cfg, out, grid, kn_orders, every = SMOKE_MODELS, "shakespeare_smoke", DYNAMIC_GRID[:1], range(2, 4), 2000
        args.seeds = min(args.seeds, 2)
    t0 = time.perf_counter()
    root = runs_root(out, args) / out
    text = split(args.data_dir, args.smoke, root)
    stored = results_dir(out, args) / f"{out}.json"
    previous = json.loads(stored.read_text()) if stored.is_file() else {}
    if args.no_baselines and previous:
        counting = {k: v for k, v in previous["models"].items() if v["kind"] != "rnn"}
        grids = previous.get("counting_grids", {})
    else:
        counting, grids = counting_models(
            text, CORPUS, kn_orders, every=every, refit=True, log=lambda s: print(s, flush=True)
        )
    epochs = {"epochs": args.epochs} if args.epochs else {}
    named = {m: dataclasses.replace(BASE, **{**o, **epochs}) for m, o in models_cfg.items()}
    select = {m: root / m / "select" for m in named}
    finals = {m: [root / m / f"seed_{s}" for s in range(args.seeds)] for m in named}
    final_cfg = lambda c, s: dataclasses.replace(c, val_fraction=0.0, seed=s)  # validation trained on too
    # every selection run first, then the final seeds in turn: a stopped sweep has something whole to show
    jobs = [("shakespeare", c, select[m]) for m, c in named.items()]
    jobs += [("shakespeare", final_cfg(c, s), finals[m][s]) for s in range(args.seeds) for m, c in named.items()]
    if not args.score_only:
        train(jobs, argparse.Namespace(**{**vars(args), "corpus": str(text["corpus"]) if args.smoke else None}))
    models = dict(counting)
    static_kn = min(
        (v for v in counting.values() if v["kind"] == "ngram" and v["evaluation"] == "static"),
        key=lambda v: v["val_loss"]["mean"],
        default=None,
    )
    kn = static_kn and {
        "n": static_kn["config"]["n"],
        "discount": None if static_kn["config"]["discount"] == "Ney estimate" else static_kn["config"]["discount"],
    }
    for m, c in named.items():
        models.update(rnn_models(m, c, select[m], finals[m], text, grid, kn))
    trained = [m for m in named if m in models]  # a model with a finished selection run and final seed
    best = min(trained, key=lambda k: models[k]["val_loss"]["mean"]) if trained else None
    result = {
        "name": out,
        "split": {
            "corpus": text["corpus"].name,
            "sha1": text["sha1"],
            "characters": text["n"],
            "vocab_size": text["vocab_size"],
            "train": int(len(text["train"])),
            "val": int(len(text["val"][0])),
            "test": int(len(text["test"][0])),
            "rule": "test = the last n - int(0.9 n) characters (nanoGPT's val); val = the "
            "5% of the corpus before it, chosen on by models that did not train on "
            "it; final models train on train + val (nanoGPT's 90%)",
        },
        "models": models,
        "counting_grids": grids,
        "samples": samples(next(d for d in finals[best] if finished(d))) if best else None,
        "test_scorings": testlog.counts(testlog.read())[(CORPUS, "test")],
        "wall_seconds": time.perf_counter() - t0,
    }
    write(out, result, results_dir(out, args))
    for name, m in sorted(models.items(), key=lambda kv: kv[1]["test_loss"]["mean"]):
        print(
            f"{name:<30} {m['evaluation']:<9} test {m['test_loss']['mean']:.4f} ± {m['test_loss']['std']:.4f} "
            f"nats  val {m['val_loss']['mean']:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    entry(main)
