"""Tiny Shakespeare: which training lever closes the gap to nanoGPT under its own protocol (windows), on validation.

    python experiments/shakespeare_levers.py                    # every lever at the probe budget (8 epochs)
    python experiments/shakespeare_levers.py --levers base reset-0.25
    python experiments/shakespeare_levers.py --epochs 40 --levers lstm-1x768   # a lever at the full budget
    python experiments/shakespeare_levers.py --placement together \
        --levers mingru-3x184 minlstm-3x176 lru-3x168 rglru-3x176 lstm-3x152 lstm-1x512

Each lever is the LSTM recipe of `--exp shakespeare` with one change (or, for the linear recurrences, another cell
in residual blocks at the recipe's parameter count), trained as a selection run (the 5% of the
corpus before the test part held out, never trained on) and scored on that validation part under both protocols:
`stream` (one stream, the state carried) and `windows` (nanoGPT's estimate_loss: 12,800 random windows of 256
characters, each from a zero state), with the windows' loss by position. The test part is never read. Also
recorded: training FLOPs (the cell's declared FLOPs per token x tokens trained; nanoGPT's baby GPT used about
5e15), wall seconds and tokens/s. Resumable: finished runs are read back, stopped ones continued, and scores kept
in each run directory. Writes results/shakespeare_levers.json for report.py.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a file: this checkout's experiments package, never one found elsewhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import scored
from experiments.common import entry, parser, results_dir, runs_root, write
from experiments.heldout import train
from experiments.shakespeare import BASE, CORPUS, DRAW, flop_per_token, split, training_flop, wall_curve, window_stat
from experiments.shakespeare_families import FAMILIES
from rnn_jax import config
from rnn_jax.files import read_json

PROBE_EPOCHS = 8
NANOGPT_FLOP = 6 * 10.65e6 * 5_000 * 64 * 256  # 6 N tokens of nanoGPT's shakespeare_char run
# name -> overrides of the recipe: one lever each
LEVERS: dict[str, dict[str, Any]] = {
    "base": {},
    # a quarter of the rows start each minibatch from zeros (windows from an empty context, as nanoGPT trains)
    "reset-0.25": {"reset_fraction": 0.25},
    "lstm-1x768": {"hidden": 768},
    "lstm-2x512": {"num_layers": 2, "layer_dropout": 0.25},
    # the candidate recipe: wider, a tenth of the rows reset, at the full budget (--epochs 32: 4.4e14 FLOPs)
    "lstm-1x768-reset-0.1": {"hidden": 768, "reset_fraction": 0.1},
}
LEVERS |= FAMILIES | {"lstm-1x512": {}}  # the recipe again, trained as they are: the race's wall-clock reference
# the residual models never train from a zero state and pay for it at a window's start (first character 3.9-4.5
# nats in the probe, against 3.2 for the recipe): the resets that helped the wide LSTM, on the two leaders
LEVERS |= {f"{n}-reset-0.1": {**FAMILIES[n], "reset_fraction": 0.1} for n in ("lstm-3x152", "rglru-3x176")}
LEVERS["lstm-3x256-reset-0.1"] = {**LEVERS["lstm-3x152-reset-0.1"], "hidden": 256}  # wider, at the probe budget
LEVERS["lstm-3x152-reset-0.1-out0.35"] = {**LEVERS["lstm-3x152-reset-0.1"], "dropout": 0.35}  # more output dropout
# with resets the residual LSTM still overfits when trained longer (train loss 1.21 against validation 1.48 at 8
# epochs): a quarter of the stream entering blocks 2 and 3 dropped, trained longer (--epochs 12), at its width and wider
LEVERS |= {
    f"lstm-3x{h}-reset-0.1-layer0.25": {
        **FAMILIES["lstm-3x152"],
        "hidden": h,
        "reset_fraction": 0.1,
        "layer_dropout": 0.25,
    }
    for h in (152, 256)
}
VAL_WINDOWS = 1280  # windows of every epoch's validation (the curves); the record's figure uses 12,800


def lever_config(overrides: dict, epochs: int) -> config.Config:
    return config.validate(
        dataclasses.replace(BASE, predict_every=0, epochs=epochs, val_windows=VAL_WINDOWS, **overrides)
    )


def lever_entry(name: str, cfg: config.Config, run_dir: Path, text: dict) -> dict:
    """One lever's figures on validation under both protocols (its best checkpoint by stream validation)."""
    summary = read_json(run_dir / "summary.json", "a finished run's summary")
    val_w = scored.window_losses(run_dir, "val", text, best=True, corpus=CORPUS, draw=text["draw"])
    flop = training_flop(cfg, text, run_dir)
    return {
        "overrides": LEVERS[name],
        "config": config.to_dict(cfg),
        "val_loss": scored.score(run_dir, "val", text, None, best=True, corpus=CORPUS),
        "val_loss_windows": window_stat([val_w]),
        "train_flop": flop,
        "flop_vs_nanogpt": flop / NANOGPT_FLOP,
        "wall_seconds": summary["wall_seconds"],
        "cpu_cores": summary.get("cpu_cores"),  # recorded by runs from 2026-12-07 on
        "tokens_per_sec": summary["tokens_per_sec"],
        "wall_curve": wall_curve(run_dir, flop_per_token(cfg, text["vocab_size"])),
    }


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS), help="levers to run")
    args = p.parse_args(argv)
    epochs = args.epochs or PROBE_EPOCHS
    name = "shakespeare_levers" if epochs == PROBE_EPOCHS else f"shakespeare_levers_{epochs}"
    args.epochs = None  # the record's name says its budget; runs live beside the committed ones
    t0 = time.perf_counter()
    root = runs_root(name, args) / name
    text = {**split(args.data_dir, False, root), "draw": DRAW}
    named = {n: lever_config(LEVERS[n], epochs) for n in args.levers}
    train([("shakespeare", c, root / n) for n, c in named.items()], args)
    previous = scored_record(results_dir(name, args) / f"{name}.json")
    levers = {**previous.get("levers", {})}
    for n, c in named.items():
        if (root / n / "summary.json").is_file():
            levers[n] = lever_entry(n, c, root / n, text)
    result = {"name": name, "epochs": epochs, "levers": levers, "windows": DRAW, "nanogpt_flop": NANOGPT_FLOP}
    write(name, {**result, "wall_seconds": time.perf_counter() - t0}, results_dir(name, args))
    for n, r in sorted(levers.items(), key=lambda kv: kv[1]["val_loss_windows"]["mean"]):
        w = r["val_loss_windows"]
        print(
            f"{n:<14} val stream {r['val_loss']:.4f}  windows {w['mean']:.4f} ± {w['se']:.4f}  "
            f"first char {w['by_position']['0']:.3f}  from 100 on {w['by_position']['100-255']:.3f}  "
            f"{r['train_flop']:.2e} FLOP  {r['wall_seconds']:.0f} s",
            flush=True,
        )


def budget_epochs(levers: dict, name: str, epochs: int, reference: str = "lstm-1x512") -> int:
    """The epochs of lever `name` that fit in the training budget of `epochs` epochs of the reference: its wall
    time (seconds per epoch as the probe measured them, one run after the other on the same cores) and its FLOPs
    (each one's per token); the smaller of the two, at least 1."""
    ref, lever = levers[reference], levers[name]
    seconds = lambda r: r["wall_curve"][-1][0] / len(r["wall_curve"])  # an epoch's
    flop = lambda r: r["train_flop"] / len(r["wall_curve"])  # an epoch's: the same tokens for each
    wall = epochs * seconds(ref) / seconds(lever)
    compute = epochs * flop(ref) / flop(lever)
    return max(1, int(min(wall, compute) + 1e-9))


def scored_record(path: Path) -> dict:
    """The last record ({} when none): levers not run now keep their entries."""
    return json.loads(path.read_text()) if path.is_file() else {}


if __name__ == "__main__":
    entry(main)
