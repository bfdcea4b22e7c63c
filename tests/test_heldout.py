import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_jax import config, evaluate, model
from rnn_jax import step as step_lib

V, H, SEG = 28, 16, 40


@pytest.fixture
def small(key):
    """A tiny model with large enough weights that its predictions depend on the state."""
    params = jax.tree.map(lambda p: 30 * p, model.init_params(key, V, H))
    pattern = np.asarray(jax.random.randint(jax.random.fold_in(key, 1), (23,), 1, V), np.int32)
    tokens = np.tile(pattern, 12)[:7 * SEG - 13]  # a text that repeats itself: adapting to it pays
    return params, tokens, dataclasses.replace(config.BASE, hidden=H)


def textbook_mean_loss(params, state, inputs_L, targets_L):
    """Mean loss of one segment with the textbook unroll (not the fused one dynamic evaluation uses)."""
    logits_L1V, state = model.forward(params, state, inputs_L[None])
    return optax.softmax_cross_entropy_with_integer_labels(logits_L1V[:, 0], targets_L).mean(), state


@pytest.mark.parametrize("rule,lr", [("sgd", 0.5), ("rms", 0.02)])
def test_dynamic_scores_each_segment_before_training_on_it(small, rule, lr):
    params, tokens, cfg = small
    context = np.asarray([3, 9], np.int32)
    got, counts = evaluate.dynamic_segment_losses(params, tokens, cfg, lr=lr, segment=SEG, rule=rule,
                                                  context=context)
    stream = np.concatenate([context[-1:], tokens])
    p, state, ms = params, model.init_hidden(1, H), jax.tree.map(jnp.zeros_like, params)
    grad_fn = jax.jit(jax.value_and_grad(textbook_mean_loss, has_aux=True))
    for k in range(len(got)):  # independently: score segment k under the parameters updated on segments < k
        targets = stream[k * SEG + 1:(k + 1) * SEG + 1]
        inputs = stream[k * SEG:k * SEG + len(targets)]
        (loss, new_state), grads = grad_fn(p, state, inputs, targets)
        assert counts[k] == len(targets)
        np.testing.assert_allclose(got[k] / counts[k], float(loss), rtol=2e-5, err_msg=f"segment {k}")
        if rule == "rms":  # RMSprop's normalisation, bias-corrected, over the segments scored so far
            ms = jax.tree.map(lambda m, g: 0.99 * m + 0.01 * g * g, ms, grads)
            correction = 1 - 0.99 ** (k + 1)
            grads = jax.tree.map(lambda g, m, c=correction: g / (jnp.sqrt(m / c) + 1e-8), grads, ms)
        p = jax.tree.map(lambda w, g: w - lr * g, p, grads)
        state = new_state
    static = evaluate.evaluate(params, tokens, cfg, context=context)
    assert got.sum() / counts.sum() < static["loss"]  # adapting to the text it has just read pays here
    np.testing.assert_allclose(got[0] / counts[0], textbook_mean_loss(params, model.init_hidden(1, H),
                                                                     stream[:SEG], stream[1:SEG + 1])[0], rtol=2e-5)


def test_changing_later_text_never_changes_earlier_scores(small):
    params, tokens, cfg = small
    k = 3
    changed = tokens.copy()
    changed[k * SEG:] = (changed[k * SEG:] % (V - 1)) + 1  # segment k (inputs and targets) onwards differ
    kw = {"lr": 0.01, "segment": SEG, "decay": 0.1, "rule": "rms", "context": np.asarray([4], np.int32)}
    before, _ = evaluate.dynamic_segment_losses(params, tokens, cfg, **kw)
    after, _ = evaluate.dynamic_segment_losses(params, changed, cfg, **kw)
    np.testing.assert_array_equal(before[:k], after[:k])
    assert np.all(before[k:] != after[k:])


def test_dynamic_with_no_step_is_static_evaluation(small):
    params, tokens, cfg = small
    static = evaluate.evaluate(params, tokens, cfg, context=np.asarray([5], np.int32))
    dynamic = evaluate.dynamic_evaluate(params, tokens, cfg, lr=0.0, segment=SEG, context=np.asarray([5], np.int32))
    assert dynamic["tokens"] == static["tokens"] == len(tokens)
    np.testing.assert_allclose(dynamic["loss"], static["loss"], rtol=1e-5)


@pytest.mark.parametrize("how", ["step", "sequence"])
def test_dropout_masks_per_step_or_per_sequence(key, how):
    cfg = dataclasses.replace(config.BASE, hidden=64, dropout=0.5, dropout_mask=how)
    mask_TBH = step_lib.dropout_mask(cfg, jnp.zeros((8, 20), jnp.int32), key)
    assert mask_TBH.shape == (20, 8, 64) and set(np.unique(mask_TBH)) == {0.0, 2.0}
    assert 0.4 < float((mask_TBH == 0).mean()) < 0.6
    same_over_time = bool(jnp.all(mask_TBH == mask_TBH[:1]))
    assert same_over_time == (how == "sequence")
    assert not jnp.all(mask_TBH[:, :1] == mask_TBH[:, 1:2])  # rows differ either way


def test_weight_drop_zeroes_recurrent_weights_only_and_their_gradient(key):
    cfg = dataclasses.replace(config.BASE, hidden=32, weight_drop=0.5)
    params = model.init_params(key, V, 32)
    dropped = step_lib.drop_weights(cfg, params, key)
    assert [k for k in params if not jnp.array_equal(params[k], dropped[k])] == ["W_hh"]
    zero = dropped["W_hh"] == 0
    assert 0.4 < float(zero.mean()) < 0.6
    np.testing.assert_allclose(dropped["W_hh"][~zero], 2 * params["W_hh"][~zero], rtol=1e-6)
    tokens = jax.random.randint(key, (4, 10), 0, V)
    grads = jax.jit(jax.grad(lambda p: step_lib.loss_fn(p, model.init_hidden(4, 32), tokens, tokens, cfg,
                                                        key_dropout=key)[0]))(params)
    assert bool(jnp.all(grads["W_hh"][zero] == 0)) and bool(jnp.any(grads["W_hh"][~zero] != 0))
    assert step_lib.drop_weights(dataclasses.replace(cfg, weight_drop=0.0), params, key) is params
    assert step_lib.is_recurrent_weight("W_hz_upper") and not step_lib.is_recurrent_weight("W_hq")


@pytest.mark.parametrize("optimizer,cell,num_layers", [("adam", "rnn", 1), ("sgd", "rnn", 1), ("adam", "gru", 3)])
def test_weight_decay_is_decoupled_and_spares_biases(key, optimizer, cell, num_layers):
    lr, wd = 0.01, 0.5
    cfg = dataclasses.replace(config.BASE, hidden=8, optimizer=optimizer, lr=lr, clip_norm=None, cell=cell,
                              num_layers=num_layers)
    params = model.init_params(key, V, 8, cell=cell, num_layers=num_layers)
    grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
    plain, decayed = step_lib.make_optimizer(cfg), step_lib.make_optimizer(dataclasses.replace(cfg, weight_decay=wd))
    u_plain, _ = plain.update(grads, plain.init(params), params)
    u_decayed, _ = decayed.update(grads, decayed.init(params), params)
    for name, p in params.items():
        want = -lr * wd * p if model.layer_ndim(name, p) == 2 else jnp.zeros_like(p)  # outside Adam's scaling,
        # weight matrices only (layers 2..'s biases are (L - 1, H), stacked)
        np.testing.assert_allclose(u_decayed[name] - u_plain[name], want, atol=1e-7, err_msg=name)


def test_the_schedule_scales_the_whole_update(key):
    # AdamW: the schedule's factor scales Adam's step and the decoupled decay alike
    cfg = dataclasses.replace(config.BASE, hidden=H, optimizer="adam", lr=0.01, weight_decay=0.1,
                              lr_schedule="cosine")
    tokens = jax.random.randint(key, (2, 6), 0, V)
    tx = step_lib.make_optimizer(cfg)
    state = step_lib.init_state(cfg, V, tx)
    after = {}
    for scale in (None, 1.0, 0.25):
        new, _, _ = step_lib.make_train_step(cfg, tx)(jax.tree.map(jnp.copy, state), step_lib.zero_state(cfg, 2),
                                                      tokens, tokens, None if scale is None else np.float32(scale))
        after[scale] = jax.tree.map(lambda n, o: n - o, new.params, state.params)
    for name in state.params:
        np.testing.assert_array_equal(after[1.0][name], after[None][name])  # a factor of one changes no bit
        # atol: the rounding of w + u, with |w| ~ 1e-2 and |u| ~ 1e-6
        np.testing.assert_allclose(after[0.25][name], 0.25 * after[None][name], rtol=1e-5, atol=5e-9, err_msg=name)
        assert bool(jnp.any(after[None][name] != 0)), name
