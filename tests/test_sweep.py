import dataclasses

import numpy as np
import pytest

from rnn_jax import data, files, sweep, train
from rnn_jax import experiments as experiments_lib

CFG = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], epochs=3, max_tokens=800, predict_every=0)
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def separate(tmp_path_factory, data_dir):
    """Each seed as its own ordinary single-seed run: the reference."""
    root = tmp_path_factory.mktemp("separate")
    out = {}
    for s in SEEDS:
        train.run(
            train.RunRequest(
                dataclasses.replace(CFG, seed=s), root / str(s), data_dir=str(data_dir), exp="tiny", quiet=True
            )
        )
        out[s] = [r["perplexity"] for r in files.read_metrics(root / str(s))]
    return out


@pytest.mark.slow
def test_processes_mode_equals_separate_runs(tmp_path, data_dir, separate):
    records = sweep.run_processes("tiny", CFG, SEEDS, tmp_path, data_dir=str(data_dir))
    assert [r["seed"] for r in records] == SEEDS
    for r in records:
        assert r["curve"] == separate[r["seed"]]  # the same program: bit-identical
        assert r["diverged_epoch"] is None and r["predictions"]["time traveller"].startswith("time traveller")
    assert separate[0] != separate[1]


@pytest.mark.slow
def test_vmap_mode_equals_separate_runs(data_dir, separate):
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt", CFG.max_tokens)
    records = sweep.run_vmap(CFG, SEEDS, tokens, vocab)
    assert [r["seed"] for r in records] == SEEDS
    for r in records:
        np.testing.assert_allclose(r["curve"], separate[r["seed"]], rtol=1e-5)


@pytest.mark.slow
def test_vmap_mode_follows_the_schedule_like_a_single_run(tmp_path, data_dir, separate):
    cfg = dataclasses.replace(CFG, lr_schedule="cosine")
    train.run(train.RunRequest(cfg, tmp_path / "one", data_dir=str(data_dir), exp="tiny", quiet=True))
    single = [r["perplexity"] for r in files.read_metrics(tmp_path / "one")]
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt", CFG.max_tokens)
    [record] = sweep.run_vmap(cfg, [0], tokens, vocab)
    np.testing.assert_allclose(record["curve"], single, rtol=1e-5)
    assert single[0] == separate[0][0] and single[-1] != separate[0][-1]  # the factor is 1 in epoch 1 only


@pytest.mark.slow
def test_a_diverging_seed_is_recorded_not_averaged(tmp_path, data_dir):
    diverging = dataclasses.replace(CFG, activation="relu", clip_norm=None, lr=1e30)
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt", CFG.max_tokens)
    by_mode = {
        "processes": sweep.run_processes("tiny", diverging, [0], tmp_path, data_dir=str(data_dir)),
        "vmap": sweep.run_vmap(diverging, [0], tokens, vocab),
    }
    for mode, records in by_mode.items():
        assert records[0]["diverged_epoch"] == 1 and records[0]["perplexity"] is None, mode
    summary = sweep.summarize(
        [
            *by_mode["vmap"],
            {**by_mode["vmap"][0], "seed": 5, "diverged_epoch": None, "perplexity": 2.0, "tokens_per_sec": 10.0},
        ]
    )
    assert summary["diverged"] == [[0, 1]] and summary["perplexity"] == {"mean": 2.0, "std": 0.0, "n": 1}


def test_summary_is_mean_and_sample_std():
    recs = [{"seed": s, "diverged_epoch": None, "perplexity": p} for s, p in enumerate([1.0, 2.0, 3.0])]
    assert sweep.summarize(recs)["perplexity"] == {"mean": 2.0, "std": 1.0, "n": 3}


def test_a_finite_blow_up_counts_as_divergence():
    rows = [{"epoch": 1, "perplexity": 20.0}, {"epoch": 2, "perplexity": 47.0}, {"epoch": 3, "perplexity": 2.0}]
    assert sweep.divergence_epoch(rows, 28) == 2  # worse than a uniform guess over 28 characters
    assert sweep.divergence_epoch(rows, 50) is None
    assert sweep.divergence_epoch([{"epoch": 4, "nonfinite": True}], 28) == 4


@pytest.mark.slow
def test_each_vmapped_seed_draws_its_own_dropout_masks(tmp_path, data_dir):
    """Seed k of a vmapped sweep with dropout follows the standalone run of seed k (its masks come from k)."""
    cfg = dataclasses.replace(CFG, dropout=0.5, weight_drop=0.3)
    single = {}
    for s in SEEDS:
        train.run(
            train.RunRequest(
                dataclasses.replace(cfg, seed=s), tmp_path / str(s), data_dir=str(data_dir), exp="tiny", quiet=True
            )
        )
        single[s] = [r["perplexity"] for r in files.read_metrics(tmp_path / str(s))]
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt", CFG.max_tokens)
    records = sweep.run_vmap(cfg, SEEDS, tokens, vocab)
    assert [r["seed"] for r in records] == SEEDS and single[0] != single[1]
    for r in records:
        np.testing.assert_allclose(r["curve"], single[r["seed"]], rtol=1e-5)
