"""The configuration: experiments that differ from the book's base only where they say, a saved form and flags that
give the same Config back, every impossible setting refused with the field named, and the step-size schedule."""

import dataclasses
import json
import math

import numpy as np
import pytest

from rnn_jax import config, train
from rnn_jax import experiments as experiments_lib
from rnn_jax import flags as flags_lib
from rnn_jax import step as step_lib

# experiments that are one-line changes of the book's base; the others are whole configurations of their own
DECLARED = {
    "seq": set(),
    "random": {"sampling"},
    "relu": {"activation"},
    "relu_noclip": {"activation", "clip_norm"},
    "embed": {"encoder"},
    "noclip": {"clip_norm"},
    "nodetach": {"detach", "epochs"},
    "bf16": {"matmul_dtype"},
    "seq_reset": {"reset_state"},
    "gru": {"cell", "hidden"},
    "lstm": {"cell", "hidden"},
    "deep": {"cell", "num_layers", "hidden", "lr"},
}
OWN = {"tiny", "full", "heldout", "shakespeare"}


def test_every_experiment_is_valid_and_round_trips_through_json():
    assert set(experiments_lib.EXPERIMENTS) == set(DECLARED) | OWN
    for name, cfg in experiments_lib.EXPERIMENTS.items():
        assert config.validate(cfg) is cfg, name
        assert config.from_dict(json.loads(json.dumps(config.to_dict(cfg)))) == cfg, name


def test_experiments_differ_from_the_base_only_where_declared():
    for name, fields in DECLARED.items():
        cfg = experiments_lib.EXPERIMENTS[name]
        changed = {
            f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(experiments_lib.BASE, f.name)
        }
        assert changed == fields, name
    assert experiments_lib.EXPERIMENTS["random"] == dataclasses.replace(experiments_lib.BASE, sampling="random")


def test_a_saved_config_of_another_version_is_refused():
    with pytest.raises(config.ConfigError, match="unknown config field.*colour"):
        config.from_dict({**config.to_dict(experiments_lib.BASE), "colour": "blue"})


@pytest.mark.parametrize("name", sorted(experiments_lib.EXPERIMENTS))
def test_flags_reproduce_every_experiment(name):
    """Child processes of a sweep get their Config as flags: every field, floats to the last bit."""
    cfg = dataclasses.replace(experiments_lib.EXPERIMENTS[name], lr=0.1 + 0.2)
    args = train.build_parser().parse_args(flags_lib.to_flags(cfg))
    assert flags_lib.config_from_args(args, exp="seq") == cfg


def test_cli_overrides_every_config_field_with_its_type():
    parser = train.build_parser()
    args = parser.parse_args(["--exp", "random", "--clip-norm", "none", "--num-steps", "7", "--detach", "false"])
    cfg = flags_lib.config_from_args(args)
    assert cfg == dataclasses.replace(experiments_lib.EXPERIMENTS["random"], clip_norm=None, num_steps=7, detach=False)
    for f in dataclasses.fields(config.Config):
        value = getattr(parser.parse_args([f"--{f.name.replace('_', '-')}", str(f.default)]), f.name)
        assert value == f.default and type(value) is type(f.default), f.name
    assert not hasattr(parser.parse_args([]), "hidden")  # an absent flag leaves the experiment's value


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("hidden", 0, "hidden must be a positive integer"),
        ("num_layers", 0, "num_layers must be a positive integer"),
        ("batch_size", -1, "batch_size must be a positive integer"),
        ("num_steps", 0, "num_steps must be a positive integer"),
        ("epochs", 0, "epochs must be a positive integer"),
        ("keep_checkpoints", 0, "keep_checkpoints must be a positive integer"),
        ("max_tokens", 0, "max_tokens must be positive or -1"),
        ("max_tokens", -2, "max_tokens must be positive or -1"),
        ("lr", 0.0, "lr must be positive"),
        ("lr", math.inf, "lr must be a finite number"),
        ("lr", math.nan, "lr must be a finite number"),
        ("clip_norm", 0.0, "clip_norm must be positive"),
        ("seed", -1, "seed must be >= 0"),
        ("seed", 2**31, "seed must be an integer of at most"),
        ("hidden", 2.5, "hidden must be an integer"),
        ("eval_every", -1, "eval_every must be >= 0"),
        ("devices", -1, "devices must be >= 0"),
        ("row_chains", -1, "row_chains must be >= 0"),
        ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
        ("weight_drop", 1.0, r"weight_drop must be in \[0, 1\)"),
        ("val_fraction", -0.1, r"val_fraction must be in \[0, 1\)"),
        ("weight_decay", -1.0, "weight_decay must be >= 0"),
        ("sampling", "sideways", "sampling='sideways' is not one of"),
        ("optimizer", "lbfgs", "optimizer='lbfgs' is not one of"),
        ("dropout_mask", "time", "dropout_mask"),
        ("lr_schedule", "linear", "lr_schedule"),
    ],
)
def test_an_impossible_hyperparameter_is_refused_naming_its_field(field, value, message):
    with pytest.raises(config.ConfigError, match=message):
        config.validate(dataclasses.replace(experiments_lib.BASE, **{field: value}))


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"cell": "lstm", "activation": "relu"}, "is not one the lstm cell accepts: tanh"),
        ({"cell": "gru", "forget_bias": 1.0}, r"forget_bias applies to the cells with a forget gate \(lstm"),
        ({"cell": "mingru", "weight_drop": 0.5}, "the mingru cell has none"),
        ({"cell": "gru", "scan": "associative"}, "needs a linear recurrence"),
        ({"val_fraction": 0.5, "test_fraction": 0.4}, "under 10% of the corpus"),
        ({"row_chains": 3}, "row_chains 3 does not divide batch_size 32"),
        ({"sampling": "random", "reset_fraction": 0.25}, "every row starts from zeros already"),
        ({"detach": False, "reset_fraction": 0.25}, "--detach false carries no state to reset"),
        ({"reset_fraction": 1.0}, r"reset_fraction must be in \[0, 1\)"),
        ({"val_windows": -1}, "val_windows must be >= 0"),
        ({"val_windows": 64, "val_fraction": 0.0}, "val_fraction 0 leaves none"),
    ],
)
def test_settings_that_contradict_each_other_are_refused(changes, message):
    with pytest.raises(config.ConfigError, match=message):
        config.validate(dataclasses.replace(experiments_lib.BASE, **changes))


def test_the_state_is_reset_for_random_sampling_unless_said_otherwise():
    assert not config.resets_state(experiments_lib.BASE) and config.resets_state(experiments_lib.EXPERIMENTS["random"])
    assert config.resets_state(experiments_lib.EXPERIMENTS["seq_reset"])
    assert not config.resets_state(dataclasses.replace(experiments_lib.EXPERIMENTS["random"], reset_state=False))


def test_cosine_schedule_falls_over_the_run_and_constant_has_none():
    cfg = dataclasses.replace(experiments_lib.BASE, epochs=4, lr_schedule="cosine")
    np.testing.assert_allclose(
        [step_lib.lr_scale(cfg, e) for e in (1, 2, 3, 4)],
        [1.0, (1 + np.cos(np.pi / 4)) / 2, 0.5, (1 + np.cos(3 * np.pi / 4)) / 2],
    )
    assert step_lib.lr_scale(experiments_lib.BASE, 7) is None
