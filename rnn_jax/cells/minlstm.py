"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): the LSTM with gates that read the input only.

f_t = sigmoid(x_t W_xf + b_f), i_t = sigmoid(x_t W_xi + b_i), h~_t = x_t W_xh + b_h, normalised f' = f / (f + i),
i' = i / (f + i) (the paper's length-independent scaling), h_t = f'_t h_{t-1} + i'_t h~_t: a linear recurrence.
"""

from __future__ import annotations

import jax

from rnn_jax.cells.common import Params, mm
from rnn_jax.cells.gated import concat
from rnn_jax.cells.linear import dense_init, identity_readout, linear_cell
from rnn_jax.cells.rnn import rnn_zero_state

MINLSTM_GATES = ("f", "i", "h")  # forget, input, candidate: the columns' order


def minlstm_init(key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int) -> Params:
    """W_x<g> ~ N(0, 1/I), zero biases (--forget-bias sets b_f)."""
    return dense_init(MINLSTM_GATES, key_x, num_inputs, hidden)


def _normalised(f_pre, i_pre):
    """(f / (f + i), i / (f + i)) of f = sigmoid(f_pre), i = sigmoid(i_pre)."""
    f, i = jax.nn.sigmoid(f_pre), jax.nn.sigmoid(i_pre)
    return f / (f + i), i / (f + i)


def minlstm_step(params: Params, h_BH: jax.Array, x_BI: jax.Array, *, activation="tanh", dtype="float32"):
    """The paper's step: h' = f' h + i' h~; returns (h', h')."""
    gate = lambda g: mm(x_BI, params[f"W_x{g}"], dtype) + params[f"b_{g}"][None]
    f_BH, i_BH = _normalised(gate("f"), gate("i"))
    h_BH = f_BH * h_BH + i_BH * gate("h")
    return h_BH, h_BH


def minlstm_linear(params: Params, xw_TB3H: jax.Array):
    """(a, b) = (f', i' h~) of every step."""
    hidden = xw_TB3H.shape[-1] // 3
    f_TBH, i_TBH = _normalised(xw_TB3H[..., :hidden], xw_TB3H[..., hidden : 2 * hidden])
    return f_TBH, i_TBH * xw_TB3H[..., 2 * hidden :]


MINLSTM = linear_cell(
    init=minlstm_init,
    zero_state=rnn_zero_state,
    step=minlstm_step,
    input_weights=lambda p: (concat(p, "W_x", MINLSTM_GATES), concat(p, "b_", MINLSTM_GATES)),
    linear=minlstm_linear,
    readout=identity_readout,
    gates=3,
    forget_gate="b_f",
)
