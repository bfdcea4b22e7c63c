"""Run configuration: one frozen dataclass, a registry of named experiments, and its CLI."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import types
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


BASE = Config()
EXPERIMENTS: dict[str, Config] = {
    "seq": BASE,
    "random": dataclasses.replace(BASE, sampling="random"),
    "tiny": dataclasses.replace(BASE, hidden=16, batch_size=2, num_steps=6, max_tokens=2_000, epochs=2),
    # the book's exercises, each a one-line change
    "relu": dataclasses.replace(BASE, activation="relu"),
    "relu_noclip": dataclasses.replace(BASE, activation="relu", clip_norm=None),
    "embed": dataclasses.replace(BASE, encoder="embed"),
    "noclip": dataclasses.replace(BASE, clip_norm=None),
    "nodetach": dataclasses.replace(BASE, detach=False, epochs=100),  # each step recomputes the epoch so far
    "bf16": dataclasses.replace(BASE, matmul_dtype="bfloat16"),  # speed lever: does perplexity change?
    # sequential windows, the state reset to zeros at every minibatch (the book's code for its random-sampling run)
    "seq_reset": dataclasses.replace(BASE, reset_state=True),
    # the book's next sections: GRU (9.1), LSTM (9.2), a two-layer LSTM (9.3), each with 256 hidden units
    "gru": dataclasses.replace(BASE, cell="gru", hidden=256),
    "lstm": dataclasses.replace(BASE, cell="lstm", hidden=256),
    "deep": dataclasses.replace(BASE, cell="lstm", num_layers=2, hidden=256, lr=2.0),
    # the whole book, its last 10% held out: how the model does on text it has not seen
    # (Adam: SGD at lr 1 needs 50 epochs to reach 6.2 on held-out text, Adam 10 to reach 6.1)
    "full": dataclasses.replace(
        BASE, max_tokens=-1, val_fraction=0.1, optimizer="adam", lr=0.002, epochs=20, eval_every=2, checkpoint_every=10
    ),
    # the whole book split 80/10/10 by position: choices on validation (every epoch), the test part scored once
    "heldout": dataclasses.replace(
        BASE,
        max_tokens=-1,
        val_fraction=0.1,
        test_fraction=0.1,
        optimizer="adam",
        lr=0.002,
        epochs=30,
        eval_every=1,
        checkpoint_every=0,
        keep_checkpoints=1,
    ),
    # tiny Shakespeare split as nanoGPT splits it (--corpus shakespeare): the last 10% (nanoGPT's "val") is the
    # test part, scored once; validation is the 5% of the corpus just before it, cut from the training 90% and
    # never trained on. An LSTM with the levers the field uses: scaled init, forget bias, longer windows, Adam,
    # a cosine step size, variational dropout and DropConnect, bf16 products (f32 accumulation).
    "shakespeare": dataclasses.replace(
        BASE,
        preprocess="none",
        max_tokens=-1,
        test_fraction=0.1,
        split_rule="floor",
        val_fraction=0.05,
        cell="lstm",
        hidden=512,
        batch_size=64,
        num_steps=100,
        init="scaled",
        forget_bias=1.0,
        optimizer="adam",
        lr=0.002,
        lr_schedule="cosine",
        epochs=40,
        dropout=0.25,
        dropout_mask="sequence",
        weight_drop=0.25,
        matmul_dtype="bfloat16",
        eval_every=1,
        checkpoint_every=0,
        keep_checkpoints=1,
        predict_every=5,
    ),
}

# Experiments run as stages, each starting from the parameters the stage before ended with (--exp NAME).
# book_random is the book's code path for its random-sampling result: its train_ch8(..., use_random_iter=True)
# continues the model the sequential run trained, on the same sequential iterator, resetting the state every
# minibatch.
CHAINS: dict[str, tuple[str, ...]] = {"book_random": ("seq", "seq_reset")}

# The corpus (a data.CORPORA name) an experiment trains on when --corpus is not given; the book's otherwise.
CORPUS_OF: dict[str, str] = {"shakespeare": "shakespeare"}

# Fields that may change when a run is resumed; any other difference would make it another run.
RESUMABLE_FIELDS = frozenset(
    {
        "epochs",
        "predict_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "on_nonfinite",
        "max_skips",
        "backward",
        "devices",
        "row_chains",
        "val_windows",
        "scan",
    }
)

# Fields whose allowed values are the keys of a registry, as (module, registry). They are imported when first
# asked for (cells, model and data import jax, and model and step import this module), so a new entry of a registry
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


def lr_scale(cfg: Config, epoch: int) -> float | None:
    """The factor on every update of `epoch` (1-based) under cfg.lr_schedule; None for a constant step size.
    The cosine falls over the run's epochs, so its horizon is cfg.epochs: such a run resumes only to the same
    epochs (a longer run would have had a larger step size all along)."""
    if cfg.lr_schedule == "constant":
        return None
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.epochs))


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(d: dict) -> Config:
    """Inverse of to_dict; unknown keys are an error (a config from another version)."""
    names = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
    return Config(**d)


def to_flags(cfg: Config) -> list[str]:
    """Command-line flags that reproduce cfg exactly (every field), for child processes."""

    def text(v):
        return (
            "none"
            if v is None
            else str(v).lower()
            if isinstance(v, bool)
            else repr(v)
            if isinstance(v, float)
            else str(v)
        )

    return [
        arg for f in dataclasses.fields(Config) for arg in ("--" + f.name.replace("_", "-"), text(getattr(cfg, f.name)))
    ]


def _parser_for(tp):
    """argparse type for a field annotation: int, float, str, bool, or `X | None` ('none')."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        inner = _parser_for(next(a for a in args if a is not type(None)))

        def parse_optional(s: str):
            return None if s.lower() == "none" else inner(s)

        parse_optional.__name__ = f"{inner.__name__} or 'none'"
        return parse_optional
    if tp is bool:

        def parse_bool(s: str) -> bool:
            if s.lower() in ("1", "true", "yes", "on"):
                return True
            if s.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")

        parse_bool.__name__ = "bool"
        return parse_bool
    return tp


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One typed flag per Config field (num_steps -> --num-steps); absent flags leave no attribute."""
    hints, allowed = typing.get_type_hints(Config), choices()
    group = parser.add_argument_group("config overrides (default: the experiment's value)")
    for f in dataclasses.fields(Config):
        parse = _parser_for(hints[f.name])
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=parse,
            default=argparse.SUPPRESS,
            choices=allowed.get(f.name),
            metavar=None if f.name in allowed else f.name.upper(),
            help=f"{f.metadata['help']} (default in base: {f.default})",
        )


def config_from_args(args: argparse.Namespace, exp: str | None = None, base: Config | None = None) -> Config:
    """`base` (default: the named experiment) with every given override applied, validated."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if hasattr(args, f.name)}
    return with_overrides(exp or args.exp, overrides, base)


def with_overrides(exp: str, overrides: dict, base: Config | None = None) -> Config:
    """`base` (default: the named experiment) with the given fields replaced, validated."""
    if base is None:
        if exp not in EXPERIMENTS:
            raise ConfigError(f"unknown experiment {exp!r}; known: {', '.join([*EXPERIMENTS, *CHAINS])}")
        base = EXPERIMENTS[exp]
    return validate(dataclasses.replace(base, **overrides))
