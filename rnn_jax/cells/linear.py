"""What the linear recurrences share: a cell from its coefficients (`Cell.linear`) and output (`Cell.readout`).

Their gates read the input only, so every product with the input is one product before the scan and the
sequential part is elementwise: state_t = a_t * state_{t-1} + b_t. The per-step, the lax.scan and the
lax.associative_scan forms all follow from (a, b); the textbook `step` each cell writes from its paper's
equations is the independent check (tests/test_modern_cells.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.cells.common import Cell, Params, linear_unroll


def lecun(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """N(0, 1/fan_in) for a (fan_in, fan_out) matrix."""
    return jax.random.normal(key, shape, jnp.float32) / jnp.sqrt(shape[0])


def dense_init(names: tuple[str, ...], key: jax.Array, num_inputs: int, hidden: int) -> Params:
    """W_x<g> (I, H) ~ N(0, 1/I) and b_<g> zeros for each name g."""
    params: dict[str, jax.Array] = {}
    for g, k in zip(names, jax.random.split(key, len(names)), strict=True):
        params |= {f"W_x{g}": lecun(k, (num_inputs, hidden)), f"b_{g}": jnp.zeros((hidden,), jnp.float32)}
    return params


def identity_readout(params: Params, states_TBH, xw_TBG: jax.Array, dtype: str = "float32") -> jax.Array:
    """The state is the output."""
    return states_TBH


def linear_cell(*, init, zero_state, step, input_weights, linear, readout, gates: int, **fields) -> Cell:
    """A Cell whose recurrence is state_t = a_t * state_{t-1} + b_t: the per-step and whole-sequence forms from
    the coefficients; no recurrent matrix (no DropConnect, no orthogonal init) and no recurrent product."""

    def recurrent_step(params, state, xw_BG, *, activation="tanh", dtype="float32"):
        hs_1BH, state = linear_unroll(cell, params, state, xw_BG[None], dtype=dtype, associative=False)
        return state, hs_1BH[0]

    def recurrence(params, state, xw_TBG, *, activation="tanh", dtype="float32", chains=1):
        return linear_unroll(cell, params, state, xw_TBG, dtype=dtype, associative=False)

    cell: Cell = Cell(
        init=init,
        zero_state=zero_state,
        step=step,
        input_weights=input_weights,
        recurrent_step=recurrent_step,
        recurrent=(),
        gates=gates,
        products=(),
        activations=("tanh",),  # the config's default, accepted and unused: these cells have no candidate tanh
        recurrence=recurrence,
        linear=linear,
        readout=readout,
        **fields,
    )
    return cell
