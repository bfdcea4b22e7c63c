"""A run from start to end: its data, memory check and run directory, the epochs (each a short list of
`Trainer` steps, stopped cleanly by a signal), then its closing files; and the stages of a chained experiment."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax

from rnn_jax import config as config_lib
from rnn_jax import distributed, files, launch, memory, model, residual, rundir, runs
from rnn_jax import experiments as experiments_lib
from rnn_jax import step as step_lib
from rnn_jax.config import Config
from rnn_jax.epochs import Diverged
from rnn_jax.signals import Interrupted, StopSignals
from rnn_jax.trainer import Trainer, default_prefixes, load_data


def default_run_dir(exp: str) -> Path:
    return Path("runs") / f"{exp}-{time.strftime('%Y%m%d-%H%M%S')}"


def memory_estimate(cfg: Config, vocab_size: int) -> tuple[int, int]:
    """(bytes, parameters) a run of cfg holds at once, roughly: its parameters, their gradients and optimizer
    state, and the activations of one minibatch kept for the backward pass (float32)."""
    shapes = jax.eval_shape(
        lambda: model.init_params(
            jax.random.key(0), vocab_size, cfg.hidden, model.ModelSpec.from_config(cfg), embed_dim=cfg.embed_dim
        )
    )
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
    n_opt = sum(math.prod(x.shape) for x in jax.tree.leaves(jax.eval_shape(step_lib.make_optimizer(cfg).init, shapes)))
    gates = model.CELLS[cfg.cell].gates
    if cfg.block == "residual":  # each block's two norms, W_mix's output and the MLP's three (T, B, width) arrays
        gates += 4 + 3 * residual.MLP_WIDTH
    acts = cfg.batch_size * cfg.num_steps * (cfg.num_layers * (gates + 1) * cfg.hidden + 2 * vocab_size)
    return 4 * (2 * n_params + n_opt + acts), n_params


def available_memory() -> int | None:
    """Bytes of memory the run's arrays can use: the accelerator's limit, else the process's budget on the host
    (memory.memory_budget: available physical memory, RLIMIT_AS, the cgroup's limit)."""
    return memory_limit()[0]


def memory_limit() -> tuple[int | None, str]:
    """(bytes, what sets them) of the memory a run's arrays can use; (None, "") when nothing can be read."""
    stats = getattr(jax.devices()[0], "memory_stats", lambda: None)() if jax.default_backend() != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), "the accelerator's memory"
    budget = memory.memory_budget()
    return budget if budget else (None, "")


def check_memory(cfg: Config, vocab_size: int) -> None:
    """Raises ConfigError when the run cannot fit in memory, before anything is written."""
    need, n_params = memory_estimate(cfg, vocab_size)
    have, what = available_memory(), memory_limit()[1]
    if have is not None and need > have:
        raise config_lib.ConfigError(
            f"--hidden {cfg.hidden} (--num-layers {cfg.num_layers}, --batch-size {cfg.batch_size}, --num-steps "
            f"{cfg.num_steps}) needs about {need / 2**30:.1f} GiB ({n_params:,} parameters, their gradients and "
            f"optimizer state, and a minibatch's activations), more than the {have / 2**30:.1f} GiB of "
            f"{what or 'memory'} here; choose a smaller model"
        )


def run(
    cfg: Config,
    run_dir: str | Path,
    *,
    corpus: str | None = None,
    data_dir: str | None = None,
    exp: str = "custom",
    resume: bool = False,
    quiet: bool = False,
    init_from: str | None = None,
    init_from_best: bool = False,
    prefixes: tuple[str, ...] | None = None,
    tensorboard: bool = False,
    init_expect: dict | None = None,
) -> dict:
    """Trains cfg in run_dir (config, vocab, metrics, checkpoints, curve), or continues it; returns a summary.

    init_from: a run directory whose parameters (its latest, or best with init_from_best) this run starts from,
    with a fresh optimizer. prefixes: the prompts of the predictions (default: see `default_prefixes`).
    tensorboard: also write TensorBoard event files to run_dir/tensorboard (needs tensorboardX).
    init_expect: what config.json recorded of init_from, for a resume before the first checkpoint (the same
    parameters, or a ConfigError).
    """
    config_lib.validate(cfg)
    if prefixes is not None and not all(prefixes):
        raise config_lib.ConfigError("--predict-prefix must be non-empty text (a prompt to warm up on)")
    run_dir = Path(run_dir)
    with StopSignals() as stop:  # before the data is read and anything compiles
        training = load_data(cfg, corpus, data_dir)
        check_memory(cfg, len(training.vocab))
        params = None
        extra: dict[str, Any] = {"predict_prefixes": list(prefixes or default_prefixes(training, cfg))}
        if tensorboard:
            extra["tensorboard"] = True  # remembered: a resume without the flag goes on writing event files
        if init_from:
            params, extra["init_from"] = runs.params_from(
                init_from, best=init_from_best, cfg=cfg, vocab=training.vocab, expect=init_expect
            )
        mesh = distributed.make_mesh(distributed.choose_devices(cfg.devices, cfg.batch_size))
        stop.check("before the run started; nothing was written")
        lock, restored = rundir.open_run(run_dir, cfg, exp, resume, training.vocab, training.info, extra)
        try:
            trainer = Trainer(
                cfg,
                run_dir,
                training,
                mesh,
                exp=exp,
                resume=resume,
                quiet=quiet,
                params=params,
                prefixes=extra["predict_prefixes"],
                tensorboard=tensorboard,
                restored=restored,
            )
            return _train(trainer, cfg, run_dir, stop, quiet)
        finally:
            if lock:
                lock.release()


def _train(trainer: Trainer, cfg: Config, run_dir: Path, stop: StopSignals, quiet: bool) -> dict:
    """The epochs, then the run's closing files: the curve, params.npz and summary.json."""
    try:
        _loop(trainer, cfg, run_dir, stop)
    except (Interrupted, Diverged):
        trainer.close()
        raise
    except BaseException:
        trainer.close(draw=False)  # the file system may have failed: write nothing more
        raise
    trainer.close()
    summary = trainer.summary()
    if distributed.is_primary():
        rundir.save_final(run_dir, distributed.to_host(trainer.state.params), summary)
        if not quiet:
            _print_summary(summary)
    return summary


def run_chain(exp: str, req: launch.Request, run_dir: Path) -> dict:
    """The stages of a chained experiment in run_dir/<stage>, each from the parameters the one before ended
    with; a finished stage is kept, an unfinished one resumed, so running the command again continues it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    files.write_json(run_dir / "chain.json", {"experiment": exp, "stages": list(experiments_lib.CHAINS[exp])})
    summary, previous = {}, None
    for stage in experiments_lib.CHAINS[exp]:
        stage_dir = run_dir / stage
        if (stage_dir / "summary.json").is_file():
            _check_finished_stage(
                stage, stage_dir, launch.stage_request(req, stage, stage_dir, resume=True, init_from=None)
            )
            summary = files.read_json(stage_dir / "summary.json", "a finished stage's summary")
        else:
            resume = (stage_dir / "config.json").is_file()
            stage_req = launch.stage_request(
                req, stage, stage_dir, resume=resume, init_from=None if resume else previous
            )
            cfg, _, kw = launch.resolve(stage_req)
            summary = run(cfg, stage_dir, exp=stage, resume=resume, quiet=req.quiet, **kw)
        previous = str(stage_dir)
    return summary


def _check_finished_stage(stage: str, stage_dir: Path, req: launch.Request) -> None:
    """Raises ConfigError, naming the difference, when the flags ask a finished stage of a chain for another
    configuration (a finished stage is kept as it is, and the next stage started from it)."""
    asked, _, _ = launch.resolve(req)
    saved = config_lib.from_dict(rundir.saved_config(stage_dir)["config"])
    for f in dataclasses.fields(Config):
        a, b = getattr(saved, f.name), getattr(asked, f.name)
        if a != b:
            raise config_lib.ConfigError(
                f"stage {stage} of {stage_dir.parent} has finished with {f.name} {a!r}, "
                f"asked {b!r}; a finished stage is kept as it is: run it with its own "
                "flags, or choose another --run-dir"
            )


def _loop(trainer: Trainer, cfg: Config, run_dir: Path, stop: StopSignals) -> None:
    """What happens each epoch: train, validate, record, checkpoint; a signal stops after the checkpoint."""
    resume = f"Continue with: python -m rnn_jax.train --run-dir {run_dir} --resume"
    for epoch in range(trainer.start, cfg.epochs + 1):
        stop.check(f"before epoch {epoch}; no epoch finished since the last checkpoint. {resume}")
        row = trainer.train_epoch(epoch)
        trainer.validate(epoch, row)
        trainer.record(epoch, row)
        trainer.checkpoint(epoch, row, stopping=stop.received is not None)
        if stop.received:
            raise Interrupted(
                f"stopped by {stop.received} after epoch {epoch}; its checkpoint is in "
                f"{run_dir / 'checkpoints'}. {resume}"
            )


def _print_summary(summary: dict) -> None:
    tps = f"{summary['tokens_per_sec']:.1f}" if summary["tokens_per_sec"] else "-"
    ppl = f"{summary['perplexity']:.1f}" if summary["perplexity"] is not None else "- (every update skipped)"
    print(f"perplexity {ppl}, {tps} tokens/sec on {summary['device']}")
    if "val_perplexity" in summary:
        best_ngram = min(summary["baselines"].items(), key=lambda kv: kv[1]["perplexity"])
        print(
            f"validation perplexity {summary['val_perplexity']:.3f} ({summary['val_bits_per_char']:.3f} bits/char);"
            f" best baseline {best_ngram[0]} {best_ngram[1]['perplexity']:.3f}"
        )
    for text in summary["predictions"].values():
        print(text)
