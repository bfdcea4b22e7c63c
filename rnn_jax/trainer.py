"""One run's training loop: each epoch trains, validates, records (metrics.jsonl, TensorBoard, progress) and
checkpoints; the per-epoch record and stop rule is `rnn_jax.epochs`, the math of a step `rnn_jax.step`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import (
    baselines,
    checkpoint,
    corpora,
    data,
    distributed,
    epochs,
    files,
    generate,
    heldout,
    log,
    model,
    scoring,
)
from rnn_jax import config as config_lib
from rnn_jax import step as step_lib
from rnn_jax.checkpoint import Checkpoints
from rnn_jax.config import Config

PREFIXES = ("time traveller", "traveller")


def predictions(params, vocab: data.Vocab, spec: model.ModelSpec, prefixes=PREFIXES, num_preds: int = 50) -> dict:
    """The greedy continuation of each prompt."""
    return {p: generate.predict(params, vocab, p, num_preds, spec) for p in prefixes}


class TrainingData(NamedTuple):
    """The corpus of a run: where it came from, its vocabulary, and the parts it trains and validates on."""

    path: Path
    vocab: data.Vocab
    tokens: np.ndarray  # the training part (its first max_tokens)
    val: tuple[np.ndarray, np.ndarray]  # (validation tokens, the text just before them)
    info: dict  # what config.json records of it


def load_data(cfg: Config, corpus: str | None, data_dir: str | None) -> TrainingData:
    path = corpora.resolve_corpus(corpus, data_dir)
    all_tokens, vocab = data.load_corpus(path, -1, cfg.preprocess)
    parts = data.splits(all_tokens, cfg)
    tokens, val = parts["train"][0], parts["val"]
    data.check_length(len(tokens), cfg.batch_size, cfg.num_steps, cfg.sampling)
    if cfg.val_windows:  # refused before the first epoch, not at the first validation
        scoring.window_starts(len(val[0]), cfg.val_windows, scoring.WINDOW_LENGTH)
    info = {
        "path": str(path.resolve()),
        "sha1": corpora.sha1_of(path),
        "train_tokens": int(len(tokens)),
        "val_tokens": int(len(val[0])),
        "test_tokens": int(len(parts["test"][0])),
    }
    return TrainingData(path, vocab, tokens, val, info)  # type: ignore[arg-type]  # val's text before is never None


def default_prefixes(training: TrainingData, cfg: Config) -> tuple[str, ...]:
    """The book's two prompts for the book; for another text its own opening two words, and the second."""
    if training.info["sha1"] == corpora.TIME_MACHINE_SHA1 and cfg.preprocess == "book":
        return PREFIXES
    if training.info["sha1"] == corpora.CORPORA["shakespeare"].sha1 and cfg.preprocess == "none":
        return ("ROMEO:",)
    words = training.vocab.decode(training.tokens[:200]).split()
    return (" ".join(words[:2]), words[1]) if len(words) >= 2 else (training.vocab.decode(training.tokens[:10]),)


class Trainer:
    """One run's training state and the run directory's writers; each method is one step of an epoch."""

    last_row: dict[str, Any]  # the metrics row of the latest epoch

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        training: TrainingData,
        mesh,
        *,
        exp: str,
        resume: bool,
        quiet: bool,
        params: dict | None = None,
        prefixes: Sequence[str] = PREFIXES,
        tensorboard: bool = False,
        restored: tuple[dict, dict] | None = None,
    ):
        """restored: the (state, meta) of the checkpoint a resume continues from, as `rundir.open_run` read and
        verified it (None: from epoch 1)."""
        self.cfg, self.run_dir, self.data, self.mesh, self.exp = cfg, run_dir, training, mesh, exp
        self.prefixes = tuple(prefixes)
        self.spec = model.ModelSpec.from_config(cfg)  # the row-chain policy resolved once, here (summary.json)
        self.tx = step_lib.make_optimizer(cfg)
        self.state = step_lib.init_state(cfg, len(training.vocab), self.tx, params=params, spec=self.spec)
        self.meta = {
            "experiment": exp,
            "config": config_lib.to_dict(cfg),
            "vocab": training.vocab.idx_to_token,
            "corpus_sha1": training.info["sha1"],
        }
        self.ckpts = Checkpoints(run_dir, cfg.keep_checkpoints)
        self.start, self.rule = 1, epochs.EpochRule(cfg)
        if restored is not None:
            self._restore(*restored)
        self.state = distributed.replicate(self.state, mesh)
        self.train_epoch_fn = step_lib.make_train_epoch(cfg, self.tx, spec=self.spec)
        primary = distributed.is_primary()
        self.writer = files.MetricsWriter(run_dir, self.start - 1 if resume else None) if primary else None
        self.progress = None if quiet or not primary else log.Progress(cfg.epochs, self.start - 1)
        self.board = (
            log.TensorBoard(run_dir / "tensorboard", {"experiment": exp, **self.meta["config"]}, self.start)
            if tensorboard and primary
            else None
        )
        self.timed_tokens, self.timed_seconds, self.t_start, self.last_row = 0, 0.0, time.perf_counter(), {}

    def _checkpoint_tree(self, epoch: int) -> dict:
        """Everything an exact continuation needs besides the config: every epoch starts from the zero state, its
        data order derives from (seed, epoch) and each update's dropout key from (seed, step), so parameters,
        optimizer state, step, epoch and the skip counter are the whole of it."""
        s = self.state
        return {
            "params": s.params,
            "opt_state": s.opt_state,
            "step": s.step,
            "epoch": epoch,
            "skips_in_a_row": self.rule.skips_in_a_row,
        }

    def _restore(self, saved: dict, meta: dict) -> None:
        """Continues from a verified checkpoint (fields older versions also saved are left out)."""
        restored = checkpoint.conform(saved, self._checkpoint_tree(0))
        self.state = jax.tree.map(
            jnp.asarray, step_lib.TrainState(restored["params"], restored["opt_state"], restored["step"])
        )
        self.start = int(restored["epoch"]) + 1
        self.rule = epochs.EpochRule(
            self.cfg, step=int(restored["step"]), skips_in_a_row=int(restored["skips_in_a_row"])
        )
        self.ckpts.complete_best(self.start - 1, restored, meta)  # a kill between checkpoints/K and best/K

    def train_epoch(self, epoch: int) -> dict:
        """Trains one epoch (one jitted call, one host sync); returns its metrics row."""
        t0 = time.perf_counter()
        X_NBT, Y_NBT = data.epoch_batches(self.data.tokens, self.cfg, epoch)
        shard = lambda a: distributed.shard_rows(a, self.mesh)
        self.state, _, metrics = self.train_epoch_fn(
            self.state, shard(X_NBT), shard(Y_NBT), step_lib.lr_scale(self.cfg, epoch)
        )
        metrics = distributed.to_host(metrics)
        seconds = time.perf_counter() - t0
        if epoch > self.start or self.cfg.epochs == self.start:  # a process's first epoch includes compilation
            self.timed_tokens, self.timed_seconds = self.timed_tokens + X_NBT.size, self.timed_seconds + seconds
        return self._row(epoch, metrics, X_NBT.size / seconds, seconds)

    def _row(self, epoch: int, metrics: dict, tokens_per_sec: float, seconds: float) -> dict:
        try:
            return self.rule.row(epoch, metrics, tokens_per_sec, seconds)
        except epochs.Diverged as e:
            if self.writer:
                assert e.row is not None  # the rule's error carries the bad step's row
                self.writer.write(e.row)  # the bad step's row, then the error
            raise

    def _due(self, epoch: int, every: int) -> bool:
        return epochs.due(self.cfg, epoch, every)

    def validate(self, epoch: int, row: dict) -> None:
        """Adds validation loss, perplexity and bits/char to the row when this epoch evaluates."""
        val_tokens, context = self.data.val
        if len(val_tokens):
            params = lambda: distributed.to_host(self.state.params)
            self.rule.validate(epoch, row, lambda: heldout.evaluate(params(), val_tokens, self.spec, context=context))
            if self.cfg.val_windows and "val_loss" in row:  # nanoGPT's protocol beside the stream
                w = heldout.evaluate_windows(params(), val_tokens, self.spec, windows=self.cfg.val_windows)
                row.update(val_loss_windows=w["loss"], val_se_windows=w["se"])

    def record(self, epoch: int, row: dict) -> None:
        """metrics.jsonl, TensorBoard, the progress bar, and every predict_every epochs a prediction line."""
        self.last_row = row
        if self.writer:
            self.writer.write(row)
        texts = None
        if (
            (self.progress or self.board)
            and row["perplexity"] is not None
            and self.cfg.predict_every
            and self._due(epoch, self.cfg.predict_every)
        ):
            prefixes = self.prefixes if self.board else self.prefixes[:1]
            texts = predictions(distributed.to_host(self.state.params), self.data.vocab, self.spec, prefixes)
        if self.board:
            scale = step_lib.lr_scale(self.cfg, epoch)
            self.board.write(row, self.cfg.lr * (1.0 if scale is None else scale), texts)
        if not self.progress or row["perplexity"] is None:
            return
        self.progress.update(row["perplexity"], row["tokens_per_sec"])
        if texts:
            val_text = f"  val ppl {row['val_perplexity']:.3f}" if "val_perplexity" in row else ""
            self.progress.line(epoch, row["perplexity"], row["tokens_per_sec"], val_text, texts[self.prefixes[0]])

    def checkpoint(self, epoch: int, row: dict, stopping: bool) -> None:
        """A checkpoint at the end, when stopping, every checkpoint_every epochs, and at every validation."""
        if self._due(epoch, self.cfg.checkpoint_every) or stopping or "val_perplexity" in row:
            tree = distributed.to_host(self._checkpoint_tree(epoch))
            self.ckpts.save(epoch, tree, self.meta, val_perplexity=row.get("val_perplexity"))

    def close(self, draw: bool = True) -> None:
        """Closes the checkpoint manager and metrics file, and draws the curve of what was written."""
        self.ckpts.close()
        if self.progress:
            self.progress.close()
        if self.board:
            with contextlib.nullcontext() if draw else contextlib.suppress(OSError):
                self.board.close()
        if self.writer:
            with contextlib.nullcontext() if draw else contextlib.suppress(OSError):  # report the first failure
                self.writer.close()
            rows = files.read_metrics(self.run_dir) if draw else []
            if rows:
                files.plot_atomic(rows, self.run_dir / "perplexity.png", f"{self.exp}: {self.data.path.name}")

    def summary(self) -> dict:
        """summary.json's content: final figures, speed, predictions, and (with validation) the baselines."""
        row = self.last_row or files.last_row(self.run_dir, self.cfg.epochs)
        params = distributed.to_host(self.state.params)
        summary = {
            "experiment": self.exp,
            "epochs": self.cfg.epochs,
            "perplexity": row["perplexity"],
            "loss": row["loss"],
            "tokens_per_sec": self.timed_tokens / self.timed_seconds if self.timed_seconds else None,
            "wall_seconds": time.perf_counter() - self.t_start,
            "device": jax.devices()[0].platform,
            "predictions": predictions(params, self.data.vocab, self.spec, self.prefixes),
            "devices": self.mesh.size if self.mesh else 1,  # the policies resolved at set-up
            "row_chains": self.spec.chains,
        }
        summary.update({k: row[k] for k in ("val_loss", "val_perplexity", "val_bits_per_char") if k in row})
        if len(self.data.val[0]):
            summary["baselines"] = baselines.evaluate_baselines(
                self.data.tokens, self.data.val[0], len(self.data.vocab), context=self.data.val[1]
            )
        return summary
