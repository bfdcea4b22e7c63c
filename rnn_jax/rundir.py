"""The run directory: opening it (a new run, or a resume checked against the one rule of what may change), and
closing it with the final parameters and summary.

A run directory holds `config.json` (experiment, config, data, environment), `vocab.json`,
`metrics.jsonl` (one row per epoch), `checkpoints/` and `best/` (Orbax), and at the end
`params.npz`, `summary.json` and `perplexity.png`. One process writes it at a time (`rnn_jax.lock`); its files
are written whole or not at all (`rnn_jax.files`); finished runs are read back by `rnn_jax.runs`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from rnn_jax import checkpoint, corpora, data, distributed, log, runs
from rnn_jax import config as config_lib
from rnn_jax.config import Config, ConfigError
from rnn_jax.files import read_json, write_atomic, write_json, write_synced
from rnn_jax.lock import Lock

RUN_FILES = ("config.json", "vocab.json", "metrics.jsonl", "checkpoints", "best", "params.npz", "summary.json")

# Fields that may change when a run is resumed; any other difference would make it another run (resume_conflict).
RESUMABLE_FIELDS = frozenset(
    {
        "epochs",
        "predict_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "on_nonfinite",
        "max_skips",
        "backward",
        "devices",
        "row_chains",
        "val_windows",
        "scan",
    }
)


def committed(run_dir: Path) -> bool:
    """Whether a directory holds a run: a committed epoch (a checkpoint) or a finished run's files. A run that
    failed before its first checkpoint left nothing to continue, so its directory may take the same run again."""
    return any(checkpoint.latest_saved_epoch(run_dir / d) is not None for d in ("checkpoints", "best")) or any(
        (run_dir / f).exists() for f in ("params.npz", "summary.json")
    )


def resume_conflict(run_dir: Path, saved: dict, cfg: Config, exp: str) -> str | None:
    """Why experiment `exp` with `cfg` would be another run than the one run_dir's config.json (`saved`) records,
    so that a resume may not continue it; None when it is the same run. The one rule of what a resume may change,
    for --resume (check_resumable) and for a sweep deciding which runs to continue (sweep.job_state)."""
    if saved.get("experiment") != exp:
        return (
            f"run directory {run_dir} belongs to experiment {saved.get('experiment')!r}, not {exp!r}; "
            f"resume it with --exp {saved.get('experiment')} or choose another --run-dir"
        )
    try:
        old = config_lib.from_dict(saved["config"])
    except ConfigError as e:
        return f"cannot resume {run_dir}: its config.json is of another version ({e})"
    for f in dataclasses.fields(Config):
        a, b = getattr(old, f.name), getattr(cfg, f.name)
        if a != b and f.name not in RESUMABLE_FIELDS:
            return (
                f"cannot resume {run_dir}: {f.name} differs (the run has {a!r}, asked {b!r}); only "
                f"{', '.join(sorted(RESUMABLE_FIELDS))} may change"
            )
    if old.lr_schedule != "constant" and old.epochs != cfg.epochs:
        return (
            f"cannot resume {run_dir} with --epochs {cfg.epochs}: its {old.lr_schedule} step size falls "
            f"over its {old.epochs} epochs, so another length would be another run; resume with "
            f"--epochs {old.epochs}, or start a new run from it with --init-from"
        )
    if old.backward != cfg.backward and cfg.matmul_dtype != "float32":
        return (
            f"cannot resume {run_dir} with --backward {cfg.backward}: with {cfg.matmul_dtype} products "
            f"the two backward passes give other numbers (one-hot x W_xh is a {cfg.matmul_dtype} "
            f"product in one, a float32 row gather in the other); keep --backward {old.backward}"
        )
    return None


def check_resumable(run_dir: Path, saved: dict, cfg: Config, sha1: str, exp: str) -> None:
    """Raises ConfigError when `cfg` on this corpus would be another run than the one saved in run_dir."""
    conflict = resume_conflict(run_dir, saved, cfg, exp)
    if conflict is not None:
        raise ConfigError(conflict)
    if saved["data"]["sha1"] != sha1:
        raise ConfigError(
            f"cannot resume {run_dir}: the corpus differs from the one it was trained on (SHA-1 {sha1}; "
            f"the run's, {saved['data']['sha1']}, was read from {saved['data']['path']})"
        )


def _refuse_existing(run_dir: Path) -> None:
    """A directory holding a committed run (or run files without config.json: a damaged one) is refused; the files
    of a run that never committed an epoch are removed (the caller holds the lock)."""
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if "config.json" in found and not committed(run_dir):
        for name in (*found, "perplexity.png"):
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return
    if "config.json" in found:
        raise ConfigError(
            f"run directory {run_dir} already holds a run; continue it with --resume or choose another --run-dir"
        )
    if found:
        raise ConfigError(
            f"run directory {run_dir} holds {', '.join(found)} but no config.json: a damaged run. "
            "Move it away or choose another --run-dir"
        )


def check_progress(run_dir: Path, cfg: Config) -> tuple[dict, dict] | None:
    """Raises ConfigError (CheckpointError) when a resume to cfg.epochs would rewrite a run already past it, lose
    its record, or start from a damaged checkpoint; returns the newest checkpoint's (state, meta), read and
    verified here once for the run to continue from (None without one)."""
    latest = checkpoint.latest_saved_epoch(run_dir / "checkpoints")
    if latest is None:
        return None
    newest = checkpoint.restore_newest(run_dir / "checkpoints", None)  # a damaged one is refused before any write
    if newest is not None:
        runs.refuse_per_layer(run_dir, newest[0]["params"])
    if not (run_dir / "metrics.jsonl").is_file():
        raise ConfigError(
            f"cannot resume {run_dir}: metrics.jsonl is missing, but checkpoints reach epoch {latest}; "
            "restore it from a copy (a resume would lose the record of those epochs)"
        )
    summary = run_dir / "summary.json"
    finished = summary.is_file() and read_json(summary, "the run's summary").get("epochs") == latest
    if latest > cfg.epochs or (finished and latest == cfg.epochs):
        raise ConfigError(
            f"{run_dir} has already trained to epoch {latest}, so --epochs {cfg.epochs} has nothing "
            f"to do; nothing was changed. Give --epochs above {latest} to train further"
        )
    return newest


REMEMBERED = ("tensorboard", "predict_prefixes")  # what a run keeps across resumes besides its configuration


def note_changes(run_dir: Path, saved: dict, cfg: Config, extra: dict, data_info: dict | None = None) -> None:
    """One stderr line per setting a resume changes (a resumable field, a remembered flag, where the corpus is
    read from), from process 0."""
    if not distributed.is_primary():
        return
    was = (saved.get("data") or {}).get("path")
    if data_info and was and data_info.get("path") and str(data_info["path"]) != str(was):
        print(f"note: resuming {run_dir} with its corpus read from {data_info['path']} (it had {was})", file=sys.stderr)
    old = saved.get("config") or {}
    for name, value in config_lib.to_dict(cfg).items():
        if name in old and old[name] != value:
            print(f"note: resuming {run_dir} with {name} {value!r} (it had {old[name]!r})", file=sys.stderr)
    for name in REMEMBERED:
        had = saved.get(name, False if name == "tensorboard" else None)
        if name in extra and had != extra[name]:
            print(f"note: resuming {run_dir} with {name} {extra[name]!r} (it had {had!r})", file=sys.stderr)


def _resumed_config(
    run_dir: Path, cfg: Config, exp: str, vocab: data.Vocab, data_info: dict, extra: dict | None = None
) -> tuple[dict, tuple[dict, dict] | None]:
    """(config.json to write back, the verified checkpoint to continue from) of a resume."""
    saved = read_json(run_dir / "config.json", "the run's configuration")
    try:
        check_resumable(run_dir, saved, cfg, data_info["sha1"], exp)
        saved_vocab = data.Vocab(read_json(run_dir / "vocab.json", "the run's vocabulary")["idx_to_token"])
    except (KeyError, TypeError, corpora.DataError) as e:
        raise checkpoint.CheckpointError(
            f"{run_dir}/config.json or vocab.json is not a run's ({e}); restore it from a copy"
        ) from None
    if saved_vocab != vocab:
        raise ConfigError(f"cannot resume {run_dir}: its vocabulary differs from this corpus's")
    newest = check_progress(run_dir, cfg)
    extra = {k: v for k, v in (extra or {}).items() if k in REMEMBERED}
    note_changes(run_dir, saved, cfg, extra, data_info)
    saved.update(extra)
    saved["config"] = config_lib.to_dict(cfg)
    saved.setdefault("resumed", []).append({"time": time.strftime("%Y-%m-%d %H:%M:%S"), **log.environment()})
    return saved, newest


def open_run(
    run_dir: Path, cfg: Config, exp: str, resume: bool, vocab: data.Vocab, data_info: dict, extra: dict | None = None
) -> tuple[Lock | None, tuple[dict, dict] | None]:
    """Checks (every process) that run_dir can take this run, locks it and writes config.json and vocab.json
    (process 0); returns the lock, held until released, and for a resume the (state, meta) of the checkpoint to
    continue from, restored and verified once, before anything was written (None without one)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir} is a file, not a directory")
    if resume and not (run_dir / "config.json").is_file():
        raise ConfigError(f"--resume: {run_dir} holds no run to resume (no config.json)")
    lock, newest = None, None
    if distributed.is_primary():
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create run directory {run_dir}: {e.strerror}") from None
        lock = Lock(run_dir).acquire()
    try:
        if resume:
            saved, newest = _resumed_config(run_dir, cfg, exp, vocab, data_info, extra)
        else:
            _refuse_existing(run_dir)
            saved = {
                "experiment": exp,
                "config": config_lib.to_dict(cfg),
                "environment": log.environment(),
                "data": data_info,
                **(extra or {}),
            }
        distributed.barrier("checked")  # every process looked before the first one writes
        if lock is not None:
            write_json(run_dir / "config.json", saved)
            if not resume:
                write_atomic(
                    run_dir / "vocab.json", json.dumps({"idx_to_token": vocab.idx_to_token}, ensure_ascii=False)
                )
        distributed.barrier("run-dir")
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock, newest


def saved_config(run_dir: Path) -> dict:
    """config.json of a run directory, with a clear error when there is none."""
    if not (Path(run_dir) / "config.json").is_file():
        raise ConfigError(f"--resume: {run_dir} holds no run to resume (no config.json)")
    return read_json(Path(run_dir) / "config.json", "the run's configuration")


def save_final(run_dir: Path, params: dict, summary: dict) -> None:
    """params.npz and summary.json (with the checksums of params.npz's arrays), each written whole or not at all."""
    write_synced(run_dir / "params.npz", lambda f: np.savez(f, **params))
    write_json(run_dir / "summary.json", {**summary, "params_checksums": checkpoint.checksums(params)})
