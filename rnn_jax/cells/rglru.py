"""RG-LRU (De et al. 2024, "Griffin", the recurrence of Hawk): a real-gated diagonal linear recurrence.

r_t = sigmoid(x_t W_xa + b_a), i_t = sigmoid(x_t W_xi + b_i), u_t = x_t W_xu + b_u (the recurrence's input),
log a_t = -C r_t softplus(-lam) (a_t = sigmoid(lam)^(C r_t)), h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t u_t);
sigmoid(lam) drawn in [A_MIN, A_MAX] (uniformly on the ring, by area), as the paper's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.cells.common import Params, along_last, mm
from rnn_jax.cells.gated import concat
from rnn_jax.cells.linear import dense_init, identity_readout, linear_cell
from rnn_jax.cells.rnn import rnn_zero_state

RGLRU_GATES = ("a", "i", "u")  # recurrence gate, input gate, input: the columns' order
C = 8.0
A_MIN, A_MAX = 0.9, 0.999
MAX_GRAD = 1000.0  # sqrt's derivative is bounded by this near 0 (a_t -> 1), as the reference code bounds it


@jax.custom_jvp
def bounded_sqrt(x: jax.Array) -> jax.Array:
    """sqrt(x), its derivative at most MAX_GRAD."""
    return jnp.sqrt(x)


@bounded_sqrt.defjvp
def _bounded_sqrt_jvp(primals, tangents):
    y = jnp.sqrt(primals[0])
    return y, tangents[0] / (2.0 * jnp.maximum(y, 0.5 / MAX_GRAD))


def rglru_init(key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int) -> Params:
    """W_x<g> ~ N(0, 1/I), zero biases; lam = logit(a), a^2 uniform in [A_MIN^2, A_MAX^2]."""
    a_H = jnp.sqrt(jax.random.uniform(key_h, (hidden,), jnp.float32, A_MIN**2, A_MAX**2))
    return dense_init(RGLRU_GATES, key_x, num_inputs, hidden) | {"lam": jnp.log(a_H) - jnp.log1p(-a_H)}


def _coefficients(lam_H, a_pre, i_pre, u):
    """(a, sqrt(1 - a^2) i u) from the gates' pre-activations, in log space: log a = -C r softplus(-lam)."""
    log_a = -C * jax.nn.sigmoid(a_pre) * along_last(jax.nn.softplus(-lam_H), a_pre)
    return jnp.exp(log_a), bounded_sqrt(-jnp.expm1(2.0 * log_a)) * (jax.nn.sigmoid(i_pre) * u)


def rglru_step(params: Params, h_BH: jax.Array, x_BI: jax.Array, *, activation="tanh", dtype="float32"):
    """The paper's step: h' = a h + sqrt(1 - a^2) (i u); returns (h', h')."""
    gate = lambda g: mm(x_BI, params[f"W_x{g}"], dtype) + params[f"b_{g}"][None]
    a_BH, b_BH = _coefficients(params["lam"], gate("a"), gate("i"), gate("u"))
    h_BH = a_BH * h_BH + b_BH
    return h_BH, h_BH


def rglru_linear(params: Params, xw_TB3H: jax.Array):
    """(a, sqrt(1 - a^2) i u) of every step."""
    hidden = xw_TB3H.shape[-1] // 3
    return _coefficients(params["lam"], *(xw_TB3H[..., k * hidden : (k + 1) * hidden] for k in range(3)))


RGLRU = linear_cell(
    init=rglru_init,
    zero_state=rnn_zero_state,
    step=rglru_step,
    input_weights=lambda p: (concat(p, "W_x", RGLRU_GATES), concat(p, "b_", RGLRU_GATES)),
    linear=rglru_linear,
    readout=identity_readout,
    gates=3,
)
