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
    params["b_q"] = params["b_q"].at[0].set(-100.0)  # sampling never draws <unk>; keep greedy off it too
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


# ------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    from rnn_jax import config, train

    run = tmp_path_factory.mktemp("gen") / "run"
    cfg = config.dataclasses.replace(config.EXPERIMENTS["tiny"], hidden=32, epochs=3, predict_every=0)
    summary = train.run(cfg, run, data_dir=str(data_dir), quiet=True)
    return run, summary


def test_cli_greedy_equals_what_training_printed(run_dir, capsys):
    run, summary = run_dir
    for prefix, text in summary["predictions"].items():
        assert generate.main(["--run-dir", str(run), "--prefix", prefix, "--num-chars", "50", "--greedy"]) == 0
        assert capsys.readouterr().out == text + "\n"


def test_cli_samples_one_per_line_reproducibly(run_dir, capsys):
    run, _ = run_dir
    argv = ["--run-dir", str(run), "--prefix", "the", "--num-chars", "40", "--alpha", "0.5", "--num-samples", "3"]
    outs = []
    for seed in ("1", "1", "2"):
        assert generate.main([*argv, "--seed", seed]) == 0
        outs.append(capsys.readouterr().out.splitlines())
    assert outs[0] == outs[1] != outs[2]
    assert len(outs[0]) == 3 and all(line.startswith("the") and len(line) == 43 for line in outs[0])


def test_cli_unknown_and_empty_prefixes(run_dir, capsys):
    run, _ = run_dir
    assert generate.main(["--run-dir", str(run), "--prefix", "The 2", "--num-chars", "5"]) == 0
    captured = capsys.readouterr()
    assert "'T', '2'" in captured.err and "<unk>" in captured.err
    assert captured.out.startswith("The 2") and len(captured.out.strip("\n")) == 10
    assert generate.main(["--run-dir", str(run), "--prefix", "", "--num-chars", "7"]) == 0
    assert len(capsys.readouterr().out.strip("\n")) == 7


@pytest.mark.parametrize("argv,message", [
    (["--temperature", "0"], "must be positive"),
    (["--top-k", "3"], "applies to sampling"),
    (["--num-chars", "0"], "at least 1"),
])
def test_cli_rejects_bad_options(run_dir, capsys, argv, message):
    assert generate.main(["--run-dir", str(run_dir[0]), *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_missing_run_directory(tmp_path, capsys):
    assert generate.main(["--run-dir", str(tmp_path / "nope")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
