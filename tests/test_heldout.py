import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnn_jax import experiments as experiments_lib
from rnn_jax import heldout, model

V, H, SEG = 28, 16, 40


@pytest.fixture
def small(key):
    """A tiny model with large enough weights that its predictions depend on the state."""
    params = jax.tree.map(lambda p: 30 * p, model.init_params(key, V, H))
    pattern = np.asarray(jax.random.randint(jax.random.fold_in(key, 1), (23,), 1, V), np.int32)
    tokens = np.tile(pattern, 12)[: 7 * SEG - 13]  # a text that repeats itself: adapting to it pays
    return params, tokens, dataclasses.replace(experiments_lib.BASE, hidden=H)


def textbook_mean_loss(params, state, inputs_L, targets_L):
    """Mean loss of one segment with the textbook unroll (not the fused one dynamic evaluation uses)."""
    logits_L1V, state = model.forward(params, state, inputs_L[None])
    return optax.softmax_cross_entropy_with_integer_labels(logits_L1V[:, 0], targets_L).mean(), state


@pytest.mark.slow
@pytest.mark.parametrize("rule,lr", [("sgd", 0.5), ("rms", 0.02)])
def test_dynamic_scores_each_segment_before_training_on_it(small, rule, lr):
    params, tokens, cfg = small
    context = np.asarray([3, 9], np.int32)
    got, counts = heldout.dynamic_segment_losses(
        params, tokens, model.ModelSpec.from_config(cfg), lr=lr, segment=SEG, rule=rule, context=context
    )
    stream = np.concatenate([context[-1:], tokens])
    p, state, ms = params, model.init_hidden(1, H), jax.tree.map(jnp.zeros_like, params)
    grad_fn = jax.jit(jax.value_and_grad(textbook_mean_loss, has_aux=True))
    for k in range(len(got)):  # independently: score segment k under the parameters updated on segments < k
        targets = stream[k * SEG + 1 : (k + 1) * SEG + 1]
        inputs = stream[k * SEG : k * SEG + len(targets)]
        (loss, new_state), grads = grad_fn(p, state, inputs, targets)
        assert counts[k] == len(targets)
        np.testing.assert_allclose(got[k] / counts[k], float(loss), rtol=2e-5, err_msg=f"segment {k}")
        if rule == "rms":  # RMSprop's normalisation, bias-corrected, over the segments scored so far
            ms = jax.tree.map(lambda m, g: 0.99 * m + 0.01 * g * g, ms, grads)
            correction = 1 - 0.99 ** (k + 1)
            grads = jax.tree.map(lambda g, m, c=correction: g / (jnp.sqrt(m / c) + 1e-8), grads, ms)
        p = jax.tree.map(lambda w, g: w - lr * g, p, grads)
        state = new_state
    static = heldout.evaluate(params, tokens, model.ModelSpec.from_config(cfg), context=context)
    assert got.sum() / counts.sum() < static["loss"]  # adapting to the text it has just read pays here
    np.testing.assert_allclose(
        got[0] / counts[0],
        textbook_mean_loss(params, model.init_hidden(1, H), stream[:SEG], stream[1 : SEG + 1])[0],
        rtol=2e-5,
    )


@pytest.mark.slow
def test_changing_later_text_never_changes_earlier_scores(small):
    params, tokens, cfg = small
    k = 3
    changed = tokens.copy()
    changed[k * SEG :] = (changed[k * SEG :] % (V - 1)) + 1  # segment k (inputs and targets) onwards differ
    kw = {"lr": 0.01, "segment": SEG, "decay": 0.1, "rule": "rms", "context": np.asarray([4], np.int32)}
    before, _ = heldout.dynamic_segment_losses(params, tokens, model.ModelSpec.from_config(cfg), **kw)
    after, _ = heldout.dynamic_segment_losses(params, changed, model.ModelSpec.from_config(cfg), **kw)
    np.testing.assert_array_equal(before[:k], after[:k])
    assert np.all(before[k:] != after[k:])


@pytest.mark.slow
def test_dynamic_with_no_step_is_static_evaluation(small):
    params, tokens, cfg = small
    static = heldout.evaluate(params, tokens, model.ModelSpec.from_config(cfg), context=np.asarray([5], np.int32))
    dynamic = heldout.dynamic_evaluate(
        params, tokens, model.ModelSpec.from_config(cfg), lr=0.0, segment=SEG, context=np.asarray([5], np.int32)
    )
    assert dynamic["tokens"] == static["tokens"] == len(tokens)
    np.testing.assert_allclose(dynamic["loss"], static["loss"], rtol=1e-5)
