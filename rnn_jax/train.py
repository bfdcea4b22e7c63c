"""Training: loss, optimizer, a whole epoch as one jitted scan, the run loop, and the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import json
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
import optax
from jax.experimental import multihost_utils

from rnn_jax import baselines, data, distributed, generate, log, model
from rnn_jax import config as config_lib
from rnn_jax import evaluate as evaluate_lib
from rnn_jax.checkpoint import CheckpointError, Checkpoints
from rnn_jax.config import Config

PREFIXES = ("time traveller", "traveller")


class TrainState(NamedTuple):
    params: model.Params
    opt_state: optax.OptState
    step: jax.Array


class Diverged(RuntimeError):
    """The loss or the gradient became NaN/Inf; the message names the epoch and step."""


def loss_fn(params, h_BH, tokens_BT, targets_BT, cfg: Config, mask_BT=None, key_dropout=None):
    """Mean softmax cross-entropy over batch x time (over mask_BT's positions when given); aux = h_last.

    With cfg.dropout and a key, that fraction of the states fed to the output layer is zeroed (training only).
    """
    keep_TBH = None
    if cfg.dropout and key_dropout is not None:
        keep = 1.0 - cfg.dropout
        shape = (tokens_BT.shape[1], tokens_BT.shape[0], cfg.hidden)
        keep_TBH = jax.random.bernoulli(key_dropout, keep, shape).astype(jnp.float32) / keep
    fwd = model.FORWARDS[cfg.backward]
    logits_TBV, h_BH = fwd(params, h_BH, tokens_BT, activation=cfg.activation, encoder=cfg.encoder,
                           dtype=cfg.matmul_dtype, keep_TBH=keep_TBH)
    xent_TB = optax.softmax_cross_entropy_with_integer_labels(logits_TBV, targets_BT.T)
    if mask_BT is None:
        return xent_TB.mean(), h_BH
    return jnp.sum(xent_TB * mask_BT.T) / jnp.sum(mask_BT), h_BH


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    clip = [] if cfg.clip_norm is None else [optax.clip_by_global_norm(cfg.clip_norm)]
    return optax.chain(*clip, {"sgd": optax.sgd, "adam": optax.adam}[cfg.optimizer](cfg.lr))


def init_state(cfg: Config, vocab_size: int, tx: optax.GradientTransformation, seed=None) -> TrainState:
    """Fresh parameters from `seed` (default cfg.seed; may be traced, to vmap over seeds) and optimizer state."""
    key_init = jax.random.fold_in(jax.random.key(cfg.seed if seed is None else seed), 0)  # purpose 0: params
    params = model.init_params(key_init, vocab_size, cfg.hidden, encoder=cfg.encoder, embed_dim=cfg.embed_dim)
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))


def _step_key(cfg: Config, state: TrainState):
    """The dropout key of this update: purpose 1 of the seed, folded with the step (None without dropout)."""
    if not cfg.dropout:
        return None
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), 1), state.step)


def _apply(tx, state: TrainState, grads, loss):
    """One optimizer update, kept only when loss and gradient are finite (else state is unchanged)."""
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = (optax.apply_updates(state.params, updates), opt_state)
    params, opt_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state[:2])
    return TrainState(params, opt_state, state.step + 1), {"loss": loss, "grad_norm": grad_norm,
                                                          "finite": finite}


def make_train_step(cfg: Config, tx: optax.GradientTransformation):
    """One minibatch: (state, h_BH, X_BT, Y_BT) -> (state, h_BH, metrics), jitted, state donated."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, h_BH, tokens_BT, targets_BT):
        h_BH = jax.lax.stop_gradient(h_BH)  # truncated BPTT: earlier minibatches get no gradient
        (loss, h_BH), grads = grad_fn(state.params, h_BH, tokens_BT, targets_BT, cfg, None, _step_key(cfg, state))
        state, metrics = _apply(tx, state, grads, loss)
        return state, h_BH, metrics

    return jax.jit(step, donate_argnums=0)


def make_train_epoch(cfg: Config, tx: optax.GradientTransformation):
    """All minibatches of an epoch in one jitted scan: (state, X_NBT, Y_NBT) -> (state, h_last_BH, metrics_N)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def detached(state, X_NBT, Y_NBT):
        h0_BH = model.init_hidden(X_NBT.shape[1], cfg.hidden)

        def body(carry, batch):
            state, h_BH = carry
            if cfg.sampling == "random":
                h_BH = h0_BH  # every minibatch starts from a zero state
            h_BH = jax.lax.stop_gradient(h_BH)
            (loss, h_new), grads = grad_fn(state.params, h_BH, *batch, cfg, None, _step_key(cfg, state))
            state, metrics = _apply(tx, state, grads, loss)
            return (state, jnp.where(metrics["finite"], h_new, h0_BH)), metrics

        (state, h_BH), metrics = jax.lax.scan(body, (state, h0_BH), (X_NBT, Y_NBT))
        return state, h_BH, metrics

    def undetached(state, X_NBT, Y_NBT):
        # Minibatch i's loss is backpropagated through the state into minibatches 0..i-1, recomputed
        # from the epoch's zero state with the current parameters (the chain is never cut).
        num_batches, batch_size, num_steps = X_NBT.shape
        X_BL = X_NBT.transpose(1, 0, 2).reshape(batch_size, -1)
        Y_BL = Y_NBT.transpose(1, 0, 2).reshape(batch_size, -1)
        chunk_L = jnp.arange(X_BL.shape[1]) // num_steps
        h0_BH = model.init_hidden(batch_size, cfg.hidden)

        def body(carry, i):
            state, _ = carry
            mask_BL = jnp.broadcast_to(chunk_L == i, X_BL.shape).astype(jnp.float32)
            (loss, h_BH), grads = grad_fn(state.params, h0_BH, X_BL, Y_BL, cfg, mask_BL, _step_key(cfg, state))
            state, metrics = _apply(tx, state, grads, loss)
            return (state, h_BH), metrics

        (state, h_BH), metrics = jax.lax.scan(body, (state, h0_BH), jnp.arange(num_batches))
        return state, h_BH, metrics

    if not cfg.detach and cfg.sampling == "seq":
        return jax.jit(undetached, donate_argnums=0)
    return jax.jit(detached, donate_argnums=0)


def predictions(params, vocab: data.Vocab, cfg: Config, prefixes=PREFIXES, num_preds: int = 50) -> dict:
    kw = dict(activation=cfg.activation, encoder=cfg.encoder, dtype=cfg.matmul_dtype)
    return {p: generate.predict(params, vocab, p, num_preds, **kw) for p in prefixes}


def default_run_dir(exp: str) -> Path:
    return Path("runs") / f"{exp}-{time.strftime('%Y%m%d-%H%M%S')}"


class Interrupted(RuntimeError):
    """SIGINT/SIGTERM: the checkpoint was written; the message says how to resume."""


class _StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks between epochs (a second signal acts at once)."""

    def __init__(self):
        self.received = None

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _fault_injection(point: str, epoch: int) -> None:
    """Test hook: RNN_JAX_KILL_AT='<point>:<epoch>' SIGKILLs this process there (crash-safety tests)."""
    if os.environ.get("RNN_JAX_KILL_AT") == f"{point}:{epoch}":
        os.kill(os.getpid(), signal.SIGKILL)


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


def _check_resumable(run_dir: Path, cfg: Config, sha1: str, exp: str) -> dict:
    saved = json.loads((run_dir / "config.json").read_text())
    if saved.get("experiment") != exp:
        raise config_lib.ConfigError(f"run directory {run_dir} belongs to experiment {saved.get('experiment')!r}, "
                                     f"not {exp!r}; resume it with --exp {saved.get('experiment')} or choose another "
                                     "--run-dir")
    old = config_lib.from_dict(saved["config"])
    for f in dataclasses.fields(Config):
        a, b = getattr(old, f.name), getattr(cfg, f.name)
        if a != b and f.name not in config_lib.RESUMABLE_FIELDS:
            raise config_lib.ConfigError(f"cannot resume {run_dir}: {f.name} differs (the run has {a!r}, asked "
                                         f"{b!r}); only {', '.join(sorted(config_lib.RESUMABLE_FIELDS))} may change")
    if saved["data"]["sha1"] != sha1:
        raise config_lib.ConfigError(f"cannot resume {run_dir}: the corpus differs from the one it was trained on "
                                     f"(SHA-1 {sha1}; the run's, {saved['data']['sha1']}, was read from "
                                     f"{saved['data']['path']})")
    return saved


def _open_run_dir(run_dir: Path, cfg: Config, exp: str, resume: bool, vocab: data.Vocab, data_info: dict):
    """Checks (every process) that run_dir can take this run, then writes config.json and vocab.json (process 0)."""
    if resume:
        if not (run_dir / "config.json").is_file():
            raise config_lib.ConfigError(f"--resume: {run_dir} holds no run to resume (no config.json)")
        saved = _check_resumable(run_dir, cfg, data_info["sha1"], exp)
        if data.Vocab.load(run_dir / "vocab.json") != vocab:
            raise config_lib.ConfigError(f"cannot resume {run_dir}: its vocabulary differs from this corpus's")
        saved["config"] = config_lib.to_dict(cfg)
        saved.setdefault("resumed", []).append({"time": time.strftime("%Y-%m-%d %H:%M:%S"), **log.environment()})
    elif (run_dir / "config.json").exists():
        raise config_lib.ConfigError(f"run directory {run_dir} already holds a run; continue it with --resume "
                                     "or choose another --run-dir")
    else:
        saved = {"experiment": exp, "config": config_lib.to_dict(cfg), "environment": log.environment(),
                 "data": data_info}
    _barrier("checked")  # every process looked before the first one writes
    if distributed.is_primary():
        run_dir.mkdir(parents=True, exist_ok=True)
        log.write_json(run_dir / "config.json", saved)
        if not resume:
            vocab.save(run_dir / "vocab.json")
    _barrier("run-dir")


def run(cfg: Config, run_dir: str | Path, *, corpus: str | None = None, data_dir: str | None = None,
        exp: str = "custom", resume: bool = False, quiet: bool = False) -> dict:
    """Trains cfg in run_dir (config, vocab, metrics, checkpoints, curve), or continues it; returns a summary."""
    config_lib.validate(cfg)
    run_dir = Path(run_dir)
    path = data.resolve_corpus(corpus, data_dir)
    sha1 = data.sha1_of(path)
    all_tokens, vocab = data.load_corpus(path, -1, cfg.preprocess)
    parts = evaluate_lib.splits(all_tokens, cfg)
    tokens, (val_tokens, val_context) = parts["train"][0], parts["val"]
    data.check_length(len(tokens), cfg.batch_size, cfg.num_steps, cfg.sampling)
    mesh = distributed.make_mesh(distributed.choose_devices(cfg.devices, cfg.batch_size))
    primary = distributed.is_primary()
    _open_run_dir(run_dir, cfg, exp, resume, vocab, {
        "path": str(path.resolve()), "sha1": sha1, "train_tokens": int(len(tokens)),
        "val_tokens": int(len(val_tokens)), "test_tokens": int(len(parts["test"][0]))})

    tx = make_optimizer(cfg)
    state = init_state(cfg, len(vocab), tx)
    key = jax.random.key_data(jax.random.key(cfg.seed))
    h_BH = model.init_hidden(cfg.batch_size, cfg.hidden)
    meta = {"experiment": exp, "config": config_lib.to_dict(cfg), "vocab": vocab.idx_to_token, "corpus_sha1": sha1}

    def checkpoint_tree(state, h_BH, epoch, skips_in_a_row):
        """Everything an exact continuation needs; the data order of epoch e is derived from (seed, e)."""
        return {"params": state.params, "opt_state": state.opt_state, "step": state.step, "h": h_BH,
                "epoch": epoch, "key": key, "data_seed": cfg.seed, "skips_in_a_row": skips_in_a_row}

    def checkpoint(epoch, val_ppl=None):
        ckpts.save(epoch, distributed.to_host(checkpoint_tree(state, h_BH, epoch, skips_in_a_row)), meta,
                   val_perplexity=val_ppl)

    ckpts = Checkpoints(run_dir, cfg.keep_checkpoints)
    start, skips_in_a_row, step = 1, 0, 0
    if resume and ckpts.latest_epoch() is not None:
        restored, _ = ckpts.restore(jax.tree.map(ocp_abstract, checkpoint_tree(state, h_BH, 0, 0)))
        state = jax.tree.map(jnp.asarray, TrainState(restored["params"], restored["opt_state"], restored["step"]))
        start, skips_in_a_row = int(restored["epoch"]) + 1, int(restored["skips_in_a_row"])
        step = int(restored["step"])
    state = distributed.replicate(state, mesh)
    train_epoch = make_train_epoch(cfg, tx)
    writer = log.MetricsWriter(run_dir, keep_epochs_upto=start - 1 if resume else None) if primary else None
    progress = None if quiet or not primary else log.Progress(cfg.epochs, start - 1)
    device = jax.devices()[0].platform
    timed_tokens, timed_seconds, t_start = 0, 0.0, time.perf_counter()
    row = {}
    try:
        with _StopSignals() as stop:
            for epoch in range(start, cfg.epochs + 1):
                t0 = time.perf_counter()
                X_NBT, Y_NBT = data.epoch_batches(tokens, cfg, epoch)
                state, h_BH, metrics = train_epoch(state, distributed.shard_rows(X_NBT, mesh),
                                                   distributed.shard_rows(Y_NBT, mesh))
                _fault_injection("mid-epoch", epoch)
                metrics = distributed.to_host(metrics)  # the epoch's one host sync
                seconds = time.perf_counter() - t0
                ok = metrics["finite"]
                step += len(ok)
                skips_in_a_row, stop_at = _count_skips(ok, skips_in_a_row, cfg)
                if stop_at is not None:
                    bad_step = step - len(ok) + stop_at + 1
                    loss_bad, norm_bad = float(metrics["loss"][stop_at]), float(metrics["grad_norm"][stop_at])
                    if writer:
                        writer.write({"epoch": epoch, "step": bad_step, "nonfinite": True, "loss": loss_bad,
                                      "grad_norm": norm_bad, "skipped": int((~ok).sum())})
                    why = (f"more than {cfg.max_skips} updates in a row were skipped" if cfg.on_nonfinite == "skip"
                           else "no checkpoint was written for it")
                    raise Diverged(f"diverged at epoch {epoch}, step {bad_step}: loss {loss_bad}, gradient norm "
                                   f"{norm_bad} ({why}); try gradient clipping (--clip-norm 1) or a lower --lr")
                # minibatches have equal size, so the plain mean is the token-weighted mean
                loss = float(np.mean(metrics["loss"][ok])) if ok.any() else None
                row = {"epoch": epoch, "step": step, "loss": loss,
                       "perplexity": math.exp(loss) if ok.any() else None,
                       "grad_norm": float(np.mean(metrics["grad_norm"][ok])) if ok.any() else None,
                       "tokens_per_sec": X_NBT.size / seconds, "seconds": seconds}
                if not ok.all():
                    row["skipped"] = int((~ok).sum())
                if epoch > start or cfg.epochs == start:  # the first epoch of a process includes compilation
                    timed_tokens, timed_seconds = timed_tokens + X_NBT.size, timed_seconds + seconds
                last = epoch == cfg.epochs
                if len(val_tokens) and ((cfg.eval_every and epoch % cfg.eval_every == 0) or last):
                    val = evaluate_lib.evaluate(distributed.to_host(state.params), val_tokens, cfg,
                                                context=val_context)
                    row.update(val_loss=val["loss"], val_perplexity=val["perplexity"],
                               val_bits_per_char=val["bits_per_char"])
                if writer:
                    writer.write(row)
                if progress and row["perplexity"] is not None:
                    progress.update(row["perplexity"], row["tokens_per_sec"])
                    if cfg.predict_every and (epoch % cfg.predict_every == 0 or last):
                        text = predictions(distributed.to_host(state.params), vocab, cfg, PREFIXES[:1])[PREFIXES[0]]
                        val_text = f"  val ppl {row['val_perplexity']:.3f}" if "val_perplexity" in row else ""
                        progress.line(epoch, row["perplexity"], row["tokens_per_sec"], val_text, text)
                if last or stop.received or (cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0) \
                        or "val_perplexity" in row:
                    checkpoint(epoch, row.get("val_perplexity"))
                    _fault_injection("after-checkpoint", epoch)
                if stop.received:
                    raise Interrupted(f"stopped by {stop.received} after epoch {epoch}; its checkpoint is in "
                                      f"{run_dir / 'checkpoints'}. Continue with: python -m rnn_jax.train "
                                      f"--run-dir {run_dir} --resume")
    finally:
        ckpts.close()
        if progress:
            progress.close()
        if writer:
            writer.close()
            rows = log.read_metrics(run_dir)
            if rows:
                log.plot_curve(rows, run_dir / "perplexity.png", title=f"{exp}: {path.name}")

    if not row:  # resumed a run that had already finished
        row = [r for r in log.read_metrics(run_dir) if r.get("perplexity") is not None][-1]
    params = distributed.to_host(state.params)
    summary = {
        "experiment": exp, "epochs": cfg.epochs, "perplexity": row["perplexity"], "loss": row["loss"],
        "tokens_per_sec": timed_tokens / timed_seconds if timed_seconds else None,
        "wall_seconds": time.perf_counter() - t_start, "device": device,
        "predictions": predictions(params, vocab, cfg), "devices": mesh.size if mesh else 1,
    }
    for k in ("val_loss", "val_perplexity", "val_bits_per_char"):
        if k in row:
            summary[k] = row[k]
    if len(val_tokens):
        summary["baselines"] = baselines.evaluate_baselines(tokens, val_tokens, len(vocab))
    if primary:
        np.savez(run_dir / "params.npz", **params)
        log.write_json(run_dir / "summary.json", summary)
    if not quiet and primary:
        tps = f"{summary['tokens_per_sec']:.1f}" if summary["tokens_per_sec"] else "-"
        ppl = f"{summary['perplexity']:.1f}" if summary["perplexity"] is not None else "- (every update skipped)"
        print(f"perplexity {ppl}, {tps} tokens/sec on {device}")
        if "val_perplexity" in summary:
            best_ngram = min(summary["baselines"].items(), key=lambda kv: kv[1]["perplexity"])
            print(f"validation perplexity {summary['val_perplexity']:.3f} "
                  f"({summary['val_bits_per_char']:.3f} bits/char); best baseline {best_ngram[0]} "
                  f"{best_ngram[1]['perplexity']:.3f}")
        for text in summary["predictions"].values():
            print(text)
    return summary


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def ocp_abstract(x):
    """Shape/dtype of a leaf, on the current device: restores land here whatever device saved them."""
    x = np.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rnn_jax.train",
                                     description="Train a character-level RNN language model.")
    parser.add_argument("--exp", default=None, help=f"named experiment: {', '.join(config_lib.EXPERIMENTS)} "
                        "(default: seq, or the resumed run's)")
    parser.add_argument("--run-dir", default=None, help="output directory (default: runs/<exp>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its latest "
                        "complete checkpoint")
    parser.add_argument("--data-dir", default=None, help=f"directory holding {data.TIME_MACHINE_FILE}")
    parser.add_argument("--corpus", default=None, help="train on this UTF-8 text file instead")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    group = parser.add_argument_group("multi-process (every process runs the same command)")
    group.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    group.add_argument("--num-processes", type=int, default=None)
    group.add_argument("--process-id", type=int, default=None)
    config_lib.add_config_flags(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        corpus, data_dir = args.corpus, args.data_dir
        if args.resume:
            if not args.run_dir:
                raise config_lib.ConfigError("--resume needs the --run-dir of the run to continue")
            saved_path = Path(args.run_dir) / "config.json"
            if not saved_path.is_file():
                raise config_lib.ConfigError(f"--resume: {args.run_dir} holds no run to resume (no config.json)")
            saved = json.loads(saved_path.read_text())
            exp = args.exp or saved["experiment"]
            base = config_lib.from_dict(saved["config"]) if exp == saved["experiment"] else None
            if not (corpus or data_dir):
                corpus = saved["data"]["path"]
        else:
            exp = args.exp or "seq"
            base = None
        cfg = config_lib.config_from_args(args, exp=exp, base=base)
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        run(cfg, args.run_dir or default_run_dir(exp), corpus=corpus, data_dir=data_dir, exp=exp,
            resume=args.resume, quiet=args.quiet)
    except (config_lib.ConfigError, data.DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
