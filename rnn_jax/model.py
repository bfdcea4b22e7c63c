"""The language model around a cell: encode the characters, unroll the cell by lax.scan, project to logits.

`forward` is the textbook unroll (encoded inputs through the cell's step, autodiff for the gradient).
`forward_fused` computes the same function with what is not recurrent hoisted out of the scan (every
gate's input part as one gather or product, the output layer as one product) and the cell's fused
recurrence when it has one (the book's cell: a hand-written backward), which training uses by default.
Both work for every entry of `cells.CELLS`; the state is the cell's pytree. What a parameter tree computes
besides its arrays is one `ModelSpec` (`rnn_jax.modelspec`), and every function here that needs it takes it whole.

A stack of `num_layers` cells (d2l 9.3): layer l's output sequence is layer l+1's input (a dense input,
so its input part is one product), and the output layer reads the last layer; the parameters of layers 2..L are
stacked (`rnn_jax.stack`), so the parameter tree has as many leaves at any depth >= 2.
`ModelSpec.block == "residual"` puts each layer in a pre-RMSNorm residual block (`rnn_jax.residual`); the same entry
points (`forward`, `forward_fused`, `step`, `input_projection`, `advance`) run it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import residual
from rnn_jax.cells import (  # noqa: F401
    ACTIVATIONS,
    CELLS,
    Cell,
    Params,
    State,
    along_last,
    mm,
    normal,
    recurrence,
    rnn_cell,
    unroll,
)
from rnn_jax.modelspec import BOOK, ENCODERS, ModelSpec
from rnn_jax.stack import UPPER, layer_ndim, layer_params, layer_states, stacked_state, upper_params


def init_params(key: jax.Array, vocab_size: int, hidden: int, spec: ModelSpec = BOOK, *, embed_dim: int = 32) -> Params:
    """The cell's weights and W_hq ~ N(0, 0.01^2), zero biases; `embed` (V, E) ~ N(0, 1) when encoder == 'embed'."""
    if spec.block == "residual":
        return residual.init(key, vocab_size, hidden, spec, embed_dim)
    key_x, key_h, key_hq, key_embed = jax.random.split(key, 4)
    num_inputs = vocab_size if spec.encoder == "onehot" else embed_dim
    params = {
        **spec.core.init(key_x, key_h, num_inputs, hidden),
        "W_hq": normal(key_hq, (hidden, vocab_size)),
        "b_q": jnp.zeros((vocab_size,), jnp.float32),
    }
    if spec.encoder == "embed":
        params["embed"] = jax.random.normal(key_embed, (vocab_size, embed_dim), jnp.float32)
    uppers = []  # layers above the first read the (B, H) outputs of the one below
    for layer in range(1, spec.num_layers):
        key_x, key_h = jax.random.split(jax.random.fold_in(key, layer))
        uppers.append(spec.core.init(key_x, key_h, hidden, hidden))
    return params | {k + UPPER: jnp.stack([u[k] for u in uppers]) for k in (uppers[0] if uppers else ())}


def recurrent_weights(params: Params, spec: ModelSpec = BOOK) -> list[str]:
    """The names in params of the cell's recurrent matrices (`Cell.recurrent`), every layer's, sorted."""
    return sorted(k for k in params if k.removesuffix(UPPER) in spec.core.recurrent)


def rescale_init(params: Params, key: jax.Array, spec: ModelSpec = BOOK, *, forget_bias: float = 0.0) -> Params:
    """The "scaled" initialisation of a fresh parameter tree: every weight matrix W (I, O) drawn again from
    N(0, 1/I) (LeCun), each recurrent one (`recurrent_weights`, H x H) orthogonal instead (Saxe et al. 2014), the
    forget-gate bias (`Cell.forget_gate`) set to `forget_bias` (Gers et al. 2000; Jozefowicz et al. 2015), other
    parameters (biases, the embedding, the linear recurrences' own) as they are. The book's N(0, 0.01^2) makes a
    gated cell start nearly closed and learn slowly."""
    out, recurrent = {}, set(recurrent_weights(params, spec))
    for i, (name, p) in enumerate(sorted(params.items())):
        k = jax.random.fold_in(key, i)
        if name in recurrent:
            orth = jax.nn.initializers.orthogonal()
            p = (
                orth(k, p.shape, jnp.float32)
                if p.ndim == 2
                # a stack: each layer's (H, H) on its own
                else jnp.stack([orth(jax.random.fold_in(k, j), p.shape[1:], jnp.float32) for j in range(len(p))])
            )
        elif name.startswith("W_") and layer_ndim(name, p) == 2:
            p = jax.random.normal(k, p.shape, jnp.float32) / np.sqrt(p.shape[-2])
        elif name.split(UPPER)[0] == spec.core.forget_gate:
            p = jnp.full_like(p, forget_bias)
        out[name] = p
    return out


def zero_state(batch_size: int, hidden: int, spec: ModelSpec = BOOK) -> State:
    """The state before the first character (zeros), a pytree of the cell's shape (a tuple of them per layer)."""
    state = spec.core.zero_state(batch_size, hidden)
    return state if spec.num_layers == 1 else tuple(state for _ in range(spec.num_layers))


def init_hidden(batch_size: int, hidden: int) -> jax.Array:
    """The book's cell's zero state, (B, H)."""
    return zero_state(batch_size, hidden)


def hidden_size(params: Params) -> int:
    """H of a parameter tree: the rows of its output layer W_hq (H, V)."""
    return params["W_hq"].shape[0]


def output_layer(params: Params, hs_TBH: jax.Array, dtype: str = "float32") -> jax.Array:
    """o_t = h_t W_hq + b_q for all steps as one product: (T, B, H) -> (T, B, V)."""
    return mm(hs_TBH, params["W_hq"], dtype) + along_last(params["b_q"], hs_TBH)


def _dropout(hs_TBH: jax.Array, keep_TBH: jax.Array | None) -> jax.Array:
    # only on the way out: the recurrence itself never sees the mask, so it stays the book's
    return hs_TBH if keep_TBH is None else hs_TBH * keep_TBH


def step(params: Params, state: State, x_BI: jax.Array, spec: ModelSpec = BOOK, *, keep_LBH: jax.Array | None = None):
    """One character through every layer with the cell's textbook step: (state, x_BI) -> (state, top h_BH).

    keep_LBH: optional dropout masks on the inputs of layers 2.. (row l - 1 for layer l)."""
    if spec.block == "residual":
        return residual.step(params, state, mm(x_BI, params["W_in"], spec.dtype), spec, keep_LBH)
    states = []
    for layer, s in enumerate(layer_states(state, spec.num_layers)):
        if layer:
            x_BI = x_BI if keep_LBH is None else x_BI * keep_LBH[layer - 1]
        s, x_BI = spec.core.step(layer_params(params, layer), s, x_BI, activation=spec.activation, dtype=spec.dtype)
        states.append(s)
    return stacked_state(states, spec.num_layers), x_BI


def forward(
    params: Params,
    state: State,
    tokens_BT: jax.Array,
    spec: ModelSpec = BOOK,
    *,
    keep_TBH: jax.Array | None = None,
    keep_LTBH: jax.Array | None = None,
):
    """The textbook unroll: encode, scan the cell (or stack) over time, project. Returns (logits_TBV, last state).

    keep_TBH: an optional dropout mask (already scaled by 1/keep) on the states fed to the output layer;
    keep_LTBH: the same on the outputs of layers 1..L-1 fed to the layer above (L - 1 masks).
    """
    x_TBI = ENCODERS[spec.encoder](params, tokens_BT.T)
    if spec.num_layers == 1 and spec.block == "plain":
        one = functools.partial(spec.core.step, params, activation=spec.activation, dtype=spec.dtype)
        state, hs_TBH = jax.lax.scan(one, state, x_TBI)
    else:

        def each(state, xs):
            x_BI, keep_LBH = xs
            return step(params, state, x_BI, spec, keep_LBH=keep_LBH)

        keep_TLBH = None if keep_LTBH is None else jnp.swapaxes(keep_LTBH, 0, 1)
        state, hs_TBH = jax.lax.scan(each, state, (x_TBI, keep_TLBH))
    return output_layer(params, _dropout(hs_TBH, keep_TBH), spec.dtype), state


def input_projection(params: Params, tokens_BT: jax.Array, spec: ModelSpec = BOOK) -> jax.Array:
    """Every gate's x W + b for all steps before the scan: (B, T) -> (T, B, G). One-hot rows are a gather.
    Residual blocks: the inputs projected to the width of the blocks, (T, B, H)."""
    if spec.block == "residual":
        return residual.input_projection(params, tokens_BT, spec)
    W_IG, b_G = spec.core.input_weights(params)
    if spec.encoder == "onehot":  # one_hot(t) @ W == W[t]
        return W_IG[tokens_BT.T] + b_G[None, None]
    return mm(ENCODERS[spec.encoder](params, tokens_BT.T), W_IG, spec.dtype) + b_G[None, None]


def advance(params: Params, state: State, xw_BG: jax.Array, spec: ModelSpec = BOOK):
    """One character through every layer, the first layer's gate inputs given (input_projection):
    (state, xw_BG) -> (state, top h_BH)."""
    if spec.block == "residual":
        return residual.step(params, state, xw_BG, spec)
    states: list = []
    h_BH: jax.Array | None = None
    for layer, s in enumerate(layer_states(state, spec.num_layers)):
        p = layer_params(params, layer)
        if layer:
            W_HG, b_G = spec.core.input_weights(p)
            assert h_BH is not None  # the layer below ran
            xw_BG = mm(h_BH, W_HG, spec.dtype) + b_G[None]
        s, h_BH = spec.core.recurrent_step(p, s, xw_BG, activation=spec.activation, dtype=spec.dtype)
        states.append(s)
    return stacked_state(states, spec.num_layers), h_BH


def _upper_layers(params: Params, states: tuple, hs_TBH: jax.Array, keep_LTBH, spec: ModelSpec):
    """Layers 2.. as one lax.scan over layers and their stacked parameters (compilation stays flat in depth):
    -> (top hs_TBH, their states)."""
    stacked = upper_params(params)
    states_L = jax.tree.map(lambda *s: jnp.stack(s), *states)

    def layer(hs_TBH, xs):
        p, state, keep_TBH = xs
        W_HG, b_G = spec.core.input_weights(p)
        # every step's gate inputs: one product
        xw_TBG = mm(_dropout(hs_TBH, keep_TBH), W_HG, spec.dtype) + b_G[None, None]
        hs_TBH, state = unroll(
            spec.core,
            p,
            state,
            xw_TBG,
            activation=spec.activation,
            dtype=spec.dtype,
            chains=spec.chains,
            scan=spec.scan,
        )
        return hs_TBH, state

    hs_TBH, states_L = jax.lax.scan(layer, hs_TBH, (stacked, states_L, keep_LTBH))
    return hs_TBH, tuple(jax.tree.map(lambda s, i=i: s[i], states_L) for i in range(len(states)))


def forward_fused(
    params: Params,
    state: State,
    tokens_BT: jax.Array,
    spec: ModelSpec = BOOK,
    *,
    keep_TBH: jax.Array | None = None,
    keep_LTBH: jax.Array | None = None,
):
    """Same function as `forward`, shaped for speed. Returns (logits_TBV, last state)."""
    if spec.block == "residual":
        hs_TBH, state = residual.fused(params, state, tokens_BT, spec, keep_LTBH)
        return output_layer(params, _dropout(hs_TBH, keep_TBH), spec.dtype), state
    states = layer_states(state, spec.num_layers)
    xw_TBG = input_projection(params, tokens_BT, spec)
    hs_TBH, first = unroll(
        spec.core,
        params,
        states[0],
        xw_TBG,
        activation=spec.activation,
        dtype=spec.dtype,
        chains=spec.chains,
        scan=spec.scan,
    )
    if spec.num_layers == 1:
        return output_layer(params, _dropout(hs_TBH, keep_TBH), spec.dtype), first
    hs_TBH, upper = _upper_layers(params, states[1:], hs_TBH, keep_LTBH, spec)
    return output_layer(params, _dropout(hs_TBH, keep_TBH), spec.dtype), (first, *upper)


FORWARDS = {"autodiff": forward, "fused": forward_fused}
