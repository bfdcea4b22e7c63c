"""One update and one epoch of training: clipping and the optimizer composed as the book composes them, the jitted
epoch equal to a loop of steps, state carried or reset, gradients stopped or not, updates that are not finite never
applied, dropout in training only."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_jax import experiments as experiments_lib
from rnn_jax import model, stack
from rnn_jax import step as step_lib

TINY = experiments_lib.EXPERIMENTS["tiny"]
V, H = 28, 16


def batches(cfg, n=3, vocab=28, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(1, vocab, (n, cfg.batch_size, cfg.num_steps), dtype=np.int32)
    return X, np.roll(X, -1, axis=-1)


@pytest.mark.slow
def test_clipping_matches_the_global_norm_formula(key):
    cfg = dataclasses.replace(TINY, clip_norm=1.0, lr=1.0)
    tx = step_lib.make_optimizer(cfg)
    grads = {"a": jax.random.normal(key, (4, 5)), "b": jnp.arange(3.0)}
    norm = math.sqrt(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grads)))
    assert norm > 1
    updates, _ = tx.update(grads, tx.init(grads))
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(u, -g / norm, rtol=1e-6)  # g * theta / ||g||, then -lr
    small = jax.tree.map(lambda g: g / (10 * norm), grads)
    updates, _ = tx.update(small, tx.init(small))
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(small), strict=True):
        np.testing.assert_array_equal(u, -g)  # under the threshold: untouched


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_optimizer_steps_on_the_clipped_gradient(key, optimizer):
    """Clipping comes first: the optimizer (and Adam's moments) only ever see the clipped gradient."""
    cfg = dataclasses.replace(TINY, clip_norm=0.5, lr=0.1, optimizer=optimizer)
    grads = {"a": 3 * jax.random.normal(key, (4, 5)), "b": jnp.arange(3.0)}
    norm = optax.tree.norm(grads)
    clipped = jax.tree.map(lambda g: g * 0.5 / norm, grads)
    tx, plain = step_lib.make_optimizer(cfg), {"sgd": optax.sgd, "adam": optax.adam}[optimizer](0.1)
    state, plain_state = tx.init(grads), plain.init(grads)
    for _ in range(2):  # the second update shows Adam's moments were built from clipped gradients
        updates, state = tx.update(grads, state)
        want, plain_state = plain.update(clipped, plain_state)
        for u, w in zip(jax.tree.leaves(updates), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(u, w, rtol=1e-6)


@pytest.mark.slow
def test_huge_clip_norm_steps_exactly_like_no_clipping():
    X, Y = batches(TINY)
    results = []
    for clip in (1e9, None):
        cfg = dataclasses.replace(TINY, clip_norm=clip, lr=3.0)
        tx = step_lib.make_optimizer(cfg)
        state, _, _ = step_lib.make_train_epoch(cfg, tx)(step_lib.init_state(cfg, 28, tx), X, Y)
        results.append(state.params)
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["seq", "random"])
def test_epoch_scan_equals_a_loop_of_train_steps(sampling):
    cfg = dataclasses.replace(TINY, sampling=sampling)
    tx = step_lib.make_optimizer(cfg)
    X, Y = batches(cfg)
    state, h_last, metrics = step_lib.make_train_epoch(cfg, tx)(step_lib.init_state(cfg, 28, tx), X, Y)

    step = step_lib.make_train_step(cfg, tx)
    ref = step_lib.init_state(cfg, 28, tx)
    h = model.init_hidden(cfg.batch_size, cfg.hidden)
    losses = []
    for x, y in zip(X, Y, strict=True):
        if sampling == "random":
            h = model.init_hidden(cfg.batch_size, cfg.hidden)
        ref, h, m = step(ref, h, x, y)
        losses.append(float(m["loss"]))
    np.testing.assert_allclose(metrics["loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(h_last, h, rtol=1e-5, atol=1e-6)
    assert int(state.step) == int(ref.step) == len(X)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_sequential_carries_state_and_random_resets_it():
    X, Y = batches(TINY)
    X[1:] = X[0]
    Y[1:] = Y[0]  # the same minibatch three times
    losses = {}
    for sampling in ("seq", "random"):
        cfg = dataclasses.replace(TINY, sampling=sampling, lr=1e-12)  # parameters stay put
        tx = step_lib.make_optimizer(cfg)
        losses[sampling] = step_lib.make_train_epoch(cfg, tx)(step_lib.init_state(cfg, 28, tx), X, Y)[2]["loss"]
    assert losses["random"][0] == losses["random"][1] == losses["random"][2]
    assert losses["seq"][0] == losses["random"][0] and losses["seq"][1] != losses["seq"][0]


@pytest.mark.slow
def test_fused_and_autodiff_training_agree():
    X, Y = batches(TINY)
    out = {}
    for backward in ("fused", "autodiff"):
        cfg = dataclasses.replace(TINY, backward=backward)
        tx = step_lib.make_optimizer(cfg)
        out[backward] = step_lib.make_train_epoch(cfg, tx)(step_lib.init_state(cfg, 28, tx), X, Y)
    np.testing.assert_allclose(out["fused"][2]["loss"], out["autodiff"][2]["loss"], rtol=1e-5)
    np.testing.assert_allclose(out["fused"][2]["grad_norm"], out["autodiff"][2]["grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(out["fused"][0].params), jax.tree.leaves(out["autodiff"][0].params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_undetached_gradient_reaches_earlier_minibatches():
    X, Y = batches(TINY)
    grads = {}
    for detach in (True, False):
        cfg = dataclasses.replace(TINY, detach=detach, lr=1e-12)
        tx = step_lib.make_optimizer(cfg)
        state = step_lib.init_state(cfg, 28, tx)
        state = state._replace(params=jax.tree.map(lambda p: 100 * p, state.params))  # a state that matters
        grads[detach] = step_lib.make_train_epoch(cfg, tx)(state, X, Y)[2]
    # the first minibatch has no past; later ones see through the carried state
    np.testing.assert_allclose(grads[False]["loss"], grads[True]["loss"], rtol=1e-5)
    np.testing.assert_allclose(grads[False]["grad_norm"][0], grads[True]["grad_norm"][0], rtol=1e-5)
    assert not np.allclose(grads[False]["grad_norm"][1:], grads[True]["grad_norm"][1:], rtol=1e-2)


@pytest.mark.slow
def test_tiny_model_overfits_a_tiny_corpus():
    cfg = dataclasses.replace(TINY, hidden=32, lr=1.0)
    tx = step_lib.make_optimizer(cfg)
    X, Y = batches(cfg, n=1)
    epoch = step_lib.make_train_epoch(cfg, tx)
    state = step_lib.init_state(cfg, 28, tx)
    state, _, m = epoch(state, X, Y)
    first = float(m["loss"][0])
    for _ in range(400):
        state, _, m = epoch(state, X, Y)
    assert float(m["loss"][0]) < 0.1 * first


@pytest.mark.slow
def test_nonfinite_update_is_not_applied():
    cfg = dataclasses.replace(TINY, lr=1.0)
    tx = step_lib.make_optimizer(cfg)
    state = step_lib.init_state(cfg, 28, tx)
    before = jax.device_get(state.params)
    state = state._replace(params={**state.params, "W_hq": state.params["W_hq"].at[0, 0].set(jnp.nan)})
    X, Y = batches(cfg, n=2)
    state, _, m = step_lib.make_train_epoch(cfg, tx)(state, X, Y)
    assert not m["finite"].any()
    np.testing.assert_array_equal(state.params["W_hh"], before["W_hh"])


@pytest.mark.slow
def test_dropout_changes_training_only_and_is_reproducible():
    X, Y = batches(TINY)
    out = {}
    for name, dropout in (("off", 0.0), ("on", 0.5), ("on_again", 0.5)):
        cfg = dataclasses.replace(TINY, dropout=dropout)
        tx = step_lib.make_optimizer(cfg)
        out[name] = step_lib.make_train_epoch(cfg, tx)(step_lib.init_state(cfg, 28, tx), X, Y)
    np.testing.assert_array_equal(out["on"][2]["loss"], out["on_again"][2]["loss"])  # keys from (seed, step)
    assert not np.allclose(out["on"][2]["loss"], out["off"][2]["loss"])
    # no key, no mask: evaluation and generation see the plain model
    cfg = dataclasses.replace(TINY, dropout=0.5)
    params = out["on"][0].params
    h = model.init_hidden(cfg.batch_size, cfg.hidden)
    plain = step_lib.loss_fn(params, h, X[0], Y[0], dataclasses.replace(cfg, dropout=0.0))[0]
    assert step_lib.loss_fn(params, h, X[0], Y[0], cfg)[0] == plain


@pytest.mark.slow
def test_dropout_mask_keeps_the_expected_fraction_scaled(key):
    cfg = dataclasses.replace(TINY, dropout=0.25, hidden=64)
    params = model.init_params(key, 28, 64)
    captured = {}
    real = model.output_layer

    def spy(p, hs_TBH, dtype="float32"):
        captured["hs"] = hs_TBH
        return real(p, hs_TBH, dtype)

    X, Y = batches(cfg, n=1)
    h = model.init_hidden(cfg.batch_size, 64) + 1.0
    try:
        model.output_layer = spy
        step_lib.loss_fn(params, h, X[0], Y[0], dataclasses.replace(cfg, dropout=0.0))
        plain = captured["hs"]
        step_lib.loss_fn(params, h, X[0], Y[0], cfg, key_dropout=key)
        dropped = captured["hs"]
    finally:
        model.output_layer = real
    kept = np.asarray(dropped != 0)
    assert 0.7 < kept.mean() < 0.8  # keep 0.75
    np.testing.assert_allclose(np.asarray(dropped)[kept], np.asarray(plain)[kept] / 0.75, rtol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are the CPU compiler's")
def test_train_jits_carry_the_cpu_compiler_options(monkeypatch):
    seen = []
    real_jit = jax.jit
    monkeypatch.setattr(step_lib.jax, "jit", lambda fn, **kw: seen.append(kw.get("compiler_options")) or real_jit(fn))
    for detach in (True, False):
        cfg = dataclasses.replace(TINY, detach=detach)
        tx = step_lib.make_optimizer(cfg)
        step_lib.make_train_epoch(cfg, tx)
        step_lib.make_train_step(cfg, tx)
    assert seen == [step_lib.CPU_COMPILER_OPTIONS] * 4


def test_the_cpu_compiler_options_are_options_xla_knows():
    """XLA refuses an option it does not know, so a misspelt one fails here instead of silently doing nothing."""
    assert step_lib.CPU_COMPILER_OPTIONS
    lowered = jax.jit(lambda x: x * 2.0).lower(1.0)
    assert float(lowered.compile(step_lib.CPU_COMPILER_OPTIONS)(3.0)) == 6.0
    with pytest.raises(Exception, match="xla_cpu_prefer_vector_widht"):
        lowered.compile({"xla_cpu_prefer_vector_widht": 512})


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_cpu_compiler_options_change_no_number(cell, monkeypatch):
    """The options only change how fast the kernels run: a train epoch with them equals one without, bit for bit
    (wide enough for 512-bit lanes: H 64, 4H = 256 gate columns)."""
    cfg = dataclasses.replace(experiments_lib.BASE, cell=cell, hidden=64, batch_size=8, num_steps=12, lr=1.0)
    X, Y = batches(cfg, n=2)
    out = []
    for options in (step_lib.CPU_COMPILER_OPTIONS, {}):
        monkeypatch.setattr(step_lib, "CPU_COMPILER_OPTIONS", options)
        tx = step_lib.make_optimizer(cfg)
        state, carried, metrics = step_lib.make_train_epoch(cfg, tx)(step_lib.init_state(cfg, 28, tx), X, Y)
        out.append(jax.device_get((state.params, carried, metrics["loss"], metrics["grad_norm"])))
    for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1]), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["step", "sequence"])
def test_dropout_masks_per_step_or_per_sequence(key, how):
    cfg = dataclasses.replace(experiments_lib.BASE, hidden=64, dropout=0.5, dropout_mask=how)
    mask_TBH = step_lib.dropout_mask(cfg, jnp.zeros((8, 20), jnp.int32), key)
    assert mask_TBH.shape == (20, 8, 64) and set(np.unique(mask_TBH)) == {0.0, 2.0}
    assert 0.4 < float((mask_TBH == 0).mean()) < 0.6
    same_over_time = bool(jnp.all(mask_TBH == mask_TBH[:1]))
    assert same_over_time == (how == "sequence")
    assert not jnp.all(mask_TBH[:, :1] == mask_TBH[:, 1:2])  # rows differ either way


@pytest.mark.slow
def test_weight_drop_zeroes_recurrent_weights_only_and_their_gradient(key):
    cfg = dataclasses.replace(experiments_lib.BASE, hidden=32, weight_drop=0.5)
    params = model.init_params(key, V, 32)
    dropped = step_lib.drop_weights(cfg, params, key, model.BOOK)
    assert [k for k in params if not jnp.array_equal(params[k], dropped[k])] == ["W_hh"]
    zero = dropped["W_hh"] == 0
    assert 0.4 < float(zero.mean()) < 0.6
    np.testing.assert_allclose(dropped["W_hh"][~zero], 2 * params["W_hh"][~zero], rtol=1e-6)
    tokens = jax.random.randint(key, (4, 10), 0, V)
    grads = jax.jit(
        jax.grad(lambda p: step_lib.loss_fn(p, model.init_hidden(4, 32), tokens, tokens, cfg, key_dropout=key)[0])
    )(params)
    assert bool(jnp.all(grads["W_hh"][zero] == 0)) and bool(jnp.any(grads["W_hh"][~zero] != 0))
    assert step_lib.drop_weights(dataclasses.replace(cfg, weight_drop=0.0), params, key, model.BOOK) is params
    gru = model.init_params(key, V, 8, model.ModelSpec("gru", num_layers=2))
    assert model.recurrent_weights(gru, model.ModelSpec("gru")) == [
        "W_hh",
        "W_hh_upper",
        "W_hr",
        "W_hr_upper",
        "W_hz",
        "W_hz_upper",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,cell,num_layers", [("adam", "rnn", 1), ("sgd", "rnn", 1), ("adam", "gru", 3)])
def test_weight_decay_is_decoupled_and_spares_biases(key, optimizer, cell, num_layers):
    lr, wd = 0.01, 0.5
    cfg = dataclasses.replace(
        experiments_lib.BASE, hidden=8, optimizer=optimizer, lr=lr, clip_norm=None, cell=cell, num_layers=num_layers
    )
    params = model.init_params(key, V, 8, model.ModelSpec(cell, num_layers))
    grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
    plain, decayed = step_lib.make_optimizer(cfg), step_lib.make_optimizer(dataclasses.replace(cfg, weight_decay=wd))
    u_plain, _ = plain.update(grads, plain.init(params), params)
    u_decayed, _ = decayed.update(grads, decayed.init(params), params)
    for name, p in params.items():
        want = -lr * wd * p if stack.layer_ndim(name, p) == 2 else jnp.zeros_like(p)  # outside Adam's scaling,
        # weight matrices only (layers 2..'s biases are (L - 1, H), stacked)
        np.testing.assert_allclose(u_decayed[name] - u_plain[name], want, atol=1e-7, err_msg=name)


@pytest.mark.slow
def test_the_schedule_scales_the_whole_update(key):
    # AdamW: the schedule's factor scales Adam's step and the decoupled decay alike
    cfg = dataclasses.replace(
        experiments_lib.BASE, hidden=H, optimizer="adam", lr=0.01, weight_decay=0.1, lr_schedule="cosine"
    )
    tokens = jax.random.randint(key, (2, 6), 0, V)
    tx = step_lib.make_optimizer(cfg)
    state = step_lib.init_state(cfg, V, tx)
    after = {}
    for scale in (None, 1.0, 0.25):
        new, _, _ = step_lib.make_train_step(cfg, tx)(
            jax.tree.map(jnp.copy, state),
            step_lib.zero_state(cfg, 2),
            tokens,
            tokens,
            None if scale is None else np.float32(scale),
        )
        after[scale] = jax.tree.map(lambda n, o: n - o, new.params, state.params)
    for name in state.params:
        np.testing.assert_array_equal(after[1.0][name], after[None][name])  # a factor of one changes no bit
        # atol: the rounding of w + u, with |w| ~ 1e-2 and |u| ~ 1e-6
        np.testing.assert_allclose(after[0.25][name], 0.25 * after[None][name], rtol=1e-5, atol=5e-9, err_msg=name)
        assert bool(jnp.any(after[None][name] != 0)), name


def test_reset_rows_zeroes_whole_rows_drawn_anew_at_every_update():
    cfg = dataclasses.replace(TINY, cell="lstm", reset_fraction=0.5)
    carried = (jnp.ones((256, 4)), jnp.full((256, 4), 2.0))  # an LSTM's (h, c)
    at = lambda k: step_lib.reset_rows(cfg, step_lib.TrainState(None, None, jnp.int32(k)), carried)
    h, c = at(3)
    zeroed = np.asarray((h == 0).all(1))
    np.testing.assert_array_equal(zeroed, np.asarray((c == 0).all(1)))  # every array of a row's state
    assert 96 < zeroed.sum() < 160 and (np.asarray(h)[~zeroed] == 1).all() and (np.asarray(c)[~zeroed] == 2).all()
    np.testing.assert_array_equal(at(3)[0], h)  # a pure function of the seed and the update: resumes are exact
    assert not np.array_equal(at(4)[0], h)
    off = dataclasses.replace(cfg, reset_fraction=0.0)
    assert step_lib.reset_rows(off, step_lib.TrainState(None, None, jnp.int32(3)), carried) is carried


def test_reset_fraction_starts_some_rows_of_an_epoch_from_zeros():
    cfg = dataclasses.replace(TINY, lr=1e-12, batch_size=64, init="scaled")  # weights large enough that h matters
    X, Y = batches(cfg)
    X[1:], Y[1:] = X[0], Y[0]  # the same minibatch three times, parameters fixed: only the state differs
    run = lambda c: step_lib.make_train_epoch(c, tx)(step_lib.init_state(c, 28, tx), X, Y)[2]["loss"]
    tx = step_lib.make_optimizer(cfg)
    carried, reset = run(cfg), run(dataclasses.replace(cfg, reset_fraction=0.5))
    zeros = run(dataclasses.replace(cfg, reset_state=True))
    assert reset[0] == carried[0] == zeros[0]  # the first minibatch starts from zeros anyway
    assert min(carried[1], zeros[1]) < reset[1] < max(carried[1], zeros[1])  # half the rows from zeros
