"""Text from a trained model: the book's greedy predict and sampling, each one jitted lax.scan."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnn_jax import model


def _choose(logits_SV: jax.Array, key: jax.Array, temperature: float, top_k: int):
    """Greedy argmax when temperature == 0, else a draw from softmax(logits / T) over the top k."""
    if temperature == 0:
        return jnp.argmax(logits_SV, axis=-1).astype(jnp.int32)
    if 0 < top_k < logits_SV.shape[-1]:
        kth_SV = jax.lax.top_k(logits_SV, top_k)[0][:, -1:]
        logits_SV = jnp.where(logits_SV < kth_SV, -jnp.inf, logits_SV)
    return jax.random.categorical(key, logits_SV / temperature).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_chars", "num_samples", "activation", "encoder",
                                             "dtype", "temperature", "top_k"))
def generate_ids(params: model.Params, prefix_P: jax.Array, key: jax.Array, *, num_chars: int,
                 num_samples: int = 1, activation: str = "tanh", encoder: str = "onehot",
                 dtype: str = "float32", temperature: float = 0.0, top_k: int = 0) -> jax.Array:
    """Warm up on prefix[:-1] from a zero state, then feed prefix[-1] and emit num_chars ids: (S, N)."""
    cell = functools.partial(model.rnn_cell, params, act=model.ACTIVATIONS[activation].fn, dtype=dtype)
    encode = lambda tok_S: model.ENCODERS[encoder](params, tok_S[None])[0]
    h_SH = model.init_hidden(num_samples, params["W_hh"].shape[0])
    warm_PS = jnp.broadcast_to(prefix_P[:-1, None], (prefix_P.shape[0] - 1, num_samples))
    h_SH, _ = jax.lax.scan(cell, h_SH, model.ENCODERS[encoder](params, warm_PS))

    def step(carry, key_t):
        h_SH, tok_S = carry
        h_SH, _ = cell(h_SH, encode(tok_S))
        tok_S = _choose(model.output_layer(params, h_SH, dtype), key_t, temperature, top_k)
        return (h_SH, tok_S), tok_S

    first_S = jnp.broadcast_to(prefix_P[-1], (num_samples,)).astype(jnp.int32)
    _, toks_NS = jax.lax.scan(step, (h_SH, first_S), jax.random.split(key, num_chars))
    return toks_NS.T


def predict(params: model.Params, vocab, prefix: str, num_preds: int, *, activation: str = "tanh",
            encoder: str = "onehot", dtype: str = "float32") -> str:
    """The book's predict: prefix + num_preds greedy characters (warm-up on the prefix first)."""
    if not prefix:
        raise ValueError("predict needs a non-empty prefix to warm up on")
    ids = generate_ids(params, jnp.asarray(vocab.encode(prefix)), jax.random.key(0), num_chars=num_preds,
                       activation=activation, encoder=encoder, dtype=dtype)
    return prefix + vocab.decode(jax.device_get(ids[0]))


def predict_loop(params: model.Params, vocab, prefix: str, num_preds: int, *, activation: str = "tanh",
                 encoder: str = "onehot", dtype: str = "float32") -> str:
    """The book's predict as written there: a Python loop, one jitted step and a host argmax per char."""
    step = _jitted_step(activation, encoder, dtype)
    h_1H = model.init_hidden(1, params["W_hh"].shape[0])
    outputs = [int(vocab.encode(prefix[0])[0])]
    for y in prefix[1:]:  # warm-up: feed the prefix, emit nothing
        h_1H, _ = step(params, h_1H, jnp.asarray([outputs[-1]]))
        outputs.append(int(vocab.encode(y)[0]))
    for _ in range(num_preds):
        h_1H, logits_1V = step(params, h_1H, jnp.asarray([outputs[-1]]))
        outputs.append(int(jnp.argmax(logits_1V[0])))
    return vocab.decode(outputs)


@functools.cache
def _jitted_step(activation: str, encoder: str, dtype: str):
    def step(params, h_BH, tok_B):
        x_BI = model.ENCODERS[encoder](params, tok_B[None])[0]
        h_BH, _ = model.rnn_cell(params, h_BH, x_BI, act=model.ACTIVATIONS[activation].fn, dtype=dtype)
        return h_BH, model.output_layer(params, h_BH, dtype)
    return jax.jit(step)
