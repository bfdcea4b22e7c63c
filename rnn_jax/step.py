"""The training math, pure JAX: loss, optimizer, TrainState, one step and one whole epoch as a jitted scan.

The carried state is the cell's pytree: sequential partitioning feeds it from minibatch to minibatch
through `stop_gradient` (truncated backpropagation through time); random sampling, or `reset_state`,
starts every minibatch from zeros. A non-finite loss, gradient or updated state leaves the parameters
and optimizer state unchanged and restarts the carried state from zeros, in `make_train_step` and
`make_train_epoch` alike.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnn_jax import config as config_lib
from rnn_jax import model, stack
from rnn_jax.config import Config


class TrainState(NamedTuple):
    params: model.Params
    opt_state: optax.OptState
    step: jax.Array


def spec_of(cfg: Config, spec: model.ModelSpec | None = None) -> model.ModelSpec:
    """`spec` when given, else cfg's (ModelSpec.from_config): each entry point of this module builds it once."""
    return model.ModelSpec.from_config(cfg) if spec is None else spec


def zero_state(cfg: Config, batch_size: int, spec: model.ModelSpec | None = None) -> model.State:
    """The carried state before the first minibatch: zeros of the shape of cfg's model."""
    return model.zero_state(batch_size, cfg.hidden, spec_of(cfg, spec))


def stop_gradient(state: model.State) -> model.State:
    """Truncated BPTT: the minibatches before this one get no gradient through the carried state."""
    return jax.tree.map(jax.lax.stop_gradient, state)


def _where(pred: jax.Array, a, b):
    return jax.tree.map(lambda x, y: jnp.where(pred, x, y), a, b)


def dropout_mask(cfg: Config, tokens_BT: jax.Array, key_dropout) -> jax.Array | None:
    """(T, B, H) keep mask scaled by 1/keep for the states fed to the output layer; None without dropout."""
    if not cfg.dropout or key_dropout is None:
        return None
    return keep_mask(cfg, key_dropout, 1.0 - cfg.dropout, (tokens_BT.shape[1], tokens_BT.shape[0], cfg.hidden))


def keep_mask(cfg: Config, key, keep: float, shape_TBH: tuple) -> jax.Array:
    """Bernoulli(keep) / keep of shape (..., T, B, H): new at every step, or with cfg.dropout_mask == "sequence"
    one mask per row for all T steps (variational dropout, Gal & Ghahramani 2016)."""
    if cfg.dropout_mask == "step":
        return jax.random.bernoulli(key, keep, shape_TBH).astype(jnp.float32) / keep
    one = (*shape_TBH[:-3], 1, *shape_TBH[-2:])
    return jnp.broadcast_to(jax.random.bernoulli(key, keep, one).astype(jnp.float32) / keep, shape_TBH)


def drop_weights(cfg: Config, params, key_dropout, spec: model.ModelSpec):
    """DropConnect (Wan et al. 2013; AWD-LSTM): each recurrent matrix (the cell's `Cell.recurrent`, every layer's)
    with cfg.weight_drop of its entries zeroed, the rest scaled by 1/keep, one mask per minibatch shared by every
    row and step."""
    if not cfg.weight_drop or key_dropout is None:
        return params
    keep, key_weights = 1.0 - cfg.weight_drop, jax.random.fold_in(key_dropout, 2)
    names = model.recurrent_weights(params, spec)
    dropped = {
        k: params[k] * jax.random.bernoulli(jax.random.fold_in(key_weights, i), keep, params[k].shape) / keep
        for i, k in enumerate(names)
    }
    return {**params, **dropped}


def layer_dropout_masks(cfg: Config, tokens_BT: jax.Array, key_dropout) -> jax.Array | None:
    """(L-1, T, B, H) keep masks scaled by 1/keep for the outputs of layers 1..L-1 fed to the layer above."""
    if not cfg.layer_dropout or cfg.num_layers == 1 or key_dropout is None:
        return None
    keep = 1.0 - cfg.layer_dropout
    shape = (cfg.num_layers - 1, tokens_BT.shape[1], tokens_BT.shape[0], cfg.hidden)
    key_layers = jax.random.fold_in(key_dropout, 1)  # independent of the output layer's mask
    return keep_mask(cfg, key_layers, keep, shape)


def loss_fn(params, state, tokens_BT, targets_BT, cfg: Config, mask_BT=None, key_dropout=None, spec=None):
    """Mean softmax cross-entropy over batch x time (over mask_BT's positions when given); aux = last state.

    With cfg.dropout and a key, that fraction of the states fed to the output layer is zeroed (training only);
    with cfg.layer_dropout, that fraction of the states each layer feeds the layer above;
    with cfg.weight_drop, that fraction of the recurrent weights. spec: cfg's ModelSpec, built once by the caller
    (None: built here).
    """
    spec = spec_of(cfg, spec)
    params = drop_weights(cfg, params, key_dropout, spec)
    logits_TBV, state = model.FORWARDS[cfg.backward](
        params,
        state,
        tokens_BT,
        spec,
        keep_TBH=dropout_mask(cfg, tokens_BT, key_dropout),
        keep_LTBH=layer_dropout_masks(cfg, tokens_BT, key_dropout),
    )
    xent_TB = optax.softmax_cross_entropy_with_integer_labels(logits_TBV, targets_BT.T)
    if mask_BT is None:
        return xent_TB.mean(), state
    return jnp.sum(xent_TB * mask_BT.T) / jnp.sum(mask_BT), state


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    clip = [] if cfg.clip_norm is None else [optax.clip_by_global_norm(cfg.clip_norm)]
    if cfg.weight_decay:
        return optax.chain(*clip, _decayed(cfg))
    return optax.chain(*clip, {"sgd": optax.sgd, "adam": optax.adam}[cfg.optimizer](cfg.lr))


def _decayed(cfg: Config) -> optax.GradientTransformation:
    """w <- w - lr (update + weight_decay w) on the weight matrices (biases are not decayed), outside Adam's scaling
    (Loshchilov & Hutter 2019); for SGD decoupled and L2 decay coincide."""
    matrices = lambda params: {k: stack.layer_ndim(k, p) >= 2 for k, p in params.items()}
    if cfg.optimizer == "adam":
        return optax.adamw(cfg.lr, weight_decay=cfg.weight_decay, mask=matrices)
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=matrices), optax.sgd(cfg.lr))


def lr_scale(cfg: Config, epoch: int) -> float | None:
    """The factor on every update of `epoch` (1-based) under cfg.lr_schedule; None for a constant step size.
    The cosine falls over the run's epochs, so its horizon is cfg.epochs: such a run resumes only to the same
    epochs (a longer run would have had a larger step size all along)."""
    if cfg.lr_schedule == "constant":
        return None
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.epochs))


def init_state(
    cfg: Config,
    vocab_size: int,
    tx: optax.GradientTransformation,
    seed=None,
    params: model.Params | None = None,
    spec: model.ModelSpec | None = None,
) -> TrainState:
    """Fresh parameters of cfg's model (`spec`, None: built here) from `seed` (default cfg.seed; may be traced, to
    vmap over seeds), or the given `params`, with a fresh optimizer state."""
    if params is None:
        key_init = jax.random.fold_in(jax.random.key(cfg.seed if seed is None else seed), 0)  # purpose 0: params
        spec = spec_of(cfg, spec)
        params = model.init_params(key_init, vocab_size, cfg.hidden, spec, embed_dim=cfg.embed_dim)
        if cfg.init == "scaled":  # purpose 3 of the seed (1: dropout, 2: unused)
            key_scaled = jax.random.fold_in(jax.random.key(cfg.seed if seed is None else seed), 3)
            params = model.rescale_init(params, key_scaled, spec, forget_bias=cfg.forget_bias)
        elif cfg.forget_bias:
            gate = spec.core.forget_gate
            params = {
                **params,
                **{k: jnp.full_like(v, cfg.forget_bias) for k, v in params.items() if k.split(stack.UPPER)[0] == gate},
            }
    return TrainState(params, tx.init(params), jnp.zeros((), jnp.int32))


def _step_key(cfg: Config, state: TrainState, seed=None):
    """The dropout key of this update: purpose 1 of the seed (cfg.seed, or `seed`, which may be traced: a vmapped
    sweep passes each model's own), folded with the step (None without dropout)."""
    if not cfg.dropout and not cfg.layer_dropout and not cfg.weight_drop:
        return None
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed if seed is None else seed), 1), state.step)


def _all_finite(tree) -> jax.Array:
    """Whether every element of every floating leaf is finite (a norm could overflow on finite values)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _apply(tx, state: TrainState, grads, loss, lr_scale=None):
    """One optimizer update, kept only when loss, gradient and the updated state are finite (else state is
    unchanged): a finite gradient times a huge learning rate can still overflow. `lr_scale` (the schedule's
    factor of this epoch, step_lib.lr_scale) multiplies the whole update, as a scaled step size would."""
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if lr_scale is not None:
        updates = jax.tree.map(lambda u: u * lr_scale, updates)
    new = (optax.apply_updates(state.params, updates), opt_state)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(new)
    params, opt_state = _where(finite, new, state[:2])
    return TrainState(params, opt_state, state.step + 1), {"loss": loss, "grad_norm": grad_norm, "finite": finite}


def reset_rows(cfg: Config, state: TrainState, carried, seed=None):
    """`carried` with each row zeroed with probability cfg.reset_fraction, drawn per update from purpose 4 of the
    seed folded with the step (so resumes are exact); unchanged when the fraction is 0."""
    if not cfg.reset_fraction:
        return carried
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed if seed is None else seed), 4), state.step)
    keep_B = ~jax.random.bernoulli(key, cfg.reset_fraction, (jax.tree.leaves(carried)[0].shape[0],))
    return jax.tree.map(lambda a: jnp.where(keep_B[:, None], a, jnp.zeros_like(a)), carried)


def _update(
    cfg: Config, spec, tx, grad_fn, state: TrainState, carried, tokens_BT, targets_BT, lr_scale=None, seed=None
):
    """Gradient step from `carried` (some rows reset, with cfg.reset_fraction); returns (state, the state to carry
    on, metrics)."""
    carried = reset_rows(cfg, state, carried, seed)
    (loss, carried_new), grads = grad_fn(
        state.params, carried, tokens_BT, targets_BT, cfg, None, _step_key(cfg, state, seed), spec
    )
    state, metrics = _apply(tx, state, grads, loss, lr_scale)
    # a skipped update restarts the carried state from zeros, as at the start of an epoch
    return state, _where(metrics["finite"], carried_new, zero_state(cfg, tokens_BT.shape[0], spec)), metrics


# On AVX-512 CPUs LLVM emits 256-bit vector code unless told otherwise; 512-bit lanes speed up the gated cells'
# elementwise kernels (LSTM epoch +5%, GRU +3%, paired in one process) and change no number (tests/test_train.py).
CPU_COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": 512}


def jit(fn, **kwargs):
    """jax.jit of a train step or epoch, with CPU_COMPILER_OPTIONS when the computation runs on the CPU."""
    if jax.default_backend() == "cpu":
        kwargs["compiler_options"] = CPU_COMPILER_OPTIONS
    return jax.jit(fn, **kwargs)


def make_train_step(cfg: Config, tx: optax.GradientTransformation, spec: model.ModelSpec | None = None):
    """One minibatch: (state, carried, X_BT, Y_BT[, lr_scale]) -> (state, carried, metrics), jitted, state donated.
    spec: cfg's ModelSpec as the run resolved it (None: built here)."""
    grad_fn, spec = jax.value_and_grad(loss_fn, has_aux=True), spec_of(cfg, spec)

    def step(state: TrainState, carried, tokens_BT, targets_BT, lr_scale=None):
        return _update(cfg, spec, tx, grad_fn, state, stop_gradient(carried), tokens_BT, targets_BT, lr_scale)

    return jit(step, donate_argnums=0)


def make_train_epoch(
    cfg: Config, tx: optax.GradientTransformation, jitted: bool = True, spec: model.ModelSpec | None = None
):
    """All minibatches of an epoch in one jitted scan: (state, X_NBT, Y_NBT[, lr_scale]) -> (state, last carried,
    metrics_N); lr_scale is the epoch's factor under cfg.lr_schedule (step_lib.lr_scale), None for a constant one;
    seed (optional, may be traced) replaces cfg.seed in the dropout keys, so each model of a vmapped sweep draws its
    own masks.
    jitted=False: the plain function, for a caller that transforms it (vmap) and jits the result itself: JAX
    refuses a jit that carries compiler options (CPU_COMPILER_OPTIONS) inside another jit.
    spec: cfg's ModelSpec as the run resolved it (None: built here)."""
    grad_fn, spec = jax.value_and_grad(loss_fn, has_aux=True), spec_of(cfg, spec)
    reset = config_lib.resets_state(cfg)

    def detached(state, X_NBT, Y_NBT, lr_scale=None, seed=None):
        zeros = zero_state(cfg, X_NBT.shape[1], spec)

        def body(carry, batch):
            state, carried = carry
            state, carried, metrics = _update(
                cfg, spec, tx, grad_fn, state, stop_gradient(zeros if reset else carried), *batch, lr_scale, seed
            )
            return (state, carried), metrics

        (state, carried), metrics = jax.lax.scan(body, (state, zeros), (X_NBT, Y_NBT))
        return state, carried, metrics

    def undetached(state, X_NBT, Y_NBT, lr_scale=None, seed=None):
        # Minibatch i's loss is backpropagated through the state into minibatches 0..i-1, recomputed
        # from the epoch's zero state with the current parameters (the chain is never cut).
        num_batches, batch_size, num_steps = X_NBT.shape
        X_BL = X_NBT.transpose(1, 0, 2).reshape(batch_size, -1)
        Y_BL = Y_NBT.transpose(1, 0, 2).reshape(batch_size, -1)
        chunk_L = jnp.arange(X_BL.shape[1]) // num_steps
        zeros = zero_state(cfg, batch_size, spec)

        def body(carry, i):
            state, _ = carry
            mask_BL = jnp.broadcast_to(chunk_L == i, X_BL.shape).astype(jnp.float32)
            key = _step_key(cfg, state, seed)
            (loss, carried), grads = grad_fn(state.params, zeros, X_BL, Y_BL, cfg, mask_BL, key, spec)
            state, metrics = _apply(tx, state, grads, loss, lr_scale)
            return (state, carried), metrics

        (state, carried), metrics = jax.lax.scan(body, (state, zeros), jnp.arange(num_batches))
        return state, carried, metrics

    epoch = undetached if not cfg.detach and not reset else detached
    return jit(epoch, donate_argnums=0) if jitted else epoch
