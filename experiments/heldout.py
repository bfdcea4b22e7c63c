"""Beating counting: recurrent models against smoothed character n-grams under one held-out protocol.

    python experiments/heldout.py            # screening (1 seed), then the chosen configurations over 3 seeds
    python experiments/heldout.py --smoke    # a reduced sweep (two small configurations, 2 epochs, 2 seeds)

The whole book is split by position into train / validation / test (80 / 10 / 10). Every choice is made on
validation: each run's epoch (its best-by-validation checkpoint), each model family's hyperparameters (a
one-seed screening), the step size and segment length of dynamic evaluation, the n-gram order and discount.
Each final model's test split is scored once per setting, at the end (the test log holds every scoring,
earlier ones included). Every model is fit on the training part only; test text is scored
as one stream continuing the true text before it (train + validation) for the RNNs and the n-grams alike.
Writes results/heldout.json ("models": one entry per model) for report.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

if __name__ == "__main__":  # run as a file: this checkout's experiments package, never one found elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.common import entry, fresh, load, parser, placement, results_dir, runs_root, test_log, write
from experiments.counting import counting_models, stat
from experiments.heldout_grid import BASE, DRAW, DYNAMIC_SEGMENTS, DYNAMIC_STEPS, FAMILIES, NGRAM_ORDERS, SMOKE_FAMILIES
from rnn_jax import config, corpora, data, heldout, model, scoring, stats, sweep, testlog
from rnn_jax.files import read_metrics
from rnn_jax.runs import load_run


def corpus(data_dir: str | None) -> dict:
    """Token ids of the three parts, each with the text before it, and the vocabulary size."""
    tokens, vocab = data.load_corpus(corpora.resolve_corpus(None, data_dir))
    return parts(tokens, vocab, BASE)


def parts(tokens: np.ndarray, vocab: data.Vocab, cfg) -> dict:
    """cfg's train, val and test parts of the token ids (val and test each with the text before it), the vocabulary
    size and a decoder back to text."""
    split = data.splits(tokens, cfg)
    return {
        "train": split["train"][0],
        "val": split["val"],
        "test": split["test"],
        "vocab_size": len(vocab),
        "decode": vocab.decode,
    }


def ngram_models(text: dict, orders=None) -> dict:
    """The counting models of both classes (experiments/counting.py), each chosen on validation, scored once on
    test; fit on train only (the adaptive ones also read the text before what they score)."""
    models, grids = counting_models(
        text, "timemachine", orders or NGRAM_ORDERS, every=200, log=lambda s: print(s, flush=True)
    )
    return {"models": models, "grid": grids}


def with_losses(models: dict) -> dict:
    """Each model's test and validation loss in nats per character (ln of its perplexities, seed by seed)."""
    ln = lambda st: {**stats.mean_std(np.log(st["seeds"])), "seeds": [float(np.log(v)) for v in st["seeds"]]}
    return {
        n: {
            **m,
            "test_loss": m.get("test_loss") or ln(m["test_perplexity"]),
            "val_loss": m.get("val_loss") or ln(m["val_perplexity"]),
        }
        for n, m in models.items()
    }


def screen(families: dict, args, root: Path) -> dict:
    """One seed of every (family, regulariser); returns name -> (cfg, seed-0 run dir, best validation perplexity)."""
    epochs = {"epochs": args.epochs} if args.epochs else {}
    named = {
        f"{fam} {reg}": dataclasses.replace(BASE, **{**fk, **rk, **epochs})
        for fam, (fk, regs) in families.items()
        for reg, rk in regs.items()
    }
    dirs = {name: root / name.replace(" ", "_") / "seed_0" for name in named}
    train([("heldout", cfg, dirs[name]) for name, cfg in named.items()], args)
    return {name: (cfg, dirs[name], best_val(dirs[name])) for name, cfg in named.items()}


def train(jobs: list, args) -> None:
    """Runs the jobs (pinned, one per core), skipping runs already finished with that config and resuming those
    finished with fewer epochs, so a sweep that was stopped, or lengthened, trains only what is missing."""
    done = sum(sweep.job_state(exp, cfg, run_dir) == "done" for exp, cfg, run_dir in jobs)
    print(f"training {len(jobs) - done} runs ({done} already done)", flush=True)
    where = placement(getattr(args, "placement", "per-core"))
    print(f"runs {'one at a time on every core' if where else 'one per core, pinned'}", flush=True)
    sweep.run_jobs(jobs, corpus=getattr(args, "corpus", None), data_dir=args.data_dir, **where)


def best_val(run_dir: Path) -> float:
    return min((v for _, v in val_curve(run_dir)), default=float("inf"))


def choose(screened: dict, families: dict) -> dict:
    """Per family, the regulariser with the lowest best validation perplexity of the screening seed."""
    return {
        fam: min(((n, v) for n, v in screened.items() if n.startswith(fam + " ")), key=lambda kv: kv[1][2])
        for fam in families
    }


def final_runs(chosen: dict, args, root: Path) -> dict:
    """Seeds 1.. of each chosen configuration (seed 0 is the screening run); name -> (cfg, run dirs by seed)."""
    jobs, out = [], {}
    for fam, (name, (cfg, seed0_dir, _)) in chosen.items():
        dirs = [seed0_dir] + [seed0_dir.parent / f"seed_{s}" for s in range(1, args.seeds)]
        jobs += [("heldout", dataclasses.replace(cfg, seed=s), d) for s, d in enumerate(dirs) if s]
        out[fam] = (name, cfg, dirs)
    train(jobs, args)
    return out


def dynamic_choice(cfg, params, text: dict, steps, segments) -> tuple[dict, list[dict]]:
    """The (rule, lr, segment) with the lowest validation perplexity for one model (seed 0's best checkpoint)."""
    spec = model.ModelSpec.from_config(cfg)

    def score(rule, lr, seg) -> float:
        try:
            return heldout.dynamic_evaluate(
                params, text["val"][0], spec, lr=lr, segment=seg, rule=rule, context=text["val"][1]
            )["perplexity"]
        except scoring.NonFinite:  # a step size too large for this model: never chosen
            return float("inf")

    grid = [
        {"rule": rule, "lr": lr, "segment": seg, "val_perplexity": score(rule, lr, seg)}
        for rule, lr in steps
        for seg in segments
    ]
    return min(grid, key=lambda r: r["val_perplexity"]), grid


def rnn_models(fam: str, name: str, cfg, dirs: list[Path], text: dict, args) -> dict:
    """Static and dynamic entries of one family: its runs' best checkpoints scored on val, then once on test."""
    runs = [load_run(d, best=True)[::2] for d in dirs]  # (cfg, params) of each seed's best checkpoint
    scored = [(model.ModelSpec.from_config(c), p) for c, p in runs]  # (spec, params)
    static = {
        split: [heldout.evaluate(p, text[split][0], s, context=text[split][1]) for s, p in scored]
        for split in ("val", "test")
    }
    dyn, grid = dynamic_choice(*runs[0], text, args.dynamic_steps, args.dynamic_segments)  # type: ignore[call-arg]  # runs[0] is (cfg, params)
    kw = {k: dyn[k] for k in ("rule", "lr", "segment")}
    dynamic = {
        split: [heldout.dynamic_evaluate(p, text[split][0], s, **kw, context=text[split][1]) for s, p in scored]
        for split in ("val", "test")
    }
    draw = getattr(args, "windows_draw", DRAW)
    windows = {
        split: [heldout.evaluate_windows(p, text[split][0], s, **draw) for s, p in scored] for split in ("val", "test")
    }
    for d, (c, _), st, dy, w in zip(dirs, runs, static["test"], dynamic["test"], windows["test"], strict=True):
        for label, r, protocol in (("static", st, "stream"), ("dynamic", dy, "stream"), ("static", w, "windows")):
            details = {"config": config.to_dict(c), "run": d.name, "dynamic": kw if label == "dynamic" else None}
            testlog.record("timemachine", "test", f"{fam} {label}", details, r, test_log(), protocol=protocol)
    curves = [[v for _, v in r] for r in (val_curve(d) for d in dirs)]
    common = {
        "kind": "rnn",
        "config": config.to_dict(cfg),
        "regulariser": name.split(" ", 1)[1],
        "best_epoch": stat([int(np.argmin(c)) + 1 for c in curves]),
        "val_curves": curves,
    }
    entry = lambda figures, extra: {
        **common,
        **extra,
        "test_perplexity": stat([r["perplexity"] for r in figures["test"]]),
        "test_bits_per_char": stat([r["bits_per_char"] for r in figures["test"]]),
        "val_perplexity": stat([r["perplexity"] for r in figures["val"]]),
    }
    return {
        fam: entry(
            static,
            {
                "evaluation": "static",
                "val_loss_windows": window_losses(windows["val"]),
                "test_loss_windows": window_losses(windows["test"]),
            },
        ),
        f"{fam} dynamic": entry(
            dynamic, {"evaluation": "dynamic", "dynamic": {**dyn, "grid": grid}, "test_loss_windows": None}
        ),
    }


def window_losses(figures: list[dict]) -> dict:
    """The windows protocol's loss over seeds (nats per character), with each seed's standard error over windows."""
    return {
        **stat([r["loss"] for r in figures]),
        "se_seeds": [r["se"] for r in figures],
        "windows": figures[0]["windows"],
    }


def val_curve(run_dir: Path) -> list:
    return [(r["epoch"], r["val_perplexity"]) for r in read_metrics(run_dir) if "val_perplexity" in r]


# The test part was scored before the test log existed, by three sweeps (the committed results of 2fd37d3, ebcc41e and
# a8ab222; 1092755 holds the same figures as 2fd37d3), each scoring every model of its table once per seed, while
# the screening grew between them (a cosine step size, a 300-epoch tanh run, a stronger regulariser).
PROTOCOL = (
    "80/10/10 by position; choices on validation; each final model's test part scored once per setting, at the end "
    "(earlier scorings of this test part, while the study was built: prior_test_scorings; every scoring is in the "
    "test log)"
)
PRIOR_SCORINGS = {"sweeps": 3, "commits": ["2fd37d3", "ebcc41e", "a8ab222"], "model_seed_scorings": 15 + 33 + 33}


def refresh_counting(out: str, text: dict, t0: float, orders=None) -> None:
    """Replaces the counting models of results/<out>.json with both classes, adds nats-per-character losses to the
    recorded recurrent ones, and writes it back."""
    rec = load(out)
    if rec is None:
        raise SystemExit(f"error: no results/{out}.json to refresh; run the whole sweep first")
    ngrams = ngram_models(text, orders)
    rnn = {n: m for n, m in rec["models"].items() if m["kind"] == "rnn"}
    rec.update(
        models=with_losses({**ngrams["models"], **rnn}),
        ngram_grid=ngrams["grid"],
        prior_test_scorings=PRIOR_SCORINGS,
        counting_seconds=time.perf_counter() - t0,
    )
    write(out, rec)
    for name, m in sorted(rec["models"].items(), key=lambda kv: kv[1]["test_loss"]["mean"]):
        print(f"{name:<32} {m['evaluation']:<9} test {m['test_perplexity']['mean']:.3f}", flush=True)


def build_parser():
    """The scripts' common flags and the sweep's own."""
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a reduced sweep: two tiny configurations, 2 epochs, "
        "2 seeds, a 2x2 dynamic grid, n-grams up to 4 (writes results/smoke/heldout_smoke.json)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="retrain everything (default: keep the finished runs of unchanged configurations in runs/heldout/)",
    )
    p.add_argument(
        "--counting-only",
        action="store_true",
        help="refit and score only the counting models, keeping "
        "the recorded recurrent ones (whose run directories need not exist here)",
    )
    p.add_argument(
        "--families",
        nargs="+",
        choices=list(FAMILIES),
        default=list(FAMILIES),
        help="the model families to run (default: all)",
    )
    return p


def settings(args) -> tuple[dict, str]:
    """(families, record name) of the sweep, with its dynamic grid and windows draw set on args; --smoke shrinks
    every one of them."""
    families, out = {f: FAMILIES[f] for f in args.families}, "heldout"
    args.dynamic_steps, args.dynamic_segments, args.windows_draw = DYNAMIC_STEPS, DYNAMIC_SEGMENTS, DRAW
    args.ngram_orders = NGRAM_ORDERS
    if args.smoke:
        args.windows_draw = {**DRAW, "windows": 256, "length": 64}
        families, out = SMOKE_FAMILIES, "heldout_smoke"
        args.epochs, args.seeds = args.epochs or 2, min(args.seeds, 2)
        args.dynamic_steps, args.dynamic_segments = (("sgd", 0.0), ("sgd", 0.01)), (50, 200)
        args.ngram_orders = range(2, 5)
    return families, out


def print_models(models: dict) -> None:
    """Each model's test and validation perplexity, best first."""
    for name, m in sorted(models.items(), key=lambda kv: kv[1]["test_perplexity"]["mean"]):
        print(
            f"{name:<32} test {m['test_perplexity']['mean']:.3f} ± {m['test_perplexity']['std']:.3f}  "
            f"val {m['val_perplexity']['mean']:.3f}",
            flush=True,
        )


def main(argv=None) -> None:
    """Counting models, the screening, the final runs and their scores, into results/heldout.json."""
    args = build_parser().parse_args(argv)
    families, out = settings(args)
    t0 = time.perf_counter()
    text = corpus(args.data_dir)
    if args.counting_only:
        return refresh_counting(out, text, t0, args.ngram_orders)
    ngrams = ngram_models(text, args.ngram_orders)
    print(f"n-grams chosen on validation ({time.perf_counter() - t0:.0f} s)", flush=True)
    root = runs_root(out, args) / out
    if args.fresh or args.smoke:  # a smoke test always trains (a run another process holds is never removed)
        fresh(root)
    screened = screen(families, args, root)
    finals = final_runs(choose(screened, families), args, root)
    models = dict(ngrams["models"])
    for fam, (name, cfg, dirs) in finals.items():
        models.update(rnn_models(fam, name, cfg, dirs, text, args))
    result = {
        "name": out,
        "protocol": PROTOCOL,
        "split_tokens": {k: int(len(text[k][0] if k != "train" else text[k])) for k in ("train", "val", "test")},
        "screening": {
            n: {"config": config.to_dict(c), "best_val_perplexity": v, "val_curve": [p for _, p in val_curve(d)]}
            for n, (c, d, v) in screened.items()
        },
        "ngram_grid": ngrams["grid"],
        "models": with_losses(models),
        "prior_test_scorings": PRIOR_SCORINGS,
        "wall_seconds": time.perf_counter() - t0,
    }
    write(out, result, results_dir(out, args))
    print_models(models)
    print(json.dumps({"wall_seconds": result["wall_seconds"]}))


if __name__ == "__main__":
    entry(main)
