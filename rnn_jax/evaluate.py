"""Held-out evaluation: perplexity and bits per character over a whole text, the state carried throughout.

python -m rnn_jax.evaluate --run-dir RUN                      # the run's validation split, else the text
                                                              # after the max_tokens it trained on
python -m rnn_jax.evaluate --run-dir RUN --corpus other.txt   # any text, mapped to the run's vocabulary
python -m rnn_jax.evaluate --run-dir RUN --best --split test --dynamic --dynamic-lr 0.1 --dynamic-segment 50
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

import rnn_jax
from rnn_jax import config as config_lib
from rnn_jax import corpora, data, exitcodes, heldout, model, runs, testlog
from rnn_jax.exitcodes import Exit
from rnn_jax.scoring import PROTOCOLS, WINDOW_LENGTH, WINDOW_SEED, WINDOWS

FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest step size the float32 computation can hold


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
    got = corpora.sha1_of(path)
    if got != want:
        raise corpora.DataError(
            f"{path} is not the corpus the run trained on (SHA-1 {got}, the run's {want}), so its "
            "splits would be other text; pass the original with --data-dir, or score any text "
            "with --corpus"
        )


def own_corpus(saved: dict, data_dir: str | None) -> Path:
    """The file a run trained on: where config.json says, or, given --data-dir, its file in that directory (a named
    corpus, corpora.CORPORA, verified by its SHA-1)."""
    path = Path(saved["data"]["path"])
    if not data_dir:
        return path
    name = corpora.corpus_name(path, saved["data"]["sha1"])
    if name in corpora.CORPORA:
        return corpora.resolve_corpus(name, data_dir)
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
    """The command line of `python -m rnn_jax.evaluate`: the run and the text, the protocol, dynamic evaluation."""
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
    _protocol_flags(parser)
    _dynamic_flags(parser)
    return parser


def _protocol_flags(parser: argparse.ArgumentParser) -> None:
    """--protocol and the windows protocol's draw."""
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


def _dynamic_flags(parser: argparse.ArgumentParser) -> None:
    """--dynamic and its step size, segment, rule and decay."""
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


def score_run(args) -> tuple[dict, int]:
    """Every model of the command line scored on the chosen part: (figures by model name, tokens scored); a
    scoring of the run's test text is logged."""
    _check_dynamic(args)
    if args.dynamic_segment > config_lib.INT_LIMIT:
        raise config_lib.ConfigError(
            f"--dynamic-segment must be in [1, {config_lib.INT_LIMIT}], got {args.dynamic_segment}"
        )
    cfg, vocab, params, saved = runs.load_run(args.run_dir, best=args.best)
    own = own_corpus(saved, args.data_dir)
    all_tokens = vocab.encode(data.load_text(own, cfg.preprocess))
    parts = data.splits(all_tokens, cfg)
    if not args.corpus or args.baselines:  # the run's own splits are scored or fit on
        check_corpus(own, saved)
    scored_sha1 = saved["data"]["sha1"]
    if args.corpus:
        all_tokens, scored_sha1 = other_text(args.corpus, vocab, cfg.preprocess)
    split = args.split or ("all" if args.corpus else default_split(parts))
    tokens, context = data.splits(all_tokens, cfg)[split]
    span = data.span_of(all_tokens, cfg, split)
    args.dynamic_segment = min(args.dynamic_segment, max(len(tokens), 1))  # one segment holds the whole part
    result = score(args, params, model.ModelSpec.from_config(cfg), tokens, context)
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


def other_text(corpus: str, vocab: data.Vocab, preprocess: str) -> tuple[np.ndarray, str]:
    """(token ids, SHA-1) of a --corpus text in the run's vocabulary, saying how many characters map to <unk>."""
    path = corpora.resolve_corpus(corpus)
    sha1 = corpora.sha1_of(path)
    text = data.load_text(path, preprocess)
    unknown = vocab.unknown(text)
    if unknown:
        shown = ", ".join(f"{c!r} x{n}" for c, n in unknown.most_common(10))
        print(f"{sum(unknown.values())} characters not in the run's vocabulary map to <unk>: {shown}", file=sys.stderr)
    return vocab.encode(text), sha1


def score(args, params, spec: model.ModelSpec, tokens: np.ndarray, context: np.ndarray | None) -> dict:
    """The recurrent model's figures under the chosen protocol ("rnn"), and with --dynamic its dynamic ones."""
    if args.protocol == "windows":
        result = {"rnn": heldout.evaluate_windows(params, tokens, spec, **window_args(args))}
    else:
        result = {"rnn": heldout.evaluate(params, tokens, spec, context=context)}
    if args.dynamic:
        result["rnn-dynamic"] = heldout.dynamic_evaluate(
            params,
            tokens,
            spec,
            lr=args.dynamic_lr,
            segment=args.dynamic_segment,
            decay=args.dynamic_decay,
            rule=args.dynamic_rule,
            context=context,
        )
    return result


def log_test_scorings(args, result: dict, cfg, own: Path, all_tokens, scored_sha1: str, saved: dict, span) -> None:
    """Logs each figure when the scored text is the run's own by content and the part holds test text."""
    if scored_sha1 == saved["data"]["sha1"] and data.overlap(span, data.span_of(all_tokens, cfg, "test")):
        # the run's own text by content, a part that holds test text: logged, whatever the path's spelling
        setting = {"run": str(Path(args.run_dir).resolve()), "best": args.best, "config": config_lib.to_dict(cfg)}
        for name, r in result.items():
            testlog.record(
                corpora.corpus_name(own, scored_sha1),
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
