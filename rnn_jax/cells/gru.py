"""The book's GRU (d2l 9.1), with its equations, initialisation and parameter names, and a hand-written backward.

The book applies the reset gate before the recurrent product, (R * H) W_hh; flax's `GRUCell` (and cuDNN's, torch's)
apply it after, R * (H W_hn + b_hn), so those are a different function of the same weights. Sigmoid gates and a tanh
candidate: the cell declares no other activation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnn_jax.cells.common import Cell, Params, mm, row_scan, sigmoid_grad, tanh_grad
from rnn_jax.cells.gated import concat, gate_constants, gates, gates_init, outer_sum, prev_steps
from rnn_jax.cells.rnn import rnn_zero_state

GRU_GATES = ("z", "r", "h")  # update, reset, candidate: the order of the gates' columns in input_weights


def gru_init(key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int) -> Params:
    return gates_init(GRU_GATES, key_x, key_h, num_inputs, hidden)


def gru_cell(params: Params, h_BH: jax.Array, x_BI: jax.Array, dtype: str = "float32"):
    """The book's GRU, gate by gate: R, Z = sigmoid(X W_x. + H W_h. + b_.), H~ = tanh(X W_xh + (R*H) W_hh + b_h),
    H' = Z*H + (1-Z)*H~; returns (H', H')."""

    def gate(g, h):
        return mm(x_BI, params[f"W_x{g}"], dtype) + mm(h, params[f"W_h{g}"], dtype) + params[f"b_{g}"][None]

    z_BH, r_BH = jax.nn.sigmoid(gate("z", h_BH)), jax.nn.sigmoid(gate("r", h_BH))
    h_tilde_BH = jnp.tanh(gate("h", r_BH * h_BH))
    h_BH = z_BH * h_BH + (1.0 - z_BH) * h_tilde_BH
    return h_BH, h_BH


def _gru_step(params, h_BH, x_BI, *, activation="tanh", dtype="float32"):
    return gru_cell(params, h_BH, x_BI, dtype)


def _gru_core(W_hzr, W_hh, h_BH, xw_B3H, dtype):
    """One step from the gates' input parts: two products, H [W_hz|W_hr] then (R*H) W_hh. -> (H', (Z, R, H~))."""
    hidden = h_BH.shape[-1]
    zr_B2H = gates(xw_B3H[:, : 2 * hidden] + mm(h_BH, W_hzr, dtype), *gate_constants(hidden, 2, 0))
    z_BH, r_BH = zr_B2H[:, :hidden], zr_B2H[:, hidden:]
    h_tilde_BH = jnp.tanh(xw_B3H[:, 2 * hidden :] + mm(r_BH * h_BH, W_hh, dtype))
    return z_BH * h_BH + (1.0 - z_BH) * h_tilde_BH, (z_BH, r_BH, h_tilde_BH)


def _gru_recurrent_step(params, h_BH, xw_B3H, *, activation="tanh", dtype="float32"):
    h_BH, _ = _gru_core(concat(params, "W_h", "zr"), params["W_hh"], h_BH, xw_B3H, dtype)
    return h_BH, h_BH


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def gru_recurrence(dtype: str, chains: int, W_hzr: jax.Array, W_hh: jax.Array, h_BH: jax.Array, xw_TB3H: jax.Array):
    """hs_t = GRU(hs_{t-1}, xw_t), hs_{-1} = h, from every gate's input part: (T, B, H), its rows as `chains`
    chains."""

    def step(h_BH, xw_B3H):
        h_BH, _ = _gru_core(W_hzr, W_hh, h_BH, xw_B3H, dtype)
        return h_BH, h_BH

    return row_scan(step, h_BH, xw_TB3H, chains=chains)[1]


def _gru_fwd(dtype, chains, W_hzr, W_hh, h_BH, xw_TB3H):
    def step(h_BH, xw_B3H):
        h_BH, gates = _gru_core(W_hzr, W_hh, h_BH, xw_B3H, dtype)
        return h_BH, (h_BH, *gates)

    hs_TBH, zs_TBH, rs_TBH, h_tildes_TBH = row_scan(step, h_BH, xw_TB3H, chains=chains)[1]
    return hs_TBH, (W_hzr, W_hh, h_BH, hs_TBH, zs_TBH, rs_TBH, h_tildes_TBH)


def _gru_bwd(dtype, chains, residuals, dhs_TBH):
    # The reverse scan carries only dH; the weight gradients are one large product each after it.
    W_hzr, W_hh, h0_BH, hs_TBH, zs_TBH, rs_TBH, h_tildes_TBH = residuals
    h_prev_TBH = prev_steps(h0_BH, hs_TBH)
    W_hzr_T, W_hh_T = W_hzr.T, W_hh.T

    def step(dh_BH, inputs):  # dh_BH: what reaches h_t through h_{t+1}
        dhs_BH, h_prev_BH, z_BH, r_BH, h_tilde_BH = inputs
        dh_BH = dh_BH + dhs_BH
        da_h_BH = dh_BH * (1.0 - z_BH) * tanh_grad(h_tilde_BH)
        drh_BH = mm(da_h_BH, W_hh_T, dtype)  # the gradient of R*H
        da_zr_B2H = jnp.concatenate(
            [dh_BH * (h_prev_BH - h_tilde_BH) * sigmoid_grad(z_BH), drh_BH * h_prev_BH * sigmoid_grad(r_BH)], axis=-1
        )
        dh_prev_BH = dh_BH * z_BH + drh_BH * r_BH + mm(da_zr_B2H, W_hzr_T, dtype)
        return dh_prev_BH, (da_zr_B2H, da_h_BH)

    dh0_BH, (da_zr_TB2H, da_h_TBH) = row_scan(
        step,
        jnp.zeros_like(h0_BH),
        (dhs_TBH, h_prev_TBH, zs_TBH, rs_TBH, h_tildes_TBH),
        reverse=True,
        chains=chains,
    )
    dW_hzr = outer_sum(h_prev_TBH, da_zr_TB2H, dtype)
    dW_hh = outer_sum(rs_TBH * h_prev_TBH, da_h_TBH, dtype)
    return dW_hzr, dW_hh, dh0_BH, jnp.concatenate([da_zr_TB2H, da_h_TBH], axis=-1)


gru_recurrence.defvjp(_gru_fwd, _gru_bwd)


def _gru_recurrence(params, h_BH, xw_TB3H, *, activation="tanh", dtype="float32", chains=1):
    hs_TBH = gru_recurrence(dtype, chains, concat(params, "W_h", "zr"), params["W_hh"], h_BH, xw_TB3H)
    return hs_TBH, hs_TBH[-1]


GRU = Cell(
    init=gru_init,
    zero_state=rnn_zero_state,
    step=_gru_step,
    input_weights=lambda p: (concat(p, "W_x", GRU_GATES), concat(p, "b_", GRU_GATES)),
    recurrent_step=_gru_recurrent_step,
    recurrent=tuple(f"W_h{g}" for g in GRU_GATES),
    gates=3,
    products=(2, 1),  # h [W_hz|W_hr], then (r*h) W_hh, which needs r first
    activations=("tanh",),
    recurrence=_gru_recurrence,
)
