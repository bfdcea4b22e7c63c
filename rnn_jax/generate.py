"""Text from a trained model: the book's greedy predict and sampling, each one jitted lax.scan."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rnn_jax import model


def _choose(logits_SV: jax.Array, key: jax.Array, temperature: float, top_k: int):
    """Greedy argmax when temperature == 0, else a draw from softmax(logits / T) over the top k, never <unk>."""
    if temperature == 0:
        return jnp.argmax(logits_SV, axis=-1).astype(jnp.int32)
    logits_SV = logits_SV.at[:, 0].set(-jnp.inf)  # <unk> (id 0) stands for no character: never draw it
    if 0 < top_k < logits_SV.shape[-1]:
        kth_SV = jax.lax.top_k(logits_SV, top_k)[0][:, -1:]
        logits_SV = jnp.where(logits_SV < kth_SV, -jnp.inf, logits_SV)
    return jax.random.categorical(key, logits_SV / temperature).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_chars", "num_samples", "cell", "num_layers", "activation",
                                             "encoder", "dtype", "temperature", "top_k"))
def generate_ids(params: model.Params, prefix_P: jax.Array, key: jax.Array, *, num_chars: int,
                 num_samples: int = 1, cell: str = "rnn", num_layers: int = 1, activation: str = "tanh",
                 encoder: str = "onehot", dtype: str = "float32", temperature: float = 0.0,
                 top_k: int = 0) -> jax.Array:
    """Warm up on prefix[:-1] from a zero state, then feed prefix[-1] and emit num_chars ids: (S, N)."""
    project = functools.partial(model.input_projection, params, encoder=encoder, dtype=dtype, cell=cell)  # a gather
    # the cell (every layer), the first layer's gate inputs computed before
    stack = functools.partial(model.advance, params, cell=cell, num_layers=num_layers, activation=activation,
                              dtype=dtype)

    def advance(state, xw_SG):
        return stack(state, xw_SG)[0], None

    state = model.zero_state(num_samples, params["W_hq"].shape[0], cell, num_layers)
    warm_SP = jnp.broadcast_to(prefix_P[None, :-1], (num_samples, prefix_P.shape[0] - 1))
    state, _ = jax.lax.scan(advance, state, project(warm_SP))

    def step(carry, key_t):
        state, tok_S = carry
        state, h_SH = stack(state, project(tok_S[:, None])[0])
        tok_S = _choose(model.output_layer(params, h_SH, dtype), key_t, temperature, top_k)
        return (state, tok_S), tok_S

    first_S = jnp.broadcast_to(prefix_P[-1], (num_samples,)).astype(jnp.int32)
    _, toks_NS = jax.lax.scan(step, (state, first_S), jax.random.split(key, num_chars))
    return toks_NS.T


def predict(params: model.Params, vocab, prefix: str, num_preds: int, *, cell: str = "rnn", num_layers: int = 1,
            activation: str = "tanh", encoder: str = "onehot", dtype: str = "float32") -> str:
    """The book's predict: prefix + num_preds greedy characters (warm-up on the prefix first)."""
    if not prefix:
        raise ValueError("predict needs a non-empty prefix to warm up on")
    ids = generate_ids(params, jnp.asarray(vocab.encode(prefix)), jax.random.key(0), num_chars=num_preds,
                       cell=cell, num_layers=num_layers, activation=activation, encoder=encoder, dtype=dtype)
    return prefix + vocab.decode(jax.device_get(ids[0]))


def predict_loop(params: model.Params, vocab, prefix: str, num_preds: int, *, cell: str = "rnn",
                 num_layers: int = 1, activation: str = "tanh", encoder: str = "onehot",
                 dtype: str = "float32") -> str:
    """The book's predict as written there: a Python loop, one jitted step and a host argmax per char."""
    step = _jitted_step(cell, num_layers, activation, encoder, dtype)
    h_1H = model.zero_state(1, params["W_hq"].shape[0], cell, num_layers)
    outputs = [int(vocab.encode(prefix[0])[0])]
    for y in prefix[1:]:  # warm-up: feed the prefix, emit nothing
        h_1H, _ = step(params, h_1H, jnp.asarray([outputs[-1]]))
        outputs.append(int(vocab.encode(y)[0]))
    for _ in range(num_preds):
        h_1H, logits_1V = step(params, h_1H, jnp.asarray([outputs[-1]]))
        outputs.append(int(jnp.argmax(logits_1V[0])))
    return vocab.decode(outputs)


@functools.cache
def _jitted_step(cell: str, num_layers: int, activation: str, encoder: str, dtype: str):
    def step(params, state, tok_B):  # the cell's textbook step on the encoded character
        x_BI = model.ENCODERS[encoder](params, tok_B[None])[0]
        state, h_BH = model.step(params, state, x_BI, cell=cell, num_layers=num_layers, activation=activation,
                                 dtype=dtype)
        return state, model.output_layer(params, h_BH, dtype)
    return jax.jit(step)


def main(argv=None) -> int:
    import argparse
    import sys

    from rnn_jax import checkpoint
    from rnn_jax.rundir import load_run

    parser = argparse.ArgumentParser(prog="python -m rnn_jax.generate",
                                     description="Generate text from a trained run: one sample per line.")
    parser.add_argument("--run-dir", required=True, help="a training run directory")
    parser.add_argument("--prefix", default="time traveller", help="text to warm up on ('' starts from a space)")
    parser.add_argument("--num-chars", type=int, default=200, help="characters to generate after the prefix")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="argmax at every step, as the book (the default)")
    mode.add_argument("--temperature", type=float, help="sample from softmax(logits / T)")
    mode.add_argument("--alpha", type=float, help="sample from p^alpha, renormalised (= temperature 1/alpha)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest characters only")
    parser.add_argument("--num-samples", type=int, default=1, help="samples drawn in one batched call")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling key")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    temperature = args.temperature if args.temperature is not None else (
        1.0 / args.alpha if args.alpha is not None and args.alpha > 0 else 0.0)
    if args.num_chars < 1 or args.num_samples < 1:
        return fail("--num-chars and --num-samples must be at least 1")
    if (args.temperature is not None and args.temperature <= 0) or (args.alpha is not None and args.alpha <= 0):
        return fail("--temperature and --alpha must be positive (use --greedy for argmax)")
    if args.top_k < 0:
        return fail("--top-k must be >= 0")
    if args.top_k and temperature == 0:
        return fail("--top-k applies to sampling: give --temperature or --alpha too")
    try:
        cfg, vocab, params, _ = load_run(args.run_dir)
    except checkpoint.CheckpointError as e:
        return fail(str(e))
    unknown = vocab.unknown(args.prefix)
    if unknown:
        shown = ", ".join(f"{c!r}" for c in unknown)
        print(f"note: prefix characters not in the model's vocabulary map to <unk> (id 0): {shown}; this model's "
              f"text is {vocab.decode(range(1, min(len(vocab), 12)))!r}...", file=sys.stderr)
    # an empty prefix warms up on nothing: start from the zero state fed a word boundary
    warm = args.prefix or (" " if " " in vocab.token_to_idx else vocab.idx_to_token[1])
    ids = generate_ids(params, jnp.asarray(vocab.encode(warm)), jax.random.key(args.seed),
                       num_chars=args.num_chars, num_samples=args.num_samples, temperature=temperature,
                       top_k=args.top_k, **model.options(cfg))
    for row in jax.device_get(ids):
        print(args.prefix + vocab.decode(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
