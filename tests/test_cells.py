"""The cell registry is the only place that knows a cell: a toy cell with a two-array state, defined here,
trains (carried and reset state), checkpoints, resumes exactly, generates, evaluates and shards
without any other module knowing it."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import cells, config, data, evaluate, generate, model, rundir, train
from rnn_jax import step as step_lib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
V, H, B, T = 28, 8, 4, 6


def _toy_init(key_x, key_h, num_inputs, hidden):
    return {**cells.rnn_init(key_x, key_h, num_inputs, hidden), "w_c": jnp.full((hidden,), 0.5, jnp.float32)}


def _toy_recurrent_step(params, state, xw_BH, *, activation="tanh", dtype="float32"):
    """h' = act(xw + h W_hh + c), c' = w_c * c + h': a leaky memory beside the book's state."""
    h_BH, c_BH = state
    h_BH = cells.ACTIVATIONS[activation].fn(xw_BH + cells.mm(h_BH, params["W_hh"], dtype) + c_BH)
    return (h_BH, params["w_c"] * c_BH + h_BH), h_BH


def _toy_step(params, state, x_BI, *, activation="tanh", dtype="float32"):
    xw_BH = cells.mm(x_BI, params["W_xh"], dtype) + params["b_h"]
    return _toy_recurrent_step(params, state, xw_BH, activation=activation, dtype=dtype)


TOY = cells.Cell(init=_toy_init, zero_state=lambda b, h: (jnp.zeros((b, h)), jnp.zeros((b, h))), step=_toy_step,
                 input_weights=lambda p: (p["W_xh"], p["b_h"]), recurrent_step=_toy_recurrent_step)


def register():
    """Adds the toy cell to the registry of this process (and so to the config's choices)."""
    cells.CELLS["toy"] = TOY


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(cells.CELLS, "toy", TOY)


def tiny_cfg(**kw):
    return config.validate(config.Config(cell="toy", hidden=H, batch_size=B, num_steps=T, max_tokens=1_500,
                                         epochs=3, predict_every=0, checkpoint_every=1, **kw))


def setup(key):
    params = model.init_params(key, V, H, cell="toy")
    params = jax.tree.map(lambda p: p * 30 if p.ndim == 2 else p + 0.1, params)
    tokens_BT = jax.random.randint(jax.random.fold_in(key, 1), (B, T), 0, V)
    state = (0.5 * jax.random.normal(jax.random.fold_in(key, 2), (B, H)), jnp.ones((B, H)))
    return params, tokens_BT, state


def test_toy_unroll_equals_a_python_loop_and_both_forwards_agree(toy, key):
    params, tokens_BT, state = setup(key)
    logits_TBV, last = model.forward(params, state, tokens_BT, cell="toy")
    s = state
    for t in range(T):
        s, h = _toy_step(params, s, jax.nn.one_hot(tokens_BT[:, t], V))
        np.testing.assert_allclose(logits_TBV[t], model.output_layer(params, h), rtol=1e-5, atol=1e-5)
    fused, last_fused = model.forward_fused(params, state, tokens_BT, cell="toy")
    np.testing.assert_allclose(fused, logits_TBV, rtol=1e-5, atol=1e-5)
    for a, b, c in zip(last, s, last_fused, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-6)


def test_toy_gradients_reach_both_state_arrays(toy, key):
    params, tokens_BT, state = setup(key)
    grad = jax.grad(lambda s: jnp.sum(model.forward_fused(params, s, tokens_BT, cell="toy")[0]))(state)
    assert all(float(jnp.abs(g).max()) > 0 for g in grad)


@pytest.mark.parametrize("sampling", ["seq", "random"])
def test_epoch_scan_carries_or_resets_the_pytree_state_like_a_loop_of_steps(toy, sampling):
    cfg = tiny_cfg(sampling=sampling)
    tx = step_lib.make_optimizer(cfg)
    X, Y = data.epoch_batches(np.arange(1_500) % V, cfg, 1)
    state, carried, metrics = step_lib.make_train_epoch(cfg, tx)(step_lib.init_state(cfg, V, tx), X, Y)
    assert jax.tree.structure(carried) == jax.tree.structure(TOY.zero_state(B, H))
    ref, ref_carried, step = step_lib.init_state(cfg, V, tx), step_lib.zero_state(cfg, B), step_lib.make_train_step(
        cfg, tx)
    for i in range(len(X)):
        start = step_lib.zero_state(cfg, B) if sampling == "random" else ref_carried
        ref, ref_carried, m = step(ref, start, X[i], Y[i])
        np.testing.assert_allclose(metrics["loss"][i], m["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_toy_run_checkpoints_resumes_exactly_generates_and_evaluates(toy, data_dir, tmp_path):
    cfg = tiny_cfg(val_fraction=0.1, eval_every=1)
    whole = train.run(cfg, tmp_path / "whole", data_dir=str(data_dir), quiet=True)
    train.run(dataclasses.replace(cfg, epochs=2), tmp_path / "cut",
              data_dir=str(data_dir), quiet=True)
    resumed = train.run(cfg, tmp_path / "cut", data_dir=str(data_dir), resume=True, quiet=True)
    assert resumed["perplexity"] == whole["perplexity"] and resumed["val_perplexity"] == whole["val_perplexity"]
    got_cfg, vocab, params, _ = rundir.load_run(tmp_path / "cut")
    assert got_cfg.cell == "toy" and set(params) == {"W_xh", "W_hh", "b_h", "w_c", "W_hq", "b_q"}
    with np.load(tmp_path / "whole" / "params.npz") as ref:
        for name in ref:
            np.testing.assert_array_equal(np.asarray(params[name]), ref[name], err_msg=name)
    text = generate.predict(params, vocab, "time traveller", 20, **model.options(got_cfg))
    assert text == train.predictions(params, vocab, got_cfg, ("time traveller",), 20)["time traveller"]
    loop = generate.predict_loop(params, vocab, "time traveller", 20, **model.options(got_cfg))
    assert loop == text  # the scan (fused input projection) and the per-character textbook step agree
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt")
    val, context = data.splits(tokens, got_cfg)["val"]
    assert evaluate.evaluate(params, val, got_cfg, context=context)["perplexity"] == pytest.approx(
        whole["val_perplexity"], rel=1e-6)


def test_toy_state_under_data_parallelism(data_dir, tmp_path):
    """Two CPU devices (rows and so the carried pytree state sharded) match one device's losses (up to the order
    of the gradient sums across devices, which the book's fused cell happens to keep bit for bit)."""
    script = (f"import sys; sys.path.insert(0, {HERE!r}); import test_cells; test_cells.register(); "
              "from rnn_jax import train; sys.exit(train.main(sys.argv[1:]))")
    losses = {}
    for devices in (1, 2):
        run_dir = tmp_path / f"d{devices}"
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        proc = subprocess.run([sys.executable, "-c", script, "--exp", "tiny", "--cell", "toy", "--batch-size", "4",
                               "--max-tokens", "1500", "--epochs", "2", "--lr", "0.1", "--predict-every", "0",
                               "--quiet",
                               "--devices", str(devices), "--run-dir", str(run_dir), "--data-dir", str(data_dir)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads((run_dir / "summary.json").read_text())["devices"] == devices
        losses[devices] = [r["loss"] for r in rundir.read_metrics(run_dir)]
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-4)
