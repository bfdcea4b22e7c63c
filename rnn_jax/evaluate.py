"""Held-out evaluation: perplexity and bits per character over a whole text, the state carried throughout.

python -m rnn_jax.evaluate --run-dir RUN                      # the run's validation split, else the text
                                                              # after the max_tokens it trained on
python -m rnn_jax.evaluate --run-dir RUN --corpus other.txt   # any text, mapped to the run's vocabulary
python -m rnn_jax.evaluate --run-dir RUN --best --split test --dynamic --dynamic-lr 0.1 --dynamic-segment 50
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnn_jax
from rnn_jax import config as config_lib
from rnn_jax import data, exitcodes, model, rundir, testlog
from rnn_jax import step as step_lib
from rnn_jax.exitcodes import Exit
from rnn_jax.scoring import (  # noqa: F401
    POSITION_BANDS,
    PROTOCOLS,
    WINDOW_BATCH,
    WINDOW_LENGTH,
    WINDOW_SEED,
    WINDOWS,
    NonFinite,
    figures,
    window_figures,
    window_starts,
)

CHUNK = 1024  # tokens per scan chunk; the state flows from chunk to chunk
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest step size the float32 computation can hold


@functools.partial(jax.jit, static_argnames=("spec", "hidden"))
def _sum_nll(params, inputs_CL, targets_CL, mask_CL, *, spec: model.ModelSpec, hidden: int):
    def chunk(state, batch):
        inputs_L, targets_L, mask_L = batch
        logits_L1V, state = model.forward_fused(params, state, inputs_L[None], spec)
        nll_L = optax.softmax_cross_entropy_with_integer_labels(logits_L1V[:, 0], targets_L)
        return state, jnp.sum(nll_L * mask_L)

    state = model.zero_state(1, hidden, spec)
    return jnp.sum(jax.lax.scan(chunk, state, (inputs_CL, targets_CL, mask_CL))[1])


def evaluate(params, tokens: np.ndarray, cfg: config_lib.Config, *, context: np.ndarray | None = None) -> dict:
    """Mean loss (nats), perplexity and bits/char of every token of `tokens`, one stream from a zero state.

    With `context` (the text just before, e.g. the training part), its last token is the first input,
    so every token of `tokens` is scored; without it the first token is only an input.
    """
    inputs, targets = _stream(tokens, context)
    n_chunks = -(-len(targets) // CHUNK)
    pad = n_chunks * CHUNK - len(targets)
    shape = lambda a: np.pad(a, (0, pad)).reshape(n_chunks, CHUNK)
    total = _sum_nll(
        params,
        shape(inputs),
        shape(targets),
        shape(np.ones(len(targets), np.float32)),
        spec=model.ModelSpec.from_config(cfg),
        hidden=cfg.hidden,
    )
    return figures(float(total) / len(targets), len(targets))


@functools.partial(jax.jit, static_argnames=("spec", "hidden"))
def _token_nll(params, inputs_CL, targets_CL, *, spec: model.ModelSpec, hidden: int):
    def chunk(state, batch):
        inputs_L, targets_L = batch
        logits_L1V, state = model.forward_fused(params, state, inputs_L[None], spec)
        return state, optax.softmax_cross_entropy_with_integer_labels(logits_L1V[:, 0], targets_L)

    state = model.zero_state(1, hidden, spec)
    return jax.lax.scan(chunk, state, (inputs_CL, targets_CL))[1]


def token_losses(params, tokens: np.ndarray, cfg: config_lib.Config, *, context: np.ndarray | None = None):
    """-ln P(token) of every token `evaluate` scores, in order (float64 on the host): what an ensemble of models,
    or a mixture with a counting model, averages as probabilities."""
    inputs, targets = _stream(tokens, context)
    n_chunks = -(-len(targets) // CHUNK)
    pad = n_chunks * CHUNK - len(targets)
    shape = lambda a: np.pad(a, (0, pad)).reshape(n_chunks, CHUNK)
    nll = _token_nll(params, shape(inputs), shape(targets), spec=model.ModelSpec.from_config(cfg), hidden=cfg.hidden)
    return np.asarray(nll, np.float64).reshape(-1)[: len(targets)]


def _stream(tokens: np.ndarray, context: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of a held-out text: with context its last token is the first input, as in `evaluate`."""
    tokens = np.asarray(tokens, np.int32)
    if context is not None and len(context):
        inputs, targets = np.concatenate([np.asarray(context[-1:], np.int32), tokens[:-1]]), tokens
    else:
        inputs, targets = tokens[:-1], tokens[1:]
    if len(targets) == 0:
        raise data.DataError("nothing to evaluate: the held-out text is empty (is --val-fraction 0?)")
    return inputs, targets


@functools.partial(jax.jit, static_argnames=("spec", "hidden"))
def _window_nll(params, inputs_NBL, targets_NBL, *, spec: model.ModelSpec, hidden: int):
    def batch(_, xy):
        inputs_BL, targets_BL = xy
        state = model.zero_state(inputs_BL.shape[0], hidden, spec)  # each window from an empty context
        logits_LBV, _ = model.forward_fused(params, state, inputs_BL, spec)
        return None, optax.softmax_cross_entropy_with_integer_labels(logits_LBV, targets_BL.T).T

    return jax.lax.scan(batch, None, (inputs_NBL, targets_NBL))[1]


def window_losses(
    params,
    tokens: np.ndarray,
    spec: model.ModelSpec,
    hidden: int,
    *,
    windows: int = WINDOWS,
    length: int = WINDOW_LENGTH,
    seed: int = WINDOW_SEED,
) -> np.ndarray:
    """-ln P of every target of `windows` random windows of `tokens`, each scored from a zero state with nothing
    before it: (windows, length) float64, row i the window at window_starts(...)[i]."""
    tokens = np.asarray(tokens, np.int32)
    starts = window_starts(len(tokens), windows, length, seed)
    idx_NL = starts[:, None] + np.arange(length)
    batch = math.gcd(windows, WINDOW_BATCH)  # nanoGPT's 64 rows per batch when the count allows
    shape = lambda a: a.reshape(-1, batch, length)
    nll = _window_nll(params, shape(tokens[idx_NL]), shape(tokens[idx_NL + 1]), spec=spec, hidden=hidden)
    return np.asarray(nll, np.float64).reshape(windows, length)


def evaluate_windows(
    params,
    tokens: np.ndarray,
    cfg: config_lib.Config,
    *,
    windows: int = WINDOWS,
    length: int = WINDOW_LENGTH,
    seed: int = WINDOW_SEED,
) -> dict:
    """nanoGPT's estimate_loss for a recurrent model: the mean loss over every target of `windows` windows of
    `length` characters drawn uniformly from `tokens` with `seed`, each from a zero state (window_figures)."""
    spec = model.ModelSpec.from_config(cfg)
    nll = window_losses(params, tokens, spec, cfg.hidden, windows=windows, length=length, seed=seed)
    return window_figures(nll, seed)


RMS_DECAY, RMS_EPS = 0.99, 1e-8  # RMS-normalised steps: running mean of g^2 over the segments already scored


def _dynamic_update(rule: str, lr, decay, params, p, grads, ms, k):
    """One step of dynamic evaluation: SGD, or SGD on g / RMS(g) with the RMS of the segments so far (bias-corrected,
    as in RMSprop/Adam); either way then decay * (trained - current) back towards the trained parameters."""
    if rule == "rms":
        ms = jax.tree.map(lambda m, g: RMS_DECAY * m + (1 - RMS_DECAY) * g * g, ms, grads)
        grads = jax.tree.map(lambda g, m: g / (jnp.sqrt(m / (1 - RMS_DECAY**k)) + RMS_EPS), grads, ms)
    return jax.tree.map(lambda w, g, w0: w - lr * g + decay * (w0 - w), p, grads, params), ms


@functools.partial(jax.jit, static_argnames=("cfg", "rule"))
def _dynamic_nll(params, inputs_SL, targets_SL, mask_SL, lr, decay, *, cfg: config_lib.Config, rule: str):
    """Summed loss of each segment under the parameters updated on the segments before it only: (S,)."""

    def seg_loss(p, state, inputs_L, targets_L, mask_L):
        logits_L1V, state = model.forward_fused(p, state, inputs_L[None], model.ModelSpec.from_config(cfg))
        nll = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits_L1V[:, 0], targets_L) * mask_L)
        return nll / jnp.maximum(jnp.sum(mask_L), 1.0), (nll, state)

    def segment(carry, seg):
        p, state, ms, k = carry
        # one forward pass both scores the segment and gives its gradient: the score comes before the update
        grads, (nll, state) = jax.grad(seg_loss, has_aux=True)(p, step_lib.stop_gradient(state), *seg)
        p, ms = _dynamic_update(rule, lr, decay, params, p, grads, ms, k + 1)
        return (p, state, ms, k + 1), nll

    carry = (params, step_lib.zero_state(cfg, 1), jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32))
    return jax.lax.scan(segment, carry, (inputs_SL, targets_SL, mask_SL))[1]


def dynamic_segment_losses(
    params,
    tokens: np.ndarray,
    cfg: config_lib.Config,
    *,
    lr: float,
    segment: int,
    decay: float = 0.0,
    rule: str = "sgd",
    context: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic evaluation (Krause et al. 2018), one jitted scan over segments: each segment of the stream is scored,
    then the parameters take one step on its mean loss (rule "sgd", or "rms": RMS-normalised) and decay * (trained -
    current) back towards the trained ones, the state carried throughout. Returns (summed loss, tokens) per segment."""
    inputs, targets = _stream(tokens, context)
    n_seg = -(-len(targets) // segment)
    pad = n_seg * segment - len(targets)
    shape = lambda a: np.pad(a, (0, pad)).reshape(n_seg, segment)
    mask = shape(np.ones(len(targets), np.float32))
    nll = _dynamic_nll(
        params, shape(inputs), shape(targets), mask, jnp.float32(lr), jnp.float32(decay), cfg=cfg, rule=rule
    )
    return np.asarray(nll, np.float64), mask.sum(1)


def dynamic_evaluate(
    params,
    tokens: np.ndarray,
    cfg: config_lib.Config,
    *,
    lr: float,
    segment: int,
    decay: float = 0.0,
    rule: str = "sgd",
    context: np.ndarray | None = None,
) -> dict:
    """`evaluate`'s figures under dynamic evaluation (see dynamic_segment_losses); never trains before scoring."""
    nll, counts = dynamic_segment_losses(
        params, tokens, cfg, lr=lr, segment=segment, decay=decay, rule=rule, context=context
    )
    return figures(
        float(nll.sum() / counts.sum()),
        int(counts.sum()),
        f"dynamic evaluation ({rule}, step size {lr:g}, segments of {segment})",
    )


def _check_dynamic(args) -> None:
    """Rejects dynamic-evaluation options that cannot run, before loading anything."""
    if not (math.isfinite(args.dynamic_lr) and 0 <= args.dynamic_lr <= FLOAT32_MAX):
        raise config_lib.ConfigError(
            f"--dynamic-lr must be a number in [0, {FLOAT32_MAX:.4g}] (float32's range), got {args.dynamic_lr}"
        )
    if args.protocol == "windows" and args.dynamic:
        raise config_lib.ConfigError(
            "dynamic evaluation adapts along one stream: it has no windows protocol; drop --dynamic or use "
            "--protocol stream"
        )
    if args.windows < 1 or args.window_length < 1:
        raise config_lib.ConfigError(
            f"--windows and --window-length must be at least 1, got {args.windows} and {args.window_length}"
        )
    if args.dynamic_segment < 1:
        raise config_lib.ConfigError(f"--dynamic-segment must be at least 1, got {args.dynamic_segment}")
    if not 0 <= args.dynamic_decay < 1:
        raise config_lib.ConfigError(f"--dynamic-decay must be in [0, 1), got {args.dynamic_decay}")


def window_args(args) -> dict:
    """The windows protocol's keyword arguments from the command line."""
    return {"windows": args.windows, "length": args.window_length, "seed": args.window_seed}


def check_corpus(path: Path, saved: dict) -> None:
    """Raises DataError when the run's splits would be cut from another text than the one it trained on."""
    want = saved["data"]["sha1"]
    got = data.sha1_of(path)
    if got != want:
        raise data.DataError(
            f"{path} is not the corpus the run trained on (SHA-1 {got}, the run's {want}), so its "
            "splits would be other text; pass the original with --data-dir, or score any text "
            "with --corpus"
        )


def own_corpus(saved: dict, data_dir: str | None) -> Path:
    """The file a run trained on: where config.json says, or, given --data-dir, its file in that directory (a named
    corpus, data.CORPORA, verified by its SHA-1)."""
    path = Path(saved["data"]["path"])
    if not data_dir:
        return path
    name = data.corpus_name(path, saved["data"]["sha1"])
    if name in data.CORPORA:
        return data.resolve_corpus(name, data_dir)
    return Path(data_dir).expanduser() / path.name


def default_split(parts: dict) -> str:
    """val; for a run without one that trained on a prefix of its text, unseen (the rest), saying so."""
    (val, _), (unseen, trained) = parts["val"], parts["unseen"]
    if len(val) or not len(unseen):
        return "val"
    print(
        f"no validation part: scoring the {len(unseen):,} characters after the {len(trained):,} trained on "
        "(--split unseen)",
        file=sys.stderr,
    )
    return "unseen"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rnn_jax.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--corpus", default=None, help="evaluate on this text (default: the run's own corpus)")
    parser.add_argument("--data-dir", default=None, help="where the run's corpus now lives, if it moved")
    parser.add_argument(
        "--split",
        default=None,
        choices=("train", "val", "test", "all", "unseen"),
        help="part of the text to score; unseen: the rest of the training part after the max_tokens "
        "trained on (default: val for the run's corpus, or unseen when it has no val part; all for "
        "--corpus)",
    )
    parser.add_argument(
        "--best", action="store_true", help="the run's best checkpoint by validation perplexity instead of its latest"
    )
    parser.add_argument(
        "--baselines", action="store_true", help="also score n-gram baselines fit on the run's training text"
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="stream",
        help="stream: the part as one stream, the state carried from its first character to its last; windows: "
        "nanoGPT's estimate_loss, the mean loss over every target of random windows, each from a zero state with "
        "nothing before it (default stream)",
    )
    parser.add_argument(
        "--windows", type=int, default=WINDOWS, help=f"windows drawn with --protocol windows (default {WINDOWS})"
    )
    parser.add_argument(
        "--window-length",
        type=int,
        default=WINDOW_LENGTH,
        help=f"characters per window with --protocol windows (default {WINDOW_LENGTH}, nanoGPT's block size)",
    )
    parser.add_argument(
        "--window-seed", type=int, default=WINDOW_SEED, help=f"seed of the windows' starts (default {WINDOW_SEED})"
    )
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="also score with dynamic evaluation: each segment scored, then one step on it (Krause et al. 2018)",
    )
    parser.add_argument("--dynamic-lr", type=float, default=0.1, help="SGD step of dynamic evaluation (default 0.1)")
    parser.add_argument(
        "--dynamic-segment", type=int, default=50, help="characters per dynamic-evaluation segment (default 50)"
    )
    parser.add_argument(
        "--dynamic-rule",
        choices=("sgd", "rms"),
        default="sgd",
        help="sgd: plain steps; rms: steps divided by the running RMS of the gradients scored so far (default sgd)",
    )
    parser.add_argument(
        "--dynamic-decay",
        type=float,
        default=0.0,
        help="pull back towards the trained parameters after each step, in [0, 1) (default 0)",
    )
    return parser


def score_run(args) -> tuple[dict, int]:
    """Every model of the command line scored on the chosen part: (figures by model name, tokens scored); a
    scoring of the run's test text is logged."""
    _check_dynamic(args)
    if args.dynamic_segment > config_lib.INT_LIMIT:
        raise config_lib.ConfigError(
            f"--dynamic-segment must be in [1, {config_lib.INT_LIMIT}], got {args.dynamic_segment}"
        )
    cfg, vocab, params, saved = rundir.load_run(args.run_dir, best=args.best)
    own = own_corpus(saved, args.data_dir)
    all_tokens = vocab.encode(data.load_text(own, cfg.preprocess))
    parts = data.splits(all_tokens, cfg)
    if not args.corpus or args.baselines:  # the run's own splits are scored or fit on
        check_corpus(own, saved)
    scored_sha1 = saved["data"]["sha1"]
    if args.corpus:
        corpus_path = data.resolve_corpus(args.corpus)
        scored_sha1 = data.sha1_of(corpus_path)
        text = data.load_text(corpus_path, cfg.preprocess)
        unknown = vocab.unknown(text)
        if unknown:
            shown = ", ".join(f"{c!r} x{n}" for c, n in unknown.most_common(10))
            print(
                f"{sum(unknown.values())} characters not in the run's vocabulary map to <unk>: {shown}",
                file=sys.stderr,
            )
        split = args.split or "all"
        all_tokens = vocab.encode(text)
    else:
        split = args.split or default_split(parts)
    tokens, context = data.splits(all_tokens, cfg)[split]
    span = data.span_of(all_tokens, cfg, split)
    args.dynamic_segment = min(args.dynamic_segment, max(len(tokens), 1))  # one segment holds the whole part
    if args.protocol == "windows":
        result = {"rnn": evaluate_windows(params, tokens, cfg, **window_args(args))}
    else:
        result = {"rnn": evaluate(params, tokens, cfg, context=context)}
    if args.dynamic:
        result["rnn-dynamic"] = dynamic_evaluate(
            params,
            tokens,
            cfg,
            lr=args.dynamic_lr,
            segment=args.dynamic_segment,
            decay=args.dynamic_decay,
            rule=args.dynamic_rule,
            context=context,
        )
    if args.baselines:
        from rnn_jax import baselines

        result.update(
            baselines.evaluate_baselines(
                parts["train"][0],
                tokens,
                len(vocab),
                context=() if context is None else context,
                windows=window_args(args) if args.protocol == "windows" else None,
            )
        )
    log_test_scorings(args, result, cfg, own, all_tokens, scored_sha1, saved, span)
    return result, len(tokens)


def log_test_scorings(args, result: dict, cfg, own: Path, all_tokens, scored_sha1: str, saved: dict, span) -> None:
    """Logs each figure when the scored text is the run's own by content and the part holds test text."""
    if scored_sha1 == saved["data"]["sha1"] and data.overlap(span, data.span_of(all_tokens, cfg, "test")):
        # the run's own text by content, a part that holds test text: logged, whatever the path's spelling
        setting = {"run": str(Path(args.run_dir).resolve()), "best": args.best, "config": config_lib.to_dict(cfg)}
        for name, r in result.items():
            testlog.record(
                data.corpus_name(own, scored_sha1),
                "test",
                name,
                setting,
                r,
                protocol=r.get("protocol", "stream"),
                text_sha1=scored_sha1,
                span=span,
            )


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rnn_jax.started()
    notes = {Exit.DIVERGED: "; try a smaller --dynamic-lr"} if args.dynamic else {}
    return exitcodes.run(lambda: print_result(args, *score_run(args)), notes=notes)


def print_result(args, result: dict, tokens: int) -> None:
    """The table of every model's figures; under windows with the standard error and the loss by position."""
    if args.protocol == "stream":
        print(f"{'model':<11} {'perplexity':>10} {'bits/char':>10} {'tokens':>9}")
        for name, r in result.items():
            print(f"{name:<11} {r['perplexity']:>10.3f} {r['bits_per_char']:>10.3f} {r.get('tokens', tokens):>9}")
        return
    print(
        f"protocol windows: {args.windows} windows of {args.window_length} characters (seed {args.window_seed}), "
        "each from a zero state"
    )
    print(f"{'model':<11} {'loss':>8} {'± se':>8} {'perplexity':>10} {'bits/char':>10} {'tokens':>9}")
    for name, r in result.items():
        se = f"{r['se']:>8.4f}" if r.get("se") is not None else " " * 8
        print(
            f"{name:<11} {r['loss']:>8.4f} {se} {r['perplexity']:>10.3f} {r['bits_per_char']:>10.3f} {r['tokens']:>9}"
        )
    bands = result["rnn"]["by_position"]
    print("rnn loss by window position: " + ", ".join(f"{k}: {v:.3f}" for k, v in bands.items()))


if __name__ == "__main__":
    sys.exit(main())
