"""A finished run's scores kept in its directory (experiments/scored.py): once per checkpoint, setting and protocol,
under a lock, and scored again when a cache cannot be read or was drawn otherwise."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from experiments import scored
from experiments.heldout import parts
from rnn_jax import data, testlog, train
from rnn_jax import experiments as experiments_lib

DRAW = {"windows": 32, "length": 16, "seed": 0}


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    """A small model of the book with validation and test parts, and the parts as the experiment scripts cut them."""
    cfg = dataclasses.replace(
        experiments_lib.BASE,
        hidden=16,
        epochs=1,
        val_fraction=0.1,
        test_fraction=0.1,
        max_tokens=20_000,
        predict_every=0,
    )
    run_dir = tmp_path_factory.mktemp("scored") / "lstm" / "seed_0"
    train.run(train.RunRequest(cfg, run_dir, data_dir=str(data_dir), exp="small", quiet=True))
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt", -1, cfg.preprocess)
    return run_dir, {**parts(tokens, vocab, cfg), "draw": DRAW}


def test_each_part_is_scored_once_per_protocol_and_logged(run, test_log):
    run_dir, text = run
    loss = scored.score(run_dir, "test", text, None, best=False, corpus="timemachine")
    assert scored.score(run_dir, "test", text, None, best=False, corpus="timemachine") == loss
    w = scored.window_losses(run_dir, "test", text, best=False, corpus="timemachine", draw=DRAW)
    again = scored.window_losses(run_dir, "test", text, best=False, corpus="timemachine", draw=DRAW)
    np.testing.assert_array_equal(w, again)
    assert w.shape == (32, 16)
    assert [r["protocol"] for r in testlog.read(test_log)] == ["stream", "windows"]
    other = scored.window_losses(run_dir, "test", text, best=False, corpus="timemachine", draw={**DRAW, "seed": 1})
    assert not np.array_equal(other, w)  # another draw is another scoring, logged as such
    assert len(testlog.read(test_log)) == 3


def test_an_unreadable_cache_is_set_aside_and_scored_again(run, capsys):
    run_dir, text = run
    want = scored.score(run_dir, "val", text, None, best=False, corpus="timemachine")
    (run_dir / "scores.json").write_text('{"torn": ')
    assert scored.score(run_dir, "val", text, None, best=False, corpus="timemachine") == pytest.approx(want)
    assert "is not a list of scores" in capsys.readouterr().err
    assert (run_dir / "scores.unreadable.json").read_text() == '{"torn": '
    nll = scored.token_losses(run_dir, "val", text, best=False, corpus="timemachine")
    path = run_dir / "token_losses_val.npz"
    path.write_bytes(path.read_bytes()[:100])  # truncated
    np.testing.assert_array_equal(scored.token_losses(run_dir, "val", text, best=False, corpus="timemachine"), nll)
    assert "cannot be read" in capsys.readouterr().err


SCORE = """
import sys
from experiments import scored
from experiments.heldout import parts
from rnn_jax import config, data
cfg = config.from_dict(__import__("json").load(open(sys.argv[1] + "/config.json"))["config"])
tokens, vocab = data.load_corpus(sys.argv[2], -1, cfg.preprocess)
text = {**parts(tokens, vocab, cfg), "draw": {"windows": 32, "length": 16, "seed": 5}}
scored.window_losses(__import__("pathlib").Path(sys.argv[1]), "test", text, best=False, corpus="t", draw=text["draw"])
"""


@pytest.mark.slow
def test_two_processes_never_score_the_same_test_part_twice(run, data_dir, test_log):
    run_dir, _ = run
    argv = [sys.executable, "-c", SCORE, str(run_dir), str(data_dir / "timemachine.txt")]
    procs = [subprocess.Popen(argv) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    rows = [json.loads(line) for line in test_log.read_text().splitlines()]
    assert [r["protocol"] for r in rows] == ["windows"]  # the second process found the first one's scores
