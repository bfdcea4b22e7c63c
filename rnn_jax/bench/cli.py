"""The command line: flags, the --worker mode of the contention section, and the run of the chosen sections."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import rnn_jax
from rnn_jax import config as config_lib
from rnn_jax import corpora, data, exitcodes, files, log
from rnn_jax import experiments as experiments_lib
from rnn_jax.bench.common import measured, peer_script, rss_mb, usable_cpus
from rnn_jax.bench.compile_time import compile_times
from rnn_jax.bench.contention import contention
from rnn_jax.bench.devices import device_scaling
from rnn_jax.bench.e2e import e2e
from rnn_jax.bench.generation import generation
from rnn_jax.bench.recipe import recipe
from rnn_jax.bench.recurrences import recurrences
from rnn_jax.bench.report import print_report
from rnn_jax.bench.scaling import scaling
from rnn_jax.bench.throughput import throughput
from rnn_jax.bench.variants import VARIANTS, build, fresh_state, variant_config
from rnn_jax.cells import CELLS
from rnn_jax.exitcodes import Exit

SECTIONS = ("throughput", "compile", "generation", "scaling", "devices", "contention", "recipe", "recurrences", "e2e")
OPT_IN = ("recipe", "recurrences", "e2e")  # sections run only when named


def build_parser() -> argparse.ArgumentParser:
    description = (sys.modules[__package__].__doc__ or "").splitlines()[0]
    p = argparse.ArgumentParser(prog="python -m rnn_jax.bench", description=description)
    ints = lambda s: [int(x) for x in s.split(",")]
    strs = lambda s: [x for x in s.split(",") if x]
    p.add_argument("--data-dir", default=None, help=f"directory holding {corpora.TIME_MACHINE_FILE}")
    p.add_argument(
        "--sections",
        type=strs,
        default=[s for s in SECTIONS if s not in OPT_IN],
        help=f"any of {','.join(SECTIONS)} (default: all but {', '.join(OPT_IN)})",
    )
    p.add_argument("--variants", type=strs, default=list(VARIANTS), help=f"any of {','.join(VARIANTS)}")
    p.add_argument("--samplings", type=strs, default=None, help="seq,random (default both; quick: seq)")
    p.add_argument(
        "--cells",
        type=strs,
        default=["rnn"],
        help="cells of the throughput, compile and scaling "
        f"sections: any of {','.join(CELLS)} (default rnn; the book trains gru and lstm with --hidden 256)",
    )
    p.add_argument("--depths", type=ints, default=[1], help="num_layers values of the compile section (default 1)")
    p.add_argument("--reps", type=int, default=None, help="alternating repetitions (default 5; quick 2)")
    p.add_argument("--epochs", type=int, default=None, help="timed epochs per measurement (default 10; quick 2)")
    p.add_argument("--contention-reps", type=int, default=None, help="(default min(reps, 3); quick 1)")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: fewer reps, epochs and sizes")
    p.add_argument("--hidden", type=int, default=512, help="H of every section but scaling")
    p.add_argument("--scale-hidden", type=ints, default=None, help="H values (default 256,512,1024,2048)")
    p.add_argument("--scale-steps", type=ints, default=[35, 350], help="T values of the scaling and compile sections")
    p.add_argument("--gen-chars", type=int, default=500)
    p.add_argument("--limit-steps", type=int, default=None, help="matmuls in the limit chain (default 2000)")
    p.add_argument("--peer-python", default=None, help="a Python with torch: runs the PyTorch peers")
    p.add_argument(
        "--peer-script",
        type=Path,
        default=peer_script(),
        help="the PyTorch peer (default: ../shared/bench/ beside the checkout run in, or $RNN_JAX_SHARED/bench/); "
        "the recipe's peer is the recipe_torch_peer.py beside it",
    )
    p.add_argument(
        "--peer-threads",
        type=int,
        default=None,
        help="torch threads of the peers but in contention (default: the script's, 2)",
    )
    p.add_argument("--e2e", action="store_true", help="also time whole training runs (section e2e)")
    p.add_argument("--e2e-epochs", type=int, default=500)
    p.add_argument("--json-out", type=Path, default=None, help="write the report as JSON to this file")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the printed report to OUT.txt and the JSON to "
        "OUT.json (make bench: experiments/results/bench/<UTC time>)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Flags with the defaults of a full run, or of a --quick one; unknown names are an error."""
    args = build_parser().parse_args(argv)
    q = args.quick
    defaults = {
        "samplings": ["seq"] if q else ["seq", "random"],
        "reps": 2 if q else 5,
        "epochs": 2 if q else 10,
        "scale_hidden": [256, 512] if q else [256, 512, 1024, 2048],
        "limit_steps": 500 if q else 2000,
    }
    for k, v in defaults.items():
        setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
    args.contention_reps = args.contention_reps or (1 if q else min(args.reps, 3))
    args.sections += ["e2e"] * (args.e2e and "e2e" not in args.sections)
    for name, got, allowed in (
        ("section", args.sections, SECTIONS),
        ("variant", args.variants, VARIANTS),
        ("sampling", args.samplings, ("seq", "random")),
        ("cell", args.cells, CELLS),
    ):
        if set(got) - set(allowed):
            raise SystemExit(f"error: unknown {name} {sorted(set(got) - set(allowed))}; known: {', '.join(allowed)}")
    if args.peer_python and not args.peer_script.is_file():
        raise SystemExit(f"error: --peer-script {args.peer_script} does not exist")
    return args


def check_paths(args) -> None:
    """Raises ConfigError when the peer Python cannot run torch or the report cannot be written, before any
    measurement starts."""
    if args.peer_python:
        exe = shutil.which(args.peer_python)
        if exe is None:
            raise config_lib.ConfigError(f"--peer-python {args.peer_python}: no such executable")
        try:
            probe = subprocess.run([exe, "-c", "import torch"], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise config_lib.ConfigError(f"--peer-python {args.peer_python} does not run ({e})") from None
        if probe.returncode:
            last = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
            raise config_lib.ConfigError(
                f"--peer-python {args.peer_python} cannot import torch ({last}); pass a "
                "Python with torch, or leave the flag out to skip the peers"
            )
    if args.out:
        args.json_out = args.json_out or args.out.with_name(args.out.name + ".json")
        if not args.out.parent.is_dir() or not os.access(args.out.parent, os.W_OK):
            raise config_lib.ConfigError(
                f"--out {args.out}: {args.out.parent} is not a writable directory; the report could not be written"
            )
    if args.json_out:
        out = Path(args.json_out)
        if out.is_dir() or not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
            why = "is a directory" if out.is_dir() else "lies in no writable directory"
            raise config_lib.ConfigError(f"--json-out {out} {why}; the report could not be written")
        if out.exists() and not os.access(out, os.W_OK):
            raise config_lib.ConfigError(f"--json-out {out} is not writable; the report could not be written")


def run_worker(args, tokens, vocab: data.Vocab) -> None:
    """One contention measurement, in a fresh process whose CPUs the parent chose: prints a JSON line."""
    cfg = variant_config("fused-epoch", hidden=args.hidden, cell=args.cells[0])
    run = build(cfg, len(vocab), lambda e: data.epoch_batches(tokens, cfg, e), per_step=False)[0]
    params = sorted(fresh_state(cfg, len(vocab))[1].params)  # the names of what it trains: the cell's parameters
    print(json.dumps({"tokens_per_s": run(args.epochs), "cpus": sorted(os.sched_getaffinity(0)), "params": params}))


def run_sections(args, corpus: Path, tokens, vocab: data.Vocab) -> dict:
    """The report: the chosen sections in SECTIONS order, each with its seconds and the other processes' load."""
    report: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": log.environment(),
        "cpus": usable_cpus(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load": {},
    }
    sections = {
        "throughput": lambda: throughput(args, corpus, tokens, vocab),
        "compile": lambda: compile_times(args, len(vocab)),
        "generation": lambda: generation(args, vocab),
        "scaling": lambda: scaling(args, corpus, len(vocab)),
        "contention": lambda: contention(args, corpus),
        "devices": lambda: device_scaling(args, len(vocab), data.load_corpus(corpus)[0]),
        "recipe": lambda: recipe(args),
        "recurrences": lambda: recurrences(args),
        "e2e": lambda: e2e(args, corpus),
    }
    for name in (s for s in SECTIONS if s in args.sections):
        t0 = time.perf_counter()
        report[name], other = measured(sections[name])
        report["load"][name] = {"seconds": time.perf_counter() - t0, "other_cores": other}
        print(f"[{name}: {report['load'][name]['seconds']:.0f} s]", file=sys.stderr, flush=True)
    report["peak_rss_mb"] = rss_mb()
    return report


def main(argv=None) -> int:
    rnn_jax.started()
    args = parse_args(argv)
    return exitcodes.run(lambda: _run(args))


def _run(args) -> int:
    """The worker's measurement, or the chosen sections with their report."""
    if not args.worker:
        check_paths(args)
    corpus = corpora.resolve_corpus(None, args.data_dir)
    tokens, vocab = data.load_corpus(corpus, experiments_lib.BASE.max_tokens)
    if args.worker:
        run_worker(args, tokens, vocab)
        return Exit.OK
    if not args.peer_python:
        print(
            f"note: peers skipped; pass --peer-python PATH (a Python with torch) to run the book's PyTorch "
            f"pipeline {args.peer_script} alongside ('vs torch' stays empty)",
            flush=True,
        )
    report = run_sections(args, corpus, tokens, vocab)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        print_report(report)
    print(text.getvalue(), end="", flush=True)
    if args.json_out:
        files.write_json(Path(args.json_out), report)
    if args.out:
        files.write_atomic(args.out.with_name(args.out.name + ".txt"), text.getvalue())
    return Exit.OK
