"""The book's GRU (d2l 9.1), LSTM (9.2) and stacks of cells (9.3): each equals its equations written out
here, the LSTM equals flax's LSTMCell, a stack equals its layers chained, the hand-written backward
equals autodiff, and a killed run of a stacked LSTM resumes bit for bit."""

import json
import os
import signal
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import killpoints
import numpy as np
import pytest

from rnn_jax import cells, config, data, generate, heldout, model, stack, train
from rnn_jax import experiments as experiments_lib
from rnn_jax.runs import load_run

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
V, H, B, T = 28, 8, 3, 7
sigmoid = jax.nn.sigmoid


def setup(key, cell, num_layers=1):
    params = model.init_params(key, V, H, model.ModelSpec(cell, num_layers))
    params = {k: p * 30 if stack.layer_ndim(k, p) == 2 else p + 0.1 for k, p in params.items()}  # non-linear
    tokens_BT = jax.random.randint(jax.random.fold_in(key, 1), (B, T), 0, V)
    zeros = model.zero_state(B, H, model.ModelSpec(cell, num_layers))
    leaves, treedef = jax.tree.flatten(zeros)
    keys = jax.random.split(jax.random.fold_in(key, 2), len(leaves))
    state = jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, (B, H)) for k in keys])
    return params, tokens_BT, state


@jax.numpy_rank_promotion("allow")  # the book's code adds (H,) biases to (B, H) products
def book_gru(p, H_, X):
    """d2l 9.1's gru(), one step, as printed."""
    Z = sigmoid(X @ p["W_xz"] + H_ @ p["W_hz"] + p["b_z"])
    R = sigmoid(X @ p["W_xr"] + H_ @ p["W_hr"] + p["b_r"])
    H_tilda = jnp.tanh(X @ p["W_xh"] + (R * H_) @ p["W_hh"] + p["b_h"])
    return Z * H_ + (1 - Z) * H_tilda


@jax.numpy_rank_promotion("allow")  # the book's code adds (H,) biases to (B, H) products
def book_lstm(p, state, X):
    """d2l 9.2's lstm(), one step, as printed."""
    H_, C = state
    I = sigmoid(X @ p["W_xi"] + H_ @ p["W_hi"] + p["b_i"])  # noqa: E741
    F = sigmoid(X @ p["W_xf"] + H_ @ p["W_hf"] + p["b_f"])
    O = sigmoid(X @ p["W_xo"] + H_ @ p["W_ho"] + p["b_o"])  # noqa: E741
    C_tilda = jnp.tanh(X @ p["W_xc"] + H_ @ p["W_hc"] + p["b_c"])
    C = F * C + I * C_tilda
    return O * jnp.tanh(C), C


BOOK = {"gru": lambda p, s, x: (book_gru(p, s, x),) * 2, "lstm": lambda p, s, x: ((h := book_lstm(p, s, x)), h[0])}
NAMES = {
    "gru": ["W_xz", "W_hz", "b_z", "W_xr", "W_hr", "b_r", "W_xh", "W_hh", "b_h"],
    "lstm": ["W_xi", "W_hi", "b_i", "W_xf", "W_hf", "b_f", "W_xo", "W_ho", "b_o", "W_xc", "W_hc", "b_c"],
}


def close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **({"rtol": 1e-5, "atol": 1e-5} | kw))


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_init_follows_the_book(key, cell):
    params = model.init_params(key, V, 256, model.ModelSpec(cell, num_layers=2))
    first = {k: v for k, v in params.items() if not k.endswith(stack.UPPER)}
    assert list(first) == NAMES[cell] + ["W_hq", "b_q"]
    assert set(stack.upper_params(params)) == set(NAMES[cell])
    for n in NAMES[cell]:  # layer 1 reads one-hot characters, layer 2 the (B, H) outputs of layer 1
        want = (256,) if n.startswith("b_") else (V if n.startswith("W_x") else 256, 256)
        assert params[n].shape == want
        assert params[n + stack.UPPER].shape == (1, *(want if want[0] != V else (256, 256)))
    assert all(np.all(params[n] == 0) for n in params if n.startswith("b_"))
    assert abs(float(jnp.std(params["W_hh" if cell == "gru" else "W_hc"])) - 0.01) < 5e-4


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_unrolls_equal_a_python_loop_over_the_books_equations(key, cell):
    params, tokens_BT, state = setup(key, cell)
    s, want_TBV = state, []
    for t in range(T):
        s, h = BOOK[cell](params, s, jax.nn.one_hot(tokens_BT[:, t], V))
        want_TBV.append(h @ params["W_hq"] + params["b_q"][None])
    for fwd in (model.forward, model.forward_fused):
        logits_TBV, last = fwd(params, state, tokens_BT, model.ModelSpec(cell))
        close(logits_TBV, jnp.stack(want_TBV), rtol=1e-4, atol=1e-4)
        close(last, s)


@pytest.mark.slow
def test_lstm_equals_flax_lstmcell(key):
    params, tokens_BT, (h_BH, c_BH) = setup(key, "lstm")
    flax_params = {
        "params": {
            **{f"i{g}": {"kernel": params[f"W_x{c}"]} for g, c in zip("ifgo", "ifco", strict=True)},
            **{
                f"h{g}": {"kernel": params[f"W_h{c}"], "bias": params[f"b_{c}"]}
                for g, c in zip("ifgo", "ifco", strict=True)
            },
        }
    }
    x_TBV = jax.nn.one_hot(tokens_BT.T, V)
    flax_step = lambda carry, x: nn.LSTMCell(features=H).apply(flax_params, carry, x)
    (c_flax, h_flax), hs_flax_TBH = jax.lax.scan(flax_step, (c_BH, h_BH), x_TBV)  # flax's carry is (c, h)
    logits_TBV, (h_last, c_last) = model.forward_fused(params, (h_BH, c_BH), tokens_BT, model.ModelSpec("lstm"))
    close(logits_TBV, model.output_layer(params, hs_flax_TBH), rtol=1e-4, atol=1e-4)
    close((h_last, c_last), (h_flax, c_flax))


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_two_layer_stack_equals_two_one_layer_unrolls_chained(key, cell):
    params, tokens_BT, state = setup(key, cell, num_layers=2)
    x_TBI = jax.nn.one_hot(tokens_BT.T, V)
    core = model.CELLS[cell]
    s1, hs1_TBH = jax.lax.scan(lambda s, x: core.step(stack.layer_params(params, 0), s, x), state[0], x_TBI)
    s2, hs2_TBH = jax.lax.scan(lambda s, x: core.step(stack.layer_params(params, 1), s, x), state[1], hs1_TBH)
    assert set(stack.layer_params(params, 1)) == set(core.init(key, key, H, H))
    for fwd in (model.forward, model.forward_fused):
        logits_TBV, last = fwd(params, state, tokens_BT, model.ModelSpec(cell, num_layers=2))
        close(logits_TBV, model.output_layer(params, hs2_TBH), rtol=1e-4, atol=1e-4)
        close(last, (s1, s2))


@pytest.mark.slow
@pytest.mark.parametrize(
    "cell,num_layers,dtype",
    [
        ("gru", 1, "float32"),
        ("gru", 1, "bfloat16"),
        ("lstm", 1, "float32"),
        ("lstm", 1, "bfloat16"),
        ("gru", 2, "float32"),
        ("lstm", 3, "float32"),
    ],
)
def test_hand_written_backward_equals_autodiff(key, cell, num_layers, dtype):
    """jax.grad through forward (autodiff of the textbook unroll) and forward_fused (the hand-written VJPs),
    with a gradient arriving at every step's output and at the last state, and masks between layers."""
    params, tokens_BT, state = setup(key, cell, num_layers)
    params = jax.tree.map(lambda p: p / 10 if p.ndim == 2 else p, params)  # bf16 on saturated gates is noise
    weights_TBV = jax.random.normal(jax.random.fold_in(key, 3), (T, B, V))
    keep_LTBH = (
        jax.random.bernoulli(jax.random.fold_in(key, 4), 0.8, (num_layers - 1, T, B, H)) / 0.8
        if num_layers > 1
        else None
    )

    def loss(fwd, params, state):
        logits_TBV, last = fwd(
            params, state, tokens_BT, model.ModelSpec(cell, num_layers, dtype=dtype), keep_LTBH=keep_LTBH
        )
        return jnp.sum(logits_TBV * weights_TBV) + sum(jnp.sum(jnp.sin(s)) for s in jax.tree.leaves(last))

    grad = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=0)
    grads = {name: grad(fwd, params, state) for name, fwd in model.FORWARDS.items()}
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == "float32" else {"rtol": 0.05, "atol": 0.02}
    close(grads["fused"], grads["autodiff"], **tol)
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["fused"]))


def test_configs_of_the_books_sections():
    for name, cell, layers in (("gru", "gru", 1), ("lstm", "lstm", 1), ("deep", "lstm", 2)):
        cfg = config.validate(experiments_lib.EXPERIMENTS[name])
        assert (cfg.cell, cfg.num_layers, cfg.hidden) == (cell, layers, 256)
    with pytest.raises(config.ConfigError, match="activation"):
        config.validate(config.Config(cell="gru", activation="relu"))
    with pytest.raises(config.ConfigError, match="num_layers"):
        config.validate(config.Config(num_layers=0))


@pytest.mark.slow
def test_layer_dropout_masks_only_between_layers_and_only_in_training(key):
    from rnn_jax import step as step_lib

    cfg = config.Config(cell="gru", num_layers=3, hidden=H, layer_dropout=0.5)
    tokens_BT = jnp.zeros((B, T), jnp.int32)
    masks = step_lib.layer_dropout_masks(cfg, tokens_BT, key)
    assert masks.shape == (2, T, B, H) and set(np.unique(masks)) == {0.0, 2.0}
    assert step_lib.layer_dropout_masks(cfg, tokens_BT, None) is None
    assert step_lib.dropout_mask(cfg, tokens_BT, key) is None  # the output layer's dropout stays off


COMMON = [
    "--exp",
    "tiny",
    "--cell",
    "lstm",
    "--num-layers",
    "2",
    "--hidden",
    "8",
    "--epochs",
    "4",
    "--checkpoint-every",
    "1",
    "--max-tokens",
    "600",
    "--predict-every",
    "0",
    "--quiet",
]


def rows(run_dir):
    keys = ("epoch", "step", "loss", "perplexity", "grad_norm")
    return [{k: r.get(k) for k in keys} for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_killed_stacked_lstm_run_resumes_bit_identically_generates_and_evaluates(tmp_path, data_dir):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    extra = ["--val-fraction", "0.1", "--eval-every", "1", "--layer-dropout", "0.2", "--data-dir", str(data_dir)]
    assert train.main([*COMMON, *extra, "--run-dir", str(ref)]) == 0
    proc = subprocess.run(  # killed in the middle of epoch 3
        [*killpoints.python("mid-epoch:3"), "-m", "rnn_jax.train", *COMMON, *extra, "--run-dir", str(cut)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [r["epoch"] for r in rows(cut)] == [1, 2]
    assert train.main(["--run-dir", str(cut), "--resume", "--quiet"]) == 0
    assert rows(cut) == rows(ref)
    cfg, vocab, params, _ = load_run(cut)
    with np.load(ref / "params.npz") as want:
        assert set(want) == set(params)
        for name in want:
            np.testing.assert_array_equal(np.asarray(params[name]), want[name], err_msg=name)
    assert (cfg.cell, cfg.num_layers) == ("lstm", 2)
    text = generate.predict(params, vocab, "time traveller", 20, model.ModelSpec.from_config(cfg))
    assert text == generate.predict_loop(params, vocab, "time traveller", 20, model.ModelSpec.from_config(cfg))
    tokens, _ = data.load_corpus(data_dir / "timemachine.txt")
    val, context = data.splits(tokens, cfg)["val"]
    summary = json.loads((ref / "summary.json").read_text())
    assert heldout.evaluate(params, val, model.ModelSpec.from_config(cfg), context=context)[
        "perplexity"
    ] == pytest.approx(summary["val_perplexity"], rel=1e-6)
    assert isinstance(cells.CELLS["lstm"].zero_state(1, H), tuple)
