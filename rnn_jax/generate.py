"""Text from a trained model: the book's greedy predict and sampling, each one jitted lax.scan."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import data, exitcodes, model
from rnn_jax.exitcodes import UsageError


def _choose(logits_SV: jax.Array, key: jax.Array, temperature: float, top_k: int):
    """Greedy argmax when temperature == 0, else a draw from softmax(logits / T) over the top k, never <unk>."""
    if temperature == 0:
        return jnp.argmax(logits_SV, axis=-1).astype(jnp.int32)
    # Scale first, then mask: a huge T turns every logit to 0, and -inf / T would be nan, not -inf.
    logits_SV = (logits_SV / temperature).at[:, 0].set(-jnp.inf)  # <unk> (id 0) stands for no character
    if 0 < top_k < logits_SV.shape[-1]:
        # Draw among the k ids top_k returns, not among logits >= the k-th: ties would let more than k in.
        top_SK, ids_SK = jax.lax.top_k(logits_SV, top_k)
        pick_S = jax.random.categorical(key, top_SK)
        return jnp.take_along_axis(ids_SK, pick_S[:, None], axis=-1)[:, 0].astype(jnp.int32)
    return jax.random.categorical(key, logits_SV).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("num_chars", "num_samples", "spec", "temperature", "top_k"))
def generate_ids(
    params: model.Params,
    prefix_P: jax.Array,
    key: jax.Array,
    *,
    num_chars: int,
    num_samples: int = 1,
    spec: model.ModelSpec = model.BOOK,
    temperature: float = 0.0,
    top_k: int = 0,
) -> jax.Array:
    """Warm up on prefix[:-1] from a zero state, then feed prefix[-1] and emit num_chars ids: (S, N)."""
    project = functools.partial(model.input_projection, params, spec=spec)  # a gather
    # the cell (every layer), the first layer's gate inputs computed before
    stack = functools.partial(model.advance, params, spec=spec)

    def advance(state, xw_SG):
        return stack(state, xw_SG)[0], None

    state = model.zero_state(num_samples, params["W_hq"].shape[0], spec)
    warm_SP = jnp.broadcast_to(prefix_P[None, :-1], (num_samples, prefix_P.shape[0] - 1))
    state, _ = jax.lax.scan(advance, state, project(warm_SP))

    def step(carry, key_t):
        state, tok_S = carry
        state, h_SH = stack(state, project(tok_S[:, None])[0])
        tok_S = _choose(model.output_layer(params, h_SH, spec.dtype), key_t, temperature, top_k)
        return (state, tok_S), tok_S

    first_S = jnp.broadcast_to(prefix_P[-1], (num_samples,)).astype(jnp.int32)
    _, toks_NS = jax.lax.scan(step, (state, first_S), jax.random.split(key, num_chars))
    return toks_NS.T


def predict(params: model.Params, vocab, prefix: str, num_preds: int, spec: model.ModelSpec = model.BOOK) -> str:
    """The book's predict: the prefix as given + num_preds greedy characters; unknown characters warm up as <unk>."""
    if not prefix:
        raise ValueError("predict needs a non-empty prefix to warm up on")
    ids = generate_ids(params, jnp.asarray(vocab.encode(prefix)), jax.random.key(0), num_chars=num_preds, spec=spec)
    return prefix + vocab.decode(jax.device_get(ids[0]))


def predict_loop(params: model.Params, vocab, prefix: str, num_preds: int, spec: model.ModelSpec = model.BOOK) -> str:
    """The book's predict as written there (a jitted step and a host argmax per char); returns what predict does."""
    if not prefix:
        raise ValueError("predict needs a non-empty prefix to warm up on")
    step = _jitted_step(spec)
    h_1H = model.zero_state(1, params["W_hq"].shape[0], spec)
    prefix_ids = [int(i) for i in vocab.encode(prefix)]  # characters outside the vocabulary are <unk> (id 0)
    outputs = prefix_ids[:1]
    for y in prefix_ids[1:]:  # warm-up: feed the prefix, emit nothing
        h_1H, _ = step(params, h_1H, jnp.asarray([outputs[-1]]))
        outputs.append(y)
    for _ in range(num_preds):
        h_1H, logits_1V = step(params, h_1H, jnp.asarray([outputs[-1]]))
        outputs.append(int(jnp.argmax(logits_1V[0])))
    return prefix + vocab.decode(outputs[len(prefix) :])  # the prefix as given, like predict


@functools.cache
def _jitted_step(spec: model.ModelSpec):
    def step(params, state, tok_B):  # the cell's textbook step on the encoded character
        x_BI = model.ENCODERS[spec.encoder](params, tok_B[None])[0]
        state, h_BH = model.step(params, state, x_BI, spec)
        return state, model.output_layer(params, h_BH, spec.dtype)

    return jax.jit(step)


MAX_BYTES = 2**30  # one call holds every sample's ids and state on the device: refuse requests far beyond it
TEMPERATURES = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)  # it divides float32 logits


def clean_prompt(prompt: str, mode: str) -> str:
    """The prompt cleaned as the training text was (data.PREPROCESS[mode]), keeping the word boundary it ends on."""
    # A letter appended before cleaning survives it, so a final space or comma still ends the prompt as a space.
    return data.PREPROCESS[mode](prompt + "x")[:-1]


def read_prompt(path: str) -> str:
    """The UTF-8 text of a prompt file, its final newline dropped; UsageError says why it cannot be used."""
    if Path(path).exists() and not Path(path).is_file():
        raise UsageError(f"cannot read --prefix-file {path}: not a regular file")
    if Path(path).is_file() and Path(path).stat().st_size > MAX_BYTES:  # each character costs more than a byte
        raise UsageError(
            f"--prefix-file {path} is {Path(path).stat().st_size / 2**30:.1f} GiB: a prompt that long "
            f"cannot be warmed up on (at most {MAX_BYTES / 2**30:.0f} GiB of device memory)"
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--prefix-file {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--prefix-file {path} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UsageError(f"cannot read --prefix-file {path}: {e.strerror}") from None
    text = text[:-1] if text.endswith("\n") else text  # an editor's final newline ends the file, not the prompt
    if not text.strip():
        raise UsageError(f"--prefix-file {path} is empty")
    return text


def memory_bytes(
    num_samples: int, num_chars: int, hidden: int = 0, vocab_size: int = 0, prompt_chars: int = 0, cell: str = "rnn"
) -> int:
    """Rough device memory of one generate_ids call: ids (scan output and its transpose), keys, state, logits,
    and the warm-up: the prompt's ids and their input projections, one copy per sample."""
    warm = 4 * num_samples * prompt_chars * (model.CELLS[cell].gates * hidden + 1)  # G = gates * H columns
    return 8 * num_samples * num_chars + 8 * num_chars + 8 * num_samples * (hidden + vocab_size) + warm


def _size_error(args, hidden: int = 0, vocab_size: int = 0, prompt_chars: int = 0, cell: str = "rnn") -> str | None:
    need = memory_bytes(args.num_samples, args.num_chars, hidden, vocab_size, prompt_chars, cell)
    if need > MAX_BYTES:
        prompt = f" with a {prompt_chars:,}-character prompt" if prompt_chars else ""
        return (
            f"--num-samples {args.num_samples} x --num-chars {args.num_chars}{prompt} needs about "
            f"{need / 2**30:.1f} GiB of device memory up front (at most {MAX_BYTES / 2**30:.0f} GiB); generate "
            "in several calls, or with a shorter prompt"
        )
    return None


def _temperature(args) -> float:
    """The sampling temperature of the options: --temperature T, 1 / --alpha, or 0 for greedy."""
    if args.temperature is not None:
        return args.temperature
    return 1.0 / args.alpha if args.alpha is not None else 0.0


def _option_error(args) -> str | None:
    """What is wrong with the numeric options, found before any work; None when nothing is."""
    for flag, value in (("--temperature", args.temperature), ("--alpha", args.alpha)):
        if value is not None and not (math.isfinite(value) and value > 0):
            return f"{flag} must be a positive finite number, got {value} (use --greedy for argmax)"
    temperature = _temperature(args)
    low, high = TEMPERATURES
    if temperature and not low <= temperature <= high:
        given = f"--temperature {args.temperature}" if args.temperature is not None else f"--alpha {args.alpha}"
        return f"{given} gives temperature {temperature:g}, outside float32's [{low:.2g}, {high:.2g}]"
    if args.top_k < 0:
        return f"--top-k must be >= 0 (0: every character), got {args.top_k}"
    if args.top_k and temperature == 0:
        return "--top-k applies to sampling: give --temperature or --alpha too"
    if args.num_chars < 1 or args.num_samples < 1:
        return "--num-chars and --num-samples must be at least 1"
    if not 0 <= args.seed < 2**32:
        return f"--seed must be in [0, 2**32) (larger seeds repeat smaller ones), got {args.seed}"
    return _size_error(args)


def _notes(prompt: str, warm: str, cfg, vocab) -> list[str]:
    """What the user should know about how the model reads the prompt."""
    notes = []
    if warm != prompt:
        short = lambda t: repr(t) if len(t) <= 60 else repr(t[:57]) + "..."
        notes.append(
            f"note: the prompt is cleaned as this model's training text was (--preprocess {cfg.preprocess}):"
            f" {short(prompt)} -> {short(warm)}"
        )
    unknown = vocab.unknown(warm)
    if unknown:
        shown = ", ".join(f"{c!r}" for c in unknown)
        notes.append(
            f"note: prefix characters not in the model's vocabulary map to <unk> (id 0): {shown}; this "
            f"model's text is {vocab.decode(range(1, min(len(vocab), 12)))!r}..."
        )
    return notes


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m rnn_jax.generate", description="Generate text from a trained run: one sample per line."
    )
    parser.add_argument("--run-dir", required=True, help="a training run directory")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument(
        "--prefix",
        help="text to warm up on (default: the run's first training prompt, 'time "
        "traveller' for the book; '' starts from a space)",
    )
    prompt.add_argument("--prefix-file", help="read the text to warm up on from this UTF-8 file")
    parser.add_argument("--num-chars", type=int, default=200, help="characters to generate after the prefix")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="argmax at every step, as the book (the default)")
    mode.add_argument("--temperature", type=float, help="sample from softmax(logits / T)")
    mode.add_argument("--alpha", type=float, help="sample from p^alpha, renormalised (= temperature 1/alpha)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest characters only")
    parser.add_argument("--num-samples", type=int, default=1, help="samples drawn in one batched call")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling key, in [0, 2**32)")
    parser.add_argument(
        "--best", action="store_true", help="the run's best checkpoint by validation loss instead of its latest"
    )
    return parser


def main(argv=None) -> int:
    import rnn_jax

    rnn_jax.started()
    args = build_parser().parse_args(argv)
    return exitcodes.run(lambda: _generate(args))


def _generate(args) -> None:
    """Prints the samples the options ask for, one per line; UsageError says which option cannot be used."""
    import sys

    from rnn_jax.runs import load_run

    def check(error: str | None) -> None:
        if error:
            raise UsageError(error)

    check(_option_error(args))
    prompt = read_prompt(args.prefix_file) if args.prefix_file else args.prefix
    check(_size_error(args, prompt_chars=len(prompt or "")))
    cfg, vocab, params, saved = load_run(args.run_dir, best=args.best)
    if prompt is None:  # the run's own first prompt ('time traveller' for the book)
        prompt = (saved.get("predict_prefixes") or ["time traveller"])[0]
    if args.top_k > len(vocab):
        check(f"--top-k {args.top_k} is more than the {len(vocab)} tokens of this model's vocabulary")
    prefix = clean_prompt(prompt, cfg.preprocess)
    check(_size_error(args, cfg.hidden, len(vocab), len(prefix), cfg.cell))
    for note in _notes(prompt, prefix, cfg, vocab):
        print(note, file=sys.stderr)
    # an empty prefix warms up on nothing: start from the zero state fed a word boundary
    warm = prefix or (" " if " " in vocab.token_to_idx else vocab.idx_to_token[1])
    ids = generate_ids(
        params,
        jnp.asarray(vocab.encode(warm)),
        jax.random.key(args.seed),
        num_chars=args.num_chars,
        num_samples=args.num_samples,
        temperature=_temperature(args),
        top_k=args.top_k,
        spec=model.ModelSpec.from_config(cfg),
    )
    for row in jax.device_get(ids):
        print(prefix + vocab.decode(row))


if __name__ == "__main__":
    raise SystemExit(main())
