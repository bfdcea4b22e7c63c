"""Command-line flags generated from the Config: one typed flag per field, parsed into a validated Config, and the
flags that reproduce a Config for a child process."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from rnn_jax.config import Config, ConfigError, choices, validate
from rnn_jax.experiments import CHAINS, EXPERIMENTS


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
