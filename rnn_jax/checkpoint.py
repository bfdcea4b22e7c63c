"""Thin Orbax wrapper: the latest k checkpoints and the best by validation perplexity, in the run dir.

A checkpoint holds the training state (params, optimizer state, step, epoch, skip counter); its JSON meta also
notes the experiment, config, vocabulary and corpus SHA-1 of the run that wrote it, which nothing reads back (a
resume reads the run directory's config.json and vocab.json). Exact continuation rests on the rest being
derived, not stored: every epoch starts from the zero hidden state, epoch e's data order comes from (seed, e)
and each update's dropout key from (seed, step). (Checkpoints of earlier versions also hold the last carried
state, a PRNG key and the seed; they are verified with the rest and not used.) Orbax writes each step into a
temporary directory and renames it when complete, so a write cut short is never listed. Each checkpoint's meta
records a SHA-256 of every saved array (its dtype, shape and bytes); every restore checks it, so a damaged
checkpoint is refused with its path instead of being used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import shutil
import sys
import threading
import time
import zipfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from rnn_jax.exitcodes import Exit

logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO
_failed_writes: list[str] = []  # checkpoints this process could not write (see write_failed)


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax and tensorstore report a failed write from their own threads (a logged traceback, and tracebacks of
    callbacks into its closed event loop); the CheckpointError raised here says it once. On success whatever
    they printed is passed on."""
    logger, stderr, captured = logging.getLogger("absl"), sys.stderr, io.StringIO()
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    sys.stderr = captured
    try:
        yield
    except BaseException:
        sys.stderr = _MainThreadOnly(stderr)  # its threads go on reporting the failure after it is raised
        raise
    sys.stderr = stderr
    logger.setLevel(level)  # after a failure it stays quiet: the threads may report it again later
    stderr.write(captured.getvalue())


class _MainThreadOnly:
    """A stream that passes on what the main thread writes and drops what other threads write."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        if threading.current_thread() is threading.main_thread():
            return self.stream.write(text)
        return len(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the path and the reason."""

    exit_status = Exit.USAGE


def _leaf_digest(x, dtype=None) -> str:
    x = np.ascontiguousarray(np.asarray(x) if dtype is None else np.asarray(x).astype(dtype))
    h = hashlib.sha256(f"{x.dtype.str} {x.shape}".encode())
    h.update(x.tobytes())
    return h.hexdigest()


def checksums(tree) -> dict:
    """{leaf path: {dtype, sha256}} of a tree of host arrays (the digest covers dtype, shape and bytes)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): {"dtype": np.asarray(x).dtype.str, "sha256": _leaf_digest(x)} for p, x in leaves}


def _canonical(path: str) -> str:
    """A leaf path with attribute steps written as keys: a restore without a target tree gives the optimizer's
    NamedTuple states (`.count`) back as dicts (`['count']`), the same leaves."""
    return re.sub(r"\.(\w+)", r"['\1']", path)


def verify(tree, recorded: dict | None, where) -> None:
    """Raises CheckpointError naming `where` when tree's arrays are not the ones whose checksums were recorded."""
    if recorded is None:
        raise CheckpointError(
            f"{where} records no checksum of its arrays, so it cannot be verified; it was not "
            "written by this version of rnn_jax"
        )
    leaves = {_canonical(jax.tree_util.keystr(p)): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    recorded = {_canonical(k): v for k, v in recorded.items()}
    for path in sorted(set(leaves) | set(recorded)):
        want = recorded.get(path)
        if path not in leaves or want is None or _leaf_digest(leaves[path], want["dtype"]) != want["sha256"]:
            raise CheckpointError(
                f"{where} is damaged: array {path} does not match the checksum saved with it. "
                "Nothing was used; move it away (an earlier checkpoint may still be intact)"
            )


def conform(tree, like):
    """`tree`, restored without a target (dicts for NamedTuples), in the structure of `like`, leaf by leaf path;
    leaves `like` lacks (fields an older version saved) are left out. Raises CheckpointError when one is missing."""
    leaves = {_canonical(jax.tree_util.keystr(p)): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    try:
        return jax.tree_util.tree_unflatten(treedef, [leaves[_canonical(jax.tree_util.keystr(p))] for p, _ in paths])
    except KeyError as e:
        raise CheckpointError(
            f"the checkpoint has no array {e.args[0]}; it is not a training checkpoint of this version's model"
        ) from None


def abstract(tree):
    """Shapes and dtypes of a tree's leaves, placed on the current device: restores land here whatever saved them."""

    def one(x):
        x = np.asarray(x)
        return jax.ShapeDtypeStruct(x.shape, x.dtype)

    return jax.tree.map(one, tree)


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.absolute(), options=options)


class Checkpoints:
    """`checkpoints/<epoch>` (the latest `keep`) and `best/<epoch>` (lowest validation perplexity)."""

    def __init__(self, run_dir: str | Path, keep: int = 3):
        self.dir = Path(run_dir) / "checkpoints"
        for directory in (self.dir, Path(run_dir) / "best"):  # the writer's own: no other process writes here
            remove_stale_temporaries(directory)
        self.latest = _manager(self.dir, keep)
        self.best = _manager(Path(run_dir) / "best", 1)
        self.best_value = self._saved_best_value()

    def _saved_best_value(self) -> float:
        """The validation perplexity of the kept best checkpoint (inf without one), so a resume never replaces
        it with a worse one."""
        epoch = self.best.latest_step()
        if epoch is None:
            return float("inf")
        try:
            meta = self.best.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            return float(meta["val_perplexity"])
        except Exception as e:  # noqa: BLE001 - orbax raises many kinds; all mean the value is unknown
            raise CheckpointError(
                f"best checkpoint {self.best.directory}/{epoch} has no readable validation "
                f"perplexity ({type(e).__name__}: {e}); move it away to resume"
            ) from None

    def save(self, epoch: int, state: dict, meta: dict, *, val_perplexity: float | None = None) -> None:
        """Saves host copies (training may donate the device buffers right after), with their checksums."""
        state = jax.tree.map(np.asarray, jax.device_get(state))
        meta = {**meta, "checksums": checksums(state), "val_perplexity": val_perplexity}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        if epoch not in self.latest.all_steps():
            _save(self.latest, epoch, args, force=False)
        if val_perplexity is not None and val_perplexity < self.best_value:
            _save(self.best, epoch, args, force=True)
            self.best_value = val_perplexity

    def latest_epoch(self) -> int | None:
        return self.latest.latest_step()

    def complete_best(self, epoch: int, state: dict, meta: dict) -> bool:
        """Finishes the commit of `epoch`, restored from checkpoints/: a process that died after writing it and
        before writing best/ left a better validation perplexity than best/ holds; it is written there now."""
        value = meta.get("val_perplexity")
        if value is None or value >= self.best_value or epoch in self.best.all_steps():
            return False
        kept = {k: v for k, v in meta.items() if k not in ("checksums", "val_perplexity")}
        self.save(epoch, state, kept, val_perplexity=value)
        return True

    def restore(self, abstract_state: dict, epoch: int | None = None) -> tuple[dict, dict]:
        """(state, meta) of the latest complete checkpoint; raises CheckpointError, never re-initialises."""
        epoch = self.latest_epoch() if epoch is None else epoch
        if epoch is None:
            raise CheckpointError(f"no complete checkpoint in {self.dir}; start a new run without --resume")
        return restore_from(self.latest, epoch, abstract_state)

    def close(self) -> None:
        self.latest.close()
        self.best.close()


TMP_MARK = ".orbax-checkpoint-tmp"  # Orbax's name for a step directory still being written


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Removes the temporary directories of writes cut short (a kill, a full disk) from a checkpoint directory
    whose writer holds the run's lock; returns what was removed."""
    stale = [p for p in directory.iterdir() if TMP_MARK in p.name] if directory.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return stale


def _reason(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:400]


def _save(manager: ocp.CheckpointManager, epoch: int, args, *, force: bool) -> None:
    """One checkpoint, written whole or not at all; a failure (disk full, size limit...) names the directory."""
    try:
        with _quiet_orbax():
            manager.save(epoch, args=args, force=force)
    except Exception as e:  # orbax/tensorstore wrap the OSError; the earlier checkpoints are untouched
        _failed_writes.append(str(Path(manager.directory) / str(epoch)))
        raise CheckpointError(
            f"cannot write checkpoint {Path(manager.directory) / str(epoch)} ({_reason(e)}); "
            "the earlier checkpoints are intact"
        ) from None


def write_failed() -> bool:
    """Whether a checkpoint write failed in this process: orbax's background threads may then print tracebacks
    while Python shuts down, so a command line ends such a process without that teardown."""
    return bool(_failed_writes)


def restore_from(manager: ocp.CheckpointManager, epoch: int, abstract_state: dict | None) -> tuple[dict, dict]:
    """(state, meta) of one checkpoint, verified against its checksums."""
    path = Path(manager.directory) / str(epoch)
    state_args = ocp.args.StandardRestore(abstract_state)
    try:
        with _quiet_orbax():
            restored = manager.restore(epoch, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax/tensorstore raise many kinds; all mean this checkpoint is unusable
        raise CheckpointError(
            f"checkpoint {path} cannot be restored ({_reason(e)}). Nothing was re-initialised: "
            "move that directory away to resume from the one before it"
        ) from None
    verify(jax.device_get(restored["state"]), restored["meta"].get("checksums"), f"checkpoint {path}")
    return restored["state"], restored["meta"]


def restore_epoch(directory: Path, epoch: int, abstract_state: dict | None) -> tuple[dict, dict]:
    """(state, meta) of the checkpoint of `epoch` in directory, verified against its checksums, for a reader."""
    manager = _manager(directory, 1_000_000)  # keeps every step: a reader never rotates one away
    try:
        return restore_from(manager, epoch, abstract_state)
    finally:
        manager.close()


def restore_newest(directory: Path, abstract_state: dict | None, attempts: int = 5) -> tuple[dict, dict] | None:
    """(state, meta) of the newest complete checkpoint in directory (None without one), for a reader: a
    checkpoint that a training process rotates away meanwhile is skipped, not reported."""
    for attempt in range(attempts):
        manager = _manager(directory, 1_000_000)  # a fresh listing each try
        try:
            epoch = manager.latest_step()
            if epoch is None:
                return None
            try:
                return restore_from(manager, epoch, abstract_state)
            except CheckpointError:
                if (directory / str(epoch)).is_dir() or attempt == attempts - 1:
                    raise  # still there: really damaged
        except FileNotFoundError:  # the listing raced a rotation
            if attempt == attempts - 1:
                raise CheckpointError(
                    f"the checkpoints in {directory} kept changing while being read; try "
                    "again when training has written its next one"
                ) from None
        finally:
            manager.close()
        time.sleep(0.05 * (attempt + 1))
    return None


def latest_saved_epoch(directory: Path) -> int | None:
    """The newest complete checkpoint's epoch, read from the listing alone (nothing is created)."""
    if not directory.is_dir():
        return None
    epochs = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
    return max(epochs, default=None)


def load_params(run_dir: str | Path, *, best: bool = False) -> tuple[dict, dict | None]:
    """Parameters (as NumPy arrays) from the latest checkpoint of a run (or its best by validation), with its
    meta (and its epoch); else params.npz (meta None)."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / ("best" if best else "checkpoints")
    no_best = CheckpointError(f"{run_dir} has no best checkpoint (one is kept only for runs with --val-fraction)")
    if best and not ckpt_dir.is_dir():
        raise no_best
    restored = restore_newest(ckpt_dir, None) if ckpt_dir.is_dir() else None
    if restored is not None:
        state, meta = restored
        return {k: np.asarray(v) for k, v in state["params"].items()}, {**meta, "epoch": int(state["epoch"])}
    if best:
        raise no_best
    if (run_dir / "params.npz").is_file():
        return load_npz(run_dir), None
    raise CheckpointError(f"{run_dir} holds no checkpoint and no params.npz; is it a run directory of rnn_jax?")


def load_npz(run_dir: Path) -> dict:
    """params.npz of a finished run, verified against the checksums that summary.json records."""
    path = run_dir / "params.npz"
    try:
        with np.load(path) as f:
            params = dict(f)
        recorded = json.loads((run_dir / "summary.json").read_text(encoding="utf-8")).get("params_checksums")
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"cannot read {path} or the summary.json beside it ({_reason(e)})") from None
    verify(params, recorded, str(path))
    return params
