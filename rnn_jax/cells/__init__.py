"""The cell registry: a recurrent cell is its parameters, its zero state and its step on a state pytree.

dm-haiku's recurrent cores, with explicit parameter dicts: `model` unrolls every cell the same way
(`lax.scan` of `step`), so nothing downstream (training, generation, evaluation, checkpoints,
sharding) knows which cell it carries; the state is any pytree of (B, H) arrays. A cell may also
give a fused unroll (`recurrence`), with every gate's input part computed before the scan and a
hand-written backward pass: every cell here does, and it is what training uses by default.

A cell also declares what the code around it needs (`Cell`'s fields): its recurrent weights (weight drop,
the scaled initialisation), the widths of its input part and recurrent products (FLOPs per token, the
benchmark's limit, memory estimates) and the activations it accepts (the config's validation). So a cell is
one module here and one line of `CELLS`.

The cells, one module each: "rnn", the book's tanh cell (d2l 8.5); "gru" (d2l 9.1) and "lstm" (d2l 9.2),
with the book's equations, initialisation and parameter names; the linear recurrences, whose gates read the input
only: "mingru" and "minlstm" (Feng et al. 2024), "lru" (Orvieto et al. 2023), "rglru" (De et al. 2024). `common`
holds what every cell shares, `gated` what the gated ones do, `linear` what the linear ones do (`Cell.linear`:
they also run as lax.associative_scan).
"""

from __future__ import annotations

from rnn_jax.cells.common import (  # noqa: F401
    ACTIVATIONS,
    MIN_CHAIN_ROWS,
    Cell,
    Params,
    State,
    along_last,
    diagonal_scan,
    mm,
    normal,
    resolve_chains,
    row_scan,
    sigmoid_grad,
    tanh_grad,
    unroll,
)
from rnn_jax.cells.gated import concat, gate_constants, gates, gates_grad, gates_init, outer_sum, prev_steps  # noqa: F401
from rnn_jax.cells.gru import GRU, GRU_GATES, gru_cell, gru_init, gru_recurrence  # noqa: F401
from rnn_jax.cells.linear import dense_init, lecun, linear_cell  # noqa: F401
from rnn_jax.cells.lru import LRU
from rnn_jax.cells.lstm import LSTM, LSTM_GATES, lstm_cell, lstm_init, lstm_recurrence, lstm_zero_state  # noqa: F401
from rnn_jax.cells.mingru import MINGRU
from rnn_jax.cells.minlstm import MINLSTM
from rnn_jax.cells.rglru import RGLRU
from rnn_jax.cells.rnn import RNN, recurrence, rnn_cell, rnn_init, rnn_zero_state  # noqa: F401

CELLS: dict[str, Cell] = {
    "rnn": RNN,
    "gru": GRU,
    "lstm": LSTM,
    "mingru": MINGRU,
    "minlstm": MINLSTM,
    "lru": LRU,
    "rglru": RGLRU,
}
