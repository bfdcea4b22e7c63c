"""docs/cli.md: every flag of the command-line tools, written from their argparse parsers and the Config fields.

python -m rnn_jax.clidoc > docs/cli.md      # make docs
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from rnn_jax import config as config_lib
from rnn_jax import experiments as experiments_lib

ROOT = Path(__file__).resolve().parents[1]


def parsers() -> list[argparse.ArgumentParser]:
    """The parser of every command, in the order docs/cli.md lists them."""
    from rnn_jax import baselines, evaluate, generate, train
    from rnn_jax.bench import cli as bench_cli
    from rnn_jax.bench import compare

    builders = (train, generate, evaluate, baselines, bench_cli, compare)
    return [m.build_parser() for m in builders]


def _text(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, Path):
        return os.path.relpath(v, ROOT) if v.is_absolute() else str(v)
    if isinstance(v, (list, tuple)):
        return ",".join(_text(x) for x in v)
    return str(v)


def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _value(action: argparse.Action) -> str:
    """What the flag takes: nothing (a switch), or its type."""
    if action.nargs == 0 or action.choices is not None:
        return ""
    if isinstance(action.metavar, str) and action.metavar != action.dest.upper():
        return action.metavar
    name = getattr(action.type, "__name__", None) if action.type is not None else "text"
    names: dict[str | None, str] = {"<lambda>": "comma-separated list", "str": "text", "Path": "path"}
    return names.get(name, name or "text") + (" ..." if action.nargs in ("+", "*") else "")


def _row(parser: argparse.ArgumentParser, action: argparse.Action, fields: dict) -> str:
    field = fields.get(action.dest)
    if field is not None and action.default is argparse.SUPPRESS:
        default, text = _text(field.default), field.metadata["help"]
    else:
        default = "" if action.nargs == 0 or action.default is None else _text(action.default)
        default, text = "(required)" if action.required else default, action.help or ""
    if "%" in text:
        text = text % {**vars(action), "prog": parser.prog}
    choices = ", ".join(f"`{c}`" for c in action.choices) if action.choices is not None else ""
    flags = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"  # positional
    return (
        f"| {flags} | {_cell(_value(action))} | {_cell(f'`{default}`' if default else '')} | {choices} | "
        f"{_cell(text)} |"
    )


def parser_markdown(parser: argparse.ArgumentParser) -> list[str]:
    fields = {f.name: f for f in dataclasses.fields(config_lib.Config)}
    out = [f"## `{parser.prog}`", "", parser.description or "", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS and a.dest != "help"]
        if not actions:
            continue
        out += [f"### {group.title}", "", "| flag | takes | default | choices | meaning |", "|---|---|---|---|---|"]
        out += [_row(parser, a, fields) for a in actions] + [""]
    return out


def experiments_markdown() -> list[str]:
    """Each named experiment as its differences from the base config."""
    base = experiments_lib.EXPERIMENTS["seq"]
    out = [
        "## Named experiments (`--exp`)",
        "",
        "Each is the base config (the `seq` row, every default above) with these fields changed; flags given on "
        "the command line override them. A chained experiment runs its stages in turn, each from the parameters "
        "the one before ended with.",
        "",
        "| experiment | fields changed from the base |",
        "|---|---|",
    ]
    for name, cfg in experiments_lib.EXPERIMENTS.items():
        diff = [
            f"{f.name}={_text(getattr(cfg, f.name))}"
            for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != getattr(base, f.name)
        ]
        corpus = experiments_lib.CORPUS_OF.get(name)
        diff += [f"corpus {corpus}"] if corpus else []
        out.append(f"| `{name}` | {_cell(', '.join(diff)) or '(the base: the book 8.5)'} |")
    for name, stages in experiments_lib.CHAINS.items():
        out.append(f"| `{name}` | stages: {', then '.join(f'`{s}`' for s in stages)} |")
    return out + [""]


def markdown() -> str:
    out = [
        "# Command-line reference",
        "",
        "Written by `python -m rnn_jax.clidoc > docs/cli.md` (`make docs`) from the tools' parsers and the help "
        "text of each `Config` field (`rnn_jax/config.py`); `tests/test_clidoc.py` fails when this file differs "
        "from what that writes. Every `Config` field is a flag of `python -m rnn_jax.train` (`num_steps` -> "
        "`--num-steps`); its default there is the named experiment's value, shown here for the base config. "
        "Optional numbers take `none`, switches `true`/`false`.",
        "",
    ]
    for parser in parsers():
        out += parser_markdown(parser)
        if parser.prog == "python -m rnn_jax.train":
            out += experiments_markdown()
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> int:
    print(markdown(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
