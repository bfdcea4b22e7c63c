"""What the gated cells share: the book's per-gate parameters, the gates' columns side by side, sigmoid and tanh
columns as one tanh pass, and the helpers of their hand-written backward passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnn_jax.cells.common import Params, along_last, mm, normal


def gates_init(names: tuple[str, ...], key_x: jax.Array, key_h: jax.Array, num_inputs: int, hidden: int):
    """The book's three(): W_x<g> (I, H), W_h<g> (H, H) ~ N(0, 0.01^2), b_<g> zeros, for each gate g."""
    keys_x, keys_h = jax.random.split(key_x, len(names)), jax.random.split(key_h, len(names))
    params: dict[str, jax.Array] = {}
    for g, kx, kh in zip(names, keys_x, keys_h, strict=True):
        params |= {
            f"W_x{g}": normal(kx, (num_inputs, hidden)),
            f"W_h{g}": normal(kh, (hidden, hidden)),
            f"b_{g}": jnp.zeros((hidden,), jnp.float32),
        }
    return params


def concat(params: Params, prefix: str, names: tuple[str, ...]) -> jax.Array:
    """The gates' arrays `prefix<g>` side by side, in the order of `names`."""
    return jnp.concatenate([params[f"{prefix}{g}"] for g in names], axis=-1)


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
    scale_G, offset_G = along_last(scale_G, a_BG), along_last(offset_G, a_BG)
    return scale_G * jnp.tanh(scale_G * a_BG) + offset_G


def gates_grad(y_BG: jax.Array, scale_G: jax.Array | float, offset_G: jax.Array | float) -> jax.Array:
    """d gates / d a from y = gates(a): y (1 - y) on sigmoid columns, 1 - y^2 on tanh columns (scale and offset:
    the columns' arrays, or one gate's floats)."""
    return scale_G * scale_G - (y_BG - offset_G) ** 2
