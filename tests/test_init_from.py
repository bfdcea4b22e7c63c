"""Starting a run from another run's parameters, the state-reset switch, chained experiments (the book's
code path for its random-sampling result), the prompts of training's predictions, and what a resume refuses."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import config, data, train
from rnn_jax import experiments as experiments_lib
from rnn_jax import step as step_lib
from rnn_jax.files import read_metrics

TINY = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], max_tokens=600, predict_every=0, epochs=2)


def params_of(run_dir):
    with np.load(run_dir / "params.npz") as f:
        return dict(f)


def cli(*argv):
    return train.main([*argv, "--quiet"])


@pytest.fixture(scope="module")
def source(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("src") / "run"
    train.run(train.RunRequest(TINY, run, data_dir=str(data_dir), exp="tiny", quiet=True))
    return run


@pytest.mark.slow
def test_init_from_starts_from_the_source_parameters_with_a_fresh_optimizer(source, data_dir, tmp_path):
    cfg = dataclasses.replace(TINY, epochs=1, lr=1e-30)  # a step this small leaves the parameters as they were
    train.run(
        train.RunRequest(cfg, tmp_path / "ft", data_dir=str(data_dir), exp="tiny", quiet=True, init_from=str(source))
    )
    for name, value in params_of(source).items():
        np.testing.assert_allclose(params_of(tmp_path / "ft")[name], value, rtol=1e-6, err_msg=name)
    saved = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert saved["init_from"]["run"] == str(source.resolve()) and saved["init_from"]["checkpoint"] == "latest"
    assert saved["init_from"]["config"]["hidden"] == TINY.hidden
    first = read_metrics(tmp_path / "ft")[0]["loss"]
    fresh = read_metrics(source)[0]["loss"]
    assert first < fresh  # it continues where the source ended, far from a fresh model's first epoch
    assert read_metrics(tmp_path / "ft")[0]["step"] < read_metrics(source)[-1]["step"]  # fresh count


@pytest.mark.slow
def test_init_from_refuses_another_shape_or_vocabulary(source, data_dir, tmp_path, capsys):
    assert (
        cli(
            "--exp",
            "tiny",
            "--hidden",
            "8",
            "--init-from",
            str(source),
            "--run-dir",
            str(tmp_path / "a"),
            "--data-dir",
            str(data_dir),
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "W_hh: (16, 16) (expected (8, 8))" in err and "--hidden" in err
    assert not (tmp_path / "a").exists()
    assert (
        cli(
            "--exp",
            "tiny",
            "--preprocess",
            "raw",
            "--init-from",
            str(source),
            "--run-dir",
            str(tmp_path / "b"),
            "--corpus",
            str(data_dir / "timemachine.txt"),
        )
        == 2
    )
    assert "vocabulary (28 tokens) differs from this corpus's" in capsys.readouterr().err
    assert (
        cli(
            "--exp",
            "tiny",
            "--init-from",
            str(tmp_path / "nowhere"),
            "--run-dir",
            str(tmp_path / "c"),
            "--data-dir",
            str(data_dir),
        )
        == 2
    )
    assert "is not a run directory" in capsys.readouterr().err
    assert cli("--exp", "tiny", "--init-from-best", "--run-dir", str(tmp_path / "d"), "--data-dir", str(data_dir)) == 2
    assert "--init-from-best goes with --init-from" in capsys.readouterr().err


@pytest.mark.slow
def test_reset_state_zeroes_every_minibatch_of_sequential_windows():
    cfg = dataclasses.replace(TINY, reset_state=True)
    assert config.resets_state(cfg) and not config.resets_state(TINY)
    assert config.resets_state(dataclasses.replace(TINY, sampling="random"))
    tx = step_lib.make_optimizer(cfg)
    X, Y = data.epoch_batches(np.arange(600) % 28, cfg, 1)
    got = step_lib.make_train_epoch(cfg, tx)(step_lib.init_state(cfg, 28, tx), X, Y)[2]["loss"]
    carried = step_lib.make_train_epoch(TINY, tx)(step_lib.init_state(TINY, 28, tx), X, Y)[2]["loss"]
    ref, step = step_lib.init_state(cfg, 28, tx), step_lib.make_train_step(cfg, tx)
    for i in range(len(X)):
        ref, _, m = step(ref, step_lib.zero_state(cfg, cfg.batch_size), X[i], Y[i])
        np.testing.assert_allclose(got[i], m["loss"], rtol=1e-6)
    assert got[0] == carried[0] and not np.allclose(got[1:], carried[1:])


@pytest.mark.slow
def test_a_skipped_update_restarts_the_carried_state_in_step_and_epoch_alike():
    tx = step_lib.make_optimizer(TINY)
    state = step_lib.init_state(TINY, 28, tx)
    state = state._replace(params={**state.params, "W_hq": state.params["W_hq"].at[0, 0].set(jnp.nan)})
    X, Y = data.epoch_batches(np.arange(600) % 28, TINY, 1)
    h_BH = jnp.ones((TINY.batch_size, TINY.hidden))
    _, h_step, m = step_lib.make_train_step(TINY, tx)(jax.tree.map(jnp.copy, state), h_BH, X[0], Y[0])  # donated
    _, h_epoch, m_epoch = step_lib.make_train_epoch(TINY, tx)(state, X, Y)
    assert not m["finite"] and not m_epoch["finite"].any()
    np.testing.assert_array_equal(h_step, np.zeros_like(h_BH))
    np.testing.assert_array_equal(h_epoch, np.zeros_like(h_BH))


@pytest.mark.slow
def test_book_random_chain_continues_the_sequential_model_with_resets(data_dir, tmp_path):
    argv = [
        "--exp",
        "book_random",
        "--hidden",
        "16",
        "--batch-size",
        "2",
        "--num-steps",
        "6",
        "--max-tokens",
        "600",
        "--epochs",
        "2",
        "--run-dir",
        str(tmp_path / "chain"),
        "--data-dir",
        str(data_dir),
    ]
    assert cli(*argv) == 0
    seq, reset = tmp_path / "chain" / "seq", tmp_path / "chain" / "seq_reset"
    saved = json.loads((reset / "config.json").read_text())
    assert saved["init_from"]["run"] == str(seq.resolve()) and saved["config"]["reset_state"] is True
    assert saved["config"]["sampling"] == "seq" and saved["experiment"] == "seq_reset"
    assert read_metrics(reset)[0]["loss"] < read_metrics(seq)[0]["loss"]
    before = (reset / "metrics.jsonl").read_text()
    assert cli(*argv) == 0  # both stages finished: running it again changes nothing
    assert (reset / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_predictions_use_the_texts_own_opening_words_or_the_given_prompts(data_dir, tmp_path):
    wotw = data_dir / "war_of_the_worlds.txt"
    cfg = dataclasses.replace(TINY, preprocess="raw", epochs=1)
    summary = train.run(train.RunRequest(cfg, tmp_path / "w", corpus=str(wotw), exp="tiny", quiet=True))
    opening = data.load_text(wotw, "raw").split()[:2]
    assert list(summary["predictions"]) == [" ".join(opening), opening[1]]
    assert not any("traveller" in p for p in summary["predictions"])
    assert (
        cli(
            "--exp",
            "tiny",
            "--epochs",
            "1",
            "--max-tokens",
            "600",
            "--predict-prefix",
            "the time",
            "--predict-prefix",
            "machine",
            "--run-dir",
            str(tmp_path / "p"),
            "--data-dir",
            str(data_dir),
        )
        == 0
    )
    assert list(json.loads((tmp_path / "p" / "summary.json").read_text())["predictions"]) == ["the time", "machine"]
    assert json.loads((tmp_path / "p" / "config.json").read_text())["predict_prefixes"] == ["the time", "machine"]
    book = train.run(train.RunRequest(TINY, tmp_path / "b", data_dir=str(data_dir), exp="tiny", quiet=True))
    assert list(book["predictions"]) == list(train.PREFIXES)


@pytest.mark.slow
def test_resume_refuses_another_backward_with_bfloat16(data_dir, tmp_path, capsys):
    run = tmp_path / "bf"
    assert (
        cli(
            "--exp",
            "tiny",
            "--max-tokens",
            "600",
            "--epochs",
            "1",
            "--matmul-dtype",
            "bfloat16",
            "--run-dir",
            str(run),
            "--data-dir",
            str(data_dir),
        )
        == 0
    )
    assert cli("--run-dir", str(run), "--resume", "--epochs", "2", "--backward", "autodiff") == 2
    assert "--backward autodiff" in capsys.readouterr().err
    assert cli("--run-dir", str(run), "--resume", "--epochs", "2") == 0


@pytest.mark.slow
def test_bf16_backwards_differ_so_the_refusal_is_needed():
    cfg = dataclasses.replace(TINY, matmul_dtype="bfloat16")
    X, Y = data.epoch_batches(np.arange(600) % 28, cfg, 1)
    losses = {}
    for backward in ("fused", "autodiff"):
        c = dataclasses.replace(cfg, backward=backward)
        tx = step_lib.make_optimizer(c)
        losses[backward] = jax.device_get(step_lib.make_train_epoch(c, tx)(step_lib.init_state(c, 28, tx), X, Y)[2])
    assert not np.array_equal(losses["fused"]["loss"], losses["autodiff"]["loss"])
