"""The book's LSTM (d2l 9.2), with its equations, initialisation and parameter names, and a hand-written backward.

Sigmoid gates and a tanh candidate and output: the cell declares no other activation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnn_jax.cells.common import Cell, Params, mm, row_scan, tanh_grad
from rnn_jax.cells.gated import concat, gate_constants, gates, gates_grad, gates_init, outer_sum, prev_steps
from rnn_jax.cells.rnn import rnn_zero_state

LSTM_GATES = ("i", "f", "o", "c")  # input, forget, output, candidate memory: the columns' order


def lstm_init(key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int) -> Params:
    return gates_init(LSTM_GATES, key_x, key_h, num_inputs, hidden)


def lstm_zero_state(batch_size: int, hidden: int) -> tuple[jax.Array, jax.Array]:
    return rnn_zero_state(batch_size, hidden), rnn_zero_state(batch_size, hidden)


def lstm_cell(params: Params, state, x_BI: jax.Array, dtype: str = "float32"):
    """The book's LSTM, gate by gate: I, F, O = sigmoid(X W_x. + H W_h. + b_.), C~ = tanh(X W_xc + H W_hc + b_c),
    C' = F*C + I*C~, H' = O*tanh(C'); returns ((H', C'), H')."""
    h_BH, c_BH = state

    def gate(g):
        return mm(x_BI, params[f"W_x{g}"], dtype) + mm(h_BH, params[f"W_h{g}"], dtype) + params[f"b_{g}"][None]

    i_BH, f_BH, o_BH = (jax.nn.sigmoid(gate(g)) for g in "ifo")
    c_BH = f_BH * c_BH + i_BH * jnp.tanh(gate("c"))
    h_BH = o_BH * jnp.tanh(c_BH)
    return (h_BH, c_BH), h_BH


def _lstm_step(params, state, x_BI, *, activation="tanh", dtype="float32"):
    return lstm_cell(params, state, x_BI, dtype)


def _lstm_core(W_h4H, h_BH, c_BH, xw_B4H, dtype):
    """One step from the gates' input parts with one product, H [W_hi|W_hf|W_ho|W_hc]:
    -> (H', C', ((I, F, O, C~), tanh C'))."""
    hidden = h_BH.shape[-1]
    g_B4H = gates(xw_B4H + mm(h_BH, W_h4H, dtype), *gate_constants(hidden, 3, 1))
    i_BH, f_BH, o_BH, c_tilde_BH = (g_B4H[:, k * hidden : (k + 1) * hidden] for k in range(4))
    c_BH = f_BH * c_BH + i_BH * c_tilde_BH
    tanh_c_BH = jnp.tanh(c_BH)
    return o_BH * tanh_c_BH, c_BH, ((i_BH, f_BH, o_BH, c_tilde_BH), tanh_c_BH)


def _lstm_recurrent_step(params, state, xw_B4H, *, activation="tanh", dtype="float32"):
    h_BH, c_BH, _ = _lstm_core(concat(params, "W_h", LSTM_GATES), *state, xw_B4H, dtype)
    return (h_BH, c_BH), h_BH


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def lstm_recurrence(dtype: str, chains: int, W_h4H: jax.Array, h_BH: jax.Array, c_BH: jax.Array, xw_TB4H: jax.Array):
    """hs_t, c_t = LSTM((hs_{t-1}, c_{t-1}), xw_t) from every gate's input part: (hs_TBH, last c_BH), its rows as
    `chains` chains."""

    def step(state, xw_B4H):
        h_BH, c_BH, _ = _lstm_core(W_h4H, *state, xw_B4H, dtype)
        return (h_BH, c_BH), h_BH

    (_, c_BH), hs_TBH = row_scan(step, (h_BH, c_BH), xw_TB4H, chains=chains)
    return hs_TBH, c_BH


def _lstm_fwd(dtype, chains, W_h4H, h_BH, c_BH, xw_TB4H):
    # Each gate is saved as its own (T, B, H) array, so that the backward reads whole rows of what it saves:
    # a column slice of a step's row of one (T, B, 4H) array compiles to a slow elementwise loop on CPU.
    def step(state, xw_B4H):
        h_BH, c_BH, saved = _lstm_core(W_h4H, *state, xw_B4H, dtype)
        return (h_BH, c_BH), (h_BH, state[1], *saved)  # state[1]: the step's C_prev

    (_, c_BH), (hs_TBH, c_prevs_TBH, gates_TBH, tanh_cs_TBH) = row_scan(step, (h_BH, c_BH), xw_TB4H, chains=chains)
    return (hs_TBH, c_BH), (W_h4H, h_BH, hs_TBH, c_prevs_TBH, gates_TBH, tanh_cs_TBH)


SIGMOID_COLUMN, TANH_COLUMN = (0.5, 0.5), (1.0, 0.0)  # (scale, offset) of `gates` on one gate's columns


def _lstm_bwd(dtype, chains, residuals, cotangents):
    # The reverse scan carries only (dH, dC); dW is one large product after it.
    W_h4H, h0_BH, hs_TBH, c_prevs_TBH, gates_TBH, tanh_cs_TBH = residuals
    dhs_TBH, dc_last_BH = cotangents
    W_h4H_T = W_h4H.T

    def step(carry, inputs):  # carry: what reaches (h_t, c_t) through step t+1
        dh_BH, dc_BH = carry
        dhs_BH, c_prev_BH, (i_BH, f_BH, o_BH, c_tilde_BH), tanh_c_BH = inputs
        dh_BH = dh_BH + dhs_BH
        dc_BH = dc_BH + dh_BH * o_BH * tanh_grad(tanh_c_BH)
        # d gate times d gate / d a: gates_grad with each gate's own constants, as on the whole row of 4H columns
        da_B4H = jnp.concatenate(
            [
                dc_BH * c_tilde_BH * gates_grad(i_BH, *SIGMOID_COLUMN),
                dc_BH * c_prev_BH * gates_grad(f_BH, *SIGMOID_COLUMN),
                dh_BH * tanh_c_BH * gates_grad(o_BH, *SIGMOID_COLUMN),
                dc_BH * i_BH * gates_grad(c_tilde_BH, *TANH_COLUMN),
            ],
            axis=-1,
        )
        return (mm(da_B4H, W_h4H_T, dtype), dc_BH * f_BH), da_B4H

    (dh0_BH, dc0_BH), da_TB4H = row_scan(
        step,
        (jnp.zeros_like(h0_BH), dc_last_BH),
        (dhs_TBH, c_prevs_TBH, gates_TBH, tanh_cs_TBH),
        reverse=True,
        chains=chains,
    )
    return outer_sum(prev_steps(h0_BH, hs_TBH), da_TB4H, dtype), dh0_BH, dc0_BH, da_TB4H


lstm_recurrence.defvjp(_lstm_fwd, _lstm_bwd)


def _lstm_recurrence(params, state, xw_TB4H, *, activation="tanh", dtype="float32", chains=1):
    hs_TBH, c_BH = lstm_recurrence(dtype, chains, concat(params, "W_h", LSTM_GATES), *state, xw_TB4H)
    return hs_TBH, (hs_TBH[-1], c_BH)


LSTM = Cell(
    init=lstm_init,
    zero_state=lstm_zero_state,
    step=_lstm_step,
    input_weights=lambda p: (concat(p, "W_x", LSTM_GATES), concat(p, "b_", LSTM_GATES)),
    recurrent_step=_lstm_recurrent_step,
    recurrent=tuple(f"W_h{g}" for g in LSTM_GATES),
    gates=4,
    products=(4,),  # h [W_hi|W_hf|W_ho|W_hc]
    activations=("tanh",),
    recurrence=_lstm_recurrence,
    forget_gate="b_f",
)
