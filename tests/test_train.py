import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from rnn_jax import data, model, train
from rnn_jax import experiments as experiments_lib
from rnn_jax import step as step_lib

TINY = experiments_lib.EXPERIMENTS["tiny"]


def batches(cfg, n=3, vocab=28, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(1, vocab, (n, cfg.batch_size, cfg.num_steps), dtype=np.int32)
    return X, np.roll(X, -1, axis=-1)


@pytest.mark.slow
def test_loss_at_initialisation_is_close_to_ln_vocab(data_dir):
    cfg = experiments_lib.BASE
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt", cfg.max_tokens)
    X, Y = data.epoch_batches(tokens, cfg, 1)
    state = step_lib.init_state(cfg, len(vocab), step_lib.make_optimizer(cfg))
    loss, _ = step_lib.loss_fn(state.params, model.init_hidden(cfg.batch_size, cfg.hidden), X[0], Y[0], cfg)
    assert abs(float(loss) - math.log(28)) < 0.01


@pytest.mark.slow
def test_short_real_run_beats_the_unigram_level(data_dir, tmp_path):
    cfg = dataclasses.replace(experiments_lib.BASE, epochs=30, predict_every=0)
    summary = train.run(train.RunRequest(cfg, tmp_path / "run", data_dir=str(data_dir), exp="seq", quiet=True))
    assert summary["perplexity"] < 12.0  # a letter-frequency model is stuck near 17.4
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 31))
    assert rows[-1]["perplexity"] < rows[0]["perplexity"]
    assert {"epoch", "perplexity", "loss", "tokens_per_sec"} <= set(rows[0])


@pytest.mark.slow
def test_same_seed_same_numbers_other_seed_other_numbers(data_dir, tmp_path):
    cfg = dataclasses.replace(TINY, epochs=3, predict_every=0)
    runs = [
        train.run(
            train.RunRequest(dataclasses.replace(cfg, seed=s), tmp_path / f"r{i}", data_dir=str(data_dir), quiet=True)
        )
        for i, s in enumerate([0, 0, 1])
    ]
    losses = [[r["loss"] for r in _rows(tmp_path / f"r{i}")] for i in range(3)]
    assert losses[0] == losses[1] != losses[2]
    assert runs[0]["predictions"] == runs[1]["predictions"]


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_cli_writes_the_run_directory(data_dir, tmp_path, capsys):
    rc = train.main(
        [
            "--exp",
            "tiny",
            "--epochs",
            "3",
            "--hidden",
            "8",
            "--data-dir",
            str(data_dir),
            "--run-dir",
            str(tmp_path / "run"),
            "--predict-every",
            "1",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert f"tokens/sec on {jax.devices()[0].platform}" in out and "\ntime traveller" in out and "epoch 3/3" in out
    run = tmp_path / "run"
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["hidden"] == 8 and saved["experiment"] == "tiny"
    assert saved["environment"]["jax"] == jax.__version__
    assert data.Vocab.load(run / "vocab.json").idx_to_token[:3] == ["<unk>", " ", "e"]
    assert (run / "perplexity.png").stat().st_size > 1000
    assert set(np.load(run / "params.npz").files) == {"W_xh", "W_hh", "b_h", "W_hq", "b_q"}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--exp", "nope"], "unknown experiment 'nope'"),
        (["--batch-size", "0"], "batch_size must be a positive integer"),
        (["--lr", "-1"], "lr must be positive"),
        (["--clip-norm", "0"], "clip_norm must be positive"),
        (["--max-tokens", "100"], "too few for one minibatch"),
        (["--num-steps", "0"], "num_steps must be a positive integer"),
        (["--hidden", "-5"], "hidden must be a positive integer"),
        (["--epochs", "0"], "epochs must be a positive integer"),
        (["--clip-norm", "-1"], "clip_norm must be positive"),
        (["--val-fraction", "1.5"], "val_fraction must be in [0, 1)"),
        (["--corpus", "LATIN1"], "is not valid UTF-8"),
        (["--corpus", "MISSING"], "no such file"),
        (["--data-dir", "EMPTY"], "timemachine.txt does not exist"),
    ],
)
def test_cli_bad_input_is_a_clear_error(data_dir, tmp_path, capsys, argv, message):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 2000)
    (tmp_path / "empty").mkdir()
    paths = {"LATIN1": tmp_path / "latin1.txt", "MISSING": tmp_path / "missing.txt", "EMPTY": tmp_path / "empty"}
    argv = [str(paths.get(a, a)) for a in argv]
    if "--data-dir" not in argv:
        argv += ["--data-dir", str(data_dir)]
    rc = train.main(argv + ["--run-dir", str(tmp_path / "r")])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv", [["--hidden", "many"], ["--sampling", "sideways"], ["--bogus", "1"]])
def test_cli_wrong_types_and_unknown_flags_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_divergence_stops_with_the_epoch_and_step(data_dir, tmp_path, capsys):
    rc = train.main(
        [
            "--exp",
            "tiny",
            "--activation",
            "relu",
            "--clip-norm",
            "none",
            "--lr",
            "1e30",
            "--epochs",
            "3",
            "--data-dir",
            str(data_dir),
            "--run-dir",
            str(tmp_path / "r"),
        ]
    )
    assert rc == 3
    err = capsys.readouterr().err
    assert "diverged at epoch 1, step" in err and "--clip-norm" in err
    last = _rows(tmp_path / "r")[-1]
    assert last["nonfinite"] is True and last["epoch"] == 1
