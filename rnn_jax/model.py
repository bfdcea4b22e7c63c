"""The language model around a cell: encode the characters, unroll the cell by lax.scan, project to logits.

`forward` is the textbook unroll (encoded inputs through the cell's step, autodiff for the gradient).
`forward_fused` computes the same function with what is not recurrent hoisted out of the scan (every
gate's input part as one gather or product, the output layer as one product) and the cell's fused
recurrence when it has one (the book's cell: a hand-written backward), which training uses by default.
Both work for every entry of `cells.CELLS`; the state is the cell's pytree.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnn_jax.cells import ACTIVATIONS, CELLS, Params, State, mm, normal, recurrence, rnn_cell, unroll  # noqa: F401

ENCODERS = {
    "onehot": lambda p, tok_TB: jax.nn.one_hot(tok_TB, p["W_hq"].shape[1], dtype=p["W_hq"].dtype),
    "embed": lambda p, tok_TB: p["embed"][tok_TB],
}


def options(cfg) -> dict:
    """The keyword arguments of forward, forward_fused and generation that a Config decides."""
    return {"cell": cfg.cell, "activation": cfg.activation, "encoder": cfg.encoder, "dtype": cfg.matmul_dtype}


def init_params(key: jax.Array, vocab_size: int, hidden: int, *, encoder: str = "onehot",
                embed_dim: int = 32, cell: str = "rnn") -> Params:
    """The cell's weights and W_hq ~ N(0, 0.01^2), zero biases; `embed` (V, E) ~ N(0, 1) when encoder == 'embed'."""
    key_x, key_h, key_hq, key_embed = jax.random.split(key, 4)
    num_inputs = vocab_size if encoder == "onehot" else embed_dim
    params = {**CELLS[cell].init(key_x, key_h, num_inputs, hidden),
              "W_hq": normal(key_hq, (hidden, vocab_size)), "b_q": jnp.zeros((vocab_size,), jnp.float32)}
    if encoder == "embed":
        params["embed"] = jax.random.normal(key_embed, (vocab_size, embed_dim), jnp.float32)
    return params


def zero_state(batch_size: int, hidden: int, cell: str = "rnn") -> State:
    """The state before the first character (zeros), a pytree of the cell's shape."""
    return CELLS[cell].zero_state(batch_size, hidden)


def init_hidden(batch_size: int, hidden: int) -> jax.Array:
    """The book's cell's zero state, (B, H)."""
    return zero_state(batch_size, hidden, "rnn")


def output_layer(params: Params, hs_TBH: jax.Array, dtype: str = "float32") -> jax.Array:
    """o_t = h_t W_hq + b_q for all steps as one product: (T, B, H) -> (T, B, V)."""
    return mm(hs_TBH, params["W_hq"], dtype) + params["b_q"]


def _dropout(hs_TBH: jax.Array, keep_TBH: jax.Array | None) -> jax.Array:
    # only on the way out: the recurrence itself never sees the mask, so it stays the book's
    return hs_TBH if keep_TBH is None else hs_TBH * keep_TBH


def forward(params: Params, state: State, tokens_BT: jax.Array, *, cell: str = "rnn", activation: str = "tanh",
            encoder: str = "onehot", dtype: str = "float32", keep_TBH: jax.Array | None = None):
    """The textbook unroll: encode, scan the cell over time, project. Returns (logits_TBV, last state).

    keep_TBH: an optional dropout mask (already scaled by 1/keep) on the states fed to the output layer.
    """
    x_TBI = ENCODERS[encoder](params, tokens_BT.T)
    step = functools.partial(CELLS[cell].step, params, activation=activation, dtype=dtype)
    state, hs_TBH = jax.lax.scan(step, state, x_TBI)
    return output_layer(params, _dropout(hs_TBH, keep_TBH), dtype), state


def input_projection(params: Params, tokens_BT: jax.Array, encoder: str = "onehot", dtype: str = "float32",
                     cell: str = "rnn") -> jax.Array:
    """Every gate's x W + b for all steps before the scan: (B, T) -> (T, B, G). One-hot rows are a gather."""
    W_IG, b_G = CELLS[cell].input_weights(params)
    if encoder == "onehot":  # one_hot(t) @ W == W[t]
        return W_IG[tokens_BT.T] + b_G
    return mm(ENCODERS[encoder](params, tokens_BT.T), W_IG, dtype) + b_G


def forward_fused(params: Params, state: State, tokens_BT: jax.Array, *, cell: str = "rnn",
                  activation: str = "tanh", encoder: str = "onehot", dtype: str = "float32",
                  keep_TBH: jax.Array | None = None):
    """Same function as `forward`, shaped for speed. Returns (logits_TBV, last state)."""
    xw_TBG = input_projection(params, tokens_BT, encoder, dtype, cell)
    hs_TBH, state = unroll(CELLS[cell], params, state, xw_TBG, activation=activation, dtype=dtype)
    return output_layer(params, _dropout(hs_TBH, keep_TBH), dtype), state


FORWARDS = {"autodiff": forward, "fused": forward_fused}
