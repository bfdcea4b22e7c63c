"""The book's RNN from scratch: an explicit parameter dict, a pure cell, and its unroll by lax.scan.

`forward` is the textbook unroll (one-hot inputs through the cell, autodiff for the gradient).
`forward_fused` computes the same function with what is not recurrent hoisted out of the scan and a
hand-written backward pass (`recurrence`), which is what training uses by default.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Params = dict[str, jax.Array]


class Activation(NamedTuple):
    fn: Callable[[jax.Array], jax.Array]
    grad_from_output: Callable[[jax.Array], jax.Array]  # act'(a) written in terms of y = act(a)


ACTIVATIONS = {
    "tanh": Activation(jnp.tanh, lambda y: 1.0 - y * y),
    "relu": Activation(jax.nn.relu, lambda y: (y > 0).astype(y.dtype)),
}
ENCODERS = {
    "onehot": lambda p, tok_TB: jax.nn.one_hot(tok_TB, p["W_hq"].shape[1], dtype=p["W_xh"].dtype),
    "embed": lambda p, tok_TB: p["embed"][tok_TB],
}


def init_params(key: jax.Array, vocab_size: int, hidden: int, *, encoder: str = "onehot",
                embed_dim: int = 32) -> Params:
    """Weights ~ N(0, 0.01^2), zero biases; `embed` (V, E) ~ N(0, 1) when encoder == 'embed'."""
    key_xh, key_hh, key_hq, key_embed = jax.random.split(key, 4)
    num_inputs = vocab_size if encoder == "onehot" else embed_dim
    normal = lambda k, shape: 0.01 * jax.random.normal(k, shape, jnp.float32)
    params = {
        "W_xh": normal(key_xh, (num_inputs, hidden)),
        "W_hh": normal(key_hh, (hidden, hidden)),
        "b_h": jnp.zeros((hidden,), jnp.float32),
        "W_hq": normal(key_hq, (hidden, vocab_size)),
        "b_q": jnp.zeros((vocab_size,), jnp.float32),
    }
    if encoder == "embed":
        params["embed"] = jax.random.normal(key_embed, (vocab_size, embed_dim), jnp.float32)
    return params


def init_hidden(batch_size: int, hidden: int) -> jax.Array:
    return jnp.zeros((batch_size, hidden), jnp.float32)


def mm(a: jax.Array, b: jax.Array, dtype: str = "float32") -> jax.Array:
    """a @ b with operands in `dtype`, accumulated and returned in float32."""
    if dtype == "float32":
        return a @ b
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def rnn_cell(params: Params, h_BH: jax.Array, x_BI: jax.Array, act=jnp.tanh, dtype: str = "float32"):
    """h' = act(x W_xh + h W_hh + b_h); returns (carry, output) = (h', h')."""
    h_BH = act(mm(x_BI, params["W_xh"], dtype) + mm(h_BH, params["W_hh"], dtype) + params["b_h"])
    return h_BH, h_BH


def output_layer(params: Params, hs_TBH: jax.Array, dtype: str = "float32") -> jax.Array:
    """o_t = h_t W_hq + b_q for all steps as one product: (T, B, H) -> (T, B, V)."""
    return mm(hs_TBH, params["W_hq"], dtype) + params["b_q"]


def forward(params: Params, h_BH: jax.Array, tokens_BT: jax.Array, *, activation: str = "tanh",
            encoder: str = "onehot", dtype: str = "float32", keep_TBH: jax.Array | None = None):
    """The textbook unroll: encode, scan the cell over time, project. Returns (logits_TBV, h_last_BH).

    keep_TBH: an optional dropout mask (already scaled by 1/keep) on the states fed to the output layer.
    """
    x_TBI = ENCODERS[encoder](params, tokens_BT.T)
    cell = functools.partial(rnn_cell, params, act=ACTIVATIONS[activation].fn, dtype=dtype)
    h_BH, hs_TBH = jax.lax.scan(cell, h_BH, x_TBI)
    return output_layer(params, _dropout(hs_TBH, keep_TBH), dtype), h_BH


def _dropout(hs_TBH: jax.Array, keep_TBH: jax.Array | None) -> jax.Array:
    # only on the way out: the recurrence itself never sees the mask, so it stays the book's
    return hs_TBH if keep_TBH is None else hs_TBH * keep_TBH


def input_projection(params: Params, tokens_BT: jax.Array, encoder: str = "onehot",
                     dtype: str = "float32") -> jax.Array:
    """x_t W_xh + b_h for all steps before the scan: (B, T) -> (T, B, H). One-hot rows are a gather."""
    if encoder == "onehot":  # one_hot(t) @ W_xh == W_xh[t]
        return params["W_xh"][tokens_BT.T] + params["b_h"]
    return mm(ENCODERS[encoder](params, tokens_BT.T), params["W_xh"], dtype) + params["b_h"]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def recurrence(activation: str, dtype: str, W_hh: jax.Array, h_BH: jax.Array, xw_TBH: jax.Array):
    """hs_t = act(xw_t + hs_{t-1} W_hh), hs_{-1} = h: the only sequential part of the model."""
    act = ACTIVATIONS[activation].fn

    def step(h_BH, xw_BH):
        h_BH = act(xw_BH + mm(h_BH, W_hh, dtype))
        return h_BH, h_BH

    return jax.lax.scan(step, h_BH, xw_TBH)[1]


def _recurrence_fwd(activation, dtype, W_hh, h_BH, xw_TBH):
    hs_TBH = recurrence(activation, dtype, W_hh, h_BH, xw_TBH)
    return hs_TBH, (W_hh, h_BH, hs_TBH)


def _recurrence_bwd(activation, dtype, residuals, dhs_TBH):
    # The reverse scan carries only dA_t W_hh^T; dW_hh is one large product over all steps after it.
    W_hh, h0_BH, hs_TBH = residuals
    grad_from_output = ACTIVATIONS[activation].grad_from_output
    W_hh_T = W_hh.T

    def step(dh_BH, inputs):  # dh_BH: what reaches h_t through h_{t+1}
        dhs_BH, h_BH = inputs
        da_BH = (dhs_BH + dh_BH) * grad_from_output(h_BH)
        return mm(da_BH, W_hh_T, dtype), da_BH

    dh0_BH, da_TBH = jax.lax.scan(step, jnp.zeros_like(h0_BH), (dhs_TBH, hs_TBH), reverse=True)
    h_prev_TBH = jnp.concatenate([h0_BH[None], hs_TBH[:-1]])
    hidden = W_hh.shape[0]
    dW_hh = mm(h_prev_TBH.reshape(-1, hidden).T, da_TBH.reshape(-1, hidden), dtype)
    return dW_hh, dh0_BH, da_TBH


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def forward_fused(params: Params, h_BH: jax.Array, tokens_BT: jax.Array, *, activation: str = "tanh",
                  encoder: str = "onehot", dtype: str = "float32", keep_TBH: jax.Array | None = None):
    """Same function as `forward`, shaped for speed. Returns (logits_TBV, h_last_BH)."""
    xw_TBH = input_projection(params, tokens_BT, encoder, dtype)
    hs_TBH = recurrence(activation, dtype, params["W_hh"], h_BH, xw_TBH)
    return output_layer(params, _dropout(hs_TBH, keep_TBH), dtype), hs_TBH[-1]


FORWARDS = {"autodiff": forward, "fused": forward_fused}
