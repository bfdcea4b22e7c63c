"""What every cell shares: the `Cell` record, the activations, the matrix product, the book's initialisation and
the generic unroll."""

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


def sigmoid_grad(y: jax.Array) -> jax.Array:
    """sigmoid'(a) in terms of y = sigmoid(a)."""
    return y * (1.0 - y)


def tanh_grad(y: jax.Array) -> jax.Array:
    """tanh'(a) in terms of y = tanh(a)."""
    return 1.0 - y * y


def mm(a: jax.Array, b: jax.Array, dtype: str = "float32") -> jax.Array:
    """a @ b with operands in `dtype`, accumulated and returned in float32."""
    if dtype == "float32":
        return a @ b
    return jnp.matmul(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The book's initialisation of every weight: N(0, 0.01^2)."""
    return 0.01 * jax.random.normal(key, shape, jnp.float32)


class Cell(NamedTuple):
    """A recurrent core: its functions, and what the rest of the code needs to know of it, declared here so that
    nothing else restates it. `activation` and `dtype` (the matmul operand dtype) are keyword arguments of each
    step; a cell may ignore an activation it does not declare, since `model.ModelSpec` refuses it beforehand."""

    init: Callable[[jax.Array, jax.Array, int, int], Params]  # (key_x, key_h, num_inputs, hidden) -> params
    zero_state: Callable[[int, int], State]  # (batch, hidden) -> the state before the first step
    step: Callable[..., tuple[State, jax.Array]]  # (params, state, x_BI) -> (state, h_BH): the textbook step
    input_weights: Callable[[Params], tuple[jax.Array, jax.Array]]  # -> (W_IG, b_G): every gate's input part
    recurrent_step: Callable[..., tuple[State, jax.Array]]  # (params, state, xw_BG) -> (state, h_BH)
    # the names in `init`'s dict of the hidden-to-hidden matrices: what weight drop (DropConnect) zeroes and
    # the scaled initialisation makes orthogonal (in every layer of a stack)
    recurrent: tuple[str, ...]
    gates: int  # columns of every gate's input part per hidden unit: xw_BG has G = gates * H
    # the recurrent matrix products of one step, in order, as widths in units of H: k is (B, H) @ (H, k H);
    # with `gates`, the FLOPs per token (`flop_per_token`) and the benchmark's chain of products
    products: tuple[int, ...]
    activations: tuple[str, ...]  # the keys of ACTIVATIONS the cell computes with; the first is its default
    recurrence: Callable[..., tuple[jax.Array, State]] | None = None  # fused (params, state, xw_TBG) -> (hs, state)

    def flop_per_token(self, hidden: int, num_layers: int = 1) -> int:
        """Training FLOP per token of the cell's matrix products in a stack of `num_layers`: forward 2 k H^2 per
        recurrent product of width k in every layer and 2 G H per upper layer's input product (the first layer's
        is a row gather), backward twice the forward: 6 H^2 (sum(products) L + gates (L - 1))."""
        return 6 * hidden * hidden * (sum(self.products) * num_layers + self.gates * (num_layers - 1))


def unroll(
    cell: Cell, params: Params, state: State, xw_TBG: jax.Array, *, activation: str = "tanh", dtype: str = "float32"
) -> tuple[jax.Array, State]:
    """The recurrent part over all steps, every gate's input part given: returns (hs_TBH, last state)."""
    if cell.recurrence is not None:
        return cell.recurrence(params, state, xw_TBG, activation=activation, dtype=dtype)
    step = functools.partial(cell.recurrent_step, params, activation=activation, dtype=dtype)
    state, hs_TBH = jax.lax.scan(step, state, xw_TBG)
    return hs_TBH, state
