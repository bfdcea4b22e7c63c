"""LRU (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long Sequences"): a diagonal complex
linear recurrence, its state two real (B, H) arrays (re, im).

h_t = lambda * h_{t-1} + gamma * (x_t B), lambda = exp(-exp(nu) + i exp(theta)), gamma = exp(gamma_log) (initialised
to sqrt(1 - |lambda|^2)), y_t = Re(h_t C) + D * x_t; |lambda| drawn uniformly on the ring [R_MIN, R_MAX] of the
complex plane (by area), its phase uniformly in [0, MAX_PHASE]. The state has H complex units.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rnn_jax.cells.common import Params, along_last, mm
from rnn_jax.cells.linear import lecun, linear_cell
from rnn_jax.cells.rnn import rnn_zero_state

R_MIN, R_MAX, MAX_PHASE = 0.9, 0.999, 2 * math.pi


def lru_init(key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int) -> Params:
    """The paper's: ring-initialised lambda (as nu_log, theta_log), gamma_log = log sqrt(1 - |lambda|^2),
    B ~ N(0, 1/(2 I)) complex, C ~ N(0, 1/H) complex; skip D ~ N(0, 1) when I == H, else a dense W_xd (I, H)."""
    k_nu, k_theta = jax.random.split(key_h)
    u1 = jax.random.uniform(k_nu, (hidden,), jnp.float32)
    nu_log = jnp.log(-0.5 * jnp.log(u1 * (R_MAX**2 - R_MIN**2) + R_MIN**2))  # |lambda|^2 uniform in [R_MIN^2, R_MAX^2]
    theta_log = jnp.log(MAX_PHASE * jax.random.uniform(k_theta, (hidden,), jnp.float32))
    k_bre, k_bim, k_cre, k_cim, k_d = jax.random.split(key_x, 5)
    normal = lambda k, shape, var: jnp.sqrt(var) * jax.random.normal(k, shape, jnp.float32)
    params = {
        "nu_log": nu_log,
        "theta_log": theta_log,
        "gamma_log": 0.5 * jnp.log(-jnp.expm1(-2.0 * jnp.exp(nu_log))),  # log sqrt(1 - |lambda|^2)
        "B_re": normal(k_bre, (num_inputs, hidden), 1.0 / (2 * num_inputs)),
        "B_im": normal(k_bim, (num_inputs, hidden), 1.0 / (2 * num_inputs)),
        "C_re": normal(k_cre, (hidden, hidden), 1.0 / hidden),
        "C_im": normal(k_cim, (hidden, hidden), 1.0 / hidden),
    }
    if num_inputs == hidden:
        return params | {"D": jax.random.normal(k_d, (hidden,), jnp.float32)}
    return params | {"W_xd": lecun(k_d, (num_inputs, hidden))}  # a change of width: no diagonal


def lru_zero_state(batch_size: int, hidden: int) -> tuple[jax.Array, jax.Array]:
    return rnn_zero_state(batch_size, hidden), rnn_zero_state(batch_size, hidden)


def _skip_weights(params: Params) -> jax.Array:
    """D as an (H, H) diagonal matrix, or the dense W_xd: the skip's columns of the input part."""
    return jnp.diag(params["D"]) if "D" in params else params["W_xd"]


def lru_step(params: Params, state, x_BI: jax.Array, *, activation="tanh", dtype="float32"):
    """The paper's step in complex arithmetic: h' = lambda h + gamma (x B), y = Re(h' C) + D x;
    returns ((Re h', Im h'), y)."""
    lam_H = jnp.exp(-jnp.exp(params["nu_log"]) + 1j * jnp.exp(params["theta_log"]))
    bx_BH = mm(x_BI, params["B_re"], dtype) + 1j * mm(x_BI, params["B_im"], dtype)
    h_BH = lam_H[None] * (state[0] + 1j * state[1]) + jnp.exp(params["gamma_log"])[None] * bx_BH
    skip_BH = x_BI * params["D"][None] if "D" in params else mm(x_BI, params["W_xd"], dtype)
    y_BH = mm(h_BH.real, params["C_re"], dtype) - mm(h_BH.imag, params["C_im"], dtype) + skip_BH
    return (h_BH.real, h_BH.imag), y_BH


def lru_linear(params: Params, xw_TB3H: jax.Array):
    """a = lambda, b = gamma (x B), as (re, im) pairs."""
    hidden = xw_TB3H.shape[-1] // 3
    modulus_H, phase_H = jnp.exp(-jnp.exp(params["nu_log"])), jnp.exp(params["theta_log"])
    shape = xw_TB3H.shape[:-1] + (hidden,)
    a = (jnp.broadcast_to(modulus_H * jnp.cos(phase_H), shape), jnp.broadcast_to(modulus_H * jnp.sin(phase_H), shape))
    gamma = along_last(jnp.exp(params["gamma_log"]), xw_TB3H)
    return a, (gamma * xw_TB3H[..., :hidden], gamma * xw_TB3H[..., hidden : 2 * hidden])


def lru_readout(params: Params, states, xw_TB3H: jax.Array, dtype: str = "float32") -> jax.Array:
    """y = Re(h C) + D x, D x being the input part's last H columns."""
    re_TBH, im_TBH = states
    hidden = re_TBH.shape[-1]
    return mm(re_TBH, params["C_re"], dtype) - mm(im_TBH, params["C_im"], dtype) + xw_TB3H[..., 2 * hidden :]


LRU = linear_cell(
    init=lru_init,
    zero_state=lru_zero_state,
    step=lru_step,
    input_weights=lambda p: (
        jnp.concatenate([p["B_re"], p["B_im"], _skip_weights(p)], axis=-1),
        jnp.zeros((3 * p["B_re"].shape[-1],), jnp.float32),
    ),
    linear=lru_linear,
    readout=lru_readout,
    gates=3,
    readout_products=2,
)
