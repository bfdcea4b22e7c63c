"""The one training loop: what it drives in which order, what a run's Trainer records of what it is handed, and the
vmapped seeds that run through the same loop."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from rnn_jax import data, epochs, trainer
from rnn_jax import experiments as experiments_lib
from rnn_jax import step as step_lib
from rnn_jax.signals import Interrupted

TEXT = "the time traveller for so it will be convenient to speak of him was expounding a recondite matter to us " * 6
CFG = dataclasses.replace(
    experiments_lib.EXPERIMENTS["tiny"], epochs=3, predict_every=1, checkpoint_every=2, eval_every=1
)
DIVERGING = dataclasses.replace(CFG, activation="relu", clip_norm=None, lr=1e30)


def training_data(val_chars: int = 0) -> trainer.TrainingData:
    """The small text above as a run's data; its last val_chars characters validate."""
    vocab = data.Vocab.build(TEXT)
    tokens = vocab.encode(TEXT)
    cut = len(tokens) - val_chars
    val = (tokens[cut:], tokens[:cut])
    return trainer.TrainingData(Path("small.txt"), vocab, tokens[:cut], val, {"sha1": "0"})


class Sink:
    """Stands for every writer a run is handed (checkpoints, metrics.jsonl, progress, TensorBoard): keeps each call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args, **kw: self.calls.append((name, args, kw))

    def named(self, name: str) -> list[tuple]:
        return [(args, kw) for n, args, kw in self.calls if n == name]


def make_trainer(cfg=CFG, val_chars: int = 0) -> tuple[trainer.Trainer, dict[str, Sink]]:
    sinks = {name: Sink() for name in trainer.Outputs._fields}
    outputs = trainer.Outputs(**sinks)  # type: ignore[arg-type]
    t = trainer.Trainer(cfg, Path("unused"), training_data(val_chars), None, outputs, exp="tiny", prefixes=("the",))
    return t, sinks


@pytest.mark.slow
def test_the_trainer_records_and_checkpoints_what_it_is_handed():
    t, sinks = make_trainer(val_chars=120)
    trainer.loop(t, CFG)
    rows = [args[0] for args, _ in sinks["metrics"].named("write")]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all("val_perplexity" in r for r in rows)
    board = sinks["board"].named("write")
    assert [args[0] for args, _ in board] == rows and all(set(args[2]) == {"the"} for args, _ in board)
    assert [args[0] for args, _ in sinks["progress"].named("update")] == [r["perplexity"] for r in rows]
    saved = sinks["ckpts"].named("save")  # every validation checkpoints
    assert [args[0] for args, _ in saved] == [1, 2, 3]
    assert [kw["val_perplexity"] for _, kw in saved] == [r["val_perplexity"] for r in rows]
    assert saved[-1][0][2]["experiment"] == "tiny" and saved[-1][0][1]["epoch"] == 3
    t.close()
    assert sinks["ckpts"].named("close") and sinks["metrics"].named("close") and sinks["board"].named("close")
    summary = t.summary()
    assert summary["perplexity"] == rows[-1]["perplexity"] and set(summary["predictions"]) == {"the"}
    assert "baselines" not in summary  # the runner's, not the trainer's


@pytest.mark.slow
def test_without_validation_the_trainer_checkpoints_every_checkpoint_every_epochs_and_at_the_end():
    t, sinks = make_trainer()
    trainer.loop(t, CFG)
    assert [args[0] for args, _ in sinks["ckpts"].named("save")] == [2, 3]


@pytest.mark.slow
def test_a_diverging_run_writes_the_bad_steps_row_then_raises():
    t, sinks = make_trainer(DIVERGING)
    with pytest.raises(epochs.Diverged, match="diverged at epoch 1"):
        trainer.loop(t, DIVERGING)
    [(args, _)] = sinks["metrics"].named("write")
    assert args[0]["nonfinite"] and args[0]["epoch"] == 1
    assert not sinks["ckpts"].named("save")


class Recorder:
    """A `Steps` that records the loop's calls."""

    def __init__(self, start: int = 1):
        self.start, self.calls = start, list[tuple]()

    def batches(self, epoch):
        self.calls.append(("batches", epoch))
        return np.zeros((2, 3)), np.zeros((2, 3))

    def train(self, X, Y, lr_scale, epoch):
        self.calls.append(("train", epoch, lr_scale))
        return {}

    def rows(self, epoch, metrics, tokens, seconds):
        self.calls.append(("rows", epoch, tokens))
        return {"epoch": epoch}

    def validate(self, epoch, rows):
        self.calls.append(("validate", epoch))

    def record(self, epoch, rows):
        self.calls.append(("record", epoch))

    def checkpoint(self, epoch, rows, stopping):
        self.calls.append(("checkpoint", epoch, stopping))


def test_the_loop_runs_each_epoch_from_start_in_order_with_the_schedules_factor():
    cfg = dataclasses.replace(CFG, epochs=4, lr_schedule="cosine")
    rec = Recorder(start=3)
    trainer.loop(rec, cfg)
    expected = []
    for e in (3, 4):
        expected += [("batches", e), ("train", e, step_lib.lr_scale(cfg, e)), ("rows", e, 6)]
        expected += [("validate", e), ("record", e), ("checkpoint", e, False)]
    assert rec.calls == expected


class Stop:
    def __init__(self, after: int):
        self.after, self.epochs, self.received = after, 0, None

    def check(self, message):
        self.epochs += 1
        if self.epochs > self.after:
            self.received = "SIGTERM"


def test_a_signal_stops_the_loop_after_the_epochs_checkpoint():
    rec = Recorder()
    with pytest.raises(Interrupted, match=r"stopped by SIGTERM after epoch 2; its checkpoint is in run/checkpoints"):
        trainer.loop(rec, CFG, Stop(after=1), Path("run"))  # type: ignore[arg-type]
    assert rec.calls[-1] == ("checkpoint", 2, True) and ("batches", 3) not in rec.calls


@pytest.mark.slow
def test_a_vmapped_seed_equals_the_single_run_of_that_seed():
    cfg = dataclasses.replace(CFG, dropout=0.3, val_fraction=0.0)
    training = training_data(val_chars=120)
    seeds = trainer.Seeds(cfg, [0, 1], training.tokens, len(training.vocab), training.val)
    trainer.loop(seeds, cfg)
    t, sinks = make_trainer(dataclasses.replace(cfg, seed=1), val_chars=120)  # seed 1: its own masks, second slot
    trainer.loop(t, t.cfg)
    single = [args[0] for args, _ in sinks["metrics"].named("write")]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose([r[key] for r in seeds.rows_of[1]], [r[key] for r in single], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(seeds.params(1)), jax.tree.leaves(t.state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert seeds.rows_of[0] != seeds.rows_of[1]


@pytest.mark.slow
def test_a_diverging_vmapped_seed_keeps_its_nonfinite_row_and_is_left_out_after():
    training = training_data()
    seeds = trainer.Seeds(DIVERGING, [0, 1], training.tokens, len(training.vocab), None)
    trainer.loop(seeds, DIVERGING)
    for rows in seeds.rows_of:
        assert [(r["epoch"], r.get("nonfinite")) for r in rows] == [(1, True)]
