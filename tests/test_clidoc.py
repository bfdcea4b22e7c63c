"""docs/cli.md and --help come from the parsers and the Config fields' help; choices come from the registries."""

import dataclasses
from pathlib import Path

import pytest

from rnn_jax import cells, clidoc, config, data, model, train

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_md_is_current():
    assert CLI_MD.read_text() == clidoc.markdown(), "docs/cli.md is stale: run make docs"


def test_every_config_field_has_help_in_help_and_in_cli_md():
    text, md = train.build_parser().format_help(), CLI_MD.read_text()
    for f in dataclasses.fields(config.Config):
        flag, help_text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        assert help_text and flag in text
        assert f"| `{flag}` |" in md and help_text.replace("|", "\\|") in md


def test_choices_are_the_registries_keys():
    allowed = config.choices()
    assert allowed["cell"] == tuple(cells.CELLS)
    assert allowed["activation"] == tuple(cells.ACTIVATIONS)
    assert allowed["encoder"] == tuple(model.ENCODERS)
    assert allowed["preprocess"] == tuple(data.PREPROCESS)
    assert allowed["sampling"] == tuple(data.SCHEMES)
    assert set(allowed) == set(config.REGISTRIES) | set(config.CHOICES)


def test_a_registry_entry_is_an_allowed_value_of_its_field_and_flag(monkeypatch):
    with pytest.raises(config.ConfigError, match=f"cell='toy' is not one of {', '.join(cells.CELLS)}"):
        config.validate(config.Config(cell="toy"))
    monkeypatch.setitem(cells.CELLS, "toy", cells.CELLS["rnn"])
    assert config.validate(config.Config(cell="toy")).cell == "toy"
    assert train.build_parser().parse_args(["--cell", "toy"]).cell == "toy"


def test_flags_keep_their_types_defaults_and_choices():
    actions = {a.dest: a for a in train.build_parser()._actions}
    assert actions["clip_norm"].type("none") is None and actions["clip_norm"].type("0.5") == 0.5
    assert actions["detach"].type("false") is False
    assert actions["hidden"].type("7") == 7
    assert actions["matmul_dtype"].choices == ("float32", "bfloat16")
    assert actions["cell"].choices == tuple(cells.CELLS)
    assert not hasattr(train.build_parser().parse_args([]), "hidden")  # absent flags leave the experiment's value
