"""Training compute: the FLOPs per token of a configuration's matrix products, and of a run.

The usual accounting of language-model compute (Kaplan et al. 2020; nanoGPT's 6 N per token): every matrix product
costs 2 FLOPs per multiply-add forward and twice that backward, 6 per weight per token; elementwise work (gates,
norms, the scans of the linear recurrences) is left out. A product with a one-hot input is a row gather and costs
nothing, so the first layer's input weights (or the residual stack's W_in) count only behind a learned embedding.
What each cell computes is what it declares (`Cell.flop_per_token`: its recurrent and readout products and its
input part's width); the residual block adds its W_mix and its gated MLP.
"""

from __future__ import annotations

from rnn_jax.cells import CELLS
from rnn_jax.residual import MLP_WIDTH


def flop_per_token(cfg, vocab_size: int) -> int:
    """Training FLOPs per token of cfg's model (a `config.Config`): the cells, the blocks, and 6 H V for W_hq."""
    core, hidden, layers = CELLS[cfg.cell], cfg.hidden, cfg.num_layers
    output = 6 * hidden * vocab_size
    embedded = cfg.encoder != "onehot"
    if cfg.block == "plain":
        first_input = 6 * cfg.embed_dim * core.gates * hidden if embedded else 0
        return core.flop_per_token(hidden, layers) + first_input + output
    w_in = 6 * cfg.embed_dim * hidden if embedded else 0
    # a block: the cell's input part (G H wide), its own products, W_mix (H, H), and W_gate, W_up, W_down
    block = 6 * hidden * hidden * (core.gates + 1 + 3 * MLP_WIDTH) + core.flop_per_token(hidden, 1)
    return w_in + layers * block + output


def training_flop(cfg, vocab_size: int, steps: int) -> float:
    """FLOPs of `steps` updates of cfg's minibatch (batch_size x num_steps tokens each)."""
    return float(flop_per_token(cfg, vocab_size)) * steps * cfg.batch_size * cfg.num_steps
