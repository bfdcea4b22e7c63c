"""Shared by the experiment scripts: run one configuration over several seeds and store its record.

The scripts keep the training command line's promises: a stopped or shorter run is continued (never deleted to
"resume" it), a run directory another process holds is never removed, records are written atomically and merged
into the one already there (never dropping an entry), and a smoke run (--epochs or --seeds other than the recorded
ones) writes to results/smoke/ and runs/smoke/, never over the committed records, unless --force. Signals reach the
training processes (see rnn_jax.sweep.run_jobs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from experiments.records import merge_records, read_record
from rnn_jax import config, corpora, data, exitcodes, sweep, testlog
from rnn_jax import experiments as experiments_lib
from rnn_jax.exitcodes import Exit
from rnn_jax.files import write_atomic
from rnn_jax.lock import remove_runs

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNS = HERE / "runs"  # run directories (ignored by git); results/ keeps the small JSON records
# Every ablation also scores the last 10% of the book; training data and trajectory are unchanged by it
# (the first 10,000 tokens lie in the first 90%).
HELD_OUT: dict[str, Any] = {"val_fraction": 0.1, "eval_every": 50, "predict_every": 0, "checkpoint_every": 0}


DEFAULT_SEEDS = 3
PLACEMENTS = ("auto", "together", "per-core")
IDLE_LOAD = 0.5  # the 1-minute load average under which the machine counts as otherwise idle


def placement(choice: str, load=os.getloadavg) -> dict:
    """run_jobs' keywords for a placement: together = one run at a time, unpinned (a run uses every core: the first
    result comes soonest); per-core = one pinned run per core (the most runs per hour on a busy machine)."""
    if choice == "auto":
        choice = "together" if load()[0] < IDLE_LOAD else "per-core"
    return {"workers": 1, "pin": False} if choice == "together" else {}


MAX_SEEDS = 1000  # seeds per configuration: each is a training run, and a list of them is made up front


def positive(text: str, limit: int = config.INT_LIMIT) -> int:
    """argparse type: an integer in [1, limit] (default: int32's largest)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    if value > limit:
        raise argparse.ArgumentTypeError(f"must be in [1, {limit}], got {value}")
    return value


def seed_count(text: str) -> int:
    """argparse type: a number of seeds in [1, MAX_SEEDS]."""
    return positive(text, MAX_SEEDS)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seeds", type=seed_count, default=DEFAULT_SEEDS, help="seeds per configuration (0, 1, ...)")
    p.add_argument(
        "--mode",
        choices=("auto", *sweep.MODES),
        default="auto",
        help="several seeds as pinned processes or one vmapped program (auto: by backend)",
    )
    p.add_argument(
        "--placement",
        choices=PLACEMENTS,
        default="auto",
        help="runs of a sweep: together = one at a time on every core; per-core = one per core, each pinned to its "
        "own; auto: together when the machine is otherwise idle (load average under 0.5), else per-core",
    )
    p.add_argument("--data-dir", default=os.environ.get("RNN_JAX_DATA_DIR"), help="folder of timemachine.txt")
    p.add_argument("--epochs", type=positive, default=None, help="override every configuration's epochs (smoke runs)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the records to this folder instead (default: results/, or results/smoke/ for a smoke run)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="let a smoke run (--epochs, or --seeds other than the "
        "recorded ones) replace the committed record in results/ and train in runs/",
    )
    return p


def recorded(record: dict) -> tuple[int | None, int | None]:
    """(epochs, seeds) a committed record was made with, where it says."""
    cfg = c if isinstance(c := record.get("config"), dict) else {}
    epochs = cfg.get("epochs", record.get("epochs"))
    summary = s if isinstance(s := record.get("summary"), dict) else {}
    seeds = summary.get("seeds", record.get("seeds"))
    if isinstance(seeds, list):
        seeds = len(seeds)
    if seeds is None and isinstance(record.get("models"), list):
        seeds = len(record["models"])
    return epochs, seeds


def is_smoke(name: str, args) -> bool:
    """Whether this command is a smoke run of `name`: --epochs or --seeds other than its committed record's (with
    no record: --seeds other than the default); never with --force."""
    if getattr(args, "force", False):
        return False
    record = load(name)
    epochs, seeds = recorded(record) if record else (None, None)
    want_epochs = getattr(args, "epochs", None)
    if want_epochs is not None and (epochs is None or want_epochs != epochs):
        return True
    return args.seeds != (seeds if seeds is not None else DEFAULT_SEEDS)


def runs_root(name: str, args) -> Path:
    """Where the run directories of `name` live: runs/, or runs/smoke/ for a smoke run."""
    return RUNS / "smoke" if is_smoke(name, args) else RUNS


def results_dir(name: str, args) -> Path:
    """Where the record of `name` is written: --out, else results/, or results/smoke/ for a smoke run."""
    out = getattr(args, "out", None)
    return Path(out) if out else RESULTS / "smoke" if is_smoke(name, args) else RESULTS


def run_named(names: tuple[str, ...], description: str, argv=None) -> None:
    """Each named experiment given on the command line (default: all of `names`) over seeds, one after another."""
    p = parser(description)
    p.add_argument("names", nargs="*", default=list(names), help=f"any of {', '.join(names)}")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in names]
    if unknown:
        p.error(f"unknown experiment(s) {', '.join(unknown)}; known: {', '.join(names)}")
    for name in args.names:
        run_seeds(name, name, experiments_lib.EXPERIMENTS[name], args)


def run_seeds(name: str, exp: str, cfg: config.Config, args, *, corpus: str | None = None) -> dict:
    """Trains cfg for args.seeds seeds, writes its record (results/<name>.json, see results_dir) and returns it;
    runs stopped earlier are continued, finished ones read back."""
    cfg = dataclasses.replace(cfg, **HELD_OUT, **({"epochs": args.epochs} if args.epochs else {}))
    seeds = list(range(args.seeds))
    mode = sweep.default_mode() if args.mode == "auto" else args.mode
    out, root = results_dir(name, args), runs_root(name, args) / name
    t0 = time.perf_counter()
    if mode == "processes":
        records = sweep.run_processes(exp, cfg, seeds, root, corpus=corpus, data_dir=args.data_dir)
    else:
        path = corpora.resolve_corpus(corpus, args.data_dir)
        tokens, vocab = data.load_corpus(path, -1, cfg.preprocess)
        parts = data.splits(tokens, cfg)
        records = sweep.run_vmap(cfg, seeds, parts["train"][0], vocab, val=parts["val"])
    result: dict[str, Any] = {
        "name": name,
        "experiment": exp,
        "config": config.to_dict(cfg),
        "mode": mode,
        "wall_seconds": time.perf_counter() - t0,
        "corpus": Path(corpus).name if corpus else "timemachine.txt",
        "summary": sweep.summarize(records),
        "seeds": records,
    }
    write(name, result, out)
    s = result["summary"]
    ppl = s.get("perplexity", {})
    print(
        f"{name:<14} ppl {ppl.get('mean', float('nan')):.3f} ± {ppl.get('std', float('nan')):.3f}  "
        f"diverged {s['diverged']}  ({result['wall_seconds']:.0f} s, {mode})",
        flush=True,
    )
    return result


def fresh(root: Path) -> Path:
    """An empty folder for a script's run directories: each run in it is removed only while no other process
    holds it (else ConfigError, and nothing is removed)."""
    remove_runs(root)
    return root


def record(name: str, exp: str, cfg: config.Config, records: list[dict], mode: str, seconds: float) -> dict:
    """The JSON record of one configuration over seeds, as report.py reads it."""
    return {
        "name": name,
        "experiment": exp,
        "config": config.to_dict(cfg),
        "mode": mode,
        "wall_seconds": seconds,
        "corpus": "timemachine.txt",
        "summary": sweep.summarize(records),
        "seeds": records,
    }


def write(name: str, result: dict, directory: Path | None = None) -> Path:
    """<directory>/<name>.json (default results/), written whole or not at all and merged into the record already
    there (merge_records); one of another configuration is kept beside it as <name>.json.replaced-<time>. Says
    where a record outside results/ went."""
    directory = Path(directory or RESULTS)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    old = read_record(path) if path.exists() else None
    if old is not None and old.get("config", result.get("config")) != result.get("config"):
        aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        write_atomic(aside, path.read_text(encoding="utf-8"))
        print(f"{path} held a record of another configuration; it is kept as {aside}", file=sys.stderr)
    elif old is not None:
        result = merge_records(old, result)
    write_atomic(path, json.dumps(result, indent=1) + "\n")
    if directory.resolve() != RESULTS.resolve():
        print(f"record written to {path} (the committed results/{name}.json is unchanged)", flush=True)
    return path


def test_log() -> Path:
    """The test log the scripts record to and count from: $RNN_JAX_TEST_LOG, else this checkout's
    results/test_log.jsonl (rnn_jax.testlog)."""
    return testlog.log_path(HERE.parent)


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return read_record(path) if path.exists() else None


def command() -> str:
    """The command line that started this script, to run again."""
    return " ".join(shlex.quote(a) for a in ["python", *sys.argv])


def entry(main) -> None:
    """Runs a script's main as a command: a failure is one `error:` line, a signal says how to continue."""
    status = exitcodes.run(main, notes={Exit.INTERRUPTED: f". Continue with: {command()}"})
    if status != Exit.OK:
        sys.exit(status)
