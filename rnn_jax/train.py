"""The run loop (each epoch a short list of named steps) and the training CLI.

    python -m rnn_jax.train --exp seq                     # the book's run: 500 epochs, perplexity ~1.0
    python -m rnn_jax.train --run-dir RUN --resume        # continue a run from its latest checkpoint

The math of one step and one epoch is `rnn_jax.step`; the run directory's rules are `rnn_jax.rundir`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import rnn_jax
from rnn_jax import baselines, checkpoint, data, distributed, generate, log, model, rundir
from rnn_jax import config as config_lib
from rnn_jax import evaluate as evaluate_lib
from rnn_jax import step as step_lib
from rnn_jax.checkpoint import CheckpointError, Checkpoints, abstract
from rnn_jax.config import Config

PREFIXES = ("time traveller", "traveller")


class Diverged(RuntimeError):
    """The loss or the gradient became NaN/Inf; the message names the epoch and step."""


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM/SIGHUP: the checkpoint was written; the message says how to resume."""


def predictions(params, vocab: data.Vocab, cfg: Config, prefixes=PREFIXES, num_preds: int = 50) -> dict:
    return {p: generate.predict(params, vocab, p, num_preds, model.ModelSpec.from_config(cfg)) for p in prefixes}


def default_run_dir(exp: str) -> Path:
    return Path("runs") / f"{exp}-{time.strftime('%Y%m%d-%H%M%S')}"


class _StopSignals:
    """Turns SIGINT/SIGTERM/SIGHUP into a flag the run checks between epochs; a second signal ends the process at once.

    The C-level handler writes each signal to a pipe that a thread watches, so the second signal acts even
    while the main thread is inside XLA (compiling, or running an epoch), where Python handlers wait.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.received = None
        self.previous, self.pipe = {}, None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        self.pipe = os.pipe()
        os.set_blocking(self.pipe[1], False)
        self.previous_fd = signal.set_wakeup_fd(self.pipe[1], warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(self.pipe[0],), daemon=True).start()
        return self

    def _handle(self, signum, frame):
        self.received = self.received or signal.Signals(signum).name

    def _watch(self, fd: int) -> None:
        seen = 0
        while byte := os.read(fd, 1):
            if byte[0] not in self.SIGNALS:
                continue
            seen += 1
            self.received = self.received or signal.Signals(byte[0]).name
            if seen == 2:
                os.write(2, b"stopped at once by a second signal; no checkpoint was written for the current epoch\n")
                os._exit(130)
        os.close(fd)

    def __exit__(self, *exc):
        if self.pipe is None:
            return
        signal.set_wakeup_fd(self.previous_fd)
        os.close(self.pipe[1])  # the watcher reads end-of-file and closes its end
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def check(self, what: str) -> None:
        """Raises Interrupted when a signal came before `what` (nothing new to save)."""
        if self.received:
            raise Interrupted(f"stopped by {self.received} {what}")


def _count_skips(ok: np.ndarray, skips_in_a_row: int, cfg: Config) -> tuple[int, int | None]:
    """(non-finite steps in a row at the end of this epoch, index of the step the run must stop at or None)."""
    if ok.all():
        return 0, None
    if cfg.on_nonfinite == "stop":
        return skips_in_a_row, int(np.argmin(ok))
    for i, good in enumerate(ok):
        skips_in_a_row = 0 if good else skips_in_a_row + 1
        if skips_in_a_row > cfg.max_skips:
            return skips_in_a_row, i
    return skips_in_a_row, None


class TrainingData(NamedTuple):
    """The corpus of a run: where it came from, its vocabulary, and the parts it trains and validates on."""

    path: Path
    vocab: data.Vocab
    tokens: np.ndarray  # the training part (its first max_tokens)
    val: tuple[np.ndarray, np.ndarray]  # (validation tokens, the text just before them)
    info: dict  # what config.json records of it


def load_data(cfg: Config, corpus: str | None, data_dir: str | None) -> TrainingData:
    path = data.resolve_corpus(corpus, data_dir)
    all_tokens, vocab = data.load_corpus(path, -1, cfg.preprocess)
    parts = data.splits(all_tokens, cfg)
    tokens, val = parts["train"][0], parts["val"]
    data.check_length(len(tokens), cfg.batch_size, cfg.num_steps, cfg.sampling)
    info = {"path": str(path.resolve()), "sha1": data.sha1_of(path), "train_tokens": int(len(tokens)),
            "val_tokens": int(len(val[0])), "test_tokens": int(len(parts["test"][0]))}
    return TrainingData(path, vocab, tokens, val, info)


def default_prefixes(training: TrainingData, cfg: Config) -> tuple[str, ...]:
    """The book's two prompts for the book; for another text its own opening two words, and the second."""
    if training.info["sha1"] == data.TIME_MACHINE_SHA1 and cfg.preprocess == "book":
        return PREFIXES
    if training.info["sha1"] == data.CORPORA["shakespeare"].sha1 and cfg.preprocess == "none":
        return ("ROMEO:",)
    words = training.vocab.decode(training.tokens[:200]).split()
    return (" ".join(words[:2]), words[1]) if len(words) >= 2 else (training.vocab.decode(training.tokens[:10]),)


class Trainer:
    """One run's training state and the run directory's writers; each method is one step of an epoch."""

    def __init__(self, cfg: Config, run_dir: Path, training: TrainingData, mesh, *, exp: str, resume: bool,
                 quiet: bool, params: dict | None = None, prefixes: tuple[str, ...] = PREFIXES,
                 tensorboard: bool = False):
        self.cfg, self.run_dir, self.data, self.mesh, self.exp = cfg, run_dir, training, mesh, exp
        self.prefixes = tuple(prefixes)
        self.tx = step_lib.make_optimizer(cfg)
        self.state = step_lib.init_state(cfg, len(training.vocab), self.tx, params=params)
        self.carried = step_lib.zero_state(cfg, cfg.batch_size)
        self.key = jax.random.key_data(jax.random.key(cfg.seed))
        self.meta = {"experiment": exp, "config": config_lib.to_dict(cfg), "vocab": training.vocab.idx_to_token,
                     "corpus_sha1": training.info["sha1"]}
        self.ckpts = Checkpoints(run_dir, cfg.keep_checkpoints)
        self.start, self.skips_in_a_row, self.step = 1, 0, 0
        if resume and self.ckpts.latest_epoch() is not None:
            self._restore()
        self.state = distributed.replicate(self.state, mesh)
        self.train_epoch_fn = step_lib.make_train_epoch(cfg, self.tx)
        primary = distributed.is_primary()
        self.writer = rundir.MetricsWriter(run_dir, self.start - 1 if resume else None) if primary else None
        self.progress = None if quiet or not primary else log.Progress(cfg.epochs, self.start - 1)
        self.board = (log.TensorBoard(run_dir / "tensorboard", {"experiment": exp, **self.meta["config"]}, self.start)
                      if tensorboard and primary else None)
        self.timed_tokens, self.timed_seconds, self.t_start, self.last_row = 0, 0.0, time.perf_counter(), {}

    def _checkpoint_tree(self, epoch: int) -> dict:
        """Everything an exact continuation needs; the data order of epoch e is derived from (seed, e)."""
        s = self.state
        return {"params": s.params, "opt_state": s.opt_state, "step": s.step, "h": self.carried, "epoch": epoch,
                "key": self.key, "data_seed": self.cfg.seed, "skips_in_a_row": self.skips_in_a_row}

    def _restore(self) -> None:
        restored, meta = self.ckpts.restore(abstract(self._checkpoint_tree(0)))
        self.state = jax.tree.map(jnp.asarray, step_lib.TrainState(
            restored["params"], restored["opt_state"], restored["step"]))
        self.start, self.skips_in_a_row = int(restored["epoch"]) + 1, int(restored["skips_in_a_row"])
        self.step = int(restored["step"])
        self.ckpts.complete_best(self.start - 1, restored, meta)  # a kill between checkpoints/K and best/K

    def train_epoch(self, epoch: int) -> dict:
        """Trains one epoch (one jitted call, one host sync); returns its metrics row."""
        t0 = time.perf_counter()
        X_NBT, Y_NBT = data.epoch_batches(self.data.tokens, self.cfg, epoch)
        shard = lambda a: distributed.shard_rows(a, self.mesh)
        self.state, self.carried, metrics = self.train_epoch_fn(self.state, shard(X_NBT), shard(Y_NBT),
                                                                config_lib.lr_scale(self.cfg, epoch))
        rundir.fault_injection("mid-epoch", epoch)
        metrics = distributed.to_host(metrics)
        seconds = time.perf_counter() - t0
        if epoch > self.start or self.cfg.epochs == self.start:  # a process's first epoch includes compilation
            self.timed_tokens, self.timed_seconds = self.timed_tokens + X_NBT.size, self.timed_seconds + seconds
        return self._row(epoch, metrics, X_NBT.size / seconds, seconds)

    def _row(self, epoch: int, metrics: dict, tokens_per_sec: float, seconds: float) -> dict:
        ok = metrics["finite"]
        self.step += len(ok)
        self.skips_in_a_row, stop_at = _count_skips(ok, self.skips_in_a_row, self.cfg)
        if stop_at is not None:
            self._diverged(epoch, self.step - len(ok) + stop_at + 1, metrics, stop_at, int((~ok).sum()))
        # minibatches have equal size, so the plain mean is the token-weighted mean
        loss = float(np.mean(metrics["loss"][ok])) if ok.any() else None
        if loss is not None and loss > math.log(sys.float_info.max):  # finite, but exp overflows
            self._diverged(epoch, self.step, metrics, int(np.argmax(metrics["loss"])), int((~ok).sum()))
        row = {"epoch": epoch, "step": self.step, "loss": loss, "perplexity": math.exp(loss) if ok.any() else None,
               "grad_norm": float(np.mean(metrics["grad_norm"][ok])) if ok.any() else None,
               "tokens_per_sec": tokens_per_sec, "seconds": seconds}
        if not ok.all():
            row["skipped"] = int((~ok).sum())
        return row

    def _diverged(self, epoch: int, bad_step: int, metrics: dict, i: int, skipped: int):
        loss, norm = float(metrics["loss"][i]), float(metrics["grad_norm"][i])
        if self.writer:
            self.writer.write({"epoch": epoch, "step": bad_step, "nonfinite": True, "loss": loss, "grad_norm": norm,
                               "skipped": skipped})
        why = (f"more than {self.cfg.max_skips} updates in a row were skipped" if self.cfg.on_nonfinite == "skip"
               else "no checkpoint was written for it")
        raise Diverged(f"diverged at epoch {epoch}, step {bad_step}: loss {loss}, gradient norm {norm} ({why}); "
                       "try gradient clipping (--clip-norm 1) or a lower --lr")

    def _due(self, epoch: int, every: int) -> bool:
        return epoch == self.cfg.epochs or bool(every and epoch % every == 0)

    def validate(self, epoch: int, row: dict) -> None:
        """Adds validation loss, perplexity and bits/char to the row when this epoch evaluates."""
        val_tokens, context = self.data.val
        if len(val_tokens) and self._due(epoch, self.cfg.eval_every):
            try:
                val = evaluate_lib.evaluate(distributed.to_host(self.state.params), val_tokens, self.cfg,
                                            context=context)
            except evaluate_lib.NonFinite as e:
                raise Diverged(f"diverged at epoch {epoch}: on the validation text {e}; try gradient clipping "
                               "(--clip-norm 1) or a lower --lr") from None
            row.update(val_loss=val["loss"], val_perplexity=val["perplexity"], val_bits_per_char=val["bits_per_char"])

    def record(self, epoch: int, row: dict) -> None:
        """metrics.jsonl, TensorBoard, the progress bar, and every predict_every epochs a prediction line."""
        self.last_row = row
        if self.writer:
            self.writer.write(row)
        texts = None
        if ((self.progress or self.board) and row["perplexity"] is not None and self.cfg.predict_every
                and self._due(epoch, self.cfg.predict_every)):
            prefixes = self.prefixes if self.board else self.prefixes[:1]
            texts = predictions(distributed.to_host(self.state.params), self.data.vocab, self.cfg, prefixes)
        if self.board:
            scale = config_lib.lr_scale(self.cfg, epoch)
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
            rundir.fault_injection("after-checkpoint", epoch)

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
            rows = rundir.read_metrics(self.run_dir) if draw else []
            if rows:
                rundir.plot_atomic(rows, self.run_dir / "perplexity.png", f"{self.exp}: {self.data.path.name}")

    def summary(self) -> dict:
        """summary.json's content: final figures, speed, predictions, and (with validation) the baselines."""
        row = self.last_row or rundir.last_row(self.run_dir, self.cfg.epochs)
        params = distributed.to_host(self.state.params)
        summary = {"experiment": self.exp, "epochs": self.cfg.epochs, "perplexity": row["perplexity"],
                   "loss": row["loss"],
                   "tokens_per_sec": self.timed_tokens / self.timed_seconds if self.timed_seconds else None,
                   "wall_seconds": time.perf_counter() - self.t_start, "device": jax.devices()[0].platform,
                   "predictions": predictions(params, self.data.vocab, self.cfg, self.prefixes),
                   "devices": self.mesh.size if self.mesh else 1}
        summary.update({k: row[k] for k in ("val_loss", "val_perplexity", "val_bits_per_char") if k in row})
        if len(self.data.val[0]):
            summary["baselines"] = baselines.evaluate_baselines(self.data.tokens, self.data.val[0],
                                                                len(self.data.vocab), context=self.data.val[1])
        return summary


def memory_estimate(cfg: Config, vocab_size: int) -> tuple[int, int]:
    """(bytes, parameters) a run of cfg holds at once, roughly: its parameters, their gradients and optimizer
    state, and the activations of one minibatch kept for the backward pass (float32)."""
    shapes = jax.eval_shape(lambda: model.init_params(jax.random.key(0), vocab_size, cfg.hidden,
                                                      model.ModelSpec.from_config(cfg), embed_dim=cfg.embed_dim))
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
    n_opt = sum(math.prod(x.shape) for x in jax.tree.leaves(jax.eval_shape(step_lib.make_optimizer(cfg).init, shapes)))
    gates = model.CELLS[cfg.cell].gates
    acts = cfg.batch_size * cfg.num_steps * (cfg.num_layers * (gates + 1) * cfg.hidden + 2 * vocab_size)
    return 4 * (2 * n_params + n_opt + acts), n_params


def available_memory() -> int | None:
    """Bytes of memory the run's arrays can use: the accelerator's limit, else the machine's physical memory."""
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() if jax.default_backend() != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def check_memory(cfg: Config, vocab_size: int) -> None:
    """Raises ConfigError when the run cannot fit in memory, before anything is written."""
    need, n_params = memory_estimate(cfg, vocab_size)
    have = available_memory()
    if have is not None and need > have:
        raise config_lib.ConfigError(
            f"--hidden {cfg.hidden} (--num-layers {cfg.num_layers}, --batch-size {cfg.batch_size}, --num-steps "
            f"{cfg.num_steps}) needs about {need / 2**30:.1f} GiB ({n_params:,} parameters, their gradients and "
            f"optimizer state, and a minibatch's activations), more than the {have / 2**30:.1f} GiB of memory here; "
            "choose a smaller model")


def run(cfg: Config, run_dir: str | Path, *, corpus: str | None = None, data_dir: str | None = None,
        exp: str = "custom", resume: bool = False, quiet: bool = False, init_from: str | None = None,
        init_from_best: bool = False, prefixes: tuple[str, ...] | None = None, tensorboard: bool = False,
        init_expect: dict | None = None) -> dict:
    """Trains cfg in run_dir (config, vocab, metrics, checkpoints, curve), or continues it; returns a summary.

    init_from: a run directory whose parameters (its latest, or best with init_from_best) this run starts from,
    with a fresh optimizer. prefixes: the prompts of the predictions (default: see `default_prefixes`).
    tensorboard: also write TensorBoard event files to run_dir/tensorboard (needs tensorboardX).
    init_expect: what config.json recorded of init_from, for a resume before the first checkpoint (the same
    parameters, or a ConfigError).
    """
    config_lib.validate(cfg)
    if prefixes is not None and not all(prefixes):
        raise config_lib.ConfigError("--predict-prefix must be non-empty text (a prompt to warm up on)")
    run_dir = Path(run_dir)
    with _StopSignals() as stop:  # before the data is read and anything compiles
        training = load_data(cfg, corpus, data_dir)
        check_memory(cfg, len(training.vocab))
        params, extra = None, {"predict_prefixes": list(prefixes or default_prefixes(training, cfg))}
        if init_from:
            params, extra["init_from"] = rundir.params_from(init_from, best=init_from_best, cfg=cfg,
                                                            vocab=training.vocab, expect=init_expect)
        mesh = distributed.make_mesh(distributed.choose_devices(cfg.devices, cfg.batch_size))
        stop.check("before the run started; nothing was written")
        lock = rundir.open_run(run_dir, cfg, exp, resume, training.vocab, training.info, extra)
        try:
            trainer = Trainer(cfg, run_dir, training, mesh, exp=exp, resume=resume, quiet=quiet, params=params,
                              prefixes=extra["predict_prefixes"], tensorboard=tensorboard)
            return _train(trainer, cfg, run_dir, stop, quiet)
        finally:
            if lock:
                lock.release()


def _train(trainer: Trainer, cfg: Config, run_dir: Path, stop: _StopSignals, quiet: bool) -> dict:
    """The epochs, then the run's closing files: the curve, params.npz and summary.json."""
    try:
        _loop(trainer, cfg, run_dir, stop)
    except (Interrupted, Diverged):
        trainer.close()
        raise
    except BaseException:
        trainer.close(draw=False)  # the file system may have failed: write nothing more
        raise
    trainer.close()
    summary = trainer.summary()
    if distributed.is_primary():
        rundir.save_final(run_dir, distributed.to_host(trainer.state.params), summary)
        if not quiet:
            _print_summary(summary)
    return summary


def run_chain(exp: str, args: argparse.Namespace, run_dir: Path) -> dict:
    """The stages of a chained experiment in run_dir/<stage>, each from the parameters the one before ended
    with; a finished stage is kept, an unfinished one resumed, so running the command again continues it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_json(run_dir / "chain.json", {"experiment": exp, "stages": list(config_lib.CHAINS[exp])})
    summary, previous = {}, None
    for stage in config_lib.CHAINS[exp]:
        stage_dir = run_dir / stage
        if (stage_dir / "summary.json").is_file():
            _check_finished_stage(stage, stage_dir, args)
            summary = rundir.read_json(stage_dir / "summary.json", "a finished stage's summary")
        else:
            resume = (stage_dir / "config.json").is_file()
            stage_args = argparse.Namespace(**{**vars(args), "exp": stage, "run_dir": str(stage_dir),
                                               "resume": resume, "init_from": None if resume else previous})
            cfg, _, kw = _config_and_source(stage_args)
            summary = run(cfg, stage_dir, exp=stage, resume=resume, quiet=args.quiet, **kw)
        previous = str(stage_dir)
    return summary


def _check_finished_stage(stage: str, stage_dir: Path, args: argparse.Namespace) -> None:
    """Raises ConfigError, naming the difference, when the flags ask a finished stage of a chain for another
    configuration (a finished stage is kept as it is, and the next stage started from it)."""
    asked, _, _ = _config_and_source(argparse.Namespace(**{**vars(args), "exp": stage, "run_dir": str(stage_dir),
                                                            "resume": True, "init_from": None}))
    saved = config_lib.from_dict(rundir.saved_config(stage_dir)["config"])
    for f in dataclasses.fields(Config):
        a, b = getattr(saved, f.name), getattr(asked, f.name)
        if a != b:
            raise config_lib.ConfigError(f"stage {stage} of {stage_dir.parent} has finished with {f.name} {a!r}, "
                                         f"asked {b!r}; a finished stage is kept as it is: run it with its own "
                                         "flags, or choose another --run-dir")


def _loop(trainer: Trainer, cfg: Config, run_dir: Path, stop: _StopSignals) -> None:
    """What happens each epoch: train, validate, record, checkpoint; a signal stops after the checkpoint."""
    resume = f"Continue with: python -m rnn_jax.train --run-dir {run_dir} --resume"
    for epoch in range(trainer.start, cfg.epochs + 1):
        stop.check(f"before epoch {epoch}; no epoch finished since the last checkpoint. {resume}")
        row = trainer.train_epoch(epoch)
        trainer.validate(epoch, row)
        trainer.record(epoch, row)
        trainer.checkpoint(epoch, row, stopping=stop.received is not None)
        if stop.received:
            raise Interrupted(f"stopped by {stop.received} after epoch {epoch}; its checkpoint is in "
                              f"{run_dir / 'checkpoints'}. {resume}")


def _print_summary(summary: dict) -> None:
    tps = f"{summary['tokens_per_sec']:.1f}" if summary["tokens_per_sec"] else "-"
    ppl = f"{summary['perplexity']:.1f}" if summary["perplexity"] is not None else "- (every update skipped)"
    print(f"perplexity {ppl}, {tps} tokens/sec on {summary['device']}")
    if "val_perplexity" in summary:
        best_ngram = min(summary["baselines"].items(), key=lambda kv: kv[1]["perplexity"])
        print(f"validation perplexity {summary['val_perplexity']:.3f} ({summary['val_bits_per_char']:.3f} bits/char);"
              f" best baseline {best_ngram[0]} {best_ngram[1]['perplexity']:.3f}")
    for text in summary["predictions"].values():
        print(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rnn_jax.train",
                                     description="Train a character-level RNN language model.")
    names = ", ".join([*config_lib.EXPERIMENTS, *config_lib.CHAINS])
    parser.add_argument("--exp", default=None, help=f"named experiment: {names} (default: seq, or the resumed run's)")
    parser.add_argument("--run-dir", default=None, help="output directory (default: runs/<exp>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its latest "
                        "complete checkpoint")
    parser.add_argument("--data-dir", default=None, help="directory holding the named corpora's files "
                        f"({', '.join(c.file for c in data.CORPORA.values())}); default: $RNN_JAX_DATA_DIR, else "
                        "a verified download into the cache")
    parser.add_argument("--corpus", default=None, help=f"a corpus name ({', '.join(data.CORPORA)}; default: the "
                        "experiment's, else timemachine) or the path of a UTF-8 text file")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to "
                        f"RUN/tensorboard (needs tensorboardX: {log.TENSORBOARD_INSTALL})")
    parser.add_argument("--init-from", default=None, metavar="RUN", help="start from the parameters of the run in "
                        "directory RUN (its latest checkpoint), with a fresh optimizer and a new run directory")
    parser.add_argument("--init-from-best", action="store_true", help="with --init-from: its best checkpoint by "
                        "validation perplexity instead")
    parser.add_argument("--predict-prefix", action="append", default=None, metavar="TEXT", help="prompt of the "
                        "greedy predictions printed while training (repeatable; default: the book's 'time traveller'"
                        " and 'traveller' for the book, else the text's opening words)")
    group = parser.add_argument_group("multi-process (every process runs the same command)")
    group.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    group.add_argument("--num-processes", type=int, default=None)
    group.add_argument("--process-id", type=int, default=None)
    group.add_argument("--init-timeout", type=float, default=distributed.INIT_TIMEOUT,
                       help="seconds to wait for every process to join (default: %(default)s)")
    config_lib.add_config_flags(parser)
    return parser


def _config_and_source(args) -> tuple[Config, str, dict]:
    """(config, experiment, run's keyword arguments) of the command line; a resume starts from the run's own."""
    kw = {"corpus": args.corpus, "data_dir": args.data_dir, "init_from": args.init_from,
          "init_from_best": args.init_from_best, "prefixes": args.predict_prefix, "tensorboard": args.tensorboard}
    if args.init_from_best and not args.init_from:
        raise config_lib.ConfigError("--init-from-best goes with --init-from RUN")
    if not args.resume:
        exp = args.exp or "seq"
        kw["corpus"] = kw["corpus"] or config_lib.CORPUS_OF.get(exp)
        return config_lib.config_from_args(args, exp=exp), exp, kw
    if not args.run_dir:
        raise config_lib.ConfigError("--resume needs the --run-dir of the run to continue")
    if args.init_from:
        raise config_lib.ConfigError("--init-from starts a new run; a resumed run continues from its own checkpoint")
    saved = rundir.saved_config(Path(args.run_dir))
    try:
        exp = args.exp or saved["experiment"]
        base = config_lib.from_dict(saved["config"]) if exp == saved["experiment"] else None
        if not (args.corpus or args.data_dir):
            kw["corpus"] = saved["data"]["path"]
        no_checkpoint = checkpoint.latest_saved_epoch(Path(args.run_dir) / "checkpoints") is None
        if "init_from" in saved and no_checkpoint:  # killed before its first checkpoint: the same parameters again
            kw.update(init_from=saved["init_from"]["run"], init_from_best=saved["init_from"]["checkpoint"] == "best",
                      init_expect=saved["init_from"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{args.run_dir}/config.json is not a run's configuration (no {e}); restore it "
                              "from a copy") from None
    kw["prefixes"] = kw["prefixes"] or [p for p in saved.get("predict_prefixes") or () if p] or None
    return config_lib.config_from_args(args, exp=exp, base=base), exp, kw


def _chain(args) -> str | None:
    """The chained experiment this command runs (by --exp, or recorded in the --run-dir it resumes), if any."""
    if args.exp in config_lib.CHAINS:
        return args.exp
    if args.resume and args.run_dir and (Path(args.run_dir) / "chain.json").is_file():
        return rundir.read_json(Path(args.run_dir) / "chain.json", "a chained run's stages")["experiment"]
    return None


def _check_tensorboard(wanted: bool) -> None:
    """--tensorboard without tensorboardX is refused before anything is read or written."""
    if not wanted:
        return
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise config_lib.ConfigError(f"--tensorboard writes with tensorboardX, which is not installed: "
                                     f"{log.TENSORBOARD_INSTALL}") from None


def main(argv=None) -> int:
    rnn_jax.started()
    args = build_parser().parse_args(argv)
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit: a failed write to report, not a core dump
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        _check_tensorboard(args.tensorboard)
        chain = _chain(args)
        if chain:
            if args.init_from:
                raise config_lib.ConfigError(f"--exp {chain} starts from its own first stage; drop --init-from")
            distributed.initialize(args.coordinator, args.num_processes, args.process_id, timeout=args.init_timeout)
            run_chain(chain, args, Path(args.run_dir) if args.run_dir else default_run_dir(chain))
            return 0
        cfg, exp, kw = _config_and_source(args)
        distributed.initialize(args.coordinator, args.num_processes, args.process_id, timeout=args.init_timeout)
        run(cfg, args.run_dir or default_run_dir(exp), exp=exp, resume=args.resume, quiet=args.quiet, **kw)
    except (config_lib.ConfigError, data.DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, a size limit, a read-only file system: what was written before is intact
        print(f"error: {rundir.describe_os_error(e)}; the files written before are intact", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a signal before the run's own handler was installed
        print("stopped by SIGINT before the run started; nothing was written", file=sys.stderr)
        return 130
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    code = main()
    if checkpoint.write_failed():  # its error line is out; skip the teardown in which orbax's threads print
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
