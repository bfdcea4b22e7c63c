"""The book's RNN (d2l 8.5): h' = act(x W_xh + h W_hh + b_h), tanh or relu, with a hand-written backward."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnn_jax.cells.common import ACTIVATIONS, Cell, Params, mm, normal, row_scan


def rnn_init(key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int) -> Params:
    return {
        "W_xh": normal(key_x, (num_inputs, hidden)),
        "W_hh": normal(key_h, (hidden, hidden)),
        "b_h": jnp.zeros((hidden,), jnp.float32),
    }


def rnn_zero_state(batch_size: int, hidden: int) -> jax.Array:
    return jnp.zeros((batch_size, hidden), jnp.float32)


def rnn_cell(params: Params, h_BH: jax.Array, x_BI: jax.Array, act=jnp.tanh, dtype: str = "float32"):
    """h' = act(x W_xh + h W_hh + b_h); returns (carry, output) = (h', h')."""
    h_BH = act(mm(x_BI, params["W_xh"], dtype) + mm(h_BH, params["W_hh"], dtype) + params["b_h"][None])
    return h_BH, h_BH


def _rnn_step(params, h_BH, x_BI, *, activation="tanh", dtype="float32"):
    return rnn_cell(params, h_BH, x_BI, act=ACTIVATIONS[activation].fn, dtype=dtype)


def _rnn_recurrent_step(params, h_BH, xw_BH, *, activation="tanh", dtype="float32"):
    h_BH = ACTIVATIONS[activation].fn(xw_BH + mm(h_BH, params["W_hh"], dtype))
    return h_BH, h_BH


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def recurrence(activation: str, dtype: str, chains: int, W_hh: jax.Array, h_BH: jax.Array, xw_TBH: jax.Array):
    """hs_t = act(xw_t + hs_{t-1} W_hh), hs_{-1} = h: the only sequential part of the model (its rows as `chains`
    independent chains, `row_scan`)."""
    step = functools.partial(_rnn_recurrent_step, {"W_hh": W_hh}, activation=activation, dtype=dtype)
    return row_scan(step, h_BH, xw_TBH, chains=chains)[1]


def _recurrence_fwd(activation, dtype, chains, W_hh, h_BH, xw_TBH):
    hs_TBH = recurrence(activation, dtype, chains, W_hh, h_BH, xw_TBH)
    return hs_TBH, (W_hh, h_BH, hs_TBH)


def _recurrence_bwd(activation, dtype, chains, residuals, dhs_TBH):
    # The reverse scan carries only dA_t W_hh^T; dW_hh is one large product over all steps after it.
    W_hh, h0_BH, hs_TBH = residuals
    grad_from_output = ACTIVATIONS[activation].grad_from_output
    W_hh_T = W_hh.T

    def step(dh_BH, inputs):  # dh_BH: what reaches h_t through h_{t+1}
        dhs_BH, h_BH = inputs
        da_BH = (dhs_BH + dh_BH) * grad_from_output(h_BH)
        return mm(da_BH, W_hh_T, dtype), da_BH

    dh0_BH, da_TBH = row_scan(step, jnp.zeros_like(h0_BH), (dhs_TBH, hs_TBH), reverse=True, chains=chains)
    h_prev_TBH = jnp.concatenate([h0_BH[None], hs_TBH[:-1]])
    hidden = W_hh.shape[0]
    dW_hh = mm(h_prev_TBH.reshape(-1, hidden).T, da_TBH.reshape(-1, hidden), dtype)
    return dW_hh, dh0_BH, da_TBH


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def _rnn_recurrence(params, h_BH, xw_TBH, *, activation="tanh", dtype="float32", chains=1):
    hs_TBH = recurrence(activation, dtype, chains, params["W_hh"], h_BH, xw_TBH)
    return hs_TBH, hs_TBH[-1]


RNN = Cell(
    init=rnn_init,
    zero_state=rnn_zero_state,
    step=_rnn_step,
    input_weights=lambda p: (p["W_xh"], p["b_h"]),
    recurrent_step=_rnn_recurrent_step,
    recurrent=("W_hh",),
    gates=1,
    products=(1,),  # h W_hh
    activations=tuple(ACTIVATIONS),
    recurrence=_rnn_recurrence,
)
