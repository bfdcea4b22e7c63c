"""The cell registry: a recurrent cell is its parameters, its zero state and its step on a state pytree.

dm-haiku's recurrent cores, with explicit parameter dicts: `model` unrolls every cell the same way
(`lax.scan` of `step`), so nothing downstream (training, generation, evaluation, checkpoints,
sharding) knows which cell it carries; the state is any pytree of (B, H) arrays. A cell may also
give a fused unroll (`recurrence`), with every gate's input part computed before the scan and a
hand-written backward pass: every cell here does, and it is what training uses by default.

The cells: "rnn", the book's tanh cell (d2l 8.5); "gru" (d2l 9.1) and "lstm" (d2l 9.2), with the book's
equations, initialisation and parameter names. The book's GRU applies the reset gate before the recurrent
product, (R * H) W_hh; flax's `GRUCell` (and cuDNN's, torch's) apply it after, R * (H W_hn + b_hn), so
those are a different function of the same weights.
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



# ----------------------------------------------------------------------------- gated cells (d2l 9.1, 9.2)
def sigmoid_grad(y: jax.Array) -> jax.Array:
    """sigmoid'(a) in terms of y = sigmoid(a)."""
    return y * (1.0 - y)


def tanh_grad(y: jax.Array) -> jax.Array:
    """tanh'(a) in terms of y = tanh(a)."""
    return 1.0 - y * y


def _gates_init(names: tuple[str, ...], key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int):
    """The book's three(): W_x<g> (I, H), W_h<g> (H, H) ~ N(0, 0.01^2), b_<g> zeros, for each gate g."""
    keys_x, keys_h = jax.random.split(key_x, len(names)), jax.random.split(key_h, len(names))
    params = {}
    for g, kx, kh in zip(names, keys_x, keys_h, strict=True):
        params |= {f"W_x{g}": normal(kx, (num_inputs, hidden)), f"W_h{g}": normal(kh, (hidden, hidden)),
                   f"b_{g}": jnp.zeros((hidden,), jnp.float32)}
    return params


def _concat(params: Params, prefix: str, names: tuple[str, ...]) -> jax.Array:
    return jnp.concatenate([params[f"{prefix}{g}"] for g in names], axis=-1)


def _tanh_only(activation: str) -> None:
    if activation != "tanh":
        raise ValueError(f"the gated cells follow the book (sigmoid gates, tanh candidate); activation={activation!r}")


def prev_steps(first_BH: jax.Array, xs_TBH: jax.Array) -> jax.Array:
    """(x_{-1} = first, x_0, ..., x_{T-2}): each step's previous value, (T, B, H)."""
    return jnp.concatenate([first_BH[None], xs_TBH[:-1]])


def outer_sum(a_TBH: jax.Array, b_TBG: jax.Array, dtype: str) -> jax.Array:
    """sum_t a_t^T b_t as one (H, T*B) @ (T*B, G) product: a weight gradient over all steps at once."""
    return mm(a_TBH.reshape(-1, a_TBH.shape[-1]).T, b_TBG.reshape(-1, b_TBG.shape[-1]), dtype)


def gate_constants(hidden: int, num_sigmoid: int, num_tanh: int) -> tuple[jax.Array, jax.Array]:
    """(scale_G, offset_G) of `gates`: 0.5, 0.5 on the sigmoid columns; 1, 0 on the tanh columns."""
    scale_G = jnp.repeat(jnp.asarray([0.5] * num_sigmoid + [1.0] * num_tanh, jnp.float32), hidden)
    return scale_G, jnp.where(scale_G == 0.5, 0.5, 0.0).astype(jnp.float32)


def gates(a_BG: jax.Array, scale_G: jax.Array, offset_G: jax.Array) -> jax.Array:
    """Sigmoid and tanh columns as one tanh: sigmoid(a) = 0.5 tanh(0.5 a) + 0.5 (one elementwise pass)."""
    return scale_G * jnp.tanh(scale_G * a_BG) + offset_G


def gates_grad(y_BG: jax.Array, scale_G: jax.Array | float, offset_G: jax.Array | float) -> jax.Array:
    """d gates / d a from y = gates(a): y (1 - y) on sigmoid columns, 1 - y^2 on tanh columns (scale and offset:
    the columns' arrays, or one gate's floats)."""
    return scale_G * scale_G - (y_BG - offset_G) ** 2


GRU_GATES = ("z", "r", "h")  # update, reset, candidate: the order of the gates' columns in input_weights


def gru_init(key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int) -> Params:
    return _gates_init(GRU_GATES, key_x, key_h, num_inputs, hidden)


def gru_cell(params: Params, h_BH: jax.Array, x_BI: jax.Array, dtype: str = "float32"):
    """The book's GRU, gate by gate: R, Z = sigmoid(X W_x. + H W_h. + b_.), H~ = tanh(X W_xh + (R*H) W_hh + b_h),
    H' = Z*H + (1-Z)*H~; returns (H', H')."""
    def gate(g, h):
        return mm(x_BI, params[f"W_x{g}"], dtype) + mm(h, params[f"W_h{g}"], dtype) + params[f"b_{g}"]
    z_BH, r_BH = jax.nn.sigmoid(gate("z", h_BH)), jax.nn.sigmoid(gate("r", h_BH))
    h_tilde_BH = jnp.tanh(gate("h", r_BH * h_BH))
    h_BH = z_BH * h_BH + (1.0 - z_BH) * h_tilde_BH
    return h_BH, h_BH


def _gru_step(params, h_BH, x_BI, *, activation="tanh", dtype="float32"):
    _tanh_only(activation)
    return gru_cell(params, h_BH, x_BI, dtype)


def _gru_core(W_hzr, W_hh, h_BH, xw_B3H, dtype):
    """One step from the gates' input parts: two products, H [W_hz|W_hr] then (R*H) W_hh. -> (H', (Z, R, H~))."""
    hidden = h_BH.shape[-1]
    zr_B2H = gates(xw_B3H[:, :2 * hidden] + mm(h_BH, W_hzr, dtype), *gate_constants(hidden, 2, 0))
    z_BH, r_BH = zr_B2H[:, :hidden], zr_B2H[:, hidden:]
    h_tilde_BH = jnp.tanh(xw_B3H[:, 2 * hidden:] + mm(r_BH * h_BH, W_hh, dtype))
    return z_BH * h_BH + (1.0 - z_BH) * h_tilde_BH, (z_BH, r_BH, h_tilde_BH)


def _gru_recurrent_step(params, h_BH, xw_B3H, *, activation="tanh", dtype="float32"):
    _tanh_only(activation)
    h_BH, _ = _gru_core(_concat(params, "W_h", "zr"), params["W_hh"], h_BH, xw_B3H, dtype)
    return h_BH, h_BH


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def gru_recurrence(dtype: str, W_hzr: jax.Array, W_hh: jax.Array, h_BH: jax.Array, xw_TB3H: jax.Array):
    """hs_t = GRU(hs_{t-1}, xw_t), hs_{-1} = h, from every gate's input part: (T, B, H)."""
    def step(h_BH, xw_B3H):
        h_BH, _ = _gru_core(W_hzr, W_hh, h_BH, xw_B3H, dtype)
        return h_BH, h_BH
    return jax.lax.scan(step, h_BH, xw_TB3H)[1]


def _gru_fwd(dtype, W_hzr, W_hh, h_BH, xw_TB3H):
    def step(h_BH, xw_B3H):
        h_BH, gates = _gru_core(W_hzr, W_hh, h_BH, xw_B3H, dtype)
        return h_BH, (h_BH, *gates)
    hs_TBH, zs_TBH, rs_TBH, h_tildes_TBH = jax.lax.scan(step, h_BH, xw_TB3H)[1]
    return hs_TBH, (W_hzr, W_hh, h_BH, hs_TBH, zs_TBH, rs_TBH, h_tildes_TBH)


def _gru_bwd(dtype, residuals, dhs_TBH):
    # The reverse scan carries only dH; the weight gradients are one large product each after it.
    W_hzr, W_hh, h0_BH, hs_TBH, zs_TBH, rs_TBH, h_tildes_TBH = residuals
    h_prev_TBH = prev_steps(h0_BH, hs_TBH)
    W_hzr_T, W_hh_T = W_hzr.T, W_hh.T

    def step(dh_BH, inputs):  # dh_BH: what reaches h_t through h_{t+1}
        dhs_BH, h_prev_BH, z_BH, r_BH, h_tilde_BH = inputs
        dh_BH = dh_BH + dhs_BH
        da_h_BH = dh_BH * (1.0 - z_BH) * tanh_grad(h_tilde_BH)
        drh_BH = mm(da_h_BH, W_hh_T, dtype)  # the gradient of R*H
        da_zr_B2H = jnp.concatenate([dh_BH * (h_prev_BH - h_tilde_BH) * sigmoid_grad(z_BH),
                                     drh_BH * h_prev_BH * sigmoid_grad(r_BH)], axis=-1)
        dh_prev_BH = dh_BH * z_BH + drh_BH * r_BH + mm(da_zr_B2H, W_hzr_T, dtype)
        return dh_prev_BH, (da_zr_B2H, da_h_BH)

    dh0_BH, (da_zr_TB2H, da_h_TBH) = jax.lax.scan(
        step, jnp.zeros_like(h0_BH), (dhs_TBH, h_prev_TBH, zs_TBH, rs_TBH, h_tildes_TBH), reverse=True)
    dW_hzr = outer_sum(h_prev_TBH, da_zr_TB2H, dtype)
    dW_hh = outer_sum(rs_TBH * h_prev_TBH, da_h_TBH, dtype)
    return dW_hzr, dW_hh, dh0_BH, jnp.concatenate([da_zr_TB2H, da_h_TBH], axis=-1)


gru_recurrence.defvjp(_gru_fwd, _gru_bwd)


def _gru_recurrence(params, h_BH, xw_TB3H, *, activation="tanh", dtype="float32"):
    _tanh_only(activation)
    hs_TBH = gru_recurrence(dtype, _concat(params, "W_h", "zr"), params["W_hh"], h_BH, xw_TB3H)
    return hs_TBH, hs_TBH[-1]


GRU = Cell(init=gru_init, zero_state=rnn_zero_state, step=_gru_step,
           input_weights=lambda p: (_concat(p, "W_x", GRU_GATES), _concat(p, "b_", GRU_GATES)),
           recurrent_step=_gru_recurrent_step, recurrence=_gru_recurrence)


LSTM_GATES = ("i", "f", "o", "c")  # input, forget, output, candidate memory: the columns' order


def lstm_init(key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int) -> Params:
    return _gates_init(LSTM_GATES, key_x, key_h, num_inputs, hidden)


def lstm_zero_state(batch_size: int, hidden: int) -> tuple[jax.Array, jax.Array]:
    return rnn_zero_state(batch_size, hidden), rnn_zero_state(batch_size, hidden)


def lstm_cell(params: Params, state, x_BI: jax.Array, dtype: str = "float32"):
    """The book's LSTM, gate by gate: I, F, O = sigmoid(X W_x. + H W_h. + b_.), C~ = tanh(X W_xc + H W_hc + b_c),
    C' = F*C + I*C~, H' = O*tanh(C'); returns ((H', C'), H')."""
    h_BH, c_BH = state
    def gate(g):
        return mm(x_BI, params[f"W_x{g}"], dtype) + mm(h_BH, params[f"W_h{g}"], dtype) + params[f"b_{g}"]
    i_BH, f_BH, o_BH = (jax.nn.sigmoid(gate(g)) for g in "ifo")
    c_BH = f_BH * c_BH + i_BH * jnp.tanh(gate("c"))
    h_BH = o_BH * jnp.tanh(c_BH)
    return (h_BH, c_BH), h_BH


def _lstm_step(params, state, x_BI, *, activation="tanh", dtype="float32"):
    _tanh_only(activation)
    return lstm_cell(params, state, x_BI, dtype)


def _lstm_core(W_h4H, h_BH, c_BH, xw_B4H, dtype):
    """One step from the gates' input parts with one product, H [W_hi|W_hf|W_ho|W_hc]:
    -> (H', C', ((I, F, O, C~), tanh C'))."""
    hidden = h_BH.shape[-1]
    g_B4H = gates(xw_B4H + mm(h_BH, W_h4H, dtype), *gate_constants(hidden, 3, 1))
    i_BH, f_BH, o_BH, c_tilde_BH = (g_B4H[:, k * hidden:(k + 1) * hidden] for k in range(4))
    c_BH = f_BH * c_BH + i_BH * c_tilde_BH
    tanh_c_BH = jnp.tanh(c_BH)
    return o_BH * tanh_c_BH, c_BH, ((i_BH, f_BH, o_BH, c_tilde_BH), tanh_c_BH)


def _lstm_recurrent_step(params, state, xw_B4H, *, activation="tanh", dtype="float32"):
    _tanh_only(activation)
    h_BH, c_BH, _ = _lstm_core(_concat(params, "W_h", LSTM_GATES), *state, xw_B4H, dtype)
    return (h_BH, c_BH), h_BH


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def lstm_recurrence(dtype: str, W_h4H: jax.Array, h_BH: jax.Array, c_BH: jax.Array, xw_TB4H: jax.Array):
    """hs_t, c_t = LSTM((hs_{t-1}, c_{t-1}), xw_t) from every gate's input part: (hs_TBH, last c_BH)."""
    def step(state, xw_B4H):
        h_BH, c_BH, _ = _lstm_core(W_h4H, *state, xw_B4H, dtype)
        return (h_BH, c_BH), h_BH
    (_, c_BH), hs_TBH = jax.lax.scan(step, (h_BH, c_BH), xw_TB4H)
    return hs_TBH, c_BH


def _lstm_fwd(dtype, W_h4H, h_BH, c_BH, xw_TB4H):
    # Each gate is saved as its own (T, B, H) array, so that the backward reads whole rows of what it saves:
    # a column slice of a step's row of one (T, B, 4H) array compiles to a slow elementwise loop on CPU.
    def step(state, xw_B4H):
        h_BH, c_BH, saved = _lstm_core(W_h4H, *state, xw_B4H, dtype)
        return (h_BH, c_BH), (h_BH, state[1], *saved)  # state[1]: the step's C_prev
    (_, c_BH), (hs_TBH, c_prevs_TBH, gates_TBH, tanh_cs_TBH) = jax.lax.scan(step, (h_BH, c_BH), xw_TB4H)
    return (hs_TBH, c_BH), (W_h4H, h_BH, hs_TBH, c_prevs_TBH, gates_TBH, tanh_cs_TBH)


SIGMOID_COLUMN, TANH_COLUMN = (0.5, 0.5), (1.0, 0.0)  # (scale, offset) of `gates` on one gate's columns


def _lstm_bwd(dtype, residuals, cotangents):
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
        da_B4H = jnp.concatenate([dc_BH * c_tilde_BH * gates_grad(i_BH, *SIGMOID_COLUMN),
                                  dc_BH * c_prev_BH * gates_grad(f_BH, *SIGMOID_COLUMN),
                                  dh_BH * tanh_c_BH * gates_grad(o_BH, *SIGMOID_COLUMN),
                                  dc_BH * i_BH * gates_grad(c_tilde_BH, *TANH_COLUMN)], axis=-1)
        return (mm(da_B4H, W_h4H_T, dtype), dc_BH * f_BH), da_B4H

    (dh0_BH, dc0_BH), da_TB4H = jax.lax.scan(
        step, (jnp.zeros_like(h0_BH), dc_last_BH), (dhs_TBH, c_prevs_TBH, gates_TBH, tanh_cs_TBH), reverse=True)
    return outer_sum(prev_steps(h0_BH, hs_TBH), da_TB4H, dtype), dh0_BH, dc0_BH, da_TB4H


lstm_recurrence.defvjp(_lstm_fwd, _lstm_bwd)


def _lstm_recurrence(params, state, xw_TB4H, *, activation="tanh", dtype="float32"):
    _tanh_only(activation)
    hs_TBH, c_BH = lstm_recurrence(dtype, _concat(params, "W_h", LSTM_GATES), *state, xw_TB4H)
    return hs_TBH, (hs_TBH[-1], c_BH)


LSTM = Cell(init=lstm_init, zero_state=lstm_zero_state, step=_lstm_step,
            input_weights=lambda p: (_concat(p, "W_x", LSTM_GATES), _concat(p, "b_", LSTM_GATES)),
            recurrent_step=_lstm_recurrent_step, recurrence=_lstm_recurrence)

CELLS: dict[str, Cell] = {"rnn": RNN, "gru": GRU, "lstm": LSTM}
