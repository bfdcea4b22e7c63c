"""Reading finished (or stopped) runs back: a run's config, vocabulary and parameters with clear errors, the
parameters another run starts from (--init-from) with their provenance, and the checks that parameters fit a
config. Parameters saved in the earlier per-layer layout of a stack are converted here, where they are read."""

from __future__ import annotations

import contextlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import checkpoint, corpora, data, model, stack
from rnn_jax import config as config_lib
from rnn_jax.config import Config, ConfigError
from rnn_jax.files import read_json


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
    except (KeyError, TypeError, corpora.DataError, ConfigError) as e:
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
        try:
            params = per_layer_converted(source, checkpoint.restore_epoch(directory, epoch, None)[0]["params"])
        except checkpoint.CheckpointError:
            continue
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
    try:
        return stack.from_per_layer(params)
    except ValueError as e:
        raise checkpoint.CheckpointError(
            f"parameters in {where} have per-layer names that do not make a stack ({e})"
        ) from None


def refuse_per_layer(run_dir: Path, params: dict) -> None:
    """Raises CheckpointError, saying what to do, when a checkpoint of run_dir stores a stack's layers 2.. one
    array per layer (`W_xi_l2`, ...): its optimizer state cannot be resumed in the stacked layout."""
    if stack.is_per_layer(params):
        raise checkpoint.CheckpointError(
            f"the checkpoints in {run_dir} store layers 2.. of the stack one array per layer (`W_xi_l2`, ...), "
            "an earlier layout that --resume cannot continue (layers 2.. are now stacked, `W_xi_upper`); start a "
            f"new run from its parameters with --init-from {run_dir} (converted, with a fresh optimizer state)"
        )


def check_params(where, params: dict, cfg: Config, vocab_size: int) -> None:
    """Raises CheckpointError when params' shapes are not those of cfg's model over vocab_size characters."""
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
