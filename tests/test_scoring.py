"""The scoring protocols: `windows` (nanoGPT's estimate_loss) against a hand loop, its draw, its figures."""

import dataclasses
import math

import jax
import numpy as np
import optax
import pytest

from rnn_jax import baselines, config, heldout, model, scoring
from rnn_jax import experiments as experiments_lib


@pytest.fixture(scope="module")
def lstm():
    """A random 2-layer LSTM (large weights, so the state matters) and its config."""
    cfg = dataclasses.replace(experiments_lib.BASE, cell="lstm", num_layers=2, hidden=24)
    spec = model.ModelSpec.from_config(cfg)
    params = jax.tree.map(lambda p: 30 * p, model.init_params(jax.random.key(1), 28, cfg.hidden, spec))
    tokens = np.asarray(jax.random.randint(jax.random.key(2), (700,), 1, 28), np.int32)
    return cfg, spec, params, tokens


def hand_loss(params, spec, window):
    """-ln P of each target of one window from a zero state: the textbook unroll, one step at a time."""
    step = jax.jit(lambda state, x_11: model.forward(params, state, x_11, spec))
    state, losses = model.zero_state(1, 24, spec), []
    for t in range(len(window) - 1):
        logits_11V, state = step(state, window[None, t : t + 1])
        losses.append(float(optax.softmax_cross_entropy_with_integer_labels(logits_11V[0, 0], window[t + 1])))
    return np.array(losses)


def test_windows_equal_a_hand_loop_over_each_window(lstm):
    cfg, spec, params, tokens = lstm
    got = heldout.window_losses(params, tokens, spec, windows=6, length=20, seed=3)
    starts = scoring.window_starts(len(tokens), 6, 20, 3)
    want = np.stack([hand_loss(params, spec, tokens[s : s + 21]) for s in starts])
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    r = heldout.evaluate_windows(params, tokens, spec, windows=6, length=20, seed=3)
    assert r["loss"] == pytest.approx(want.mean(), rel=1e-5) and r["tokens"] == 120
    assert r["se"] == pytest.approx(want.mean(1).std(ddof=1) / math.sqrt(6), rel=1e-4)
    assert r["by_position"]["0"] == pytest.approx(want[:, 0].mean(), rel=1e-5)
    assert r["by_position"]["10-19"] == pytest.approx(want[:, 10:].mean(), rel=1e-5)


def test_a_window_ignores_everything_before_it(lstm):
    cfg, spec, params, tokens = lstm
    start = scoring.window_starts(len(tokens), 1, 30, 5)[0]
    other = tokens.copy()
    other[:start] = (other[:start] + 7) % 27 + 1  # different text before the window, the same window
    a, b = (heldout.window_losses(params, t, spec, windows=1, length=30, seed=5) for t in (tokens, other))
    np.testing.assert_array_equal(a, b)
    stream = heldout.token_losses(params, tokens[: start + 31], spec)[start:]  # the same window with its past
    assert not np.allclose(a[0], stream, rtol=1e-3)  # so the past does change a stream's losses


def test_the_same_seed_draws_the_same_windows_and_every_window_fits():
    a = scoring.window_starts(1_000, 500, 256, seed=0)
    np.testing.assert_array_equal(a, scoring.window_starts(1_000, 500, 256, seed=0))
    assert not np.array_equal(a, scoring.window_starts(1_000, 500, 256, seed=1))
    assert a.min() >= 0 and a.max() + 256 <= 999  # the last target is inside the part
    assert set(scoring.window_starts(258, 200, 256)) == {0, 1}  # every start that fits is drawn


def test_windows_refuse_a_part_shorter_than_a_window():
    with pytest.raises(config.ConfigError, match="needs 257 tokens, and the part has 256"):
        scoring.window_starts(256, 10, 256)
    with pytest.raises(config.ConfigError, match="at least 1"):
        scoring.window_starts(1_000, 0, 256)


def test_counting_models_score_the_same_windows_from_an_empty_context():
    ids = np.asarray(np.random.default_rng(0).integers(0, 5, 3_000), np.int32)
    kn = baselines.fit_ngram(ids[:2_000], 5, 3)
    starts = scoring.window_starts(1_000, 4, 16, 0)
    got = baselines.window_losses(kn, ids[2_000:], starts, 16)
    for row, s in zip(got, starts, strict=True):
        window = ids[2_000 + s : 2_000 + s + 17]
        np.testing.assert_allclose(row, -baselines.log_probs(kn, window, 1))
        assert row[0] == pytest.approx(-baselines.log_probs(kn, window[:2], 1)[0])  # one character of context
    r = baselines.evaluate_baselines(
        ids[:2_000], ids[2_000:], 5, max_n=3, windows={"windows": 4, "length": 16, "seed": 0}
    )
    assert r["3-gram"]["loss"] == pytest.approx(got.mean()) and r["3-gram"]["protocol"] == "windows"
