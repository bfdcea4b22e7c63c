"""What every cell shares: the `Cell` record, the activations, the matrix product, the book's initialisation and
the generic unroll."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Params = dict[str, jax.Array]
State = Any  # a pytree whose leaves are (B, H) arrays


class Activation(NamedTuple):
    fn: Callable[[jax.Array], jax.Array]
    grad_from_output: Callable[[jax.Array], jax.Array]  # act'(a) written in terms of y = act(a)


ACTIVATIONS = {
    "tanh": Activation(jnp.tanh, lambda y: 1.0 - y * y),
    "relu": Activation(jax.nn.relu, lambda y: (y > 0).astype(y.dtype)),
}


def sigmoid_grad(y: jax.Array) -> jax.Array:
    """sigmoid'(a) in terms of y = sigmoid(a)."""
    return y * (1.0 - y)


def tanh_grad(y: jax.Array) -> jax.Array:
    """tanh'(a) in terms of y = tanh(a)."""
    return 1.0 - y * y


def mm(a: jax.Array, b: jax.Array, dtype: str = "float32") -> jax.Array:
    """a @ b with operands in `dtype`, accumulated and returned in float32."""
    if dtype == "float32":
        return a @ b
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def along_last(v: jax.Array, x: jax.Array) -> jax.Array:
    """`v`, a vector over x's last axis, reshaped to x's rank: (1, ..., 1, H), broadcast explicitly."""
    return v.reshape((1,) * (x.ndim - 1) + v.shape)


def normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The book's initialisation of every weight: N(0, 0.01^2)."""
    return 0.01 * jax.random.normal(key, shape, jnp.float32)


class Cell(NamedTuple):
    """A recurrent core: its functions, and what the rest of the code needs to know of it, declared here so that
    nothing else restates it. `activation` and `dtype` (the matmul operand dtype) are keyword arguments of each
    step; a cell may ignore an activation it does not declare, since `model.ModelSpec` refuses it beforehand."""

    init: Callable[[jax.Array, jax.Array, int, int], Params]  # (key_x, key_h, num_inputs, hidden) -> params
    zero_state: Callable[[int, int], State]  # (batch, hidden) -> the state before the first step
    step: Callable[..., tuple[State, jax.Array]]  # (params, state, x_BI) -> (state, h_BH): the textbook step
    input_weights: Callable[[Params], tuple[jax.Array, jax.Array]]  # -> (W_IG, b_G): every gate's input part
    recurrent_step: Callable[..., tuple[State, jax.Array]]  # (params, state, xw_BG) -> (state, h_BH)
    # the names in `init`'s dict of the hidden-to-hidden matrices: what weight drop (DropConnect) zeroes and
    # the scaled initialisation makes orthogonal (in every layer of a stack)
    recurrent: tuple[str, ...]
    gates: int  # columns of every gate's input part per hidden unit: xw_BG has G = gates * H
    # the recurrent matrix products of one step, in order, as widths in units of H: k is (B, H) @ (H, k H);
    # with `gates`, the FLOPs per token (`flop_per_token`) and the benchmark's chain of products
    products: tuple[int, ...]
    activations: tuple[str, ...]  # the keys of ACTIVATIONS the cell computes with; the first is its default
    # fused (params, state, xw_TBG, *, activation, dtype, chains) -> (hs, state), its rows run as `chains` row_scan
    # chains with the same numbers
    recurrence: Callable[..., tuple[jax.Array, State]] | None = None
    # the name in `init`'s dict of the forget gate's bias, which --forget-bias sets; None: the cell has none
    forget_gate: str | None = None
    # a diagonal linear recurrence, state_t = a_t * state_{t-1} + b_t elementwise: (params, xw_TBG) -> (a, b), each
    # of the state's structure with a leading T axis (a complex value is its (re, im) pair); what --scan associative
    # needs. None: the recurrence is not linear.
    linear: Callable[[Params, jax.Array], tuple[Any, Any]] | None = None
    # with `linear`: (params, states_T, xw_TBG, dtype) -> hs_TBH, each step's output from its state and input part
    readout: Callable[..., jax.Array] | None = None
    # (H, H) products of `readout` per step, outside the sequential chain (the LRU's Re(h C): 2, C_re and C_im)
    readout_products: int = 0

    def flop_per_token(self, hidden: int, num_layers: int = 1) -> int:
        """Training FLOP per token of the cell's matrix products in a stack of `num_layers`: forward 2 k H^2 per
        recurrent product of width k and 2 r H^2 for the readout's in every layer, and 2 G H per upper layer's input
        product (the first layer's is a row gather), backward twice the forward:
        6 H^2 ((sum(products) + readout_products) L + gates (L - 1))."""
        per_layer = sum(self.products) + self.readout_products
        return 6 * hidden * hidden * (per_layer * num_layers + self.gates * (num_layers - 1))


MIN_CHAIN_ROWS = 8  # the automatic split gives each chain at least this many rows


def resolve_chains(chains: int, rows: int, dtype: str = "float32") -> int:
    """The row-chain policy, applied once at set-up (`ModelSpec.from_config`) to a run's minibatch rows: the number
    of row chains a recurrence over `rows` batch rows runs as: `chains` when given (> 0) and it
    divides the rows, else 1 (evaluation's single row under a training run's --row-chains); 0 (auto): 2 for float32
    products on a CPU with one device when each half gets >= MIN_CHAIN_ROWS rows, else 1. On a 2-core CPU a
    whole-batch float32 product of a step is split over both threads, which wait on each other at every step; two
    half-batch products run at a core's full rate each, +5-12% for the book's RNN (docs/performance.md). bfloat16
    products run faster whole (-20% split, the book's RNN), and on an accelerator, or over several devices (whose
    rows are already split), one chain is the better program."""
    if chains:
        return chains if rows % chains == 0 else 1
    one_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
    return 2 if one_cpu and dtype == "float32" and rows % 2 == 0 and rows // 2 >= MIN_CHAIN_ROWS else 1


def row_scan(step, carry, xs, *, chains: int = 1, reverse: bool = False):
    """`jax.lax.scan(step, carry, xs, reverse=reverse)` for a step whose batch rows are independent (row b of the
    new carry and of the output depends only on row b of the carry and of x, leading axis of each leaf). With
    chains = k > 1 the rows are cut into k equal blocks, each its own chain of products in one program: every row
    computes what it computes unsplit, so the results are the same (bit for bit on the CPUs tested:
    tests/test_cells.py)."""
    if chains == 1:
        return jax.lax.scan(step, carry, xs, reverse=reverse)
    n = jax.tree.leaves(carry)[0].shape[0] // chains
    blocks = lambda tree: [jax.tree.map(lambda a, i=i: a[i * n : (i + 1) * n], tree) for i in range(chains)]
    join = lambda parts: jax.tree.map(lambda *b: jnp.concatenate(b), *parts)

    def chained(carries, x):
        outs = [step(c, x_block) for c, x_block in zip(carries, blocks(x), strict=True)]
        return tuple(o[0] for o in outs), join([o[1] for o in outs])

    carries, ys = jax.lax.scan(chained, tuple(blocks(carry)), xs, reverse=reverse)
    return join(carries), ys


def cmul(a, b):
    """a * b elementwise, each a real array or a complex value's (re, im) pair."""
    if isinstance(a, tuple):
        return a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]
    return a * b


def cadd(a, b):
    """a + b elementwise, each a real array or a complex value's (re, im) pair."""
    return jax.tree.map(jnp.add, a, b)


def diagonal_scan(a, b, state: State, *, associative: bool = False) -> tuple[State, State]:
    """states_t = a_t * states_{t-1} + b_t from states_{-1} = state, by lax.scan, or by lax.associative_scan
    (log-depth, Blelloch's prefix sum of the pairs (a, b)): -> (states_T, last state)."""
    if not associative:

        def step(h, ab):
            h = cadd(cmul(ab[0], h), ab[1])
            return h, h

        last, states = jax.lax.scan(step, state, (a, b))
        return states, last
    first = jax.tree.map(lambda x: x[0], a)  # fold the initial state into the first step's b
    b = jax.tree.map(lambda b_TBH, s_BH: b_TBH.at[0].add(s_BH), b, cmul(first, state))

    def combine(earlier, later):  # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
        return cmul(later[0], earlier[0]), cadd(cmul(later[0], earlier[1]), later[1])

    _, states = jax.lax.associative_scan(combine, (a, b))
    return states, jax.tree.map(lambda x: x[-1], states)


def linear_unroll(cell: Cell, params: Params, state: State, xw_TBG: jax.Array, *, dtype: str, associative: bool):
    """A linear cell's recurrence over all steps from its coefficients (`Cell.linear`): (hs_TBH, last state)."""
    assert cell.linear is not None and cell.readout is not None
    a, b = cell.linear(params, xw_TBG)
    states, last = diagonal_scan(a, b, state, associative=associative)
    return cell.readout(params, states, xw_TBG, dtype), last


def unroll(
    cell: Cell,
    params: Params,
    state: State,
    xw_TBG: jax.Array,
    *,
    activation: str = "tanh",
    dtype: str = "float32",
    chains: int = 1,
    scan: str = "linear",
) -> tuple[jax.Array, State]:
    """The recurrent part over all steps, every gate's input part given: returns (hs_TBH, last state). A cell's
    fused recurrence runs its rows as `chains` chains (the same numbers; one when `chains` does not divide the B
    rows, as for evaluation's single row); the generic scan, whose gradient jax.grad accumulates step by step, stays
    one chain. scan == "associative": a linear cell's recurrence by lax.associative_scan."""
    if scan == "associative":
        if cell.linear is None:
            raise ValueError("scan='associative' needs a cell with a linear recurrence (Cell.linear)")
        return linear_unroll(cell, params, state, xw_TBG, dtype=dtype, associative=True)
    if cell.recurrence is not None:
        chains = chains if xw_TBG.shape[1] % chains == 0 else 1
        return cell.recurrence(params, state, xw_TBG, activation=activation, dtype=dtype, chains=chains)
    step = functools.partial(cell.recurrent_step, params, activation=activation, dtype=dtype)
    state, hs_TBH = jax.lax.scan(step, state, xw_TBG)
    return hs_TBH, state
