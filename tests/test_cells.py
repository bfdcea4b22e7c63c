"""The cell registry is the only place that knows a cell: a toy cell with a two-array state, defined here,
trains (carried and reset state), checkpoints, resumes exactly, generates, evaluates and shards
without any other module knowing it; weight drop, the scaled initialisation, the config's activations and the
benchmark's counts read what the cell declares."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import cells, config, data, generate, heldout, model, stack, train
from rnn_jax import experiments as experiments_lib
from rnn_jax import step as step_lib
from rnn_jax.files import read_metrics
from rnn_jax.runs import load_run

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
V, H, B, T = 28, 8, 4, 6


def _toy_init(key_x, key_h, num_inputs, hidden):
    """The book's RNN's weights, its recurrent matrix named `U` (no name rule finds it), and a leak w_c."""
    book = cells.rnn_init(key_x, key_h, num_inputs, hidden)
    return {"W_xh": book["W_xh"], "U": book["W_hh"], "b_h": book["b_h"], "w_c": jnp.full((hidden,), 0.5, jnp.float32)}


def _toy_recurrent_step(params, state, xw_BH, *, activation="tanh", dtype="float32"):
    """h' = act(xw + h U + c), c' = w_c * c + h': a leaky memory beside the book's state."""
    h_BH, c_BH = state
    h_BH = cells.ACTIVATIONS[activation].fn(xw_BH + cells.mm(h_BH, params["U"], dtype) + c_BH)
    return (h_BH, params["w_c"][None] * c_BH + h_BH), h_BH


def _toy_step(params, state, x_BI, *, activation="tanh", dtype="float32"):
    xw_BH = cells.mm(x_BI, params["W_xh"], dtype) + params["b_h"][None]
    return _toy_recurrent_step(params, state, xw_BH, activation=activation, dtype=dtype)


TOY = cells.Cell(
    init=_toy_init,
    zero_state=lambda b, h: (jnp.zeros((b, h)), jnp.zeros((b, h))),
    step=_toy_step,
    input_weights=lambda p: (p["W_xh"], p["b_h"]),
    recurrent_step=_toy_recurrent_step,
    recurrent=("U",),
    gates=1,
    products=(1,),
    activations=("tanh", "relu"),
)


def register():
    """Adds the toy cell to the registry of this process (and so to the config's choices)."""
    cells.CELLS["toy"] = TOY


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(cells.CELLS, "toy", TOY)


def tiny_cfg(**kw):
    return config.validate(
        config.Config(
            **{
                "cell": "toy",
                "hidden": H,
                "batch_size": B,
                "num_steps": T,
                "max_tokens": 1_500,
                "epochs": 3,
                "predict_every": 0,
                "checkpoint_every": 1,
            }
            | kw
        )
    )


def setup(key):
    params = model.init_params(key, V, H, model.ModelSpec("toy"))
    params = jax.tree.map(lambda p: p * 30 if p.ndim == 2 else p + 0.1, params)
    tokens_BT = jax.random.randint(jax.random.fold_in(key, 1), (B, T), 0, V)
    state = (0.5 * jax.random.normal(jax.random.fold_in(key, 2), (B, H)), jnp.ones((B, H)))
    return params, tokens_BT, state


@pytest.mark.slow
def test_toy_unroll_equals_a_python_loop_and_both_forwards_agree(toy, key):
    params, tokens_BT, state = setup(key)
    logits_TBV, last = model.forward(params, state, tokens_BT, model.ModelSpec("toy"))
    s = state
    for t in range(T):
        s, h = _toy_step(params, s, jax.nn.one_hot(tokens_BT[:, t], V))
        np.testing.assert_allclose(logits_TBV[t], model.output_layer(params, h), rtol=1e-5, atol=1e-5)
    fused, last_fused = model.forward_fused(params, state, tokens_BT, model.ModelSpec("toy"))
    np.testing.assert_allclose(fused, logits_TBV, rtol=1e-5, atol=1e-5)
    for a, b, c in zip(last, s, last_fused, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_toy_gradients_reach_both_state_arrays(toy, key):
    params, tokens_BT, state = setup(key)
    grad = jax.grad(lambda s: jnp.sum(model.forward_fused(params, s, tokens_BT, model.ModelSpec("toy"))[0]))(state)
    assert all(float(jnp.abs(g).max()) > 0 for g in grad)


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["seq", "random"])
def test_epoch_scan_carries_or_resets_the_pytree_state_like_a_loop_of_steps(toy, sampling):
    cfg = tiny_cfg(sampling=sampling)
    tx = step_lib.make_optimizer(cfg)
    X, Y = data.epoch_batches(np.arange(1_500) % V, cfg, 1)
    state, carried, metrics = step_lib.make_train_epoch(cfg, tx)(step_lib.init_state(cfg, V, tx), X, Y)
    assert jax.tree.structure(carried) == jax.tree.structure(TOY.zero_state(B, H))
    ref, ref_carried, step = (
        step_lib.init_state(cfg, V, tx),
        step_lib.zero_state(cfg, B),
        step_lib.make_train_step(cfg, tx),
    )
    for i in range(len(X)):
        start = step_lib.zero_state(cfg, B) if sampling == "random" else ref_carried
        ref, ref_carried, m = step(ref, start, X[i], Y[i])
        np.testing.assert_allclose(metrics["loss"][i], m["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_toy_run_checkpoints_resumes_exactly_generates_and_evaluates(toy, data_dir, tmp_path):
    cfg = tiny_cfg(val_fraction=0.1, eval_every=1)
    whole = train.run(train.RunRequest(cfg, tmp_path / "whole", data_dir=str(data_dir), quiet=True))
    train.run(
        train.RunRequest(dataclasses.replace(cfg, epochs=2), tmp_path / "cut", data_dir=str(data_dir), quiet=True)
    )
    resumed = train.run(train.RunRequest(cfg, tmp_path / "cut", data_dir=str(data_dir), resume=True, quiet=True))
    assert resumed["perplexity"] == whole["perplexity"] and resumed["val_perplexity"] == whole["val_perplexity"]
    got_cfg, vocab, params, _ = load_run(tmp_path / "cut")
    assert got_cfg.cell == "toy" and set(params) == {"W_xh", "U", "b_h", "w_c", "W_hq", "b_q"}
    with np.load(tmp_path / "whole" / "params.npz") as ref:
        for name in ref:
            np.testing.assert_array_equal(np.asarray(params[name]), ref[name], err_msg=name)
    text = generate.predict(params, vocab, "time traveller", 20, model.ModelSpec.from_config(got_cfg))
    assert (
        text
        == train.predictions(params, vocab, model.ModelSpec.from_config(got_cfg), ("time traveller",), 20)[
            "time traveller"
        ]
    )
    loop = generate.predict_loop(params, vocab, "time traveller", 20, model.ModelSpec.from_config(got_cfg))
    assert loop == text  # the scan (fused input projection) and the per-character textbook step agree
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt")
    val, context = data.splits(tokens, got_cfg)["val"]
    assert heldout.evaluate(params, val, model.ModelSpec.from_config(got_cfg), context=context)[
        "perplexity"
    ] == pytest.approx(whole["val_perplexity"], rel=1e-6)


@pytest.mark.parametrize("cell,num_layers", [("toy", 2), ("rnn", 2), ("gru", 2), ("lstm", 3)])
def test_weight_drop_and_the_scaled_init_take_exactly_the_declared_recurrent_weights(toy, key, cell, num_layers):
    """Every layer's matrices named in Cell.recurrent, whatever their names (the toy's is `U`), and nothing else."""
    cfg = tiny_cfg(cell=cell, num_layers=num_layers, weight_drop=0.5, init="scaled")
    spec = model.ModelSpec.from_config(cfg)
    params = model.init_params(key, V, H, spec)
    declared = sorted(n + suffix for n in cells.CELLS[cell].recurrent for suffix in ("", stack.UPPER))
    dropped = step_lib.drop_weights(cfg, params, key, spec)
    assert sorted(k for k in params if not jnp.array_equal(params[k], dropped[k])) == declared
    for k in declared:
        assert 0.3 < float(jnp.mean(dropped[k] == 0)) < 0.7, k
    scaled = model.rescale_init(params, key, spec)
    for k in declared:  # orthogonal, each layer of a stack on its own
        for W_HH in scaled[k].reshape(-1, H, H):
            np.testing.assert_allclose(W_HH @ W_HH.T, np.eye(H), atol=1e-5, err_msg=k)
    W_x = scaled[next(k for k in scaled if k.startswith("W_x") and k.endswith(stack.UPPER))][0]
    assert not np.allclose(W_x @ W_x.T, np.eye(H), atol=0.1)  # an input matrix is drawn N(0, 1/I) instead


def test_the_benchmarks_counts_are_the_products_a_cell_declares(toy, monkeypatch):
    from rnn_jax.bench import throughput, variants

    monkeypatch.setitem(cells.CELLS, "wide", TOY._replace(gates=3, products=(2, 1)))
    assert variants.flop_per_token(H, V, "toy") == 6 * H * (H + V)
    # 2 layers: recurrent products 3 H wide in both, the upper layer's input product 3 H wide; backward twice
    assert variants.flop_per_token(H, V, "wide", num_layers=2) == 3 * (2 * H * H * (3 + 3 + 3) + 2 * H * V)
    for cell, width in (("toy", 1), ("wide", 3)):
        clock = iter([1.0, 1.5]).__next__
        run = throughput.matmul_limit(4, batch_size=2, steps=5, clock=clock, cell=cell)
        assert run() == pytest.approx(2 * 2 * 4 * 4 * width * 5 / 0.5 / 1e9)
    assert (
        generate.memory_bytes(1, 1, H, V, prompt_chars=10, cell="wide")
        - generate.memory_bytes(1, 1, H, V, prompt_chars=10, cell="toy")
    ) == 4 * 10 * 2 * H  # G = gates * H


def test_the_config_accepts_the_activations_a_cell_declares_and_refuses_others(toy, monkeypatch):
    assert tiny_cfg(activation="relu").activation == "relu"  # the toy declares relu
    monkeypatch.setitem(cells.CELLS, "toy_tanh", TOY._replace(activations=("tanh",)))
    with pytest.raises(config.ConfigError, match=r"activation='relu' is not one the toy_tanh cell accepts: tanh$"):
        tiny_cfg(cell="toy_tanh", activation="relu")
    with pytest.raises(config.ConfigError, match=r"activation='relu' is not one the lstm cell accepts: tanh$"):
        config.validate(config.Config(cell="lstm", activation="relu"))
    with pytest.raises(ValueError, match="the toy_tanh cell accepts activation tanh, not 'relu'"):
        model.ModelSpec("toy_tanh", activation="relu")  # what the model is given directly is checked too


@pytest.mark.slow
def test_toy_state_under_data_parallelism(data_dir, tmp_path):
    """Two CPU devices (rows and so the carried pytree state sharded) match one device's losses (up to the order
    of the gradient sums across devices, which the book's fused cell happens to keep bit for bit)."""
    script = (
        f"import sys; sys.path.insert(0, {HERE!r}); import test_cells; test_cells.register(); "
        "from rnn_jax import train; sys.exit(train.main(sys.argv[1:]))"
    )
    losses = {}
    for devices in (1, 2):
        run_dir = tmp_path / f"d{devices}"
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                "--exp",
                "tiny",
                "--cell",
                "toy",
                "--batch-size",
                "4",
                "--max-tokens",
                "1500",
                "--epochs",
                "2",
                "--lr",
                "0.1",
                "--predict-every",
                "0",
                "--quiet",
                "--devices",
                str(devices),
                "--run-dir",
                str(run_dir),
                "--data-dir",
                str(data_dir),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads((run_dir / "summary.json").read_text())["devices"] == devices
        losses[devices] = [r["loss"] for r in read_metrics(run_dir)]
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-4)


# ----------------------------------------------------------------------------- row chains
def _leaky_step(W_HH):
    """A step whose rows are independent, with a pytree carry, inputs and outputs."""

    def step(carry, x):
        h_BH, c_BH = carry
        h_BH = jnp.tanh(x["xw"] + h_BH @ W_HH + c_BH)
        return (h_BH, 0.5 * c_BH + h_BH), {"h": h_BH, "sq": h_BH * x["scale"]}

    return step


@pytest.mark.parametrize("reverse", [False, True])
def test_row_scan_in_chains_equals_one_scan_bit_for_bit(key, reverse):
    k1, k2, k3 = jax.random.split(key, 3)
    rows, hidden, steps = 32, 64, 9
    step = _leaky_step(jax.random.normal(k1, (hidden, hidden)) / 8)
    xs = {"xw": jax.random.normal(k2, (steps, rows, hidden)), "scale": jnp.arange(steps * rows).reshape(steps, rows, 1)}
    carry = (jax.random.normal(k3, (rows, hidden)), jnp.zeros((rows, hidden)))
    run = jax.jit(lambda c, x, k: cells.row_scan(step, c, x, chains=k, reverse=reverse), static_argnums=2)
    ref = jax.jit(lambda c, x: jax.lax.scan(step, c, x, reverse=reverse))(carry, xs)
    for chains in (1, 2, 4):
        got = run(carry, xs, chains)
        assert jax.tree.structure(got) == jax.tree.structure(ref)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
            assert a.shape == b.shape and np.array_equal(a, b), f"{chains} chains"
        # the chains are there: one product per chain in the scan's body
        jaxpr = str(jax.make_jaxpr(lambda c, x, k=chains: cells.row_scan(step, c, x, chains=k))(carry, xs))
        assert jaxpr.count("dot_general") == chains


@pytest.mark.slow
@pytest.mark.skipif(
    jax.default_backend() != "cpu" or jax.device_count() != 1, reason="the automatic split is a one-CPU choice"
)
def test_the_automatic_split_and_an_explicit_one(data_dir, tmp_path):
    assert cells.resolve_chains(0, 32) == 2  # the book's batch: two chains of 16 rows
    assert cells.resolve_chains(0, 2 * cells.MIN_CHAIN_ROWS - 2) == 1  # chains of under MIN_CHAIN_ROWS rows
    assert cells.resolve_chains(0, 33) == 1
    assert cells.resolve_chains(0, 32, "bfloat16") == 1  # bf16 products run faster whole
    assert cells.resolve_chains(2, 32, "bfloat16") == 2
    assert cells.resolve_chains(4, 32) == 4
    assert cells.resolve_chains(2, 1) == 1  # evaluation's one row under a training run's --row-chains 2
    # a run asked for 4 chains trains, validates and predicts one row at a time, and records the policies it ran
    argv = ["--exp", "tiny", "--batch-size", "4", "--row-chains", "4", "--val-fraction", "0.1", "--epochs", "1"]
    assert train.main([*argv, "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "r"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["val_perplexity"] > 1
    assert (summary["row_chains"], summary["devices"]) == (4, 1)


def test_the_row_chain_policy_is_resolved_once_when_the_spec_is_made():
    assert jax.default_backend() == "cpu" and jax.device_count() == 1  # what the suite runs on
    assert model.ModelSpec.from_config(experiments_lib.BASE).chains == 2  # auto, for the book's 32 rows
    assert model.ModelSpec.from_config(dataclasses.replace(experiments_lib.BASE, matmul_dtype="bfloat16")).chains == 1
    assert model.ModelSpec.from_config(dataclasses.replace(experiments_lib.BASE, row_chains=4)).chains == 4
    for unresolved in (0, -1):  # nothing left to decide while tracing
        with pytest.raises(ValueError, match="chains must be >= 1"):
            model.ModelSpec(chains=unresolved)
    # a count that does not divide the rows (evaluation's single row) runs as one chain: the same program
    spec, params = model.ModelSpec(chains=2), model.init_params(jax.random.key(0), V, 16)
    one_row = lambda s: str(
        jax.make_jaxpr(lambda p: model.forward_fused(p, model.zero_state(1, 16), jnp.zeros((1, 5), jnp.int32), s))(
            params
        )
    )
    assert one_row(spec) == one_row(model.BOOK)


@pytest.mark.slow
@pytest.mark.parametrize(
    "cell,activation,num_layers,dtype",
    [
        ("rnn", "tanh", 1, "float32"),
        ("rnn", "relu", 1, "float32"),
        ("rnn", "tanh", 1, "bfloat16"),
        ("gru", "tanh", 1, "float32"),
        ("lstm", "tanh", 2, "float32"),
    ],
)
def test_fused_recurrences_in_row_chains_give_the_same_loss_and_gradients_bit_for_bit(
    key, cell, activation, num_layers, dtype
):
    rows, hidden, steps = 32, 64, 7
    spec = model.ModelSpec(cell, num_layers, activation, dtype=dtype)
    params = model.init_params(key, V, hidden, spec)
    params = jax.tree.map(lambda p: p * 30 if p.ndim == 2 else p + 0.1, params)  # away from ~0, non-linear
    tokens_BT = jax.random.randint(jax.random.fold_in(key, 1), (rows, steps), 0, V)
    state = jax.tree.map(
        lambda s: 0.5 * jax.random.normal(jax.random.fold_in(key, 2), s.shape), model.zero_state(rows, hidden, spec)
    )

    def objective(p, s, chains):  # touches every output, including the final state
        logits_TBV, last = model.forward_fused(p, s, tokens_BT, dataclasses.replace(spec, chains=chains))
        return jnp.sum(jnp.sin(logits_TBV)) + sum(jnp.sum(x**3) for x in jax.tree.leaves(last))

    grad = jax.jit(jax.value_and_grad(objective, argnums=(0, 1)), static_argnums=2)
    ref = grad(params, state, 1)
    for chains in (2, 4):
        got = grad(params, state, chains)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(ref), strict=True):
            assert np.array_equal(a, b), f"{chains} chains: {jax.tree_util.keystr(path)}"
    # and the cell's scans really run in chains: more products in the program for more chains
    dots = lambda k: str(jax.make_jaxpr(jax.grad(objective), static_argnums=2)(params, state, k)).count("dot_general")
    assert dots(1) < dots(2) < dots(4)
