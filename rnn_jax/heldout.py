"""A recurrent model's scores of a held-out text, by the protocols of `scoring`: the stream (the state carried from
the first character to the last), random windows (each from a zero state), and dynamic evaluation along the stream.

Every function takes the model's `ModelSpec` (H comes from the parameters); each jitted one is keyed by it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnn_jax import corpora, model
from rnn_jax import step as step_lib
from rnn_jax.scoring import WINDOW_BATCH, WINDOW_LENGTH, WINDOW_SEED, WINDOWS, figures, window_figures, window_starts

CHUNK = 1024  # tokens per scan chunk; the state flows from chunk to chunk


def _stream(tokens: np.ndarray, context: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of a held-out text: with context its last token is the first input, as in `evaluate`."""
    tokens = np.asarray(tokens, np.int32)
    if context is not None and len(context):
        inputs, targets = np.concatenate([np.asarray(context[-1:], np.int32), tokens[:-1]]), tokens
    else:
        inputs, targets = tokens[:-1], tokens[1:]
    if len(targets) == 0:
        raise corpora.DataError("nothing to evaluate: the held-out text is empty (is --val-fraction 0?)")
    return inputs, targets


def _rows(length: int, num_targets: int):
    """A function that pads a stream of num_targets to whole rows of `length` and cuts it into them: (rows, L)."""
    rows = -(-num_targets // length)
    return lambda a: np.pad(a, (0, rows * length - num_targets)).reshape(rows, length)


@functools.partial(jax.jit, static_argnames=("spec",))
def _sum_nll(params, inputs_CL, targets_CL, mask_CL, *, spec: model.ModelSpec):
    def chunk(state, batch):
        inputs_L, targets_L, mask_L = batch
        logits_L1V, state = model.forward_fused(params, state, inputs_L[None], spec)
        nll_L = optax.softmax_cross_entropy_with_integer_labels(logits_L1V[:, 0], targets_L)
        return state, jnp.sum(nll_L * mask_L)

    state = model.zero_state(1, model.hidden_size(params), spec)
    return jnp.sum(jax.lax.scan(chunk, state, (inputs_CL, targets_CL, mask_CL))[1])


def evaluate(params, tokens: np.ndarray, spec: model.ModelSpec, *, context: np.ndarray | None = None) -> dict:
    """Mean loss (nats), perplexity and bits/char of every token of `tokens`, one stream from a zero state.

    With `context` (the text just before, e.g. the training part), its last token is the first input,
    so every token of `tokens` is scored; without it the first token is only an input.
    """
    inputs, targets = _stream(tokens, context)
    shape = _rows(CHUNK, len(targets))
    total = _sum_nll(params, shape(inputs), shape(targets), shape(np.ones(len(targets), np.float32)), spec=spec)
    return figures(float(total) / len(targets), len(targets))


@functools.partial(jax.jit, static_argnames=("spec",))
def _token_nll(params, inputs_CL, targets_CL, *, spec: model.ModelSpec):
    def chunk(state, batch):
        inputs_L, targets_L = batch
        logits_L1V, state = model.forward_fused(params, state, inputs_L[None], spec)
        return state, optax.softmax_cross_entropy_with_integer_labels(logits_L1V[:, 0], targets_L)

    state = model.zero_state(1, model.hidden_size(params), spec)
    return jax.lax.scan(chunk, state, (inputs_CL, targets_CL))[1]


def token_losses(params, tokens: np.ndarray, spec: model.ModelSpec, *, context: np.ndarray | None = None):
    """-ln P(token) of every token `evaluate` scores, in order (float64 on the host): what an ensemble of models,
    or a mixture with a counting model, averages as probabilities."""
    inputs, targets = _stream(tokens, context)
    shape = _rows(CHUNK, len(targets))
    nll = _token_nll(params, shape(inputs), shape(targets), spec=spec)
    return np.asarray(nll, np.float64).reshape(-1)[: len(targets)]


@functools.partial(jax.jit, static_argnames=("spec",))
def _window_nll(params, inputs_NBL, targets_NBL, *, spec: model.ModelSpec):
    def batch(_, xy):
        inputs_BL, targets_BL = xy
        state = model.zero_state(inputs_BL.shape[0], model.hidden_size(params), spec)  # each from an empty context
        logits_LBV, _ = model.forward_fused(params, state, inputs_BL, spec)
        return None, optax.softmax_cross_entropy_with_integer_labels(logits_LBV, targets_BL.T).T

    return jax.lax.scan(batch, None, (inputs_NBL, targets_NBL))[1]


def window_losses(
    params,
    tokens: np.ndarray,
    spec: model.ModelSpec,
    *,
    windows: int = WINDOWS,
    length: int = WINDOW_LENGTH,
    seed: int = WINDOW_SEED,
) -> np.ndarray:
    """-ln P of every target of `windows` random windows of `tokens`, each scored from a zero state with nothing
    before it: (windows, length) float64, row i the window at window_starts(...)[i]."""
    tokens = np.asarray(tokens, np.int32)
    starts = window_starts(len(tokens), windows, length, seed)
    idx_NL = starts[:, None] + np.arange(length)
    batch = math.gcd(windows, WINDOW_BATCH)  # nanoGPT's 64 rows per batch when the count allows
    shape = lambda a: a.reshape(-1, batch, length)
    nll = _window_nll(params, shape(tokens[idx_NL]), shape(tokens[idx_NL + 1]), spec=spec)
    return np.asarray(nll, np.float64).reshape(windows, length)


def evaluate_windows(
    params,
    tokens: np.ndarray,
    spec: model.ModelSpec,
    *,
    windows: int = WINDOWS,
    length: int = WINDOW_LENGTH,
    seed: int = WINDOW_SEED,
) -> dict:
    """nanoGPT's estimate_loss for a recurrent model: the mean loss over every target of `windows` windows of
    `length` characters drawn uniformly from `tokens` with `seed`, each from a zero state (window_figures)."""
    nll = window_losses(params, tokens, spec, windows=windows, length=length, seed=seed)
    return window_figures(nll, seed)


RMS_DECAY, RMS_EPS = 0.99, 1e-8  # RMS-normalised steps: running mean of g^2 over the segments already scored


def _dynamic_update(rule: str, lr, decay, params, p, grads, ms, k):
    """One step of dynamic evaluation: SGD, or SGD on g / RMS(g) with the RMS of the segments so far (bias-corrected,
    as in RMSprop/Adam); either way then decay * (trained - current) back towards the trained parameters."""
    if rule == "rms":
        ms = jax.tree.map(lambda m, g: RMS_DECAY * m + (1 - RMS_DECAY) * g * g, ms, grads)
        grads = jax.tree.map(lambda g, m: g / (jnp.sqrt(m / (1 - RMS_DECAY**k)) + RMS_EPS), grads, ms)
    return jax.tree.map(lambda w, g, w0: w - lr * g + decay * (w0 - w), p, grads, params), ms


@functools.partial(jax.jit, static_argnames=("spec", "rule"))
def _dynamic_nll(params, inputs_SL, targets_SL, mask_SL, lr, decay, *, spec: model.ModelSpec, rule: str):
    """Summed loss of each segment under the parameters updated on the segments before it only: (S,)."""

    def seg_loss(p, state, inputs_L, targets_L, mask_L):
        logits_L1V, state = model.forward_fused(p, state, inputs_L[None], spec)
        nll = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits_L1V[:, 0], targets_L) * mask_L)
        return nll / jnp.maximum(jnp.sum(mask_L), 1.0), (nll, state)

    def segment(carry, seg):
        p, state, ms, k = carry
        # one forward pass both scores the segment and gives its gradient: the score comes before the update
        grads, (nll, state) = jax.grad(seg_loss, has_aux=True)(p, step_lib.stop_gradient(state), *seg)
        p, ms = _dynamic_update(rule, lr, decay, params, p, grads, ms, k + 1)
        return (p, state, ms, k + 1), nll

    state = model.zero_state(1, model.hidden_size(params), spec)
    carry = (params, state, jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32))
    return jax.lax.scan(segment, carry, (inputs_SL, targets_SL, mask_SL))[1]


def dynamic_segment_losses(
    params,
    tokens: np.ndarray,
    spec: model.ModelSpec,
    *,
    lr: float,
    segment: int,
    decay: float = 0.0,
    rule: str = "sgd",
    context: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic evaluation (Krause et al. 2018), one jitted scan over segments: each segment of the stream is scored,
    then the parameters take one step on its mean loss (rule "sgd", or "rms": RMS-normalised) and decay * (trained -
    current) back towards the trained ones, the state carried throughout. Returns (summed loss, tokens) per segment."""
    inputs, targets = _stream(tokens, context)
    shape = _rows(segment, len(targets))
    mask = shape(np.ones(len(targets), np.float32))
    nll = _dynamic_nll(
        params, shape(inputs), shape(targets), mask, jnp.float32(lr), jnp.float32(decay), spec=spec, rule=rule
    )
    return np.asarray(nll, np.float64), mask.sum(1)


def dynamic_evaluate(
    params,
    tokens: np.ndarray,
    spec: model.ModelSpec,
    *,
    lr: float,
    segment: int,
    decay: float = 0.0,
    rule: str = "sgd",
    context: np.ndarray | None = None,
) -> dict:
    """`evaluate`'s figures under dynamic evaluation (see dynamic_segment_losses); never trains before scoring."""
    nll, counts = dynamic_segment_losses(
        params, tokens, spec, lr=lr, segment=segment, decay=decay, rule=rule, context=context
    )
    return figures(
        float(nll.sum() / counts.sum()),
        int(counts.sum()),
        f"dynamic evaluation ({rule}, step size {lr:g}, segments of {segment})",
    )
