"""The cell registry: a recurrent cell is its parameters, its zero state and its step on a state pytree.

dm-haiku's recurrent cores, with explicit parameter dicts: `model` unrolls every cell the same way
(`lax.scan` of `step`), so nothing downstream (training, generation, evaluation, checkpoints,
sharding) knows which cell it carries; the state is any pytree of (B, H) arrays. A cell may also
give a fused unroll (`recurrence`), with every gate's input part computed before the scan and a
hand-written backward pass: the book's tanh cell does, and it is what training uses by default.
"""

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


def mm(a: jax.Array, b: jax.Array, dtype: str = "float32") -> jax.Array:
    """a @ b with operands in `dtype`, accumulated and returned in float32."""
    if dtype == "float32":
        return a @ b
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The book's initialisation of every weight: N(0, 0.01^2)."""
    return 0.01 * jax.random.normal(key, shape, jnp.float32)


class Cell(NamedTuple):
    """A recurrent core. `activation` and `dtype` (the matmul operand dtype) are keyword arguments of each step."""

    init: Callable[[jax.Array, jax.Array, int, int], Params]  # (key_x, key_h, num_inputs, hidden) -> params
    zero_state: Callable[[int, int], State]  # (batch, hidden) -> the state before the first step
    step: Callable[..., tuple[State, jax.Array]]  # (params, state, x_BI) -> (state, h_BH): the textbook step
    input_weights: Callable[[Params], tuple[jax.Array, jax.Array]]  # -> (W_IG, b_G): every gate's input part
    recurrent_step: Callable[..., tuple[State, jax.Array]]  # (params, state, xw_BG) -> (state, h_BH)
    recurrence: Callable[..., tuple[jax.Array, State]] | None = None  # fused (params, state, xw_TBG) -> (hs, state)


def unroll(cell: Cell, params: Params, state: State, xw_TBG: jax.Array, *, activation: str = "tanh",
           dtype: str = "float32") -> tuple[jax.Array, State]:
    """The recurrent part over all steps, every gate's input part given: returns (hs_TBH, last state)."""
    if cell.recurrence is not None:
        return cell.recurrence(params, state, xw_TBG, activation=activation, dtype=dtype)
    step = functools.partial(cell.recurrent_step, params, activation=activation, dtype=dtype)
    state, hs_TBH = jax.lax.scan(step, state, xw_TBG)
    return hs_TBH, state


# ----------------------------------------------------------------------------- the book's RNN (d2l 8.5)
def rnn_init(key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int) -> Params:
    return {"W_xh": normal(key_x, (num_inputs, hidden)), "W_hh": normal(key_h, (hidden, hidden)),
            "b_h": jnp.zeros((hidden,), jnp.float32)}


def rnn_zero_state(batch_size: int, hidden: int) -> jax.Array:
    return jnp.zeros((batch_size, hidden), jnp.float32)


def rnn_cell(params: Params, h_BH: jax.Array, x_BI: jax.Array, act=jnp.tanh, dtype: str = "float32"):
    """h' = act(x W_xh + h W_hh + b_h); returns (carry, output) = (h', h')."""
    h_BH = act(mm(x_BI, params["W_xh"], dtype) + mm(h_BH, params["W_hh"], dtype) + params["b_h"])
    return h_BH, h_BH


def _rnn_step(params, h_BH, x_BI, *, activation="tanh", dtype="float32"):
    return rnn_cell(params, h_BH, x_BI, act=ACTIVATIONS[activation].fn, dtype=dtype)


def _rnn_recurrent_step(params, h_BH, xw_BH, *, activation="tanh", dtype="float32"):
    h_BH = ACTIVATIONS[activation].fn(xw_BH + mm(h_BH, params["W_hh"], dtype))
    return h_BH, h_BH


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def recurrence(activation: str, dtype: str, W_hh: jax.Array, h_BH: jax.Array, xw_TBH: jax.Array):
    """hs_t = act(xw_t + hs_{t-1} W_hh), hs_{-1} = h: the only sequential part of the model."""
    step = functools.partial(_rnn_recurrent_step, {"W_hh": W_hh}, activation=activation, dtype=dtype)
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


def _rnn_recurrence(params, h_BH, xw_TBH, *, activation="tanh", dtype="float32"):
    hs_TBH = recurrence(activation, dtype, params["W_hh"], h_BH, xw_TBH)
    return hs_TBH, hs_TBH[-1]


RNN = Cell(init=rnn_init, zero_state=rnn_zero_state, step=_rnn_step,
           input_weights=lambda p: (p["W_xh"], p["b_h"]), recurrent_step=_rnn_recurrent_step,
           recurrence=_rnn_recurrence)

CELLS: dict[str, Cell] = {"rnn": RNN}
