"""What a training command asks for (`Request`), and what it resolves to (`RunRequest`, what `runner.run` trains):
a new run's config from its experiment and flags, or a resumed run's from the config.json it saved.

A chained experiment runs each stage from the same Request with the stage's experiment, directory and starting
point replaced, so a stage resolves exactly as the command line `--exp STAGE --run-dir RUN/STAGE` would.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from rnn_jax import checkpoint, files, rundir
from rnn_jax import config as config_lib
from rnn_jax import experiments as experiments_lib
from rnn_jax import flags as flags_lib
from rnn_jax.checkpoint import CheckpointError
from rnn_jax.config import Config


@dataclasses.dataclass(frozen=True)
class Request:
    """A training command's choices; `overrides` holds only the config fields given as flags."""

    exp: str | None = None
    run_dir: str | None = None
    resume: bool = False
    corpus: str | None = None
    data_dir: str | None = None
    init_from: str | None = None
    init_from_best: bool = False
    predict_prefix: list[str] | None = None
    tensorboard: bool = False
    quiet: bool = False
    overrides: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_args(cls, args) -> Request:
        """From parsed flags (absent config flags leave no attribute, so only given ones override)."""
        overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if hasattr(args, f.name)}
        own = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name != "overrides"}
        return cls(**own, overrides=overrides)


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """One run `runner.run` trains: its config and directory, and where its data, starting point, prompts and writers
    come from. Refuses (ConfigError) an invalid config, an empty prompt, or --init-from-best without --init-from.

    init_from: a run directory whose parameters (its latest, or best with init_from_best) the run starts from, with a
    fresh optimizer. prefixes: the prompts of the predictions (None: `runner.default_prefixes`). tensorboard: also
    write TensorBoard event files to run_dir/tensorboard. init_expect: what config.json recorded of init_from, for a
    resume before the first checkpoint (the same parameters, or a ConfigError)."""

    cfg: Config
    run_dir: Path
    exp: str = "custom"
    resume: bool = False
    quiet: bool = False
    corpus: str | None = None
    data_dir: str | None = None
    init_from: str | None = None
    init_from_best: bool = False
    init_expect: dict | None = None
    prefixes: tuple[str, ...] | None = None
    tensorboard: bool = False

    def __post_init__(self):
        if not isinstance(self.cfg, Config) or not isinstance(self.run_dir, Path):
            raise TypeError(
                f"RunRequest needs a Config and a Path, got {type(self.cfg).__name__} and {type(self.run_dir).__name__}"
            )
        config_lib.validate(self.cfg)
        if self.prefixes is not None and not (isinstance(self.prefixes, tuple) and all(self.prefixes)):
            raise config_lib.ConfigError("--predict-prefix must be non-empty text (a prompt to warm up on)")
        if self.init_from_best and not self.init_from:
            raise config_lib.ConfigError("--init-from-best goes with --init-from RUN")


def default_run_dir(exp: str) -> Path:
    return Path("runs") / f"{exp}-{time.strftime('%Y%m%d-%H%M%S')}"


def resolve(req: Request) -> RunRequest:
    """The run a request asks for; a resume starts from the run's own config and recorded choices."""
    kw: dict[str, Any] = {
        "corpus": req.corpus,
        "data_dir": req.data_dir,
        "init_from": req.init_from,
        "init_from_best": req.init_from_best,
        "prefixes": req.predict_prefix,
        "tensorboard": req.tensorboard,
    }
    if req.init_from_best and not req.init_from:
        raise config_lib.ConfigError("--init-from-best goes with --init-from RUN")
    if not req.resume:
        exp = req.exp or "seq"
        kw["corpus"] = kw["corpus"] or experiments_lib.CORPUS_OF.get(exp)
        cfg = flags_lib.with_overrides(exp, req.overrides)
    elif not req.run_dir:
        raise config_lib.ConfigError("--resume needs the --run-dir of the run to continue")
    elif req.init_from:
        raise config_lib.ConfigError("--init-from starts a new run; a resumed run continues from its own checkpoint")
    else:
        exp, base = _from_saved(req, kw)
        cfg = flags_lib.with_overrides(exp, req.overrides, base)
    kw["prefixes"] = None if kw["prefixes"] is None else tuple(kw["prefixes"])
    run_dir = Path(req.run_dir) if req.run_dir else default_run_dir(exp)
    return RunRequest(cfg, run_dir, exp=exp, resume=req.resume, quiet=req.quiet, **kw)


def _from_saved(req: Request, kw: dict) -> tuple[str, Config | None]:
    """(experiment, base config) of the run a resume continues, from its config.json; fills in kw what the run
    recorded (its corpus, its predictions' prompts, and the run it started from if no checkpoint was written)."""
    assert req.run_dir is not None  # a resume names its run directory
    saved = rundir.saved_config(Path(req.run_dir))
    try:
        exp = req.exp or saved["experiment"]
        base = config_lib.from_dict(saved["config"]) if exp == saved["experiment"] else None
        if not req.corpus:  # the run's own text: its file, or with --data-dir its experiment's named corpus there
            kw["corpus"] = experiments_lib.CORPUS_OF.get(exp) if req.data_dir else saved["data"]["path"]
        no_checkpoint = checkpoint.latest_saved_epoch(Path(req.run_dir) / "checkpoints") is None
        if "init_from" in saved and no_checkpoint:  # killed before its first checkpoint: the same parameters again
            kw.update(
                init_from=saved["init_from"]["run"],
                init_from_best=saved["init_from"]["checkpoint"] == "best",
                init_expect=saved["init_from"],
            )
    except (KeyError, TypeError) as e:
        raise CheckpointError(
            f"{req.run_dir}/config.json is not a run's configuration (no {e}); restore it from a copy"
        ) from None
    kw["prefixes"] = kw["prefixes"] or [p for p in saved.get("predict_prefixes") or () if p] or None
    kw["tensorboard"] = kw["tensorboard"] or bool(saved.get("tensorboard"))  # remembered by the run
    return exp, base


def chain_of(req: Request) -> str | None:
    """The chained experiment a request runs (by --exp, or recorded in the --run-dir it resumes), if any."""
    if req.exp in experiments_lib.CHAINS:
        return req.exp
    if req.resume and req.run_dir and (Path(req.run_dir) / "chain.json").is_file():
        return files.read_json(Path(req.run_dir) / "chain.json", "a chained run's stages")["experiment"]
    return None


def stage_request(req: Request, stage: str, stage_dir: Path, *, resume: bool, init_from: str | None) -> Request:
    """The request of one stage of a chain: the command's flags, with the stage's experiment and directory."""
    return dataclasses.replace(req, exp=stage, run_dir=str(stage_dir), resume=resume, init_from=init_from)
