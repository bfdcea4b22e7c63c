"""Run configuration: one frozen dataclass whose fields carry their help text, the values they allow, and its
validation; the named experiments are `rnn_jax.experiments`, the flags `rnn_jax.flags`."""

from __future__ import annotations

import dataclasses
import importlib
import math
import typing

from rnn_jax.exitcodes import Exit


def _field(default, help: str):
    """A Config field whose help text (for --help and docs/cli.md) lives with it."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Config:
    sampling: str = _field(
        "seq", "minibatches: seq = sequential partitioning (state carried), random = random sampling (state reset)"
    )
    reset_state: bool | None = _field(
        None,
        "zero state at every minibatch (true) or carried with its gradient "
        "stopped (false); none: as the sampling scheme (random resets)",
    )
    reset_fraction: float = _field(
        0.0,
        "with carried state: the fraction of rows whose state is zeroed at each minibatch, drawn anew every "
        "minibatch, so that part of the training windows start from an empty context as nanoGPT's always do; 0: none",
    )
    cell: str = _field(
        "rnn",
        "recurrent cell, a key of cells.CELLS: rnn = the book's tanh cell (8.5), gru (9.1), lstm (9.2); linear "
        "recurrences (docs/models.md): mingru and minlstm (Feng et al. 2024), lru (Orvieto et al. 2023), rglru "
        "(De et al. 2024)",
    )
    num_layers: int = _field(
        1, "a stack of cells (9.3): layer l's outputs are layer l+1's inputs; at most 64 (MAX_LAYERS)"
    )
    block: str = _field(
        "plain",
        "plain = the cells stacked as they are; residual = pre-RMSNorm blocks of width --hidden: the cell and a "
        "projection, then a gated MLP, each added to the stream (docs/models.md)",
    )
    scan: str = _field(
        "linear",
        "the fused recurrence over time: linear = lax.scan; associative = lax.associative_scan, for a cell "
        "whose recurrence is linear (cells.CELLS[cell].linear)",
    )
    activation: str = _field(
        "tanh",
        "activation of the cell, one it declares (cells.CELLS[cell].activations): "
        "tanh or relu for rnn; the gated cells have sigmoid gates and a tanh candidate",
    )
    encoder: str = _field("onehot", "input encoding: onehot, or embed = learned embeddings of --embed-dim")
    clip_norm: float | None = _field(1.0, "global-norm gradient clipping threshold; none: no clipping")
    detach: bool = _field(
        True,
        "stop the gradient between minibatches; false: backpropagate through the whole epoch's chain of minibatches",
    )
    hidden: int = _field(512, "hidden units per layer")
    embed_dim: int = _field(32, "embedding size (with --encoder embed only)")
    batch_size: int = _field(32, "rows per minibatch")
    num_steps: int = _field(35, "time steps per minibatch")
    max_tokens: int = _field(10_000, "training tokens from the start of the corpus; -1: all of them")
    lr: float = _field(1.0, "step size")
    optimizer: str = _field("sgd", "sgd (the book) or adam")
    dropout: float = _field(0.0, "fraction of the states fed to the output layer zeroed in training (not in the book)")
    layer_dropout: float = _field(
        0.0, "fraction of the states a layer feeds the layer above zeroed in training (stacks only)"
    )
    dropout_mask: str = _field(
        "step",
        "masks of --dropout and --layer-dropout: step = a new mask every step, "
        "sequence = one per row for the whole minibatch (variational dropout)",
    )
    weight_drop: float = _field(
        0.0,
        "DropConnect: fraction of the recurrent weights (those the cell declares, "
        "cells.CELLS[cell].recurrent) zeroed per minibatch",
    )
    weight_decay: float = _field(
        0.0,
        "decoupled weight decay of the weight matrices, per unit of lr (adam becomes AdamW; biases are not decayed)",
    )
    lr_schedule: str = _field(
        "constant",
        "cosine: every update of epoch e scaled by (1 + cos(pi (e - 1) / epochs)) "
        "/ 2, from lr in epoch 1 to about 0 in the last",
    )
    epochs: int = _field(500, "training epochs")
    seed: int = _field(0, "the one seed every random stream (initialisation, data order, dropout) derives from")
    backward: str = _field(
        "fused",
        "fused = hand-written VJP of the scan; autodiff = jax.grad of the textbook unroll (same numbers, slower)",
    )
    matmul_dtype: str = _field("float32", "operand dtype of the matrix products (bfloat16: float32 accumulation)")
    predict_every: int = _field(10, "epochs between greedy predictions printed while training; 0: never")
    preprocess: str = _field(
        "book",
        "text cleaning: book = letters only, lowercase; raw = keep case and "
        "punctuation, whitespace runs become one space; none = every character as it is",
    )
    val_fraction: float = _field(0.0, "the end of the corpus held out for validation (by position)")
    test_fraction: float = _field(0.0, "held out after the validation part")
    eval_every: int = _field(10, "epochs between validation evaluations (when val_fraction > 0); 0: at the end")
    val_windows: int = _field(
        0,
        "also score validation under the windows protocol (nanoGPT's estimate_loss): this many random windows of "
        "256 characters, each from a zero state, at every validation (val_loss_windows in metrics.jsonl); 0: none",
    )
    checkpoint_every: int = _field(50, "epochs between checkpoints (one is always written at the end); 0: end only")
    keep_checkpoints: int = _field(3, "latest checkpoints kept (the best by validation perplexity is kept apart)")
    on_nonfinite: str = _field("stop", "NaN/Inf loss or gradient: stop the run, or skip the update")
    max_skips: int = _field(20, "with --on-nonfinite skip: consecutive skipped updates before the run stops")
    devices: int = _field(0, "data-parallel devices; 0: auto (all when each gets >= 32 rows, else 1)")
    row_chains: int = _field(
        0,
        "the fused recurrence's batch rows as this many independent chains of products in one program (the "
        "same numbers, faster on a CPU); 0: auto (2 for float32 products on a CPU with one device when each "
        "gets >= 8 rows, else 1)",
    )
    init: str = _field(
        "book",
        "initialisation: book = every weight N(0, 0.01^2); scaled = N(0, 1/fan_in), recurrent weights orthogonal",
    )
    forget_bias: float = _field(0.0, "initial bias of the LSTM's forget gate (1.0: remember by default)")
    split_rule: str = _field(
        "round",
        "the test part: round = the last round(n * test_fraction) tokens; floor = "
        "from token int(n * (1 - test_fraction)) on, nanoGPT's train/val cut",
    )


# Fields whose allowed values are the keys of a registry, as (module, registry). They are imported when first
# asked for (cells, model and data import jax, and step imports this module), so a new entry of a registry
# is a new allowed value of its field and flag.
REGISTRIES = {
    "sampling": ("rnn_jax.data", "SCHEMES"),
    "cell": ("rnn_jax.cells", "CELLS"),
    "activation": ("rnn_jax.cells", "ACTIVATIONS"),
    "encoder": ("rnn_jax.model", "ENCODERS"),
    "preprocess": ("rnn_jax.data", "PREPROCESS"),
}

# Allowed values of the other fields that have a fixed set.
CHOICES = {
    "backward": ("fused", "autodiff"),
    "matmul_dtype": ("float32", "bfloat16"),
    "on_nonfinite": ("stop", "skip"),
    "optimizer": ("sgd", "adam"),
    "dropout_mask": ("step", "sequence"),
    "lr_schedule": ("constant", "cosine"),
    "init": ("book", "scaled"),
    "split_rule": ("round", "floor"),
    "block": ("plain", "residual"),
    "scan": ("linear", "associative"),
}

_CHOICE_ORDER = (
    "sampling",
    "cell",
    "block",
    "scan",
    "activation",
    "encoder",
    "backward",
    "matmul_dtype",
    "preprocess",
    "on_nonfinite",
    "optimizer",
    "dropout_mask",
    "lr_schedule",
    "init",
    "split_rule",
)


def choices() -> dict[str, tuple[str, ...]]:
    """Allowed values of every field that has a set of them: registry keys where a registry defines them."""

    def allowed(name: str) -> tuple[str, ...]:
        if name in REGISTRIES:
            module, registry = REGISTRIES[name]
            return tuple(getattr(importlib.import_module(module), registry))
        return CHOICES[name]

    return {name: allowed(name) for name in _CHOICE_ORDER}


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which field and why."""

    exit_status = Exit.USAGE


INT_LIMIT = 2**31 - 1  # every count and seed must fit the int32 that JAX computes with
# Each layer is traced and compiled as a program of its own: compile time grows with the depth (thousands of layers
# compile for minutes and can crash the compiler), so stacks are capped here.
MAX_LAYERS = 64


def _check_numbers(cfg: Config) -> None:
    """Every number is of its field's type, and finite: a float flag may read 'inf' or 'nan'."""
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        v = getattr(cfg, f.name)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{f.name} must be a finite number, got {v}")
        if hints[f.name] is int and not (isinstance(v, int) and abs(v) <= INT_LIMIT):
            raise ConfigError(f"{f.name} must be an integer of at most {INT_LIMIT}, got {v!r}")


def validate(cfg: Config) -> Config:
    """Raises ConfigError naming the first impossible field; returns cfg unchanged otherwise."""
    _check_numbers(cfg)
    if cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {cfg.seed}")
    for name, allowed in choices().items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not one of {', '.join(allowed)}")
    for name in (
        "hidden",
        "num_layers",
        "embed_dim",
        "batch_size",
        "num_steps",
        "epochs",
        "keep_checkpoints",
        "max_skips",
    ):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {getattr(cfg, name)}")
    if cfg.num_layers > MAX_LAYERS:
        raise ConfigError(
            f"num_layers must be in [1, {MAX_LAYERS}], got {cfg.num_layers}: each layer is compiled on its own, "
            "so deeper stacks take minutes to compile and can crash the compiler; use fewer layers"
        )
    if cfg.max_tokens == 0 or cfg.max_tokens < -1:
        raise ConfigError(f"max_tokens must be positive or -1 (the whole corpus), got {cfg.max_tokens}")
    if not cfg.lr > 0:
        raise ConfigError(f"lr must be positive, got {cfg.lr}")
    if cfg.clip_norm is not None and not cfg.clip_norm > 0:
        raise ConfigError(f"clip_norm must be positive (or 'none' for no clipping), got {cfg.clip_norm}")
    for name in ("predict_every", "eval_every", "checkpoint_every", "devices", "row_chains", "val_windows"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.val_windows and not cfg.val_fraction:
        raise ConfigError(
            f"val_windows {cfg.val_windows} scores windows of the validation part, and val_fraction 0 leaves none; "
            "set val_windows 0 or give a validation part"
        )
    if cfg.row_chains and cfg.batch_size % cfg.row_chains:
        raise ConfigError(
            f"row_chains {cfg.row_chains} does not divide batch_size {cfg.batch_size}: each chain takes an equal "
            "block of the rows; use a divisor of the batch, or 0 (auto)"
        )
    if cfg.reset_fraction and (resets_state(cfg) or not cfg.detach):
        raise ConfigError(
            "reset_fraction resets rows of a carried state, detached between minibatches: with random sampling or "
            "--reset-state true every row starts from zeros already, and --detach false carries no state to reset"
        )
    for name in ("val_fraction", "test_fraction", "dropout", "layer_dropout", "weight_drop", "reset_fraction"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if not cfg.weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    _check_cell(cfg)
    if cfg.val_fraction + cfg.test_fraction >= 0.9:
        raise ConfigError("val_fraction + test_fraction leave under 10% of the corpus to train on")
    return cfg


def _check_cell(cfg: Config) -> None:
    """What the cell declares (cells.CELLS[cell]) allows the options that depend on it."""
    registry = importlib.import_module("rnn_jax.cells").CELLS
    core = registry[cfg.cell]
    if cfg.activation not in core.activations:
        raise ConfigError(
            f"activation={cfg.activation!r} is not one the {cfg.cell} cell accepts: {', '.join(core.activations)}"
        )
    if cfg.forget_bias and core.forget_gate is None:
        gated = ", ".join(name for name, c in registry.items() if c.forget_gate)
        raise ConfigError(f"forget_bias applies to the cells with a forget gate ({gated}), not {cfg.cell!r}")
    if cfg.weight_drop and not core.recurrent:
        raise ConfigError(
            f"weight_drop drops recurrent weights, and the {cfg.cell} cell has none (a linear recurrence)"
        )
    if cfg.scan == "associative" and core.linear is None:
        linear = ", ".join(name for name, c in registry.items() if c.linear)
        raise ConfigError(
            f"scan='associative' needs a linear recurrence (the cells {linear}); the {cfg.cell} cell's is not: "
            "use --scan linear"
        )


def resets_state(cfg: Config) -> bool:
    """Whether every minibatch starts from a zero state (else the state is carried, gradient stopped)."""
    return cfg.sampling == "random" if cfg.reset_state is None else cfg.reset_state


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> Config:
    """Inverse of to_dict; unknown keys are an error (a config from another version)."""
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
    return Config(**d)
