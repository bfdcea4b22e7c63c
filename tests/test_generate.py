import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import data, generate, model

VOCAB = data.Vocab(["<unk>"] + list(" abcdefghijklmnopqrstuvwxyz"))
V = len(VOCAB)


def successor_params(gain=20.0):
    """A model whose next character after id i is certainly id i+1 (mod V): h = one_hot(x), W_hq shifts."""
    eye = jnp.eye(V)
    return {"W_xh": gain * eye, "W_hh": jnp.zeros((V, V)), "b_h": jnp.zeros(V),
            "W_hq": gain * jnp.roll(eye, 1, axis=1), "b_q": jnp.zeros(V)}


def random_params(key, hidden=32):
    params = model.init_params(key, V, hidden)
    return jax.tree.map(lambda p: 60 * p, params)  # far from uniform, so argmax is decisive


def test_greedy_prediction_on_a_model_with_known_choices():
    params = successor_params()
    assert generate.predict(params, VOCAB, "ab", 5) == "abcdefg"
    assert generate.predict(params, VOCAB, "x", 4) == "xyz<unk> "


def test_warm_up_uses_the_prefix_state(key):
    # a model that copies the character two steps back: only a warmed-up state can know it
    eye = jnp.eye(V)
    params = {"W_xh": 20 * jnp.concatenate([eye, 0 * eye], 1), "W_hh": jnp.block([[0 * eye, eye], [0 * eye, 0 * eye]]),
              "b_h": jnp.zeros(2 * V), "W_hq": 20 * jnp.concatenate([0 * eye, eye]), "b_q": jnp.zeros(V)}
    params = {**params, "W_hh": params["W_hh"] * 20}
    assert generate.predict(params, VOCAB, "ab", 6) == "abababab"


def test_scan_generation_equals_the_books_per_character_loop(key):
    params = random_params(key)
    for prefix in ["time traveller", "t", "the "]:
        assert generate.predict(params, VOCAB, prefix, 40) == generate.predict_loop(params, VOCAB, prefix, 40)


def test_empty_prefix_is_refused():
    with pytest.raises(ValueError, match="non-empty prefix"):
        generate.predict(successor_params(), VOCAB, "", 3)


def test_sampling_is_reproducible_by_key_and_batched(key):
    params = model.init_params(key, V, 16)  # near-uniform: samples vary
    prefix = jnp.asarray(VOCAB.encode("the"))
    kw = dict(num_chars=30, num_samples=4, temperature=1.0)
    a = generate.generate_ids(params, prefix, jax.random.key(1), **kw)
    b = generate.generate_ids(params, prefix, jax.random.key(1), **kw)
    c = generate.generate_ids(params, prefix, jax.random.key(2), **kw)
    assert a.shape == (4, 30)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({tuple(row) for row in np.asarray(a)}) > 1  # the samples of one call differ


def test_low_temperature_equals_greedy(key):
    params = random_params(key)
    prefix = jnp.asarray(VOCAB.encode("time"))
    greedy = generate.generate_ids(params, prefix, key, num_chars=30)
    cold = generate.generate_ids(params, prefix, jax.random.key(5), num_chars=30, temperature=1e-4)
    np.testing.assert_array_equal(greedy, cold)


def test_top_k_never_leaves_the_top_k(key):
    params = model.init_params(key, V, 16)
    params = {**params, "W_hh": jnp.zeros_like(params["W_hh"]), "W_xh": jnp.zeros_like(params["W_xh"]),
              "b_q": jnp.arange(V, dtype=jnp.float32) * 0.01}  # fixed distribution: top 3 are the last ids
    ids = generate.generate_ids(params, jnp.asarray(VOCAB.encode("a")), key, num_chars=200, num_samples=8,
                                temperature=5.0, top_k=3)
    assert set(np.unique(ids)) == {V - 3, V - 2, V - 1}
