import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_jax import model

V, H, B, T = 28, 16, 3, 7
PAIRS = list(itertools.product(model.ACTIVATIONS, model.ENCODERS))


def setup(key, encoder="onehot"):
    key_p, key_t, key_h = jax.random.split(key, 3)
    params = model.init_params(key_p, V, H, model.ModelSpec(encoder=encoder), embed_dim=5)
    params = jax.tree.map(lambda p: p * 30 if p.ndim == 2 else p + 0.1, params)  # away from ~0, non-linear
    tokens_BT = jax.random.randint(key_t, (B, T), 0, V)
    h_BH = 0.5 * jax.random.normal(key_h, (B, H))
    return params, tokens_BT, h_BH


@pytest.mark.slow
def test_init_follows_the_book(key):
    params = model.init_params(key, V, 512)
    assert {k: v.shape for k, v in params.items()} == {
        "W_xh": (V, 512),
        "W_hh": (512, 512),
        "b_h": (512,),
        "W_hq": (512, V),
        "b_q": (V,),
    }
    assert np.all(params["b_h"] == 0) and np.all(params["b_q"] == 0)
    assert abs(float(jnp.std(params["W_hh"])) - 0.01) < 2e-4
    assert abs(float(jnp.mean(params["W_hh"]))) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("activation,encoder", PAIRS)
@pytest.mark.parametrize("fwd", ["autodiff", "fused"])
def test_shapes_and_finiteness(key, activation, encoder, fwd):
    params, tokens_BT, h_BH = setup(key, encoder)
    spec = model.ModelSpec(activation=activation, encoder=encoder)
    logits_TBV, h_last = model.FORWARDS[fwd](params, h_BH, tokens_BT, spec)
    assert logits_TBV.shape == (T, B, V) and h_last.shape == (B, H)
    assert np.all(np.isfinite(logits_TBV))


@pytest.mark.slow
@pytest.mark.parametrize("activation,encoder", PAIRS)
def test_scan_equals_a_python_loop_over_the_cell(key, activation, encoder):
    params, tokens_BT, h_BH = setup(key, encoder)
    logits_TBV, h_last = model.forward(params, h_BH, tokens_BT, model.ModelSpec(activation=activation, encoder=encoder))
    act = model.ACTIVATIONS[activation].fn
    h = np.asarray(h_BH)
    for t in range(T):
        x = model.ENCODERS[encoder](params, tokens_BT[:, t])
        h, _ = model.rnn_cell(params, h, x, act=act)
        np.testing.assert_allclose(logits_TBV[t], h @ params["W_hq"] + params["b_q"][None], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_last, h, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_one_hot_times_W_xh_is_the_row_gather(key):
    params, tokens_BT, _ = setup(key)
    x_TBV = model.ENCODERS["onehot"](params, tokens_BT.T)
    np.testing.assert_array_equal(x_TBV @ params["W_xh"], params["W_xh"][tokens_BT.T])
    np.testing.assert_array_equal(
        model.input_projection(params, tokens_BT), params["W_xh"][tokens_BT.T] + params["b_h"][None, None]
    )


def test_one_hot_equals_an_embedding_whose_table_is_W_xh(key):
    params, tokens_BT, h_BH = setup(key)
    as_embed = {**params, "embed": params["W_xh"], "W_xh": jnp.eye(H)}
    a = model.forward(params, h_BH, tokens_BT)[0]
    b = model.forward(as_embed, h_BH, tokens_BT, model.ModelSpec(encoder="embed"))[0]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_cell_equals_flax_simple_cell(key):
    params, tokens_BT, h_BH = setup(key)
    x_BV = jax.nn.one_hot(tokens_BT[:, 0], V)
    flax_params = {"params": {"i": {"kernel": params["W_xh"], "bias": params["b_h"]}, "h": {"kernel": params["W_hh"]}}}
    cell = nn.SimpleCell(features=H)
    assert jax.tree.structure(cell.init(key, h_BH, x_BV)) == jax.tree.structure(flax_params)
    h_flax, _ = cell.apply(flax_params, h_BH, x_BV)
    h_ours, _ = model.rnn_cell(params, h_BH, x_BV)
    np.testing.assert_allclose(h_ours, h_flax, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("activation,encoder", PAIRS)
def test_fused_forward_and_gradients_equal_autodiff(key, activation, encoder):
    params, tokens_BT, h_BH = setup(key, encoder)

    def objective(fwd, p, h):  # touches every output, including the final state
        logits_TBV, h_last = fwd(p, h, tokens_BT, model.ModelSpec(activation=activation, encoder=encoder))
        return jnp.sum(jnp.sin(logits_TBV)) + jnp.sum(h_last**3)

    ref = jax.value_and_grad(functools.partial(objective, model.forward), argnums=(0, 1))(params, h_BH)
    got = jax.value_and_grad(functools.partial(objective, model.forward_fused), argnums=(0, 1))(params, h_BH)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5)
    for name, a, b in zip(["params", "h0"], got[1], ref[1], strict=True):
        for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(
                x, y, rtol=2e-4, atol=2e-5 * float(jnp.abs(y).max()), err_msg=f"{name}{jax.tree_util.keystr(path)}"
            )


@pytest.mark.slow
def test_bfloat16_matmuls_stay_close_to_float32(key):
    params, tokens_BT, h_BH = setup(key)
    params = jax.tree.map(lambda p: p / 30 if p.ndim == 2 else p, params)
    a = model.forward_fused(params, h_BH, tokens_BT)[0]
    b = model.forward_fused(params, h_BH, tokens_BT, model.ModelSpec(dtype="bfloat16"))[0]
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(a, b, atol=2e-2)
    assert not np.array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("fwd", ["autodiff", "fused"])
def test_chunked_unroll_with_carried_state_equals_one_pass(key, fwd):
    params, _, h_BH = setup(key)
    tokens_BT = jax.random.randint(key, (B, 2 * T), 0, V)
    f = model.FORWARDS[fwd]
    whole, h_whole = f(params, h_BH, tokens_BT)
    first, h_mid = f(params, h_BH, tokens_BT[:, :T])
    second, h_end = f(params, h_mid, tokens_BT[:, T:])
    np.testing.assert_allclose(jnp.concatenate([first, second]), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_end, h_whole, rtol=1e-5, atol=1e-6)


INPUT_TABLE = {"onehot": "W_xh", "embed": "embed"}  # the rows an input token selects


@pytest.mark.slow
@pytest.mark.parametrize("encoder", model.ENCODERS)
@pytest.mark.parametrize("fwd", ["autodiff", "fused"])
def test_outputs_are_causal(key, fwd, encoder):
    params, _, h_BH = setup(key, encoder)
    # Every (row, step) reads its own token, hence its own row of the input table: the jacobian with respect
    # to that row is the dependence on that one input (B * T = 21 distinct tokens fit in V = 28).
    tokens_BT = jnp.arange(B * T).reshape(B, T)
    table = INPUT_TABLE[encoder]

    def logits_from_table(rows):
        return model.FORWARDS[fwd]({**params, table: rows}, h_BH, tokens_BT, model.ModelSpec(encoder=encoder))[0]

    jac = jax.jacrev(logits_from_table)(params[table])  # (T, B, V, V, I)
    for t, b in itertools.product(range(T), range(B)):
        later, now = tokens_BT[b, t + 1 :], tokens_BT[b, t]
        assert np.all(jac[t, b][:, later] == 0), f"{fwd}: logits at {t} depend on later inputs"
        assert np.any(jac[t, b][:, now] != 0)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", model.ENCODERS)
@pytest.mark.parametrize("fwd", ["autodiff", "fused"])
def test_changing_later_tokens_leaves_earlier_logits_bit_exact(key, fwd, encoder):
    params, tokens_BT, h_BH = setup(key, encoder)
    f = jax.vmap(functools.partial(model.FORWARDS[fwd], params, h_BH, spec=model.ModelSpec(encoder=encoder)))
    shifts_K11 = jnp.arange(V)[:, None, None]  # shift 0 is the original; the rest give later tokens every value
    tokens_1BT = tokens_BT[None]
    for t in range(T - 1):
        later_11T = (jnp.arange(T) > t)[None, None]
        logits_KTBV = np.asarray(f(jnp.where(later_11T, (tokens_1BT + shifts_K11) % V, tokens_1BT))[0])
        assert np.all(logits_KTBV[1:, : t + 1] == logits_KTBV[:1, : t + 1]), f"{fwd}: step {t} sees later tokens"
        assert not np.array_equal(logits_KTBV[1, t + 1], logits_KTBV[0, t + 1])


def test_jit_equals_eager(key):
    params, tokens_BT, h_BH = setup(key)
    eager = model.forward_fused(params, h_BH, tokens_BT)[0]
    jitted = jax.jit(model.forward_fused)(params, h_BH, tokens_BT)[0]
    np.testing.assert_allclose(eager, jitted, rtol=1e-6, atol=1e-6)
