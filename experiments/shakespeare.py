"""Tiny Shakespeare as nanoGPT splits it: recurrent models against counting models, in nats per character.

    python experiments/shakespeare.py                 # counting baselines, then every model over 3 seeds
    python experiments/shakespeare.py --models lstm-1x512 --seeds 1
    python experiments/shakespeare.py --smoke         # two tiny models, 1 epoch, on a short slice (a check)

The corpus is char-rnn's tinyshakespeare.txt, every character kept (65 symbols). nanoGPT trains on the first
int(0.9 n) characters and reports loss on the rest; here that rest is the test part, scored once per final
model, each character given all the true text before it. Every choice (a run's epoch: its best validation
checkpoint; dynamic evaluation's rule, step and segment; n-gram order and discount; PPM variant and order) is made
on a validation part: the 5% of the corpus just before the test part, cut from nanoGPT's training 90%. Final
models do not train on it. Resumable: finished runs are kept, unfinished ones continued, and each run's scores
are stored in its directory (scores.json), so a test part is never scored twice for the same checkpoint.
Writes results/shakespeare.json (results/shakespeare_smoke.json with --smoke) for report.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from common import RUNS, parser, write  # noqa: E402
from counting import counting_models, stat  # noqa: E402
from heldout import train  # noqa: E402

from rnn_jax import baselines, config, data, generate, model, rundir, testlog  # noqa: E402
from rnn_jax import evaluate as evaluate_lib  # noqa: E402

CORPUS = "shakespeare"
BASE = dataclasses.replace(config.EXPERIMENTS["shakespeare"], predict_every=0)
# name -> overrides of BASE (the LSTM of --exp shakespeare)
MODELS = {
    "lstm-1x512": {},
    # the book's cell and initialisation (with the scaled one the validation loss rose in epoch 2 at this step
    # size), regularised like the LSTM
    "rnn-tanh-1x1024": {"cell": "rnn", "hidden": 1024, "init": "book", "forget_bias": 0.0, "epochs": 30},
}
SMOKE_MODELS = {"lstm-1x32": {"hidden": 32, "epochs": 1, "batch_size": 16, "num_steps": 32},
                "rnn-tanh-1x32": {"cell": "rnn", "hidden": 32, "forget_bias": 0.0, "epochs": 1, "batch_size": 16,
                                  "num_steps": 32}}
KN_ORDERS = range(3, 10)
ADAPTIVE_EVERY = 5000  # characters between refits of the adaptive n-gram
DYNAMIC_GRID = (("rms", 1e-4, 50), ("rms", 2e-4, 50), ("rms", 4e-4, 50), ("rms", 2e-4, 100), ("sgd", 0.02, 50))
SAMPLES = {"prompt": "ROMEO:", "num_chars": 300, "temperature": 0.8, "seeds": (0, 1, 2)}


def split(data_dir: str | None, smoke: bool, root: Path) -> dict:
    """The corpus's parts as token ids, each with the text before it, and a decoder back to text. The smoke check
    uses the first 60,000 characters, written as a file of its own that its runs train on."""
    path = data.resolve_corpus(CORPUS, data_dir)
    if smoke:
        root.mkdir(parents=True, exist_ok=True)
        rundir.write_atomic(root / "corpus.txt", data.read_text(path)[:60_000])
        path = root / "corpus.txt"
    tokens, vocab = data.load_corpus(path, -1, BASE.preprocess)
    parts = data.splits(tokens, BASE)
    return {"train": parts["train"][0], "val": parts["val"], "test": parts["test"], "vocab_size": len(vocab),
            "decode": vocab.decode, "corpus": path, "sha1": data.sha1_of(path), "n": len(tokens)}


def scores(run_dir: Path, text: dict, dynamic: dict | None) -> dict:
    """Static (and with `dynamic` settings, dynamic) losses of a finished run's best checkpoint on val and test,
    stored in run_dir/scores.json: a test part already scored for this checkpoint and setting is read back."""
    path = run_dir / "scores.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    cfg, _, params, _ = rundir.load_run(run_dir, best=True)
    want = {"static": None, **({"dynamic": dynamic} if dynamic else {})}
    for kind, setting in want.items():
        if kind in stored and stored[kind]["setting"] == setting:
            continue
        figures = {}
        for part in ("val", "test"):
            tokens, context = text[part]
            if setting is None:
                r = evaluate_lib.evaluate(params, tokens, cfg, context=context)
            else:
                r = evaluate_lib.dynamic_evaluate(params, tokens, cfg, **setting, context=context)
            figures[part] = r["loss"]
            if part == "test":
                testlog.record(CORPUS, "test", f"{run_dir.parent.name} {kind}",
                               {"config": config.to_dict(cfg), "dynamic": setting, "run": run_dir.name}, r)
        stored[kind] = {"setting": setting, **figures}
        rundir.write_json(path, stored)
    return stored


def dynamic_choice(run_dir: Path, text: dict, grid) -> tuple[dict, list[dict]]:
    """The dynamic-evaluation setting with the lowest validation loss for one run's best checkpoint (the grid's
    scores are kept in run_dir/dynamic_grid.json)."""
    path = run_dir / "dynamic_grid.json"
    stored = json.loads(path.read_text()) if path.is_file() else []
    done = {(r["rule"], r["lr"], r["segment"]): r for r in stored}
    todo = [g for g in grid if tuple(g) not in done]
    if todo:
        cfg, _, params, _ = rundir.load_run(run_dir, best=True)
        for rule, lr, seg in todo:
            loss = evaluate_lib.dynamic_evaluate(params, text["val"][0], cfg, lr=lr, segment=seg, rule=rule,
                                                 context=text["val"][1])["loss"]
            done[(rule, lr, seg)] = {"rule": rule, "lr": lr, "segment": seg, "val_loss": loss}
        rundir.write_json(path, list(done.values()))
    rows = [done[tuple(g)] for g in grid]
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


def rnn_models(name: str, cfg: config.Config, dirs: list[Path], text: dict, grid) -> dict:
    """Static and dynamic entries of one model over its finished seeds (seed 0 chooses the dynamic setting)."""
    dirs = [d for d in dirs if finished(d)]
    if not dirs:
        return {}
    setting, dyn_grid = dynamic_choice(dirs[0], text, grid)
    runs = [scores(d, text, setting) for d in dirs]
    summaries = [rundir.read_json(d / "summary.json", "a finished run's summary") for d in dirs]
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(rundir.load_run(dirs[0])[2]))
    common = {"kind": "rnn", "config": config.to_dict(cfg), "params": n_params,
              "wall_seconds": float(np.mean([s["wall_seconds"] for s in summaries])),
              "tokens_per_sec": float(np.mean([s["tokens_per_sec"] for s in summaries])),
              "seeds": [rundir.saved_config(d)["config"]["seed"] for d in dirs],
              "best_epoch": [int(min(rundir.read_metrics(d), key=lambda r: r.get("val_loss", np.inf))["epoch"])
                             for d in dirs],
              "wall_curves": [wall_curve(d) for d in dirs]}

    def model_entry(kind: str, extra: dict) -> dict:
        test, val = [r[kind]["test"] for r in runs], [r[kind]["val"] for r in runs]
        return {**common, "evaluation": kind, "test_loss": stat(test), "val_loss": stat(val),
                "test_perplexity": stat(list(np.exp(test))),
                "test_bits_per_char": stat(list(np.array(test) / np.log(2))),
                "val_perplexity": stat(list(np.exp(val))), **extra}

    return {name: model_entry("static", {}),
            f"{name} dynamic": model_entry("dynamic", {"dynamic": {**setting, "grid": dyn_grid}})}


def token_losses(run_dir: Path, text: dict) -> dict:
    """-ln P of every val and test character under a finished run's best checkpoint, stored in the run directory
    (token_losses.npz) so the test part is scored once for it."""
    path = run_dir / "token_losses.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in ("val", "test")}
    cfg, _, params, _ = rundir.load_run(run_dir, best=True)
    out = {part: evaluate_lib.token_losses(params, text[part][0], cfg, context=text[part][1])
           for part in ("val", "test")}
    testlog.record(CORPUS, "test", f"{run_dir.parent.name} per-character", {"config": config.to_dict(cfg),
                                                                             "run": run_dir.name},
                   {"loss": float(out["test"].mean())})
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def mix(a: np.ndarray, b: np.ndarray, weight: float) -> float:
    """Mean -ln of weight * P_a + (1 - weight) * P_b, from per-character -ln P of the two models."""
    return float(-np.mean(np.logaddexp(np.log(weight) - a, np.log1p(-weight) - b))) if 0 < weight < 1 else \
        float(np.mean(a if weight >= 1 else b))


MIX_WEIGHTS = tuple(np.round(np.arange(0.05, 1.0001, 0.05), 2))


def combined_models(name: str, cfg: config.Config, dirs: list[Path], text: dict, kn: dict, base: dict) -> dict:
    """The seeds' ensemble (the mean of their next-character distributions) and each seed mixed with the static
    n-gram that validation chose (weight chosen on validation), from per-character losses."""
    dirs = [d for d in dirs if finished(d)]
    if not dirs or not kn:
        return {}
    runs = [token_losses(d, text) for d in dirs]
    common = {k: base[k] for k in ("kind", "config", "params", "wall_seconds", "tokens_per_sec", "seeds")}
    out = {}
    ngram = baselines.fit_ngram(text["train"], text["vocab_size"], kn["n"], kn["discount"])
    kn_loss = {}
    for part in ("val", "test"):
        tokens, context = text[part]
        tail = context[len(context) - (kn["n"] - 1):]
        kn_loss[part] = -baselines.log_probs(ngram, np.concatenate([tail, tokens]), len(tail))
    weights = [min(MIX_WEIGHTS, key=lambda w: mix(r["val"], kn_loss["val"], w)) for r in runs]
    figures = {part: [mix(r[part], kn_loss[part], w) for r, w in zip(runs, weights, strict=True)]
               for part in ("val", "test")}
    out[f"{name} + {kn['n']}-gram"] = {**common, "evaluation": "static", "test_loss": stat(figures["test"]),
                                        "val_loss": stat(figures["val"]), "mixture": {"ngram": kn, "weights": weights}}
    if len(runs) > 1:
        ens = {part: float(-np.mean(np.logaddexp.reduce(-np.stack([r[part] for r in runs]), 0) - np.log(len(runs))))
               for part in ("val", "test")}
        out[f"{name} ensemble of {len(runs)}"] = {**common, "evaluation": "static", "test_loss": stat([ens["test"]]),
                                                  "val_loss": stat([ens["val"]]), "params": base["params"] * len(runs),
                                                  "ensemble": len(runs)}
    for m in out.values():
        m.update(test_perplexity=stat(list(np.exp(m["test_loss"]["seeds"]))),
                 test_bits_per_char=stat(list(np.array(m["test_loss"]["seeds"]) / np.log(2))),
                 val_perplexity=stat(list(np.exp(m["val_loss"]["seeds"]))))
    return out


def samples(run_dir: Path) -> dict:
    """Seeded samples from a run's best checkpoint, and the command that prints the same text."""
    cfg, vocab, params, _ = rundir.load_run(run_dir, best=True)
    out = []
    for seed in SAMPLES["seeds"]:
        ids = generate.generate_ids(params, jax.numpy.asarray(vocab.encode(SAMPLES["prompt"])), jax.random.key(seed),
                                    num_chars=SAMPLES["num_chars"], num_samples=1,
                                    temperature=SAMPLES["temperature"], top_k=0, **model.options(cfg))
        out.append(SAMPLES["prompt"] + vocab.decode(np.asarray(ids)[0]))
    command = (f"python -m rnn_jax.generate --run-dir {run_dir} --best --prefix '{SAMPLES['prompt']}' "
               f"--num-chars {SAMPLES['num_chars']} --temperature {SAMPLES['temperature']} --seed S")
    return {"run": str(run_dir), "command": command, **SAMPLES, "texts": out}


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="recurrent models to run")
    p.add_argument("--smoke", action="store_true", help="two tiny models, 1 epoch, 2 seeds, on a 60k-character "
                   "slice (writes results/shakespeare_smoke.json)")
    p.add_argument("--no-baselines", action="store_true", help="keep the counting models of the last results file")
    args = p.parse_args(argv)
    models_cfg, out, grid = {m: MODELS[m] for m in args.models}, "shakespeare", DYNAMIC_GRID
    kn_orders, every = KN_ORDERS, ADAPTIVE_EVERY
    if args.smoke:
        models_cfg, out, grid, kn_orders, every = SMOKE_MODELS, "shakespeare_smoke", DYNAMIC_GRID[:1], range(2, 4), 2000
        args.seeds = min(args.seeds, 2)
    t0 = time.perf_counter()
    root = RUNS / out
    text = split(args.data_dir, args.smoke, root)
    previous = json.loads((RUNS.parent / "results" / f"{out}.json").read_text()) \
        if (RUNS.parent / "results" / f"{out}.json").is_file() else {}
    if args.no_baselines and previous:
        counting = {k: v for k, v in previous["models"].items() if v["kind"] != "rnn"}
        grids = previous.get("counting_grids", {})
    else:
        counting, grids = counting_models(text, CORPUS, kn_orders, every=every, log=lambda s: print(s, flush=True))
    named = {m: dataclasses.replace(BASE, **{**o, **({"epochs": args.epochs} if args.epochs else {})})
             for m, o in models_cfg.items()}
    dirs = {m: [root / m / f"seed_{s}" for s in range(args.seeds)] for m in named}
    # seed 0 of every model first, then the other seeds: a stopped sweep has a whole screening to show
    jobs = [("shakespeare", dataclasses.replace(c, seed=s), dirs[m][s]) for s in range(args.seeds)
            for m, c in named.items()]
    train(jobs, argparse.Namespace(**{**vars(args), "corpus": str(text["corpus"]) if args.smoke else None}))
    models = dict(counting)
    static_kn = min((v for v in counting.values() if v["kind"] == "ngram" and v["evaluation"] == "static"),
                    key=lambda v: v["val_loss"]["mean"], default=None)
    kn = static_kn and {"n": static_kn["config"]["n"], "discount": None if static_kn["config"]["discount"] ==
                        "Ney estimate" else static_kn["config"]["discount"]}
    for m, c in named.items():
        entries = rnn_models(m, c, dirs[m], text, grid)
        models.update(entries)
        if m in entries:
            models.update(combined_models(m, c, dirs[m], text, kn, entries[m]))
    trained = [m for m in named if m in models]  # a model with a finished seed
    best = min(trained, key=lambda k: models[k]["val_loss"]["mean"]) if trained else None
    result = {"name": out, "split": {"corpus": text["corpus"].name, "sha1": text["sha1"], "characters": text["n"],
                                     "vocab_size": text["vocab_size"], "train": int(len(text["train"])),
                                     "val": int(len(text["val"][0])), "test": int(len(text["test"][0])),
                                     "rule": "test = the last n - int(0.9 n) characters (nanoGPT's val); val = the "
                                             "5% of the corpus before it; final models do not train on val"},
              "models": models, "counting_grids": grids,
              "samples": samples(dirs[best][0]) if best else None,
              "test_scorings": testlog.counts(testlog.read())[(CORPUS, "test")],
              "wall_seconds": time.perf_counter() - t0}
    write(out, result)
    for name, m in sorted(models.items(), key=lambda kv: kv[1]["test_loss"]["mean"]):
        print(f"{name:<30} {m['evaluation']:<9} test {m['test_loss']['mean']:.4f} ± {m['test_loss']['std']:.4f} "
              f"nats  val {m['val_loss']['mean']:.4f}", flush=True)


if __name__ == "__main__":
    main()
