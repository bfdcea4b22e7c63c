"""The one training loop (`loop`), over one run (`Trainer`) or several vmapped seeds (`Seeds`): each epoch trains,
validates, records (metrics.jsonl, TensorBoard, progress) and checkpoints what the runner handed in; the per-epoch
record and stop rule is `rnn_jax.epochs`, the math of a step `rnn_jax.step`."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import checkpoint, data, distributed, epochs, files, generate, heldout, log, model
from rnn_jax import config as config_lib
from rnn_jax import step as step_lib
from rnn_jax.checkpoint import Checkpoints
from rnn_jax.config import Config
from rnn_jax.signals import Interrupted, StopSignals


def predictions(params, vocab: data.Vocab, spec: model.ModelSpec, prefixes: Sequence[str], num_preds: int = 50) -> dict:
    """{prompt: the prompt and num_preds greedy characters after it} for each prompt."""
    return {p: generate.predict(params, vocab, p, num_preds, spec) for p in prefixes}


class TrainingData(NamedTuple):
    """The corpus of a run: where it came from, its vocabulary, and the parts it trains and validates on."""

    path: Path
    vocab: data.Vocab
    tokens: np.ndarray  # the training part (its first max_tokens)
    val: tuple[np.ndarray, np.ndarray]  # (validation tokens, the text just before them)
    info: dict  # what config.json records of it


class Outputs(NamedTuple):
    """Where a run's epochs go, built by the runner: its checkpoints, then metrics.jsonl, the progress bar and
    TensorBoard (each None where this process does not write it)."""

    ckpts: Checkpoints
    metrics: files.MetricsWriter | None
    progress: log.Progress | None
    board: log.TensorBoard | None

    def close(self) -> None:
        """Closes them, quietly, when no run took them over (its set-up failed: that error is the one to report)."""
        self.ckpts.close()
        for out in (self.progress, self.board, self.metrics):
            if out is not None:
                with contextlib.suppress(OSError):
                    out.close()


class Steps(Protocol):
    """What `loop` drives each epoch: a run, or several vmapped seeds over a batched state. `rows` is one row, or
    one per member (whatever `rows` returns, the other steps take)."""

    start: int

    def batches(self, epoch: int) -> tuple[jax.Array | np.ndarray, jax.Array | np.ndarray]: ...
    def train(self, X, Y, lr_scale: float | None, epoch: int) -> dict: ...
    def rows(self, epoch: int, metrics: dict, tokens: int, seconds: float) -> Any: ...
    def validate(self, epoch: int, rows) -> None: ...
    def record(self, epoch: int, rows) -> None: ...
    def checkpoint(self, epoch: int, rows, stopping: bool) -> None: ...


def loop(steps: Steps, cfg: Config, stop: StopSignals | None = None, run_dir: Path | None = None) -> None:
    """Each epoch: batches -> the schedule's factor -> the jitted epoch -> host -> rows -> validate, record,
    checkpoint. With `stop`, a signal stops the run of `run_dir` before an epoch, or after its checkpoint."""
    resume = f"Continue with: python -m rnn_jax.train --run-dir {run_dir} --resume"
    for epoch in range(steps.start, cfg.epochs + 1):
        if stop:
            stop.check(f"before epoch {epoch}; no epoch finished since the last checkpoint. {resume}")
        t0 = time.perf_counter()
        X, Y = steps.batches(epoch)
        metrics = steps.train(X, Y, step_lib.lr_scale(cfg, epoch), epoch)
        rows = steps.rows(epoch, metrics, X.size, time.perf_counter() - t0)
        steps.validate(epoch, rows)
        steps.record(epoch, rows)
        stopping = stop is not None and stop.received is not None
        steps.checkpoint(epoch, rows, stopping=stopping)
        if stopping:
            assert stop is not None and run_dir is not None
            raise Interrupted(
                f"stopped by {stop.received} after epoch {epoch}; its checkpoint is in "
                f"{run_dir / 'checkpoints'}. {resume}"
            )


def start_epoch(restored: tuple[dict, dict] | None) -> int:
    """The first epoch a run trains: 1, or the one after the checkpoint it continues from."""
    return 1 if restored is None else int(checkpoint.conform(restored[0], {"epoch": 0})["epoch"]) + 1


class Trainer:
    """One run's training state and what its epochs are handed; each method is one step of an epoch (`Steps`)."""

    last_row: dict[str, Any]  # the metrics row of the latest epoch

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        training: TrainingData,
        mesh,
        outputs: Outputs,
        *,
        exp: str,
        prefixes: Sequence[str],
        params: dict | None = None,
        restored: tuple[dict, dict] | None = None,
    ):
        """prefixes: the prompts of its predictions. params: where the run starts (None: a fresh init from cfg.seed).
        restored: the (state, meta) of the checkpoint a resume continues from, as `rundir.open_run` read and verified
        it (None: from epoch 1)."""
        self.cfg, self.run_dir, self.data, self.mesh, self.exp = cfg, run_dir, training, mesh, exp
        self.ckpts, self.writer, self.progress, self.board = outputs
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
        self.start, self.rule = 1, epochs.EpochRule(cfg)
        if restored is not None:
            self._restore(*restored)
        self.state = distributed.replicate(self.state, mesh)
        self.train_epoch_fn = step_lib.make_train_epoch(cfg, self.tx, spec=self.spec)
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
        self.start = start_epoch((saved, meta))
        self.rule = epochs.EpochRule(
            self.cfg, step=int(restored["step"]), skips_in_a_row=int(restored["skips_in_a_row"])
        )
        self.ckpts.complete_best(self.start - 1, restored, meta)  # a kill between checkpoints/K and best/K

    def batches(self, epoch: int) -> tuple[jax.Array, jax.Array]:
        """The epoch's minibatches, their rows sharded over the run's devices."""
        X_NBT, Y_NBT = data.epoch_batches(self.data.tokens, self.cfg, epoch)
        return distributed.shard_rows(X_NBT, self.mesh), distributed.shard_rows(Y_NBT, self.mesh)

    def train(self, X_NBT, Y_NBT, lr_scale: float | None, epoch: int) -> dict:
        """Trains one epoch (one jitted call, one host sync); returns its step metrics on the host."""
        self.state, _, metrics = self.train_epoch_fn(self.state, X_NBT, Y_NBT, lr_scale)
        return distributed.to_host(metrics)

    def rows(self, epoch: int, metrics: dict, tokens: int, seconds: float) -> dict:
        """The epoch's metrics row (a divergence writes it, then raises Diverged)."""
        if epoch > self.start or self.cfg.epochs == self.start:  # a process's first epoch includes compilation
            self.timed_tokens, self.timed_seconds = self.timed_tokens + tokens, self.timed_seconds + seconds
        return self._row(epoch, metrics, tokens / seconds, seconds)

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
        """summary.json's content: final figures, speed, predictions (the runner adds the n-gram baselines)."""
        row = self.last_row or files.last_row(self.run_dir, self.cfg.epochs)
        params = distributed.to_host(self.state.params)
        summary = {
            "experiment": self.exp,
            "epochs": self.cfg.epochs,
            "perplexity": row["perplexity"],
            "loss": row["loss"],
            "tokens_per_sec": self.timed_tokens / self.timed_seconds if self.timed_seconds else None,
            "wall_seconds": time.perf_counter() - self.t_start,
            "cpu_cores": distributed.cpu_cores(),
            "device": jax.devices()[0].platform,
            "predictions": predictions(params, self.data.vocab, self.spec, self.prefixes),
            "devices": self.mesh.size if self.mesh else 1,  # the policies resolved at set-up
            "row_chains": self.spec.chains,
        }
        summary.update({k: row[k] for k in ("val_loss", "val_perplexity", "val_bits_per_char") if k in row})
        return summary


class Seeds:
    """Several seeds of one config as one vmapped program over a batched state (the seed axis sharded over the
    devices when it divides), run by `loop` as a single run is. Each seed's rows follow the single run's rule
    (`rnn_jax.epochs`): a seed stops where its own run would, recorded by a row marked nonfinite, and is left out
    after it. Nothing is written: `rows_of` holds each seed's rows."""

    start = 1

    def __init__(self, cfg: Config, seeds: Sequence[int], tokens: np.ndarray, vocab_size: int, val: tuple | None):
        self.cfg, self.seeds, self.tokens, self.val = cfg, list(seeds), tokens, val
        tx, self.spec = step_lib.make_optimizer(cfg), model.ModelSpec.from_config(cfg)
        init = lambda s: step_lib.init_state(cfg, vocab_size, tx, seed=s, spec=self.spec)
        self.state = jax.vmap(init)(np.asarray(self.seeds))
        self.epoch_fn = step_lib.jit(
            jax.vmap(step_lib.make_train_epoch(cfg, tx, jitted=False, spec=self.spec), in_axes=(0, 0, 0, None, 0)),
            donate_argnums=0,
        )
        self.sharding = None
        if jax.device_count() > 1 and len(self.seeds) % jax.device_count() == 0:
            mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("models",))
            self.sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("models"))
            self.state = jax.device_put(self.state, self.sharding)
        self.seeds_S = np.asarray(self.seeds, np.int32)  # each model's own dropout masks
        self.rules = [epochs.EpochRule(cfg) for _ in self.seeds]  # the single run's record and stop rule, per seed
        self.rows_of: list[list[dict]] = [[] for _ in self.seeds]

    def params(self, i: int) -> dict:
        """Seed i's parameters."""
        return jax.tree.map(lambda p: p[i], self.state.params)

    def batches(self, epoch: int):
        """Each seed's minibatches, stacked (book settings: always the same count; else the shortest for all)."""
        batches = [data.epoch_batches(self.tokens, dataclasses.replace(self.cfg, seed=s), epoch) for s in self.seeds]
        n = min(len(X) for X, _ in batches)
        X_SNBT, Y_SNBT = (np.stack([b[i][:n] for b in batches]) for i in (0, 1))
        if self.sharding is not None:
            X_SNBT, Y_SNBT = jax.device_put((X_SNBT, Y_SNBT), self.sharding)
        return X_SNBT, Y_SNBT

    def train(self, X_SNBT, Y_SNBT, lr_scale: float | None, epoch: int) -> dict:
        """Trains every seed one epoch (one jitted call, one host sync); returns the step metrics, seed axis first."""
        self.state, _, metrics = self.epoch_fn(self.state, X_SNBT, Y_SNBT, lr_scale, self.seeds_S)
        return jax.device_get(metrics)

    def rows(self, epoch: int, metrics: dict, tokens: int, seconds: float) -> dict[int, dict]:
        """{seed index: its row} for the seeds still running; a seed's divergence becomes its nonfinite row."""
        out = {}
        for i, rule in enumerate(self.rules):
            if self.rows_of[i] and self.rows_of[i][-1].get("nonfinite"):
                continue  # stopped earlier: its state no longer counts
            try:
                out[i] = rule.row(
                    epoch, {k: v[i] for k, v in metrics.items()}, tokens // len(self.seeds) / seconds, seconds
                )
            except epochs.Diverged as e:
                assert e.row is not None  # the rule's error carries the bad step's row
                out[i] = e.row
        return out

    def validate(self, epoch: int, rows: dict[int, dict]) -> None:
        """Adds validation figures to each running seed's row when this epoch evaluates; a seed whose validation
        diverges gets a nonfinite row instead."""
        if self.val is None or not len(self.val[0]):
            return
        for i, row in rows.items():
            if row.get("nonfinite"):
                continue
            evaluate = lambda i=i: heldout.evaluate(self.params(i), self.val[0], self.spec, context=self.val[1])
            try:
                self.rules[i].validate(epoch, row, evaluate)
            except epochs.Diverged:
                keep = {k: row[k] for k in ("tokens_per_sec", "seconds")}
                rows[i] = {"epoch": epoch, "step": self.rules[i].step, "nonfinite": True, **keep}

    def record(self, epoch: int, rows: dict[int, dict]) -> None:
        """Appends each running seed's row to its rows."""
        for i, row in rows.items():
            self.rows_of[i].append(row)

    def checkpoint(self, epoch: int, rows: dict[int, dict], stopping: bool) -> None:
        """Nothing: a vmapped sweep keeps no checkpoints."""
