"""The linear recurrences (every cell of the registry that declares `Cell.linear`): the whole-sequence forms
(lax.scan and lax.associative_scan) equal a Python loop of the paper's step, forward and in gradients, from a zero
and a non-zero state; carried state, generation, training and resuming work as for the book's cells, in plain
stacks and in residual blocks."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import cells, config, data, generate, model, modelspec, stack, train
from rnn_jax import step as step_lib
from rnn_jax.runs import load_run

LINEAR = [name for name, core in cells.CELLS.items() if core.linear is not None]
V, H, B, T = 13, 8, 3, 5


def _perturbed(params, key):
    """Parameters away from their initialisation, so that every gate varies (the LRU's and RG-LRU's decay
    parameters kept as they are: their range is the point)."""
    kept = ("nu_log", "theta_log", "gamma_log", "lam")
    return {
        k: v
        if k.removesuffix(stack.UPPER) in kept
        else v + 0.3 * jax.random.normal(jax.random.fold_in(key, i), v.shape)
        for i, (k, v) in enumerate(sorted(params.items()))
    }


@functools.partial(jax.jit, static_argnums=0)  # one program, not one per eager operation
def _cell_params(cell, key):
    core = cells.CELLS[cell]
    return _perturbed(core.init(jax.random.fold_in(key, 1), jax.random.fold_in(key, 2), H, H), key)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _state(core, key, nonzero):
    zeros = core.zero_state(B, H)
    if not nonzero:
        return zeros
    leaves, tree = jax.tree.flatten(zeros)
    return tree.unflatten(
        [0.5 * jax.random.normal(jax.random.fold_in(key, 10 + i), z.shape) for i, z in enumerate(leaves)]
    )


def _objective(hs_TBH, last):
    """Touches every output and the last state, non-linearly."""
    return jnp.sum(jnp.sin(hs_TBH)) + sum(jnp.sum(s**3) for s in jax.tree.leaves(last))


def _close(got, want, rtol, what):
    """Every leaf equal to within rtol of the leaf's largest magnitude."""
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True):
        scale = float(jnp.max(jnp.abs(b))) + 1e-6
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=f"{what} {jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("cell", LINEAR)
def test_whole_sequence_forms_equal_a_loop_of_steps_forward_and_in_gradients(key, cell):
    core = cells.CELLS[cell]
    params = _cell_params(cell, key)
    x_TBI = jax.random.normal(jax.random.fold_in(key, 3), (T, B, H))

    def loop(p, s, x_TBI):  # the paper's step, one Python iteration per character
        hs = []
        for t in range(T):
            s, h_BH = core.step(p, s, x_TBI[t])
            hs.append(h_BH)
        return _objective(jnp.stack(hs), s)

    def whole(p, s, x_TBI, scan):
        W_IG, b_G = core.input_weights(p)
        return _objective(*cells.unroll(core, p, s, x_TBI @ W_IG + b_G[None, None], scan=scan))

    def stepwise(p, s, x_TBI):  # the per-step form of the fused recurrence (what generation runs)
        W_IG, b_G = core.input_weights(p)
        hs = []
        for t in range(T):
            s, h_BH = core.recurrent_step(p, s, x_TBI[t] @ W_IG + b_G[None])
            hs.append(h_BH)
        return _objective(jnp.stack(hs), s)

    forms = {
        "linear": functools.partial(whole, scan="linear"),
        "associative": functools.partial(whole, scan="associative"),
        "recurrent_step": stepwise,
    }
    grads = jax.jit(
        lambda *a: {n: jax.value_and_grad(f, argnums=(0, 1, 2))(*a) for n, f in {"loop": loop, **forms}.items()}
    )
    for nonzero in (False, True):
        got = grads(params, _state(core, key, nonzero), x_TBI)
        for name in forms:
            _close(got[name], got["loop"], 1e-4, f"{name} from a {'non-' * nonzero}zero state")


@pytest.mark.parametrize("cell", LINEAR)
def test_carrying_the_state_across_two_minibatches_equals_one_long_sequence(key, cell):
    core = cells.CELLS[cell]
    params = _cell_params(cell, key)
    W_IG, b_G = core.input_weights(params)
    xw_TBG = jax.random.normal(jax.random.fold_in(key, 3), (2 * T, B, H)) @ W_IG + b_G[None, None]

    @jax.jit
    def halves_and_whole(state, xw_TBG):
        out = {}
        for scan in modelspec.SCANS:
            run = functools.partial(cells.unroll, core, params, scan=scan)
            first, carried = run(state, xw_TBG[:T])
            second, last = run(carried, xw_TBG[T:])
            out[scan] = (jnp.concatenate([first, second]), last), run(state, xw_TBG)
        return out

    for scan, (halves, whole) in halves_and_whole(_state(core, key, True), xw_TBG).items():
        _close(halves, whole, 1e-5, scan)


def _model(key, cell, block, num_layers=2, scan="linear"):
    spec = model.ModelSpec(cell, num_layers, block=block, scan=scan)
    return spec, _model_params(key, spec)


@functools.partial(jax.jit, static_argnums=1)
def _model_params(key, spec):
    params = _perturbed(model.init_params(key, V, H, spec), key)
    return params | {"W_hq": 100 * params["W_hq"]}  # logits far from ties


MODELS = [(cell, "residual") for cell in LINEAR] + [("lru", "plain")]  # plain: the LRU's first layer widens


@pytest.mark.slow
@pytest.mark.parametrize("cell,block", MODELS)
def test_the_model_forwards_agree_and_carry_the_state(key, cell, block):
    spec, params = _model(key, cell, block)
    tokens_BT = jax.random.randint(jax.random.fold_in(key, 4), (B, 2 * T), 0, V)
    start = jax.tree.map(lambda z: 0.3 + z, model.zero_state(B, H, spec))

    def loss(p, s, tokens_BT, fwd, scan):
        logits_TBV, last = model.FORWARDS[fwd](p, s, tokens_BT, dataclasses.replace(spec, scan=scan))
        return _objective(logits_TBV, last), (logits_TBV, last)

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=(3, 4))
    ref = grad(params, start, tokens_BT, "autodiff", "linear")  # the textbook unroll of the paper's step
    for scan in modelspec.SCANS:
        _close(grad(params, start, tokens_BT, "fused", scan), ref, 1e-3, scan)
        (_, (first, carried)), _ = grad(params, start, tokens_BT[:, :T], "fused", scan)
        (_, (second, last)), _ = grad(params, carried, tokens_BT[:, T:], "fused", scan)
        _close((jnp.concatenate([first, second]), last), ref[0][1], 1e-3, f"{scan}, carried")


@pytest.mark.slow
@pytest.mark.parametrize("cell,block", MODELS)
def test_changing_later_tokens_leaves_earlier_logits_bit_exact(key, cell, block):
    spec, params = _model(key, cell, block)
    tokens_BT = jax.random.randint(jax.random.fold_in(key, 5), (B, 2 * T), 0, V)
    start = model.zero_state(B, H, spec)
    for scan in modelspec.SCANS:
        forward = jax.jit(
            lambda t, scan=scan: model.FORWARDS["fused"](params, start, t, dataclasses.replace(spec, scan=scan))[0]
        )
        base = np.asarray(forward(tokens_BT))
        for t in (0, T, 2 * T - 2):
            later = tokens_BT.at[:, t + 1 :].set((tokens_BT[:, t + 1 :] + 1) % V)
            changed = np.asarray(forward(later))
            assert np.array_equal(changed[: t + 1], base[: t + 1]), f"{cell} {block} {scan}: step {t} sees later tokens"
            assert not np.array_equal(changed[t + 1], base[t + 1])


@pytest.mark.slow
@pytest.mark.parametrize("cell,block", MODELS)
def test_greedy_generation_is_the_argmax_of_the_training_forward(key, cell, block):
    spec, params = _model(key, cell, block)
    prefix_P = jnp.asarray([1, 5, 2, 7], jnp.int32)
    ids_N = generate.generate_ids(params, prefix_P, key, num_chars=8, spec=spec)[0]
    text_L = jnp.concatenate([prefix_P, ids_N])
    logits_L1V, _ = jax.jit(model.forward_fused, static_argnums=3)(
        params, model.zero_state(1, H, spec), text_L[None, :-1], spec
    )
    np.testing.assert_array_equal(jnp.argmax(logits_L1V[len(prefix_P) - 1 :, 0], axis=-1), ids_N)


def tiny_cfg(**kw):
    fields = {
        "hidden": 16,
        "batch_size": 4,
        "num_steps": 10,
        "max_tokens": 1_500,
        "epochs": 3,
        "optimizer": "adam",
        "lr": 0.01,
        "predict_every": 0,
        "checkpoint_every": 1,
    }
    return config.validate(config.Config(**(fields | kw)))


@pytest.mark.slow
@pytest.mark.parametrize("cell", LINEAR)
def test_a_short_training_run_lowers_the_loss(cell):
    cfg = tiny_cfg(cell=cell, block="residual")
    tx = step_lib.make_optimizer(cfg)
    corpus = np.arange(1_500) % 7 + 1  # a cycle of seven characters: learnt in a few updates
    epoch, state = step_lib.make_train_epoch(cfg, tx), step_lib.init_state(cfg, V, tx)
    losses = []
    for e in range(3):
        state, _, metrics = epoch(state, *data.epoch_batches(corpus, cfg, e + 1))
        losses.append(float(jnp.mean(metrics["loss"])))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow
def test_a_run_resumes_exactly_and_generates(data_dir, tmp_path):
    """The LRU in residual blocks by the associative scan: a state of two arrays, every option this file adds."""
    cfg = tiny_cfg(cell="lru", block="residual", scan="associative", epochs=2, val_fraction=0.1, eval_every=1)
    whole = train.run(train.RunRequest(cfg, tmp_path / "whole", data_dir=str(data_dir), quiet=True))
    train.run(
        train.RunRequest(dataclasses.replace(cfg, epochs=1), tmp_path / "cut", data_dir=str(data_dir), quiet=True)
    )
    resumed = train.run(train.RunRequest(cfg, tmp_path / "cut", data_dir=str(data_dir), resume=True, quiet=True))
    assert resumed["perplexity"] == whole["perplexity"] and resumed["val_perplexity"] == whole["val_perplexity"]
    got_cfg, vocab, params, _ = load_run(tmp_path / "cut")
    with np.load(tmp_path / "whole" / "params.npz") as ref:
        for name in ref:
            np.testing.assert_array_equal(np.asarray(params[name]), ref[name], err_msg=name)
    spec = model.ModelSpec.from_config(got_cfg)
    text = generate.predict(params, vocab, "time traveller", 20, spec)
    assert text == generate.predict_loop(params, vocab, "time traveller", 20, spec)


def test_the_initialisations_are_the_papers(key):
    lru = cells.CELLS["lru"].init(key, jax.random.fold_in(key, 1), H, 64)
    modulus = np.exp(-np.exp(np.asarray(lru["nu_log"])))
    assert 0.9 <= modulus.min() and modulus.max() <= 0.999
    np.testing.assert_allclose(np.exp(lru["gamma_log"]), np.sqrt(1 - modulus**2), rtol=1e-4)
    assert 0 <= np.exp(lru["theta_log"]).min() and np.exp(lru["theta_log"]).max() <= 2 * np.pi
    a = jax.nn.sigmoid(cells.CELLS["rglru"].init(key, key, H, 64)["lam"])
    assert 0.9 <= float(a.min()) and float(a.max()) <= 0.999


def test_the_options_that_read_parameter_names_take_what_each_cell_declares(key):
    cfg = tiny_cfg(cell="minlstm", num_layers=2, forget_bias=1.0)
    params = step_lib.init_state(cfg, V, step_lib.make_optimizer(cfg)).params
    assert np.all(params["b_f"] == 1.0) and np.all(params["b_f" + stack.UPPER] == 1.0)
    assert np.all(params["b_i"] == 0.0)
    for cell in LINEAR:  # no recurrent matrix: nothing to drop, nothing made orthogonal
        spec = model.ModelSpec(cell, 2, block="residual")
        assert model.recurrent_weights(jax.eval_shape(lambda spec=spec: model.init_params(key, V, H, spec)), spec) == []
        with pytest.raises(config.ConfigError, match="has none"):
            tiny_cfg(cell=cell, weight_drop=0.1)
    for cell in ("lru", "rglru"):  # the scaled initialisation keeps their own parameters
        spec = model.ModelSpec(cell, 2)
        params = model.init_params(key, V, H, spec)
        scaled = jax.jit(model.rescale_init, static_argnums=2)(params, key, spec)
        for name in ("nu_log", "theta_log", "gamma_log", "lam", "D_upper", "B_re", "C_im_upper"):
            if name in params:
                np.testing.assert_array_equal(scaled[name], params[name], err_msg=name)
    with pytest.raises(config.ConfigError, match="needs a linear recurrence"):
        tiny_cfg(cell="lstm", scan="associative")
    assert tiny_cfg(cell="lstm", block="residual", num_layers=2, forget_bias=1.0, weight_drop=0.1).block == "residual"
