"""The language model around a cell: encode the characters, unroll the cell by lax.scan, project to logits.

`forward` is the textbook unroll (encoded inputs through the cell's step, autodiff for the gradient).
`forward_fused` computes the same function with what is not recurrent hoisted out of the scan (every
gate's input part as one gather or product, the output layer as one product) and the cell's fused
recurrence when it has one (the book's cell: a hand-written backward), which training uses by default.
Both work for every entry of `cells.CELLS`; the state is the cell's pytree. What a parameter tree computes
besides its arrays (cell, depth, activation, encoder, product dtype) is one `ModelSpec`, built from a Config by
`ModelSpec.from_config`, and every function here that needs it takes it whole.

A stack of `num_layers` cells (d2l 9.3): layer l's output sequence is layer l+1's input (a dense input,
so its input part is one product), and the output layer reads the last layer. The first layer's
parameters keep the book's names; layers 2..L share one array per cell parameter, stacked along a
leading axis and named with the suffix `_upper` (`W_xh_upper`, (L - 1, H, H); row l - 2 is layer l), so
the parameter tree, and with it the optimizer and everything else that walks it, has as many leaves
at any depth >= 2. A stack's state is a tuple with one entry per layer; one layer keeps the cell's bare
state.

`ModelSpec.block == "residual"` puts each layer in a pre-RMSNorm residual block of width H instead (the cell with
an output projection, then a gated MLP, each added to the stream), the inputs projected to H first and a last
norm before the output layer; the same entry points (`forward`, `forward_fused`, `step`, `input_projection`,
`advance`) run it, and the layers' parameters follow the same naming and stacking.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.cells import (  # noqa: F401
    ACTIVATIONS,
    CELLS,
    Cell,
    Params,
    State,
    along_last,
    lecun,
    mm,
    normal,
    recurrence,
    rnn_cell,
    unroll,
)

ENCODERS = {
    "onehot": lambda p, tok_TB: jax.nn.one_hot(tok_TB, p["W_hq"].shape[1], dtype=p["W_hq"].dtype),
    "embed": lambda p, tok_TB: p["embed"][tok_TB],
}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The model a parameter tree belongs to: the fields of a Config that decide what forward, generation and
    evaluation compute. Frozen, so hashable: jitted functions take it as one static argument. A spec that exists
    can run: its cell, activation (one the cell declares) and encoder are checked when it is made."""

    cell: str = "rnn"  # a key of cells.CELLS
    num_layers: int = 1
    activation: str = "tanh"  # a key of cells.ACTIVATIONS that the cell declares
    encoder: str = "onehot"  # a key of ENCODERS
    dtype: str = "float32"  # the operand dtype of the matrix products (Config.matmul_dtype)
    chains: int = 0  # the fused recurrence's row chains (Config.row_chains; 0: auto): how, not what, it computes
    block: str = "plain"  # a key of BLOCKS: the cells stacked as they are, or in residual blocks
    scan: str = "linear"  # lax.scan, or lax.associative_scan for a cell with a linear recurrence (Cell.linear)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell {self.cell!r} is not one of {', '.join(CELLS)}")
        if self.activation not in self.core.activations:
            raise ValueError(
                f"the {self.cell} cell accepts activation {' or '.join(self.core.activations)}, not {self.activation!r}"
            )
        if self.chains < 0:
            raise ValueError(f"chains must be >= 0 (0: auto), got {self.chains}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder {self.encoder!r} is not one of {', '.join(ENCODERS)}")
        if self.block not in BLOCKS:
            raise ValueError(f"block {self.block!r} is not one of {', '.join(BLOCKS)}")
        if self.scan not in SCANS:
            raise ValueError(f"scan {self.scan!r} is not one of {', '.join(SCANS)}")
        if self.scan == "associative" and self.core.linear is None:
            raise ValueError(f"scan 'associative' needs a cell with a linear recurrence, not {self.cell}")

    @classmethod
    def from_config(cls, cfg) -> ModelSpec:
        return cls(
            cell=cfg.cell,
            num_layers=cfg.num_layers,
            activation=cfg.activation,
            encoder=cfg.encoder,
            dtype=cfg.matmul_dtype,
            chains=cfg.row_chains,
            block=cfg.block,
            scan=cfg.scan,
        )

    @property
    def core(self) -> Cell:
        """The cell's record in the registry."""
        return CELLS[self.cell]


BLOCKS = ("plain", "residual")
SCANS = ("linear", "associative")
BOOK = ModelSpec()  # the book's model: one tanh cell, one-hot inputs, float32 products


UPPER = "_upper"  # the suffix of layers 2..L's stacked parameters
_PER_LAYER = re.compile(r"(.+)_l([0-9]+)")  # the names of an earlier layout: one array per layer, `W_xh_l2`


def layer_params(params: Params, layer: int) -> Params:
    """Layer `layer`'s cell parameters (index 0 is the first layer) under the cell's own names."""
    if layer == 0:
        return params
    return {k: v[layer - 1] for k, v in upper_params(params).items()}


def upper_params(params: Params) -> Params:
    """Layers 2..L's parameters under the cell's own names, each stacked: (L - 1, ...)."""
    return {k[: -len(UPPER)]: v for k, v in params.items() if k.endswith(UPPER)}


def layer_ndim(name: str, array) -> int:
    """The number of axes of one layer's parameter: a stacked one's rows are the layers."""
    return array.ndim - name.endswith(UPPER)


def is_per_layer(params: Params) -> bool:
    """Whether params name layers 2.. one array per layer (`W_xh_l2`, ...), a layout before the stacked one."""
    return any(_PER_LAYER.fullmatch(k) for k in params)


def from_per_layer(params: Params) -> Params:
    """Parameters saved with one array per layer (`W_xh_l2`, `W_xh_l3`, ...) in the stacked layout
    (`W_xh_upper`); parameters without such names are returned as they are."""
    per_layer = {k: m.groups() for k in params if (m := _PER_LAYER.fullmatch(k))}
    if not per_layer:
        return params
    out: dict = {k: v for k, v in params.items() if k not in per_layer}  # numpy arrays for the stacked layers
    for name in sorted({name for name, _ in per_layer.values()}):
        layers = sorted(int(layer) for n, layer in per_layer.values() if n == name)
        if layers != list(range(2, len(layers) + 2)):
            raise ValueError(f"the layers of {name} are {layers}, not 2..{len(layers) + 1}")
        out[name + UPPER] = np.stack([np.asarray(params[f"{name}_l{layer}"]) for layer in layers])
    return out


def init_params(key: jax.Array, vocab_size: int, hidden: int, spec: ModelSpec = BOOK, *, embed_dim: int = 32) -> Params:
    """The cell's weights and W_hq ~ N(0, 0.01^2), zero biases; `embed` (V, E) ~ N(0, 1) when encoder == 'embed'."""
    if spec.block == "residual":
        return _residual_init(key, vocab_size, hidden, spec, embed_dim)
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


def output_layer(params: Params, hs_TBH: jax.Array, dtype: str = "float32") -> jax.Array:
    """o_t = h_t W_hq + b_q for all steps as one product: (T, B, H) -> (T, B, V)."""
    return mm(hs_TBH, params["W_hq"], dtype) + along_last(params["b_q"], hs_TBH)


def _dropout(hs_TBH: jax.Array, keep_TBH: jax.Array | None) -> jax.Array:
    # only on the way out: the recurrence itself never sees the mask, so it stays the book's
    return hs_TBH if keep_TBH is None else hs_TBH * keep_TBH


def _layers(state: State, num_layers: int) -> tuple:
    return (state,) if num_layers == 1 else tuple(state)


def _stacked(states: Sequence, num_layers: int) -> State:
    return states[0] if num_layers == 1 else tuple(states)


def step(params: Params, state: State, x_BI: jax.Array, spec: ModelSpec = BOOK, *, keep_LBH: jax.Array | None = None):
    """One character through every layer with the cell's textbook step: (state, x_BI) -> (state, top h_BH).

    keep_LBH: optional dropout masks on the inputs of layers 2.. (row l - 1 for layer l)."""
    if spec.block == "residual":
        return _residual_step(params, state, mm(x_BI, params["W_in"], spec.dtype), spec, keep_LBH)
    states = []
    for layer, s in enumerate(_layers(state, spec.num_layers)):
        if layer:
            x_BI = x_BI if keep_LBH is None else x_BI * keep_LBH[layer - 1]
        s, x_BI = spec.core.step(layer_params(params, layer), s, x_BI, activation=spec.activation, dtype=spec.dtype)
        states.append(s)
    return _stacked(states, spec.num_layers), x_BI


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
        if spec.encoder == "onehot":
            return params["W_in"][tokens_BT.T]
        return mm(ENCODERS[spec.encoder](params, tokens_BT.T), params["W_in"], spec.dtype)
    W_IG, b_G = spec.core.input_weights(params)
    if spec.encoder == "onehot":  # one_hot(t) @ W == W[t]
        return W_IG[tokens_BT.T] + b_G[None, None]
    return mm(ENCODERS[spec.encoder](params, tokens_BT.T), W_IG, spec.dtype) + b_G[None, None]


def advance(params: Params, state: State, xw_BG: jax.Array, spec: ModelSpec = BOOK):
    """One character through every layer, the first layer's gate inputs given (input_projection):
    (state, xw_BG) -> (state, top h_BH)."""
    if spec.block == "residual":
        return _residual_step(params, state, xw_BG, spec)
    states: list = []
    h_BH: jax.Array | None = None
    for layer, s in enumerate(_layers(state, spec.num_layers)):
        p = layer_params(params, layer)
        if layer:
            W_HG, b_G = spec.core.input_weights(p)
            assert h_BH is not None  # the layer below ran
            xw_BG = mm(h_BH, W_HG, spec.dtype) + b_G[None]
        s, h_BH = spec.core.recurrent_step(p, s, xw_BG, activation=spec.activation, dtype=spec.dtype)
        states.append(s)
    return _stacked(states, spec.num_layers), h_BH


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
        return _residual_fused(params, state, tokens_BT, spec, keep_TBH, keep_LTBH)
    states = _layers(state, spec.num_layers)
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


# Residual blocks (--block residual): x = x + mix(norm(x)) W_mix, then x = x + mlp(norm(x)), every block of width H
# (its cell reads and writes H units), the inputs projected to H first (W_in) and a last norm before W_hq.
MLP_WIDTH = 3  # the gated MLP's hidden units per unit of H (Griffin's expansion factor)
RMS_EPS = 1e-6


def rms_norm(x_BH: jax.Array, g_H: jax.Array) -> jax.Array:
    """RMSNorm (Zhang & Sennrich 2019) over the last axis, gain g (x of any rank: (B, H) or (T, B, H))."""
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
def _residual_init(key: jax.Array, vocab_size: int, hidden: int, spec: ModelSpec, embed_dim: int) -> Params:
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


def _residual_step(params: Params, state: State, x_BH: jax.Array, spec: ModelSpec, keep_LBH=None):
    """One position through every block with the cell's textbook step, from the inputs projected to H:
    -> (state, the normalised top h_BH). keep_LBH: dropout on the stream entering blocks 2.."""
    states = []
    for layer, s in enumerate(_layers(state, spec.num_layers)):
        p = layer_params(params, layer)
        if layer and keep_LBH is not None:
            x_BH = x_BH * keep_LBH[layer - 1]
        s, y_BH = spec.core.step(p, s, rms_norm(x_BH, p["g_mix"]), activation=spec.activation, dtype=spec.dtype)
        x_BH = x_BH + mm(y_BH, p["W_mix"], spec.dtype)
        x_BH = x_BH + _mlp(p, x_BH, spec.dtype)
        states.append(s)
    return _stacked(states, spec.num_layers), rms_norm(x_BH, params["g_out"])


def _residual_fused(params: Params, state: State, tokens_BT: jax.Array, spec: ModelSpec, keep_TBH, keep_LTBH):
    """`_residual_step` over all positions, block by block: every product but the cell's recurrent ones over all
    steps at once, the cell's recurrence by `unroll` (lax.scan or lax.associative_scan)."""
    x_TBH, states = input_projection(params, tokens_BT, spec), []
    for layer, s in enumerate(_layers(state, spec.num_layers)):
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
    hs_TBH = _dropout(rms_norm(x_TBH, params["g_out"]), keep_TBH)
    return output_layer(params, hs_TBH, spec.dtype), _stacked(states, spec.num_layers)
