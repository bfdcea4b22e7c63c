"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): the GRU with gates that read the input only.

z_t = sigmoid(x_t W_xz + b_z), h~_t = x_t W_xh + b_h, h_t = (1 - z_t) h_{t-1} + z_t h~_t: a linear recurrence in h
with a_t = 1 - z_t, b_t = z_t h~_t.
"""

from __future__ import annotations

import jax

from rnn_jax.cells.common import Params, mm
from rnn_jax.cells.gated import concat
from rnn_jax.cells.linear import dense_init, identity_readout, linear_cell
from rnn_jax.cells.rnn import rnn_zero_state

MINGRU_GATES = ("z", "h")  # update gate, candidate: the columns' order


def mingru_init(key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int) -> Params:
    """nn.Linear's scale, as the paper's layers: W_x<g> ~ N(0, 1/I), zero biases."""
    return dense_init(MINGRU_GATES, key_x, num_inputs, hidden)


def mingru_step(params: Params, h_BH: jax.Array, x_BI: jax.Array, *, activation="tanh", dtype="float32"):
    """The paper's step: h' = (1 - z) h + z h~; returns (h', h')."""
    z_BH = jax.nn.sigmoid(mm(x_BI, params["W_xz"], dtype) + params["b_z"][None])
    h_tilde_BH = mm(x_BI, params["W_xh"], dtype) + params["b_h"][None]
    h_BH = (1.0 - z_BH) * h_BH + z_BH * h_tilde_BH
    return h_BH, h_BH


def mingru_linear(params: Params, xw_TB2H: jax.Array):
    """(a, b) = (1 - z, z h~) of every step."""
    hidden = xw_TB2H.shape[-1] // 2
    z_TBH = jax.nn.sigmoid(xw_TB2H[..., :hidden])
    return 1.0 - z_TBH, z_TBH * xw_TB2H[..., hidden:]


MINGRU = linear_cell(
    init=mingru_init,
    zero_state=rnn_zero_state,
    step=mingru_step,
    input_weights=lambda p: (concat(p, "W_x", MINGRU_GATES), concat(p, "b_", MINGRU_GATES)),
    linear=mingru_linear,
    readout=identity_readout,
    gates=2,
)
