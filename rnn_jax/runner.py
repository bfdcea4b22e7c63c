"""A run from start to end: what its `Trainer` is handed (data, prompts, checkpoints, writers), its memory check and
run directory, the epochs (`trainer.loop`, stopped cleanly by a signal), then its closing files with the n-gram
baselines; and the stages of a chained experiment."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax

from rnn_jax import (
    baselines,
    corpora,
    data,
    distributed,
    files,
    launch,
    log,
    memory,
    model,
    residual,
    rundir,
    runs,
    scoring,
)
from rnn_jax import config as config_lib
from rnn_jax import experiments as experiments_lib
from rnn_jax import step as step_lib
from rnn_jax import trainer as trainer_lib
from rnn_jax.checkpoint import Checkpoints
from rnn_jax.config import Config
from rnn_jax.epochs import Diverged
from rnn_jax.launch import RunRequest
from rnn_jax.signals import Interrupted, StopSignals
from rnn_jax.trainer import Outputs, Trainer, TrainingData

PREFIXES = ("time traveller", "traveller")  # the book's prompts


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


def load_data(cfg: Config, corpus: str | None, data_dir: str | None) -> TrainingData:
    """The corpus a run trains and validates on, checked against cfg before anything is written."""
    path = corpora.resolve_corpus(corpus, data_dir)
    all_tokens, vocab = data.load_corpus(path, -1, cfg.preprocess)
    parts = data.splits(all_tokens, cfg)
    tokens, val = parts["train"][0], parts["val"]
    data.check_length(len(tokens), cfg.batch_size, cfg.num_steps, cfg.sampling)
    if cfg.val_windows:  # refused before the first epoch, not at the first validation
        scoring.window_starts(len(val[0]), cfg.val_windows, scoring.WINDOW_LENGTH)
    info = {
        "path": str(path.resolve()),
        "sha1": corpora.sha1_of(path),
        "train_tokens": int(len(tokens)),
        "val_tokens": int(len(val[0])),
        "test_tokens": int(len(parts["test"][0])),
    }
    return TrainingData(path, vocab, tokens, val, info)  # type: ignore[arg-type]  # val's text before is never None


def default_prefixes(training: TrainingData, cfg: Config) -> tuple[str, ...]:
    """The book's two prompts for the book; for another text its own opening two words, and the second."""
    if training.info["sha1"] == corpora.TIME_MACHINE_SHA1 and cfg.preprocess == "book":
        return PREFIXES
    if training.info["sha1"] == corpora.CORPORA["shakespeare"].sha1 and cfg.preprocess == "none":
        return ("ROMEO:",)
    words = training.vocab.decode(training.tokens[:200]).split()
    return (" ".join(words[:2]), words[1]) if len(words) >= 2 else (training.vocab.decode(training.tokens[:10]),)


def run(req: RunRequest) -> dict:
    """Trains req.cfg in req.run_dir (config, vocab, metrics, checkpoints, curve), or continues it; returns a
    summary."""
    cfg, run_dir = req.cfg, req.run_dir
    with StopSignals() as stop:  # before the data is read and anything compiles
        training = load_data(cfg, req.corpus, req.data_dir)
        check_memory(cfg, len(training.vocab))
        params = None
        prefixes = req.prefixes or default_prefixes(training, cfg)
        extra: dict[str, Any] = {"predict_prefixes": list(prefixes)}
        if req.tensorboard:
            extra["tensorboard"] = True  # remembered: a resume without the flag goes on writing event files
        if req.init_from:
            params, extra["init_from"] = runs.params_from(
                req.init_from, best=req.init_from_best, cfg=cfg, vocab=training.vocab, expect=req.init_expect
            )
        mesh = distributed.make_mesh(distributed.choose_devices(cfg.devices, cfg.batch_size))
        stop.check("before the run started; nothing was written")
        lock, restored = rundir.open_run(run_dir, cfg, req.exp, req.resume, training.vocab, training.info, extra)
        try:
            outputs = _outputs(req, trainer_lib.start_epoch(restored))
            try:
                trainer = Trainer(
                    cfg,
                    run_dir,
                    training,
                    mesh,
                    outputs,
                    exp=req.exp,
                    prefixes=prefixes,
                    params=params,
                    restored=restored,
                )
            except BaseException:
                outputs.close()  # no run owns the writers yet
                raise
            return _train(trainer, req, stop)
        finally:
            if lock:
                lock.release()


def _outputs(req: RunRequest, start: int) -> Outputs:
    """Where the epochs of a run starting at epoch `start` go; only the primary process writes files."""
    ckpts = Checkpoints(req.run_dir, req.cfg.keep_checkpoints)
    if not distributed.is_primary():
        return Outputs(ckpts, None, None, None)
    board = None
    if req.tensorboard:
        hparams = {"experiment": req.exp, **config_lib.to_dict(req.cfg)}
        board = log.TensorBoard(req.run_dir / "tensorboard", hparams, start)
    return Outputs(
        ckpts,
        files.MetricsWriter(req.run_dir, start - 1 if req.resume else None),
        None if req.quiet else log.Progress(req.cfg.epochs, start - 1),
        board,
    )


def _train(trainer: Trainer, req: RunRequest, stop: StopSignals) -> dict:
    """The epochs, then the run's closing files: the curve, params.npz and summary.json (with the n-gram baselines
    on the validation text when there is one)."""
    try:
        trainer_lib.loop(trainer, req.cfg, stop, req.run_dir)
    except (Interrupted, Diverged):
        trainer.close()
        raise
    except BaseException:
        trainer.close(draw=False)  # the file system may have failed: write nothing more
        raise
    trainer.close()
    summary = trainer.summary()
    val_tokens, context = trainer.data.val
    if len(val_tokens):
        summary["baselines"] = baselines.evaluate_baselines(
            trainer.data.tokens, val_tokens, len(trainer.data.vocab), context=context
        )
    if distributed.is_primary():
        rundir.save_final(req.run_dir, distributed.to_host(trainer.state.params), summary)
        if not req.quiet:
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
            summary = run(launch.resolve(stage_req))
        previous = str(stage_dir)
    return summary


def _check_finished_stage(stage: str, stage_dir: Path, req: launch.Request) -> None:
    """Raises ConfigError, naming the difference, when the flags ask a finished stage of a chain for another
    configuration (a finished stage is kept as it is, and the next stage started from it)."""
    asked = launch.resolve(req).cfg
    saved = config_lib.from_dict(rundir.saved_config(stage_dir)["config"])
    for f in dataclasses.fields(Config):
        a, b = getattr(saved, f.name), getattr(asked, f.name)
        if a != b:
            raise config_lib.ConfigError(
                f"stage {stage} of {stage_dir.parent} has finished with {f.name} {a!r}, "
                f"asked {b!r}; a finished stage is kept as it is: run it with its own "
                "flags, or choose another --run-dir"
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
