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

from rnn_jax import data, files, rundir, runner, stats, trainer
from rnn_jax import flags as flags_lib
from rnn_jax.config import Config
from rnn_jax.exitcodes import Exit
from rnn_jax.lock import remove_runs

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

    exit_status = Exit.FAILED


class Stopped(RuntimeError):
    """A signal stopped the sweep: it was passed to every training process, each of which stopped after its
    epoch with a checkpoint; running the same sweep again continues them."""

    exit_status = Exit.INTERRUPTED


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def job_state(exp: str, cfg: Config, run_dir: Path) -> str:
    """'done' (finished, or diverged, with this config), 'shorter' (the same run by `rundir.resume_conflict`,
    stopped or finished before cfg.epochs: continued with --resume) or 'new' (nothing there, or another run:
    trained afresh). The corpus is checked when the run resumes."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "checkpoints").is_dir():
        return "new"
    if rundir.resume_conflict(run_dir, rundir.saved_config(run_dir), cfg, exp) is not None:
        return "new"
    rows = files.read_metrics(run_dir)
    last = max((r["epoch"] for r in rows), default=0)
    finished = last == cfg.epochs and (run_dir / "summary.json").is_file()
    if finished or (last <= cfg.epochs and any(r.get("nonfinite") for r in rows)):  # a divergence is a result
        return "done"
    return "shorter" if last < cfg.epochs else "new"


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
    removed only while no other process holds it (remove_runs), before anything trains."""
    todo, done = [], {}
    for i, (exp, cfg, run_dir, *extra) in enumerate(jobs):
        state = job_state(exp, cfg, run_dir) if keep else "new"
        if state == "done":
            done[i] = _saved_record(cfg.seed, Path(run_dir))
            continue
        if state == "new":
            if (Path(run_dir) / "summary.json").is_file():
                print(f"{run_dir} holds a finished run of another configuration: it is trained afresh", flush=True)
            remove_runs(Path(run_dir))
        todo.append((i, exp, cfg, Path(run_dir), ["--resume"] if state == "shorter" else (extra[0] if extra else [])))
    return todo, done


def _saved_record(seed: int, run_dir: Path) -> dict:
    """The record of a run that finished (or diverged) earlier, from its files."""
    rows = files.read_metrics(run_dir)
    summary = (
        files.read_json(run_dir / "summary.json", "the run's summary") if (run_dir / "summary.json").is_file() else None
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
    source = ["--corpus", str(corpus)] if corpus else ["--data-dir", str(data_dir)] if data_dir else []
    pool = _Pool(cores[: min(workers or len(cores), len(cores))], pin, source)
    pending, done = _plan(jobs, keep)
    with _forwarding(pool.forward):
        while (pending and pool.accepting()) or pool.running:
            while pending and len(pool.running) < len(pool.cores) and pool.accepting():
                pool.start(*pending.pop(0))
            time.sleep(0.05)
            for i, code, err, t0 in pool.reap():
                record = _outcome(pool, jobs[i], code, err, t0)
                if record is not None:
                    done[i] = record
    if pool.failure is not None:
        raise pool.failure
    if pool.received:
        raise Stopped(
            f"stopped by {pool.received[0]}: every training process stopped after its epoch with a checkpoint "
            f"({len(done)} of {len(jobs)} runs done)"
        )
    return [done[i] for i in range(len(jobs))]


@contextlib.contextmanager
def _forwarding(handler):
    """SIGINT, SIGTERM and SIGHUP go to `handler` while the block runs (signals reach the main thread only)."""
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, handler) for sig in FORWARDED} if main_thread else {}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Pool:
    """A sweep's training processes, each on a core of its own; the signals it received, and its first failure."""

    def __init__(self, cores: list[int], pin: bool, source: list[str]):
        self.cores, self.pin, self.source = cores, pin, source
        self.running: dict[int, tuple[subprocess.Popen[str], int, float]] = {}
        self.received: list[str] = []
        self.failure: JobFailed | None = None

    def accepting(self) -> bool:
        """Whether new processes may start: no signal received and no process failed."""
        return not self.received and self.failure is None

    def forward(self, signum, frame=None) -> None:
        """Records a signal and passes it to every running process."""
        self.received.append(signal.Signals(signum).name)
        self.signal_all(signum)

    def signal_all(self, signum) -> None:
        for proc, _, _ in list(self.running.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

    def start(self, i: int, exp: str, cfg: Config, run_dir: Path, flags: list[str]) -> None:
        """Starts job i's `python -m rnn_jax.train` on a free core."""
        core = next(c for c in self.cores if c not in {c for _, c, _ in self.running.values()})
        argv = [sys.executable, "-m", "rnn_jax.train", "--exp", exp, *flags_lib.to_flags(cfg)]
        argv += ["--run-dir", str(run_dir), "--quiet", *self.source, *flags]
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        if self.pin:
            os.sched_setaffinity(proc.pid, {core})  # before its JAX starts, which sizes its pool by affinity
        self.running[i] = (proc, core, time.perf_counter())

    def reap(self) -> list[tuple[int, int, str, float]]:
        """(job index, exit status, stderr, start time) of each process that has ended since the last call."""
        ended = []
        for i, (proc, _, t0) in list(self.running.items()):
            if proc.poll() is None:
                continue
            assert proc.stderr is not None  # stderr=PIPE
            ended.append((i, proc.returncode, proc.stderr.read(), t0))
            del self.running[i]
        return ended


def _outcome(pool: _Pool, job, code: int, err: str, t0: float) -> dict | None:
    """The record of a job whose process ended, or None: stopped by a forwarded signal, or failed (then
    pool.failure is set and the others are stopped after their epoch)."""
    _, cfg, run_dir, *_ = job
    if pool.received and code in (Exit.INTERRUPTED, *(-s for s in FORWARDED)):
        return None  # stopped by the forwarded signal (after its epoch, or while it was starting)
    if code not in (Exit.OK, Exit.DIVERGED):  # a divergence is a result
        last = (err.strip().splitlines() or [""])[-1].removeprefix("error: ")
        pool.failure = pool.failure or JobFailed(f"{run_dir} failed (exit {code}): {last}")
        pool.signal_all(signal.SIGTERM)  # the sweep ends: the others stop after their epoch
        return None
    summary = json.loads((Path(run_dir) / "summary.json").read_text()) if code == Exit.OK else None
    vocab_size = len(data.Vocab.load(Path(run_dir) / "vocab.json"))
    return _record(cfg.seed, files.read_metrics(run_dir), summary, time.perf_counter() - t0, vocab_size)


def run_vmap(cfg: Config, seeds, tokens: np.ndarray, vocab: data.Vocab, *, val: tuple | None = None) -> list[dict]:
    """All seeds in one jitted, vmapped epoch (`trainer.Seeds`), through the single run's loop; the seed axis is
    sharded over the devices when it divides. A seed stops where its own run would (--on-nonfinite and
    --max-skips included), and its record says at which epoch it diverged."""
    members = trainer.Seeds(cfg, seeds, tokens, len(vocab), val)
    t_start = time.perf_counter()
    trainer.loop(members, cfg)
    wall = time.perf_counter() - t_start
    return [
        _record(
            seed,
            rows,
            {"predictions": trainer.predictions(members.params(i), vocab, members.spec, runner.PREFIXES)},
            wall,
            len(vocab),
        )
        for i, (seed, rows) in enumerate(zip(members.seeds, members.rows_of, strict=True))
    ]


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
