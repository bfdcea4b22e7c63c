import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import data, generate, model
from rnn_jax import experiments as experiments_lib

VOCAB = data.Vocab(["<unk>"] + list(" abcdefghijklmnopqrstuvwxyz"))
V = len(VOCAB)


def successor_params(gain=20.0):
    """A model whose next character after id i is certainly id i+1 (mod V): h = one_hot(x), W_hq shifts."""
    eye = jnp.eye(V)
    return {
        "W_xh": gain * eye,
        "W_hh": jnp.zeros((V, V)),
        "b_h": jnp.zeros(V),
        "W_hq": gain * jnp.roll(eye, 1, axis=1),
        "b_q": jnp.zeros(V),
    }


def random_params(key, hidden=32):
    params = model.init_params(key, V, hidden)
    return jax.tree.map(lambda p: 60 * p, params)  # far from uniform, so argmax is decisive


@pytest.mark.slow
def test_greedy_prediction_on_a_model_with_known_choices():
    params = successor_params()
    assert generate.predict(params, VOCAB, "ab", 5) == "abcdefg"
    assert generate.predict(params, VOCAB, "x", 4) == "xyz<unk> "


@pytest.mark.slow
def test_warm_up_uses_the_prefix_state(key):
    # a model that copies the character two steps back: only a warmed-up state can know it
    eye = jnp.eye(V)
    params = {
        "W_xh": 20 * jnp.concatenate([eye, 0 * eye], 1),
        "W_hh": jnp.block([[0 * eye, eye], [0 * eye, 0 * eye]]),
        "b_h": jnp.zeros(2 * V),
        "W_hq": 20 * jnp.concatenate([0 * eye, eye]),
        "b_q": jnp.zeros(V),
    }
    params = {**params, "W_hh": params["W_hh"] * 20}
    assert generate.predict(params, VOCAB, "ab", 6) == "abababab"


@pytest.mark.slow
def test_scan_generation_equals_the_books_per_character_loop(key):
    params = random_params(key)
    for prefix in ["time traveller", "t", "the "]:
        assert generate.predict(params, VOCAB, prefix, 40) == generate.predict_loop(params, VOCAB, prefix, 40)


def test_empty_prefix_is_refused():
    with pytest.raises(ValueError, match="non-empty prefix"):
        generate.predict(successor_params(), VOCAB, "", 3)


@pytest.mark.slow
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


@pytest.mark.slow
def test_low_temperature_equals_greedy(key):
    params = random_params(key)
    params["b_q"] = params["b_q"].at[0].set(-100.0)  # sampling never draws <unk>; keep greedy off it too
    prefix = jnp.asarray(VOCAB.encode("time"))
    greedy = generate.generate_ids(params, prefix, key, num_chars=30)
    cold = generate.generate_ids(params, prefix, jax.random.key(5), num_chars=30, temperature=1e-4)
    np.testing.assert_array_equal(greedy, cold)


@pytest.mark.slow
def test_top_k_never_leaves_the_top_k(key):
    params = model.init_params(key, V, 16)
    params = {
        **params,
        "W_hh": jnp.zeros_like(params["W_hh"]),
        "W_xh": jnp.zeros_like(params["W_xh"]),
        "b_q": jnp.arange(V, dtype=jnp.float32) * 0.01,
    }  # fixed distribution: top 3 are the last ids
    ids = generate.generate_ids(
        params, jnp.asarray(VOCAB.encode("a")), key, num_chars=200, num_samples=8, temperature=5.0, top_k=3
    )
    assert set(np.unique(ids)) == {V - 3, V - 2, V - 1}


@pytest.mark.slow
def test_top_k_keeps_exactly_k_candidates_when_logits_tie(key):
    logits_SV = jnp.broadcast_to(jnp.asarray([0.0, 1, 1, 1, 1, 0.5]), (2000, 6))  # four ids tie for the top
    drawn = np.asarray(generate._choose(logits_SV, key, 1.0, 2))
    assert set(np.unique(drawn)) == {1, 2}  # exactly two ids, the tie broken by id


@pytest.mark.slow
def test_huge_temperature_is_uniform_and_still_never_unk(key):
    logits_SV = jnp.broadcast_to(jnp.arange(6.0), (2000, 6))
    drawn = np.asarray(generate._choose(logits_SV, key, 1e38, 0))
    assert set(np.unique(drawn)) == {1, 2, 3, 4, 5}


@pytest.mark.slow
def test_predict_and_the_books_loop_agree_on_unknown_prefix_characters(key):
    params = random_params(key)
    params["b_q"] = params["b_q"].at[0].set(-100.0)  # no generated <unk>, so each new character is one char
    for prefix in ["The Time-2", "?", "a\nB"]:
        text = generate.predict(params, VOCAB, prefix, 20)
        assert text == generate.predict_loop(params, VOCAB, prefix, 20)
        assert text.startswith(prefix) and len(text) == len(prefix) + 20  # the prefix as given, then 20 chars
    with pytest.raises(ValueError, match="non-empty prefix"):
        generate.predict_loop(params, VOCAB, "", 3)


@pytest.mark.parametrize(
    "prompt,mode,cleaned",
    [
        ("time traveller", "book", "time traveller"),
        ("Time Traveller", "book", "time traveller"),
        ("The Time Traveller, ", "book", "the time traveller "),  # the final word boundary is kept
        ("The 2", "book", "the "),
        ("one\ntwo", "book", "onetwo"),  # the book joins its cleaned lines with ''
        ("42", "book", ""),
        ("The  Time\nTraveller", "raw", "The Time Traveller"),
        ("said: ", "raw", "said: "),
    ],
)
def test_prompts_are_cleaned_like_the_training_text(prompt, mode, cleaned):
    assert generate.clean_prompt(prompt, mode) == cleaned


# ------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    from rnn_jax import config, train

    run = tmp_path_factory.mktemp("gen") / "run"
    cfg = config.dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], hidden=32, epochs=3, predict_every=0)
    summary = train.run(train.RunRequest(cfg, run, data_dir=str(data_dir), quiet=True))
    return run, summary


@pytest.mark.slow
def test_cli_greedy_equals_what_training_printed(run_dir, capsys):
    run, summary = run_dir
    for prefix, text in summary["predictions"].items():
        assert generate.main(["--run-dir", str(run), "--prefix", prefix, "--num-chars", "50", "--greedy"]) == 0
        assert capsys.readouterr().out == text + "\n"


@pytest.mark.slow
def test_cli_samples_one_per_line_reproducibly(run_dir, capsys):
    run, _ = run_dir
    argv = ["--run-dir", str(run), "--prefix", "the", "--num-chars", "40", "--alpha", "0.5", "--num-samples", "3"]
    outs = []
    for seed in ("1", "1", "2"):
        assert generate.main([*argv, "--seed", seed]) == 0
        outs.append(capsys.readouterr().out.splitlines())
    assert outs[0] == outs[1] != outs[2]
    assert len(outs[0]) == 3 and all(line.startswith("the") and len(line) == 43 for line in outs[0])


@pytest.mark.slow
def test_cli_cleans_a_prompt_like_the_training_text(run_dir, capsys):
    run, _ = run_dir
    argv = ["--run-dir", str(run), "--num-chars", "20"]
    assert generate.main([*argv, "--prefix", "time traveller"]) == 0
    plain = capsys.readouterr()
    assert plain.err == ""
    assert generate.main([*argv, "--prefix", "Time Traveller"]) == 0
    captured = capsys.readouterr()
    assert "cleaned" in captured.err and "'Time Traveller' -> 'time traveller'" in captured.err
    assert "<unk>" not in captured.err and captured.out == plain.out  # capitals are not <unk>


@pytest.mark.slow
def test_cli_reads_a_prompt_file(run_dir, tmp_path, capsys):
    run, _ = run_dir
    argv = ["--run-dir", str(run), "--num-chars", "20"]
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The Time Traveller (for so it will be\nconvenient to speak of him)\n", encoding="utf-8")
    assert generate.main([*argv, "--prefix-file", str(prompt)]) == 0
    captured = capsys.readouterr()
    cleaned = "the time traveller for so it will beconvenient to speak of him "  # the book's per-line cleaning
    assert "cleaned" in captured.err and captured.out.startswith(cleaned)
    assert generate.main([*argv, "--prefix", cleaned]) == 0
    assert capsys.readouterr().out == captured.out


@pytest.mark.slow
def test_cli_reports_characters_unknown_after_cleaning(run_dir, tmp_path, capsys):
    run, _ = run_dir
    raw = tmp_path / "raw"  # the same model, said to have kept case and digits: cleaning leaves 'T' and '2'
    shutil.copytree(run, raw)
    saved = json.loads((raw / "config.json").read_text())
    saved["config"]["preprocess"] = "raw"
    (raw / "config.json").write_text(json.dumps(saved))
    assert generate.main(["--run-dir", str(raw), "--prefix", "The 2", "--num-chars", "5"]) == 0
    captured = capsys.readouterr()
    assert "'T', '2'" in captured.err and "<unk>" in captured.err and "cleaned" not in captured.err
    assert captured.out.startswith("The 2") and len(captured.out.strip("\n")) == 10


@pytest.mark.slow
def test_cli_empty_prefix_starts_from_a_space(run_dir, capsys):
    run, _ = run_dir
    assert generate.main(["--run-dir", str(run), "--prefix", "", "--num-chars", "7"]) == 0
    assert len(capsys.readouterr().out.strip("\n")) == 7


def _bad_files(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "folder").mkdir()
    return {
        "missing.txt": "no such file",
        "empty.txt": "is empty",
        "latin1.txt": "not valid UTF-8",
        "folder": "cannot read",
    }


@pytest.mark.slow
def test_cli_prompt_file_errors(run_dir, tmp_path, capsys):
    for name, message in _bad_files(tmp_path).items():
        assert generate.main(["--run-dir", str(run_dir[0]), "--prefix-file", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --prefix-file") or err.startswith("error: cannot read --prefix-file"), err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_cli_prefix_and_prefix_file_exclude_each_other(run_dir, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("the")
    with pytest.raises(SystemExit) as e:
        generate.main(["--run-dir", str(run_dir[0]), "--prefix", "a", "--prefix-file", str(tmp_path / "p.txt")])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv,message",
    [
        (["--temperature", "0"], "--temperature must be a positive finite number"),
        (["--temperature", "-1"], "--temperature must be a positive finite number"),
        (["--temperature", "inf"], "--temperature must be a positive finite number, got inf"),
        (["--temperature", "nan"], "--temperature must be a positive finite number, got nan"),
        (["--temperature", "1e-300"], "outside float32"),
        (["--alpha", "inf"], "--alpha must be a positive finite number, got inf"),
        (["--alpha", "nan"], "--alpha must be a positive finite number, got nan"),
        (["--alpha", "0"], "--alpha must be a positive finite number"),
        (["--alpha", "1e-300"], "gives temperature 1e+300, outside float32"),
        (["--top-k", "3"], "applies to sampling"),
        (["--top-k", "-1", "--temperature", "1"], "--top-k must be >= 0"),
        (["--top-k", "29", "--temperature", "1"], "more than the 28 tokens of this model's vocabulary"),
        (["--num-chars", "0"], "at least 1"),
        (["--num-samples", "-3"], "at least 1"),
        (["--num-samples", "100000", "--num-chars", "100000"], "needs about 74.5 GiB"),
        (["--num-samples", "10000000", "--num-chars", "1"], "GiB of device memory"),  # the state, not the ids
        (["--seed", "-1"], "--seed must be in [0, 2**32)"),
        (["--seed", str(2**32)], "--seed must be in [0, 2**32)"),
    ],
)
def test_cli_rejects_bad_options(run_dir, capsys, argv, message):
    assert generate.main(["--run-dir", str(run_dir[0]), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_cli_checks_options_before_loading_the_run(tmp_path, capsys):
    assert generate.main(["--run-dir", str(tmp_path / "nope"), "--temperature", "nan"]) == 2
    assert "--temperature" in capsys.readouterr().err


def test_cli_missing_run_directory(tmp_path, capsys):
    assert generate.main(["--run-dir", str(tmp_path / "nope")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
