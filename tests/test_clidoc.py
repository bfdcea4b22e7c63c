"""docs/cli.md and --help come from the parsers and the Config fields' help; choices come from the registries."""

import dataclasses
from pathlib import Path

import pytest

import rnn_jax
from rnn_jax import cells, clidoc, config, data, model, train

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_md_is_current():
    assert CLI_MD.read_text() == clidoc.markdown(), "docs/cli.md is stale: run make docs"


def test_every_command_of_the_package_is_in_cli_md():
    """Each module run as `python -m` (a main guard or a package's __main__) has its section, from its parser."""
    package = Path(rnn_jax.__file__).parent
    commands = {
        "python -m " + ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__main__")
        for path in package.rglob("*.py")
        if path.name == "__main__.py" or 'if __name__ == "__main__"' in path.read_text()
    }
    commands.discard("python -m rnn_jax.clidoc")  # writes this file
    assert {p.prog for p in clidoc.parsers()} == commands
    md = CLI_MD.read_text()
    assert all(f"## `{c}`" in md for c in commands)


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


def test_a_cell_registered_in_a_test_is_a_choice_of_the_config_the_flags_and_the_docs(monkeypatch):
    """A new cell is one registry entry: nothing else lists the cells."""
    with pytest.raises(config.ConfigError, match=f"cell='throwaway' is not one of {', '.join(cells.CELLS)}"):
        config.validate(config.Config(cell="throwaway"))
    monkeypatch.setitem(cells.CELLS, "throwaway", cells.CELLS["rnn"])
    assert config.validate(config.Config(cell="throwaway")).cell == "throwaway"
    assert config.choices()["cell"] == tuple(cells.CELLS)
    assert train.build_parser().parse_args(["--cell", "throwaway"]).cell == "throwaway"
    cell_row = next(line for line in clidoc.markdown().splitlines() if line.startswith("| `--cell` |"))
    assert all(f"`{name}`" in cell_row for name in cells.CELLS)


def test_flags_keep_their_types_defaults_and_choices():
    actions = {a.dest: a for a in train.build_parser()._actions}
    assert actions["clip_norm"].type("none") is None and actions["clip_norm"].type("0.5") == 0.5
    assert actions["detach"].type("false") is False
    assert actions["hidden"].type("7") == 7
    assert actions["matmul_dtype"].choices == ("float32", "bfloat16")
    assert actions["cell"].choices == tuple(cells.CELLS)
    assert not hasattr(train.build_parser().parse_args([]), "hidden")  # absent flags leave the experiment's value
