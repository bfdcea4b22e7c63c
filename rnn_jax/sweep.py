"""Several seeds of one configuration, run the way that pays on the machine at hand.

"processes": one training process per seed, each pinned to its own core (on a 2-core CPU this gave
about twice the aggregate throughput of one process). "vmap": one program over stacked parameter
pytrees (the model axis sharded across devices when there are several), the natural choice on an
accelerator. Both return the same per-seed records, and agree with separate single-seed runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np

from rnn_jax import config as config_lib
from rnn_jax import data, epochs, rundir, stats, trainer
from rnn_jax import evaluate as evaluate_lib
from rnn_jax import step as step_lib
from rnn_jax.config import Config
from rnn_jax.exitcodes import Exit

MODES = ("processes", "vmap")


def default_mode() -> str:
    """Separate pinned processes on a CPU; one vmapped program on a GPU or TPU."""
    return "processes" if jax.default_backend() == "cpu" else "vmap"


def divergence_epoch(rows: list[dict], vocab_size: int) -> int | None:
    """The first epoch whose loss was NaN/Inf, or whose training perplexity exceeded vocab_size: worse than a
    uniform guess, which every run beats from its first epoch, so its updates have blown up though finite."""
    return next((r["epoch"] for r in rows if r.get("nonfinite") or (r.get("perplexity") or 0) > vocab_size), None)


def _record(seed: int, rows: list[dict], summary: dict | None, wall: float, vocab_size: int) -> dict:
    """The per-seed record both modes return, from metrics rows (and the run's summary when it finished)."""
    bad = divergence_epoch(rows, vocab_size)
    good = [r for r in rows if r.get("perplexity") is not None and not r.get("nonfinite")]
    last = good[-1] if good else {}
    rates = [r["tokens_per_sec"] for r in good[1:]] or [r["tokens_per_sec"] for r in good]
    return {
        "seed": seed,
        "diverged_epoch": bad,
        "perplexity": None if bad else last.get("perplexity"),
        "val_perplexity": None if bad else last.get("val_perplexity"),
        "tokens_per_sec": float(np.median(rates)) if rates else None,
        "wall_seconds": wall,
        "curve": [r["perplexity"] for r in good],
        "val_curve": [[r["epoch"], r["val_perplexity"]] for r in good if "val_perplexity" in r],
        "predictions": (summary or {}).get("predictions"),
    }


class JobFailed(RuntimeError):
    """A training process of a sweep failed; the message names its run directory and its error line."""


class Stopped(RuntimeError):
    """A signal stopped the sweep: it was passed to every training process, each of which stopped after its
    epoch with a checkpoint; running the same sweep again continues them."""


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def job_state(exp: str, cfg: Config, run_dir: Path) -> str:
    """'done' (finished, or diverged, with this config), 'shorter' (the same run, stopped or finished before
    cfg.epochs: continued with --resume) or 'new' (nothing there, or another run: trained afresh)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "checkpoints").is_dir():
        return "new"
    saved_all = rundir.saved_config(run_dir)
    saved, want = saved_all["config"], config_lib.to_dict(cfg)
    if saved_all.get("experiment", exp) != exp:
        return "new"
    defaults = config_lib.to_dict(Config())  # a field added since the run was made: its default, unchanged
    # fields a resume may change (how often it predicts, validates, checkpoints...) do not make another run
    if {k for k, v in want.items() if saved.get(k, defaults[k]) != v} - {"epochs"} - config_lib.RESUMABLE_FIELDS:
        return "new"
    rows = rundir.read_metrics(run_dir)
    last = max((r["epoch"] for r in rows), default=0)
    finished = last == cfg.epochs and (run_dir / "summary.json").is_file()
    if finished or (last <= cfg.epochs and any(r.get("nonfinite") for r in rows)):  # a divergence is a result
        return "done"
    same_schedule = cfg.lr_schedule == "constant" or saved.get("epochs") == cfg.epochs  # a cosine's horizon
    return "shorter" if last < cfg.epochs and same_schedule else "new"


def run_processes(
    exp: str,
    cfg: Config,
    seeds,
    root: str | Path,
    *,
    corpus: str | None = None,
    data_dir: str | None = None,
    workers: int | None = None,
    pin: bool = True,
    keep: bool = True,
) -> list[dict]:
    """One `python -m rnn_jax.train` per seed, at most one per core at a time, each pinned to its core."""
    jobs = [(exp, dataclasses.replace(cfg, seed=s), Path(root) / f"seed_{s}") for s in seeds]
    return run_jobs(jobs, corpus=corpus, data_dir=data_dir, workers=workers, pin=pin, keep=keep)


def _plan(jobs, keep: bool) -> tuple[list, dict]:
    """(jobs to train, each with the flags it starts with; records of the jobs already done). A run to retrain is
    removed only while no other process holds it (rundir.remove_runs), before anything trains."""
    todo, done = [], {}
    for i, (exp, cfg, run_dir, *extra) in enumerate(jobs):
        state = job_state(exp, cfg, run_dir) if keep else "new"
        if state == "done":
            done[i] = _saved_record(cfg.seed, Path(run_dir))
            continue
        if state == "new":
            if (Path(run_dir) / "summary.json").is_file():
                print(f"{run_dir} holds a finished run of another configuration: it is trained afresh", flush=True)
            rundir.remove_runs(Path(run_dir))
        todo.append((i, exp, cfg, Path(run_dir), ["--resume"] if state == "shorter" else (extra[0] if extra else [])))
    return todo, done


def _saved_record(seed: int, run_dir: Path) -> dict:
    """The record of a run that finished (or diverged) earlier, from its files."""
    rows = rundir.read_metrics(run_dir)
    summary = (
        rundir.read_json(run_dir / "summary.json", "the run's summary")
        if (run_dir / "summary.json").is_file()
        else None
    )
    wall = sum(r.get("seconds") or 0.0 for r in rows)
    return _record(seed, rows, summary, wall, len(data.Vocab.load(run_dir / "vocab.json")))


def run_jobs(
    jobs,
    *,
    corpus: str | None = None,
    data_dir: str | None = None,
    workers: int | None = None,
    pin: bool = True,
    keep: bool = True,
) -> list[dict]:
    """Trains each (exp, cfg, run_dir[, argv of a new run]) in its own process, at most `workers` (default: one per
    core) at a time, each pinned to its own core unless pin=False; records in job order.

    With `keep`, a run already done with this config is read back, not trained, and one stopped or shorter is
    continued (--resume); any other run directory is trained afresh, removed first only when no process holds it.
    Each process runs in its own session: SIGINT, SIGTERM and SIGHUP reach this one, which passes them on, waits
    for every process to stop after its epoch, and raises Stopped. A failing process raises JobFailed (after the
    others stop)."""
    cores = sorted(os.sched_getaffinity(0))
    workers = min(workers or len(cores), len(cores))
    pending, done = _plan(jobs, keep)
    running: dict[int, tuple[subprocess.Popen[str], int, float]] = {}
    received: list[str] = []
    failure = None
    source = ["--corpus", str(corpus)] if corpus else ["--data-dir", str(data_dir)] if data_dir else []

    def forward(signum, frame):
        received.append(signal.Signals(signum).name)
        for proc, _, _ in list(running.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED} if main_thread else {}
    try:
        while (pending and not received and failure is None) or running:
            while pending and len(running) < workers and not received and failure is None:
                i, exp, cfg, run_dir, flags = pending.pop(0)
                core = next(c for c in cores[:workers] if c not in {c for _, c, _ in running.values()})
                argv = [
                    sys.executable,
                    "-m",
                    "rnn_jax.train",
                    "--exp",
                    exp,
                    *config_lib.to_flags(cfg),
                    "--run-dir",
                    str(run_dir),
                    "--quiet",
                    *source,
                    *flags,
                ]
                proc = subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
                )
                if pin:
                    os.sched_setaffinity(proc.pid, {core})  # before its JAX starts, which sizes its pool by affinity
                running[i] = (proc, core, time.perf_counter())
            time.sleep(0.05)
            for i, (proc, _, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                assert proc.stderr is not None  # stderr=PIPE
                err = proc.stderr.read()
                del running[i]
                _, cfg, run_dir, *_ = jobs[i]
                if received and proc.returncode in (Exit.INTERRUPTED, *(-s for s in FORWARDED)):
                    continue  # stopped by the forwarded signal (after its epoch, or while it was starting)
                if proc.returncode not in (Exit.OK, Exit.DIVERGED):  # a divergence is a result
                    last = (err.strip().splitlines() or [""])[-1].removeprefix("error: ")
                    failure = failure or JobFailed(f"{run_dir} failed (exit {proc.returncode}): {last}")
                    for other, _, _ in running.values():  # the sweep ends: the others stop after their epoch
                        with contextlib.suppress(ProcessLookupError):
                            other.send_signal(signal.SIGTERM)
                    continue
                finished = proc.returncode == Exit.OK
                summary = json.loads((Path(run_dir) / "summary.json").read_text()) if finished else None
                vocab_size = len(data.Vocab.load(Path(run_dir) / "vocab.json"))
                done[i] = _record(cfg.seed, rundir.read_metrics(run_dir), summary, time.perf_counter() - t0, vocab_size)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure is not None:
        raise failure
    if received:
        raise Stopped(
            f"stopped by {received[0]}: every training process stopped after its epoch with a checkpoint "
            f"({len(done)} of {len(jobs)} runs done)"
        )
    return [done[i] for i in range(len(jobs))]


def run_vmap(cfg: Config, seeds, tokens: np.ndarray, vocab: data.Vocab, *, val: tuple | None = None) -> list[dict]:
    """All seeds in one jitted, vmapped epoch; the seed axis is sharded over the devices when it divides.

    Each seed's rows follow the single run's rule (`rnn_jax.epochs`), --on-nonfinite and --max-skips included: a
    seed stops where its own run would, and its record says at which epoch it diverged."""
    seeds = list(seeds)
    tx = step_lib.make_optimizer(cfg)
    states = jax.vmap(lambda s: step_lib.init_state(cfg, len(vocab), tx, seed=s))(np.asarray(seeds))
    epoch_fn = step_lib.jit(
        jax.vmap(step_lib.make_train_epoch(cfg, tx, jitted=False), in_axes=(0, 0, 0, None, 0)), donate_argnums=0
    )
    sharding = None
    if jax.device_count() > 1 and len(seeds) % jax.device_count() == 0:
        mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("models",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("models"))
        states = jax.device_put(states, sharding)
    rows, seeds_S = {s: list[dict]() for s in seeds}, np.asarray(seeds, np.int32)  # each model's own dropout masks
    rules = {s: epochs.EpochRule(cfg) for s in seeds}  # the single run's record and stop rule, per seed
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        batches = [data.epoch_batches(tokens, dataclasses.replace(cfg, seed=s), epoch) for s in seeds]
        n = min(len(X) for X, _ in batches)  # book settings: always equal (8); else the shortest for all
        X_SNBT, Y_SNBT = (np.stack([b[i][:n] for b in batches]) for i in (0, 1))
        if sharding is not None:
            X_SNBT, Y_SNBT = jax.device_put((X_SNBT, Y_SNBT), sharding)
        states, _, metrics = epoch_fn(states, X_SNBT, Y_SNBT, config_lib.lr_scale(cfg, epoch), seeds_S)
        metrics = jax.device_get(metrics)
        seconds = time.perf_counter() - t0
        for i, seed in enumerate(seeds):
            if rows[seed] and rows[seed][-1].get("nonfinite"):
                continue  # stopped earlier: its state no longer counts
            rows[seed].append(
                _vmap_row(
                    rules[seed],
                    epoch,
                    {k: v[i] for k, v in metrics.items()},
                    X_SNBT[i].size / seconds,
                    seconds,
                    states.params,
                    i,
                    cfg,
                    val,
                )
            )
    wall = time.perf_counter() - t_start
    out = []
    for i, seed in enumerate(seeds):
        params = jax.tree.map(lambda p, i=i: p[i], states.params)
        out.append(
            _record(seed, rows[seed], {"predictions": trainer.predictions(params, vocab, cfg)}, wall, len(vocab))
        )
    return out


def _vmap_row(
    rule: epochs.EpochRule,
    epoch: int,
    metrics: dict,
    tokens_per_sec: float,
    seconds: float,
    params_S,
    i: int,
    cfg: Config,
    val: tuple | None,
) -> dict:
    """Seed i's row of this epoch by the single run's rule; where that run would stop (Diverged), the row that
    records it, marked nonfinite, after which the seed is left out."""
    try:
        row = rule.row(epoch, metrics, tokens_per_sec, seconds)
        if val is not None and len(val[0]):
            params = lambda: jax.tree.map(lambda p: p[i], params_S)  # sliced only when this epoch validates
            rule.validate(epoch, row, lambda: evaluate_lib.evaluate(params(), val[0], cfg, context=val[1]))
        return row
    except epochs.Diverged as e:
        return e.row or {
            "epoch": epoch,
            "step": rule.step,
            "nonfinite": True,
            "tokens_per_sec": tokens_per_sec,
            "seconds": seconds,
        }


def summarize(records: list[dict]) -> dict:
    """Mean +- std (over the seeds that did not diverge) of each figure, and which seeds diverged."""
    ok = [r for r in records if r["diverged_epoch"] is None]
    out = {
        "seeds": len(records),
        "diverged": [[r["seed"], r["diverged_epoch"]] for r in records if r["diverged_epoch"] is not None],
    }
    for key in ("perplexity", "val_perplexity", "tokens_per_sec", "wall_seconds"):
        vals = [r[key] for r in ok if r.get(key) is not None]
        if vals:
            out[key] = {**stats.mean_std(vals), "n": len(vals)}
    return out
