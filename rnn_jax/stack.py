"""The parameter layout of a stack of layers: the first layer's parameters keep the cell's names; layers 2..L share
one array per cell parameter, stacked along a leading axis and named with the suffix `_upper` (`W_xh_upper`,
(L - 1, H, H); row l - 2 is layer l). A stack's state is a tuple with one entry per layer; one layer keeps the
cell's bare state."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from rnn_jax.cells import Params, State

UPPER = "_upper"  # the suffix of layers 2..L's stacked parameters
_PER_LAYER = re.compile(r"(.+)_l([0-9]+)")  # the names of an earlier layout: one array per layer, `W_xh_l2`


def layer_params(params: Params, layer: int) -> Params:
    """Layer `layer`'s cell parameters (index 0 is the first layer) under the cell's own names."""
    if layer == 0:
        return params
    return {k: v[layer - 1] for k, v in upper_params(params).items()}


def upper_params(params: Params) -> Params:
    """Layers 2..L's parameters under the cell's own names, each stacked: (L - 1, ...)."""
    return {k[: -len(UPPER)]: v for k, v in params.items() if k.endswith(UPPER)}


def layer_ndim(name: str, array) -> int:
    """The number of axes of one layer's parameter: a stacked one's rows are the layers."""
    return array.ndim - name.endswith(UPPER)


def layer_states(state: State, num_layers: int) -> tuple:
    """A stack's state as one entry per layer."""
    return (state,) if num_layers == 1 else tuple(state)


def stacked_state(states: Sequence, num_layers: int) -> State:
    """The state of a stack from one entry per layer (one layer: the cell's bare state)."""
    return states[0] if num_layers == 1 else tuple(states)


def is_per_layer(params: Params) -> bool:
    """Whether params name layers 2.. one array per layer (`W_xh_l2`, ...), a layout before the stacked one."""
    return any(_PER_LAYER.fullmatch(k) for k in params)


def from_per_layer(params: Params) -> Params:
    """Parameters saved with one array per layer (`W_xh_l2`, `W_xh_l3`, ...) in the stacked layout
    (`W_xh_upper`); parameters without such names are returned as they are."""
    per_layer = {k: m.groups() for k in params if (m := _PER_LAYER.fullmatch(k))}
    if not per_layer:
        return params
    out: dict = {k: v for k, v in params.items() if k not in per_layer}  # numpy arrays for the stacked layers
    for name in sorted({name for name, _ in per_layer.values()}):
        layers = sorted(int(layer) for n, layer in per_layer.values() if n == name)
        if layers != list(range(2, len(layers) + 2)):
            raise ValueError(f"the layers of {name} are {layers}, not 2..{len(layers) + 1}")
        out[name + UPPER] = np.stack([np.asarray(params[f"{name}_l{layer}"]) for layer in layers])
    return out
