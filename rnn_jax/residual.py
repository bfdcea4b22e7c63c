"""Residual blocks (--block residual): x = x + mix(norm(x)) W_mix, then x = x + mlp(norm(x)), every block of
width H (its cell reads and writes H units), the inputs projected to H first (W_in) and a last norm before the
output layer. Each block is pre-RMSNorm (the cell with an output projection, then a gated MLP); the blocks'
parameters follow the stack's layout (`rnn_jax.stack`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnn_jax.cells import Params, State, along_last, lecun, mm, normal, unroll
from rnn_jax.modelspec import ENCODERS, ModelSpec
from rnn_jax.stack import UPPER, layer_params, layer_states, stacked_state

MLP_WIDTH = 3  # the gated MLP's hidden units per unit of H (Griffin's expansion factor)
RMS_EPS = 1e-6


def rms_norm(x_BH: jax.Array, g_H: jax.Array) -> jax.Array:
    """RMSNorm (Zhang & Sennrich 2019) over the last axis, gain g."""
    return x_BH * jax.lax.rsqrt(jnp.mean(x_BH * x_BH, axis=-1, keepdims=True) + RMS_EPS) * along_last(g_H, x_BH)


def _mlp(p: Params, x_BH: jax.Array, dtype: str) -> jax.Array:
    """The pre-normalised GeGLU MLP of a block: (gelu(u W_gate) * u W_up) W_down, u = norm(x)."""
    u_BH = rms_norm(x_BH, p["g_mlp"])
    return mm(jax.nn.gelu(mm(u_BH, p["W_gate"], dtype)) * mm(u_BH, p["W_up"], dtype), p["W_down"], dtype)


def _block_init(key: jax.Array, hidden: int, spec: ModelSpec) -> Params:
    """One block: its cell (H -> H), RMSNorm gains of ones, W_mix (H, H) and the MLP ~ N(0, 1/fan_in)."""
    key_x, key_h, key_mix, key_gate, key_up, key_down = jax.random.split(key, 6)
    width = MLP_WIDTH * hidden
    return {
        **spec.core.init(key_x, key_h, hidden, hidden),
        "g_mix": jnp.ones((hidden,), jnp.float32),  # one array per leaf: a training step donates each
        "W_mix": lecun(key_mix, (hidden, hidden)),
        "g_mlp": jnp.ones((hidden,), jnp.float32),
        "W_gate": lecun(key_gate, (hidden, width)),
        "W_up": lecun(key_up, (hidden, width)),
        "W_down": lecun(key_down, (width, hidden)),
    }


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))  # one program, not one per eager operation
def init(key: jax.Array, vocab_size: int, hidden: int, spec: ModelSpec, embed_dim: int) -> Params:
    """W_in (I, H) ~ N(0, 1/I), the blocks (2.. stacked, `_upper`), the last norm, W_hq ~ N(0, 0.01^2)."""
    key_in, key_hq, key_embed = jax.random.split(key, 3)
    blocks = [_block_init(jax.random.fold_in(key, 1 + layer), hidden, spec) for layer in range(spec.num_layers)]
    params = {
        **blocks[0],
        "W_in": lecun(key_in, (vocab_size if spec.encoder == "onehot" else embed_dim, hidden)),
        "g_out": jnp.ones((hidden,), jnp.float32),
        "W_hq": normal(key_hq, (hidden, vocab_size)),
        "b_q": jnp.zeros((vocab_size,), jnp.float32),
    }
    if spec.encoder == "embed":
        params["embed"] = jax.random.normal(key_embed, (vocab_size, embed_dim), jnp.float32)
    return params | {k + UPPER: jnp.stack([b[k] for b in blocks[1:]]) for k in (blocks[1] if blocks[1:] else ())}


def input_projection(params: Params, tokens_BT: jax.Array, spec: ModelSpec) -> jax.Array:
    """The inputs projected to the width of the blocks for all steps: (B, T) -> (T, B, H). One-hot rows are a
    gather."""
    if spec.encoder == "onehot":
        return params["W_in"][tokens_BT.T]
    return mm(ENCODERS[spec.encoder](params, tokens_BT.T), params["W_in"], spec.dtype)


def step(params: Params, state: State, x_BH: jax.Array, spec: ModelSpec, keep_LBH=None):
    """One position through every block with the cell's textbook step, from the inputs projected to H:
    -> (state, the normalised top h_BH). keep_LBH: dropout on the stream entering blocks 2.."""
    states = []
    for layer, s in enumerate(layer_states(state, spec.num_layers)):
        p = layer_params(params, layer)
        if layer and keep_LBH is not None:
            x_BH = x_BH * keep_LBH[layer - 1]
        s, y_BH = spec.core.step(p, s, rms_norm(x_BH, p["g_mix"]), activation=spec.activation, dtype=spec.dtype)
        x_BH = x_BH + mm(y_BH, p["W_mix"], spec.dtype)
        x_BH = x_BH + _mlp(p, x_BH, spec.dtype)
        states.append(s)
    return stacked_state(states, spec.num_layers), rms_norm(x_BH, params["g_out"])


def fused(params: Params, state: State, tokens_BT: jax.Array, spec: ModelSpec, keep_LTBH=None):
    """`step` over all positions, block by block: every product but the cell's recurrent ones over all steps at
    once, the cell's recurrence by `unroll` (lax.scan or lax.associative_scan). -> (normalised top hs_TBH, state)."""
    x_TBH, states = input_projection(params, tokens_BT, spec), []
    for layer, s in enumerate(layer_states(state, spec.num_layers)):
        p = layer_params(params, layer)
        if layer and keep_LTBH is not None:
            x_TBH = x_TBH * keep_LTBH[layer - 1]
        W_HG, b_G = spec.core.input_weights(p)
        xw_TBG = mm(rms_norm(x_TBH, p["g_mix"]), W_HG, spec.dtype) + b_G[None, None]
        hs_TBH, s = unroll(
            spec.core, p, s, xw_TBG, activation=spec.activation, dtype=spec.dtype, chains=spec.chains, scan=spec.scan
        )
        x_TBH = x_TBH + mm(hs_TBH, p["W_mix"], spec.dtype)
        x_TBH = x_TBH + _mlp(p, x_TBH, spec.dtype)
        states.append(s)
    return rms_norm(x_TBH, params["g_out"]), stacked_state(states, spec.num_layers)
