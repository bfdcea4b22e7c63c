"""A run from its typed request: what the request refuses, what a command resolves to, and what the runner builds
and writes around the loop (data, prompts, the summary's n-gram baselines)."""

import dataclasses
import json
import os
from pathlib import Path

import pytest

from rnn_jax import config, corpora, files, launch, log, rundir, runner
from rnn_jax import experiments as experiments_lib
from rnn_jax import flags as flags_lib
from rnn_jax.launch import RunRequest

TINY = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], predict_every=0)
TEXT = "the time traveller for so it will be convenient to speak of him was expounding a recondite matter to us " * 8


@pytest.fixture
def small_text(tmp_path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(TEXT)
    return path


@pytest.mark.parametrize(
    "change, error",
    [
        ({"cfg": dataclasses.replace(TINY, hidden=0)}, config.ConfigError),
        ({"cfg": config.to_dict(TINY)}, TypeError),
        ({"run_dir": "runs/r"}, TypeError),
        ({"prefixes": ("the", "")}, config.ConfigError),
        ({"prefixes": ["the"]}, config.ConfigError),
        ({"init_from_best": True}, config.ConfigError),
    ],
)
def test_the_request_refuses_bad_input(change, error):
    with pytest.raises(error):
        RunRequest(**{"cfg": TINY, "run_dir": Path("r"), **change})


def test_the_request_is_frozen():
    req = RunRequest(TINY, Path("r"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.resume = True  # type: ignore[misc]


def test_a_command_resolves_to_a_typed_request():
    req = launch.resolve(launch.Request(exp="tiny", predict_prefix=["the"], overrides={"hidden": 8}, quiet=True))
    assert req.cfg == flags_lib.with_overrides("tiny", {"hidden": 8}) and req.exp == "tiny" and req.quiet
    assert req.prefixes == ("the",) and not req.resume and req.init_from is None
    assert req.run_dir.parent == Path("runs") and req.run_dir.name.startswith("tiny-")
    assert launch.resolve(launch.Request(exp="tiny", run_dir="out")).run_dir == Path("out")


def test_another_texts_prompts_are_its_opening_words(small_text):
    training = runner.load_data(TINY, str(small_text), None)
    assert runner.default_prefixes(training, TINY) == ("the time", "time")


def test_a_text_too_short_is_refused_before_anything_is_written(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the time")
    with pytest.raises(corpora.DataError):
        runner.run(RunRequest(TINY, tmp_path / "run", corpus=str(short), quiet=True))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_run_writes_its_files_with_the_baselines_on_its_validation_text(tmp_path, small_text):
    cfg = dataclasses.replace(TINY, val_fraction=0.2, eval_every=1)
    run_dir = tmp_path / "run"
    summary = runner.run(RunRequest(cfg, run_dir, exp="tiny", corpus=str(small_text), quiet=True, prefixes=("the",)))
    rows = files.read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2] and summary["val_perplexity"] == rows[-1]["val_perplexity"]
    assert set(summary["predictions"]) == {"the"} and summary["baselines"]
    assert summary["cpu_cores"] == len(os.sched_getaffinity(0))  # what its wall seconds were bought with
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["baselines"] == summary["baselines"] and saved["perplexity"] == summary["perplexity"]
    assert rundir.saved_config(run_dir)["predict_prefixes"] == ["the"]
    resumed = runner.run(
        RunRequest(dataclasses.replace(cfg, epochs=3), run_dir, exp="tiny", corpus=str(small_text), resume=True)
    )
    assert [r["epoch"] for r in files.read_metrics(run_dir)] == [1, 2, 3] and resumed["epochs"] == 3


def test_a_set_up_that_fails_after_the_writers_opened_closes_them(tmp_path, small_text, monkeypatch):
    opened, closed = [], []
    real_outputs = runner._outputs

    def outputs(req, start):
        opened.append(real_outputs(req, start))
        return opened[-1]

    def failing_trainer(*args, **kwargs):
        raise RuntimeError("set-up failed")

    monkeypatch.setattr(runner, "_outputs", outputs)
    monkeypatch.setattr(runner, "Trainer", failing_trainer)
    monkeypatch.setattr(log.TensorBoard, "close", lambda self: closed.append(self))
    req = RunRequest(TINY, tmp_path / "run", exp="tiny", corpus=str(small_text), quiet=True, tensorboard=True)
    with pytest.raises(RuntimeError, match="set-up failed"):
        runner.run(req)
    (out,) = opened
    assert out.metrics is not None and out.metrics.f.closed and closed == [out.board]
