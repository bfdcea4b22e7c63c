"""The run directory, owned in one place: create, lock, check, resume rules, write its files, read a run back.

A run directory holds `config.json` (experiment, config, data, environment), `vocab.json`,
`metrics.jsonl` (one row per epoch), `checkpoints/` and `best/` (Orbax), and at the end
`params.npz`, `summary.json` and `perplexity.png`. One process writes it at a time (an OS lock on
`.lock`, held for the run's life and released by the kernel even on kill -9); readers never lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import IO

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import checkpoint, data, distributed, log
from rnn_jax import config as config_lib
from rnn_jax.config import Config, ConfigError


def fault_injection(point: str, name) -> None:
    """Test hook: RNN_JAX_KILL_AT='<point>:<name>' SIGKILLs this process there (crash-safety tests)."""
    if os.environ.get("RNN_JAX_KILL_AT") == f"{point}:{name}":
        os.kill(os.getpid(), signal.SIGKILL)


RUN_FILES = ("config.json", "vocab.json", "metrics.jsonl", "checkpoints", "best", "params.npz", "summary.json")


# ----------------------------------------------------------------------------- files that are never half-written
@contextlib.contextmanager
def naming(path: Path):
    """An OSError raised inside (a write, flush or fsync names no file) carries `path`."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


@contextlib.contextmanager
def replacing(path: Path):
    """Yields a temporary path beside `path` to write; renamed over `path` when the block succeeds, removed when
    it fails, so readers see the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # the suffix kept: writers infer formats from it
    try:
        with naming(path):
            yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write_synced(path: Path, write) -> None:
    """write(f) into a binary file that replaces `path` only once it is flushed to disk."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
        fault_injection("mid-rewrite", path.name)


def write_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a mix; a failure leaves the old one intact."""
    _write_synced(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, what: str) -> dict:
    """A JSON file of a run, with an error naming it when it is missing, damaged or not a regular file."""
    kind = data.not_regular(path)
    if kind:
        raise checkpoint.CheckpointError(f"{path} is {kind}, not a file ({what}); restore it from a copy")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise checkpoint.CheckpointError(f"{path} is missing ({what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise checkpoint.CheckpointError(f"{path} is damaged ({what}: {e}); restore it from a copy") from None
    except OSError as e:
        raise checkpoint.CheckpointError(f"cannot read {path} ({e.strerror})") from None


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of metrics.jsonl; a last line cut short by a crash is dropped with a note (any other is an error)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    kind = data.not_regular(path)
    if kind:
        raise checkpoint.CheckpointError(f"{path} is {kind}, not a file; restore it from a copy")
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise checkpoint.CheckpointError(
                    f"{path} line {i + 1} is damaged; restore the file from a copy or remove that line"
                ) from None
            print(f"note: {path}: dropped a last line cut short ({line[:40]!r}...)", file=sys.stderr)
    return rows


class MetricsWriter:
    """Appends one JSON object per line to metrics.jsonl, flushed at once (a killed run loses no row)."""

    def __init__(self, run_dir: Path, keep_epochs_upto: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if keep_epochs_upto is not None:  # a resumed run drops rows written after its checkpoint
            rows = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= keep_epochs_upto]
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        with naming(self.path):  # cut short (disk full, a size limit), it loses at most this line
            self.f.write(json.dumps(row) + "\n")
            self.f.flush()

    def close(self) -> None:
        with naming(self.path):
            self.f.close()


# ----------------------------------------------------------------------------- one writer
class Lock:
    """fcntl.flock on RUN/.lock for the run's life; a second writer is refused with the holder's pid.

    The lock guards the path: a lock taken on a file that was removed or replaced meanwhile is dropped and taken
    again on the file now at RUN/.lock, and nothing here deletes a run directory without holding its lock."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.f: IO[str] | None = None

    def acquire(self) -> Lock:
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise ConfigError(
                    f"{self.path.parent} is in use by {holder}; wait for it to finish or choose another --run-dir"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            f.close()  # the file was removed while this process waited for it: lock the one at the path now
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self.f = f
        return self

    def release(self) -> None:
        if self.f is not None:
            self.f.close()  # closing releases the flock
            self.f = None


def remove_runs(root: Path) -> None:
    """Deletes `root` and the run directories under it, each only while holding its lock: a run another process
    holds is refused (ConfigError naming it) and nothing is deleted."""
    root = Path(root)
    if not root.is_dir():  # nothing there, or a file that is no run directory (left for the caller to report)
        return
    runs = {p.parent for pattern in (".lock", "config.json") for p in root.rglob(pattern)}
    locks = []
    try:
        for run_dir in sorted(runs):
            locks.append(Lock(run_dir).acquire())
        shutil.rmtree(root)
    finally:
        for lock in locks:
            lock.release()


def committed(run_dir: Path) -> bool:
    """Whether a directory holds a run: a committed epoch (a checkpoint) or a finished run's files. A run that
    failed before its first checkpoint left nothing to continue, so its directory may take the same run again."""
    return any(checkpoint.latest_saved_epoch(run_dir / d) is not None for d in ("checkpoints", "best")) or any(
        (run_dir / f).exists() for f in ("params.npz", "summary.json")
    )


# ----------------------------------------------------------------------------- opening a run
def check_resumable(run_dir: Path, saved: dict, cfg: Config, sha1: str, exp: str) -> None:
    """Raises ConfigError when `cfg` on this corpus would be another run than the one saved in run_dir."""
    if saved.get("experiment") != exp:
        raise ConfigError(
            f"run directory {run_dir} belongs to experiment {saved.get('experiment')!r}, not {exp!r}; "
            f"resume it with --exp {saved.get('experiment')} or choose another --run-dir"
        )
    old = config_lib.from_dict(saved["config"])
    for f in dataclasses.fields(Config):
        a, b = getattr(old, f.name), getattr(cfg, f.name)
        if a != b and f.name not in config_lib.RESUMABLE_FIELDS:
            raise ConfigError(
                f"cannot resume {run_dir}: {f.name} differs (the run has {a!r}, asked {b!r}); only "
                f"{', '.join(sorted(config_lib.RESUMABLE_FIELDS))} may change"
            )
    if old.lr_schedule != "constant" and old.epochs != cfg.epochs:
        raise ConfigError(
            f"cannot resume {run_dir} with --epochs {cfg.epochs}: its {old.lr_schedule} step size falls "
            f"over its {old.epochs} epochs, so another length would be another run; resume with "
            f"--epochs {old.epochs}, or start a new run from it with --init-from"
        )
    if old.backward != cfg.backward and cfg.matmul_dtype != "float32":
        raise ConfigError(
            f"cannot resume {run_dir} with --backward {cfg.backward}: with {cfg.matmul_dtype} products "
            f"the two backward passes give other numbers (one-hot x W_xh is a {cfg.matmul_dtype} "
            f"product in one, a float32 row gather in the other); keep --backward {old.backward}"
        )
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
        refuse_per_layer(run_dir, newest[0]["params"])
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
    except (KeyError, TypeError, data.DataError) as e:
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
    _write_synced(run_dir / "params.npz", lambda f: np.savez(f, **params))
    write_json(run_dir / "summary.json", {**summary, "params_checksums": checkpoint.checksums(params)})


def plot_atomic(rows: list[dict], path: Path, title: str) -> None:
    """The perplexity curve, drawn to a temporary file and renamed (a failed draw leaves the old one)."""
    with replacing(path) as tmp:
        log.plot_curve(rows, tmp, title=title)


# ----------------------------------------------------------------------------- reading a run back
def last_row(run_dir: Path, epoch: int) -> dict:
    """metrics.jsonl's row of `epoch`, for the summary of a run that had nothing left to train."""
    rows = [r for r in read_metrics(run_dir) if r.get("epoch") == epoch and not r.get("nonfinite")]
    if not rows:
        raise checkpoint.CheckpointError(
            f"{run_dir / 'metrics.jsonl'} holds no row of epoch {epoch}, so the run's "
            "summary cannot be written; restore the file from a copy"
        )
    return rows[-1]


def load_run(run_dir: str | Path, *, best: bool = False):
    """(cfg, vocab, params, saved config.json) of a run directory (its best checkpoint if `best`), with clear errors."""
    return _load_run(run_dir, best)[:4]


def _load_run(run_dir: str | Path, best: bool):
    """load_run's figures and the epoch of the parameters (None for a params.npz without a summary)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "vocab.json").is_file():
        raise checkpoint.CheckpointError(
            f"{run_dir} is not a run directory (no config.json / vocab.json); pass the --run-dir of a training run"
        )
    saved = read_json(run_dir / "config.json", "the run's configuration")
    try:
        cfg = config_lib.from_dict(saved["config"])
        missing = {"path", "sha1"} - set(saved["data"])  # what evaluate reads of the corpus
        if missing:
            raise KeyError(f"data.{', data.'.join(sorted(missing))}")
        vocab = data.Vocab(read_json(run_dir / "vocab.json", "the run's vocabulary")["idx_to_token"])
    except (KeyError, TypeError, data.DataError, ConfigError) as e:
        raise checkpoint.CheckpointError(f"{run_dir}/config.json or vocab.json is not a run's ({e})") from None
    params, meta = checkpoint.load_params(run_dir, best=best)
    params = per_layer_converted(run_dir, params)
    check_params(run_dir, params, cfg, len(vocab))
    epoch = meta["epoch"] if meta is not None else _summary_epochs(run_dir)  # params.npz: the run's last epoch
    return cfg, vocab, jax.tree.map(jnp.asarray, params), saved, epoch


def _summary_epochs(run_dir: Path) -> int | None:
    """The epochs summary.json of a finished run records (None when it cannot say)."""
    with contextlib.suppress(checkpoint.CheckpointError, AttributeError):
        return read_json(run_dir / "summary.json", "the run's summary").get("epochs")
    return None


def _params_at(source: Path, epoch: int | None, want: dict) -> dict | None:
    """The parameters of `epoch` of the run in `source` whose checksums are `want`, from whichever of its
    checkpoints still holds that epoch; None when none does."""
    for sub in ("checkpoints", "best"):
        directory = source / sub
        if epoch is None or not (directory / str(epoch)).is_dir():
            continue
        manager = checkpoint._manager(directory, 1_000_000)
        try:
            params = per_layer_converted(source, checkpoint.restore_from(manager, epoch, None)[0]["params"])
        except checkpoint.CheckpointError:
            continue
        finally:
            manager.close()
        params = {k: np.asarray(v) for k, v in params.items()}
        if checkpoint.checksums(params) == want:
            return params
    return None


def params_from(
    source: str | Path, *, best: bool, cfg: Config, vocab: data.Vocab, expect: dict | None = None
) -> tuple[dict, dict]:
    """Parameters of another run to start from (its best checkpoint if `best`, else its latest), and what
    config.json records of them (the run, its epoch and the checksums of the parameters); refused with what
    differs when its vocabulary or shapes are not cfg's.

    expect: the record of a run that was started from `source` and is resumed before its first checkpoint: the
    parameters are those exact ones (found by epoch and checksum), or ConfigError when the source no longer
    holds them."""
    source = Path(source)
    src_cfg, src_vocab, params, saved, epoch = _load_run(source, best)
    if src_vocab != vocab:
        extra = sorted(set(vocab.idx_to_token) ^ set(src_vocab.idx_to_token))
        what = (
            f"characters in one but not the other: {''.join(extra)!r}"
            if extra
            else "the same characters in another order (ids differ)"
        )
        raise ConfigError(
            f"--init-from {source}: its vocabulary ({len(src_vocab)} tokens) differs from this "
            f"corpus's ({len(vocab)}): {what}; train on a corpus with the same characters"
        )
    try:
        check_params(source, params, cfg, len(vocab))
    except checkpoint.CheckpointError as e:
        raise ConfigError(
            f"--init-from: {e}; set the model flags (--hidden, --cell, --encoder, --embed-dim) to the source's"
        ) from None
    sums = checkpoint.checksums({k: np.asarray(v) for k, v in params.items()})
    if expect is not None and "checksums" in expect and sums != expect["checksums"]:
        exact = _params_at(source, expect.get("epoch"), expect["checksums"])
        if exact is None:
            raise ConfigError(
                f"this run started from epoch {expect.get('epoch')} of {source} ({expect['checkpoint']}"
                f" checkpoint), which that run no longer holds (its {expect['checkpoint']} is now "
                f"epoch {epoch}), and it was stopped before its own first checkpoint; start a new "
                f"run with --init-from {source}"
            )
        return jax.tree.map(jnp.asarray, exact), expect
    record = {
        "run": str(source.resolve()),
        "checkpoint": "best" if best else "latest",
        "epoch": epoch,
        "checksums": sums,
        "experiment": saved.get("experiment"),
        "config": config_lib.to_dict(src_cfg),
    }
    return params, record


def per_layer_converted(where, params: dict) -> dict:
    """Parameters saved with one array per layer of a stack (`W_xi_l2`, ...) in today's stacked layout
    (`W_xi_upper`); a CheckpointError when their layers are not 2..L."""
    from rnn_jax import model

    try:
        return model.from_per_layer(params)
    except ValueError as e:
        raise checkpoint.CheckpointError(
            f"parameters in {where} have per-layer names that do not make a stack ({e})"
        ) from None


def refuse_per_layer(run_dir: Path, params: dict) -> None:
    """Raises CheckpointError, saying what to do, when a checkpoint of run_dir stores a stack's layers 2.. one
    array per layer (`W_xi_l2`, ...): its optimizer state cannot be resumed in the stacked layout."""
    from rnn_jax import model

    if model.is_per_layer(params):
        raise checkpoint.CheckpointError(
            f"the checkpoints in {run_dir} store layers 2.. of the stack one array per layer (`W_xi_l2`, ...), "
            "an earlier layout that --resume cannot continue (layers 2.. are now stacked, `W_xi_upper`); start a "
            f"new run from its parameters with --init-from {run_dir} (converted, with a fresh optimizer state)"
        )


def check_params(where, params: dict, cfg: Config, vocab_size: int) -> None:
    """Raises CheckpointError when params' shapes are not those of cfg's model over vocab_size characters."""
    from rnn_jax import model

    abstract = jax.eval_shape(
        lambda: model.init_params(
            jax.random.key(0), vocab_size, cfg.hidden, model.ModelSpec.from_config(cfg), embed_dim=cfg.embed_dim
        )
    )
    want = {k: tuple(v.shape) for k, v in abstract.items()}
    got = {k: tuple(np.shape(v)) for k, v in params.items()}
    if want != got:
        diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        shown = ", ".join(f"{k}: {got.get(k, 'missing')} (expected {want.get(k, 'none')})" for k in diff)
        raise checkpoint.CheckpointError(
            f"parameters in {where} do not match its configuration and vocabulary ({shown})"
        )
