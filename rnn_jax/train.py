"""Training: loss, optimizer, a whole epoch as one jitted scan, the run loop, and the CLI."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import config as config_lib
from rnn_jax import data, generate, log, model
from rnn_jax.config import Config

PREFIXES = ("time traveller", "traveller")


class TrainState(NamedTuple):
    params: model.Params
    opt_state: optax.OptState
    step: jax.Array


class Diverged(RuntimeError):
    """The loss or the gradient became NaN/Inf; the message names the epoch and step."""


def loss_fn(params, h_BH, tokens_BT, targets_BT, cfg: Config, mask_BT=None):
    """Mean softmax cross-entropy over batch x time (over mask_BT's positions when given); aux = h_last."""
    fwd = model.FORWARDS[cfg.backward]
    logits_TBV, h_BH = fwd(params, h_BH, tokens_BT, activation=cfg.activation, encoder=cfg.encoder,
                           dtype=cfg.matmul_dtype)
    xent_TB = optax.softmax_cross_entropy_with_integer_labels(logits_TBV, targets_BT.T)
    if mask_BT is None:
        return xent_TB.mean(), h_BH
    return jnp.sum(xent_TB * mask_BT.T) / jnp.sum(mask_BT), h_BH


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    clip = [] if cfg.clip_norm is None else [optax.clip_by_global_norm(cfg.clip_norm)]
    return optax.chain(*clip, optax.sgd(cfg.lr))


def init_state(cfg: Config, vocab_size: int, tx: optax.GradientTransformation) -> TrainState:
    key_init = jax.random.fold_in(jax.random.key(cfg.seed), 0)  # purpose 0: parameters
    params = model.init_params(key_init, vocab_size, cfg.hidden, encoder=cfg.encoder, embed_dim=cfg.embed_dim)
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))


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
        (loss, h_BH), grads = grad_fn(state.params, h_BH, tokens_BT, targets_BT, cfg)
        state, metrics = _apply(tx, state, grads, loss)
        return state, h_BH, metrics

    return jax.jit(step, donate_argnums=0)


def make_train_epoch(cfg: Config, tx: optax.GradientTransformation):
    """All minibatches of an epoch in one jitted scan: (state, X_NBT, Y_NBT) -> (state, metrics_N)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def detached(state, X_NBT, Y_NBT):
        h0_BH = model.init_hidden(X_NBT.shape[1], cfg.hidden)

        def body(carry, batch):
            state, h_BH = carry
            if cfg.sampling == "random":
                h_BH = h0_BH  # every minibatch starts from a zero state
            h_BH = jax.lax.stop_gradient(h_BH)
            (loss, h_new), grads = grad_fn(state.params, h_BH, *batch, cfg)
            state, metrics = _apply(tx, state, grads, loss)
            return (state, jnp.where(metrics["finite"], h_new, h0_BH)), metrics

        (state, _), metrics = jax.lax.scan(body, (state, h0_BH), (X_NBT, Y_NBT))
        return state, metrics

    def undetached(state, X_NBT, Y_NBT):
        # Minibatch i's loss is backpropagated through the state into minibatches 0..i-1, recomputed
        # from the epoch's zero state with the current parameters (the chain is never cut).
        num_batches, batch_size, num_steps = X_NBT.shape
        X_BL = X_NBT.transpose(1, 0, 2).reshape(batch_size, -1)
        Y_BL = Y_NBT.transpose(1, 0, 2).reshape(batch_size, -1)
        chunk_L = jnp.arange(X_BL.shape[1]) // num_steps
        h0_BH = model.init_hidden(batch_size, cfg.hidden)

        def body(state, i):
            mask_BL = jnp.broadcast_to(chunk_L == i, X_BL.shape).astype(jnp.float32)
            (loss, _), grads = grad_fn(state.params, h0_BH, X_BL, Y_BL, cfg, mask_BL)
            return _apply(tx, state, grads, loss)

        return jax.lax.scan(body, state, jnp.arange(num_batches))

    if not cfg.detach and cfg.sampling == "seq":
        return jax.jit(undetached, donate_argnums=0)
    return jax.jit(detached, donate_argnums=0)


def predictions(params, vocab: data.Vocab, cfg: Config, prefixes=PREFIXES, num_preds: int = 50) -> dict:
    kw = dict(activation=cfg.activation, encoder=cfg.encoder, dtype=cfg.matmul_dtype)
    return {p: generate.predict(params, vocab, p, num_preds, **kw) for p in prefixes}


def default_run_dir(exp: str) -> Path:
    return Path("runs") / f"{exp}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(cfg: Config, run_dir: str | Path, *, corpus: str | None = None, data_dir: str | None = None,
        exp: str = "custom", quiet: bool = False) -> dict:
    """Trains cfg in run_dir (config.json, vocab.json, metrics.jsonl, params, perplexity.png); returns a summary."""
    config_lib.validate(cfg)
    run_dir = Path(run_dir)
    path = data.resolve_corpus(corpus, data_dir)
    tokens, vocab = data.load_corpus(path, cfg.max_tokens)
    data.check_length(len(tokens), cfg.batch_size, cfg.num_steps, cfg.sampling)
    if (run_dir / "config.json").exists():
        raise config_lib.ConfigError(f"run directory {run_dir} already holds a run; choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    log.write_json(run_dir / "config.json", {
        "experiment": exp, "config": config_lib.to_dict(cfg), "environment": log.environment(),
        "data": {"path": str(path.resolve()), "sha1": data.sha1_of(path), "train_tokens": int(len(tokens))},
    })
    vocab.save(run_dir / "vocab.json")

    tx = make_optimizer(cfg)
    state = init_state(cfg, len(vocab), tx)
    train_epoch = make_train_epoch(cfg, tx)
    writer = log.MetricsWriter(run_dir)
    progress = log.Progress(cfg.epochs) if not quiet else None
    device = jax.devices()[0].platform
    timed_tokens, timed_seconds, t_start = 0, 0.0, time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            X_NBT, Y_NBT = data.epoch_batches(tokens, cfg, epoch)
            state, metrics = train_epoch(state, X_NBT, Y_NBT)
            metrics = jax.device_get(metrics)  # the epoch's one host sync
            seconds = time.perf_counter() - t0
            ok = metrics["finite"]
            if not ok.all():
                bad = int(np.argmin(ok))
                step = int(state.step) - len(ok) + bad + 1
                writer.write({"epoch": epoch, "step": step, "nonfinite": True,
                              "loss": float(metrics["loss"][bad]), "grad_norm": float(metrics["grad_norm"][bad])})
                raise Diverged(f"diverged at epoch {epoch}, step {step}: loss {metrics['loss'][bad]}, "
                               f"gradient norm {metrics['grad_norm'][bad]}; try gradient clipping "
                               "(--clip-norm 1) or a lower --lr")
            loss = float(np.mean(metrics["loss"]))  # minibatches have equal size: the token-weighted mean
            row = {"epoch": epoch, "step": int(state.step), "loss": loss, "perplexity": math.exp(loss),
                   "grad_norm": float(np.mean(metrics["grad_norm"])),
                   "tokens_per_sec": X_NBT.size / seconds, "seconds": seconds}
            if epoch > 1 or cfg.epochs == 1:  # the first epoch includes compilation
                timed_tokens, timed_seconds = timed_tokens + X_NBT.size, timed_seconds + seconds
            writer.write(row)
            if progress:
                progress.update(epoch, row["perplexity"], row["tokens_per_sec"])
                if cfg.predict_every and (epoch % cfg.predict_every == 0 or epoch == cfg.epochs):
                    text = predictions(state.params, vocab, cfg, PREFIXES[:1])[PREFIXES[0]]
                    progress.line(epoch, row["perplexity"], row["tokens_per_sec"], text)
    finally:
        writer.close()
        if progress:
            progress.close()
        rows = log.read_metrics(run_dir)
        if rows:
            log.plot_curve(rows, run_dir / "perplexity.png", title=f"{exp}: {path.name}")

    np.savez(run_dir / "params.npz", **jax.device_get(state.params))
    summary = {
        "experiment": exp, "epochs": cfg.epochs, "perplexity": row["perplexity"], "loss": row["loss"],
        "tokens_per_sec": timed_tokens / timed_seconds, "wall_seconds": time.perf_counter() - t_start,
        "device": device, "predictions": predictions(state.params, vocab, cfg),
    }
    log.write_json(run_dir / "summary.json", summary)
    if not quiet:
        print(f"perplexity {summary['perplexity']:.1f}, {summary['tokens_per_sec']:.1f} tokens/sec on {device}")
        for text in summary["predictions"].values():
            print(text)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rnn_jax.train",
                                     description="Train a character-level RNN language model.")
    parser.add_argument("--exp", default="seq", help=f"named experiment: {', '.join(config_lib.EXPERIMENTS)}")
    parser.add_argument("--run-dir", default=None, help="output directory (default: runs/<exp>-<time>)")
    parser.add_argument("--data-dir", default=None, help=f"directory holding {data.TIME_MACHINE_FILE}")
    parser.add_argument("--corpus", default=None, help="train on this UTF-8 text file instead")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    config_lib.add_config_flags(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_lib.config_from_args(args)
        run(cfg, args.run_dir or default_run_dir(args.exp), corpus=args.corpus, data_dir=args.data_dir,
            exp=args.exp, quiet=args.quiet)
    except (config_lib.ConfigError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
