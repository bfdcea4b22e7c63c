"""Held-out evaluation: perplexity and bits per character over a whole text, the state carried throughout.

    python -m rnn_jax.evaluate --run-dir RUN                      # the run's own validation split
    python -m rnn_jax.evaluate --run-dir RUN --corpus other.txt   # any text, mapped to the run's vocabulary
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

from rnn_jax import checkpoint, data, model, rundir
from rnn_jax import config as config_lib

CHUNK = 1024  # tokens per scan chunk; the state flows from chunk to chunk


@functools.partial(jax.jit, static_argnames=("opts", "hidden"))
def _sum_nll(params, inputs_CL, targets_CL, mask_CL, *, opts: tuple, hidden: int):
    opts = dict(opts)

    def chunk(state, batch):
        inputs_L, targets_L, mask_L = batch
        logits_L1V, state = model.forward_fused(params, state, inputs_L[None], **opts)
        nll_L = optax.softmax_cross_entropy_with_integer_labels(logits_L1V[:, 0], targets_L)
        return state, jnp.sum(nll_L * mask_L)

    state = model.zero_state(1, hidden, opts["cell"], opts["num_layers"])
    return jnp.sum(jax.lax.scan(chunk, state, (inputs_CL, targets_CL, mask_CL))[1])


def evaluate(params, tokens: np.ndarray, cfg: config_lib.Config, *, context: np.ndarray | None = None) -> dict:
    """Mean loss (nats), perplexity and bits/char of every token of `tokens`, one stream from a zero state.

    With `context` (the text just before, e.g. the training part), its last token is the first input,
    so every token of `tokens` is scored; without it the first token is only an input.
    """
    tokens = np.asarray(tokens, np.int32)
    if context is not None and len(context):
        inputs, targets = np.concatenate([context[-1:], tokens[:-1]]), tokens
    else:
        inputs, targets = tokens[:-1], tokens[1:]
    if len(targets) == 0:
        raise data.DataError("nothing to evaluate: the held-out text is empty (is --val-fraction 0?)")
    n_chunks = -(-len(targets) // CHUNK)
    pad = n_chunks * CHUNK - len(targets)
    shape = lambda a: np.pad(a, (0, pad)).reshape(n_chunks, CHUNK)
    total = _sum_nll(params, shape(inputs), shape(targets), shape(np.ones(len(targets), np.float32)),
                     opts=tuple(sorted(model.options(cfg).items())), hidden=cfg.hidden)
    loss = float(total) / len(targets)
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_char": loss / math.log(2), "tokens": len(targets)}


def check_corpus(path: Path, saved: dict) -> None:
    """Raises DataError when the run's splits would be cut from another text than the one it trained on."""
    want = saved["data"]["sha1"]
    got = data.sha1_of(path)
    if got != want:
        raise data.DataError(f"{path} is not the corpus the run trained on (SHA-1 {got}, the run's {want}), so its "
                             "splits would be other text; pass the original with --data-dir, or score any text "
                             "with --corpus")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnn_jax.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--corpus", default=None, help="evaluate on this text (default: the run's own corpus)")
    parser.add_argument("--data-dir", default=None, help="where the run's corpus now lives, if it moved")
    parser.add_argument("--split", default=None, choices=("train", "val", "test", "all"),
                        help="part of the text to score (default: val for the run's corpus, all for --corpus)")
    parser.add_argument("--best", action="store_true", help="the run's best checkpoint by validation perplexity "
                        "instead of its latest")
    parser.add_argument("--baselines", action="store_true", help="also score n-gram baselines fit on the run's "
                        "training text")
    args = parser.parse_args(argv)
    try:
        cfg, vocab, params, saved = rundir.load_run(args.run_dir, best=args.best)
        own = data.resolve_corpus(None, args.data_dir) if args.data_dir else Path(saved["data"]["path"])
        parts = data.splits(vocab.encode(data.load_text(own, cfg.preprocess)), cfg)
        if not args.corpus or args.baselines:  # the run's own splits are scored or fit on
            check_corpus(own, saved)
        if args.corpus:
            text = data.load_text(data.resolve_corpus(args.corpus), cfg.preprocess)
            unknown = vocab.unknown(text)
            if unknown:
                shown = ", ".join(f"{c!r} x{n}" for c, n in unknown.most_common(10))
                print(f"{sum(unknown.values())} characters not in the run's vocabulary map to <unk>: {shown}",
                      file=sys.stderr)
            tokens, context = data.splits(vocab.encode(text), cfg)[args.split or "all"]
        else:
            tokens, context = parts[args.split or "val"]
        result = {"rnn": evaluate(params, tokens, cfg, context=context)}
        if args.baselines:
            from rnn_jax import baselines
            result.update(baselines.evaluate_baselines(parts["train"][0], tokens, len(vocab),
                                                      context=() if context is None else context))
    except (data.DataError, checkpoint.CheckpointError, config_lib.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {rundir.describe_os_error(e)}", file=sys.stderr)
        return 1
    print(f"{'model':<10} {'perplexity':>10} {'bits/char':>10} {'tokens':>9}")
    for name, r in result.items():
        print(f"{name:<10} {r['perplexity']:>10.3f} {r['bits_per_char']:>10.3f} {r.get('tokens', len(tokens)):>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
