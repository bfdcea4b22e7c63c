"""`ModelSpec`: what a parameter tree computes besides its arrays, with the run's row-chain policy resolved.

Built once at set-up (`ModelSpec.from_config`) and handed whole to every function of `model`, `generate` and
`evaluate`'s scoring; frozen, so hashable: every jitted function takes it as one static argument and is keyed by it.
"""

from __future__ import annotations

import dataclasses

import jax

from rnn_jax.cells import CELLS, Cell, resolve_chains

ENCODERS = {
    "onehot": lambda p, tok_TB: jax.nn.one_hot(tok_TB, p["W_hq"].shape[1], dtype=p["W_hq"].dtype),
    "embed": lambda p, tok_TB: p["embed"][tok_TB],
}
BLOCKS = ("plain", "residual")
SCANS = ("linear", "associative")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The model a parameter tree belongs to: the fields of a Config that decide what forward, generation and
    evaluation compute, and how many row chains the fused recurrence runs as. A spec that exists can run: its
    cell, activation (one the cell declares) and encoder are checked when it is made."""

    cell: str = "rnn"  # a key of cells.CELLS
    num_layers: int = 1
    activation: str = "tanh"  # a key of cells.ACTIVATIONS that the cell declares
    encoder: str = "onehot"  # a key of ENCODERS
    dtype: str = "float32"  # the operand dtype of the matrix products (Config.matmul_dtype)
    # the fused recurrence's row chains, resolved (>= 1; see from_config): how, not what, it computes; a recurrence
    # over rows that the count does not divide (evaluation's single row) runs as one chain
    chains: int = 1
    block: str = "plain"  # a key of BLOCKS: the cells stacked as they are, or in residual blocks
    scan: str = "linear"  # lax.scan, or lax.associative_scan for a cell with a linear recurrence (Cell.linear)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell {self.cell!r} is not one of {', '.join(CELLS)}")
        if self.activation not in self.core.activations:
            raise ValueError(
                f"the {self.cell} cell accepts activation {' or '.join(self.core.activations)}, not {self.activation!r}"
            )
        if self.chains < 1:
            raise ValueError(f"chains must be >= 1 (resolved by ModelSpec.from_config), got {self.chains}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder {self.encoder!r} is not one of {', '.join(ENCODERS)}")
        if self.block not in BLOCKS:
            raise ValueError(f"block {self.block!r} is not one of {', '.join(BLOCKS)}")
        if self.scan not in SCANS:
            raise ValueError(f"scan {self.scan!r} is not one of {', '.join(SCANS)}")
        if self.scan == "associative" and self.core.linear is None:
            raise ValueError(f"scan 'associative' needs a cell with a linear recurrence, not {self.cell}")

    @classmethod
    def from_config(cls, cfg) -> ModelSpec:
        """The spec of cfg's model, its row chains resolved here, once, for cfg's minibatch rows on this backend
        (`cells.resolve_chains`: cfg.row_chains when given, else the auto policy)."""
        return cls(
            cell=cfg.cell,
            num_layers=cfg.num_layers,
            activation=cfg.activation,
            encoder=cfg.encoder,
            dtype=cfg.matmul_dtype,
            chains=resolve_chains(cfg.row_chains, cfg.batch_size, cfg.matmul_dtype),
            block=cfg.block,
            scan=cfg.scan,
        )

    @property
    def core(self) -> Cell:
        """The cell's record in the registry."""
        return CELLS[self.cell]


BOOK = ModelSpec()  # the book's model: one tanh cell, one-hot inputs, float32 products, one chain
