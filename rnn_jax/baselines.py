"""Counting baselines for the character LM (pure NumPy): uniform, add-one unigram, interpolated Kneser-Ney n-grams.

The n-gram is interpolated Kneser-Ney as in Chen & Goodman (1998, "An empirical study of smoothing techniques
for language modeling", eq. 17): one absolute discount per order, D = n1 / (n1 + 2 n2) from that order's
count-of-counts; the top order uses raw counts, the lower orders continuation counts N1+(. g) (the number of
distinct left neighbours of g, the start of the training text counting as one), and the unigram level is
interpolated with the uniform 1/V, so every token of the vocabulary, `<unk>` included, has non-zero probability.
Every model is a set of dense next-token tables, one row per context seen in training (each row sums to 1); a
context never seen backs off to its longest seen suffix, which is exactly what interpolated KN does there.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rnn_jax import corpora, exitcodes, scoring
from rnn_jax.exitcodes import UsageError


@dataclass(frozen=True)
class CountLM:
    """Next-token tables: probs[j][r] is P(. | the j-token context coded keys[j][r]), for j = 0 .. n-1."""

    n: int
    vocab_size: int
    keys: list[np.ndarray]  # per context length j: sorted base-V int64 codes of the contexts seen in training
    probs: list[np.ndarray]  # per j: (len(keys[j]), V) float64 rows, each a distribution over the V tokens


def _check_ids(ids, vocab_size: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got [{ids.min()}, {ids.max()}]")
    return ids


def _codes(ids: np.ndarray, k: int, vocab_size: int) -> np.ndarray:
    """Base-V code of the k-gram starting at each position of ids (first token most significant)."""
    if len(ids) < k:
        return np.zeros(0, dtype=np.int64)
    return sliding_window_view(ids, k) @ (vocab_size ** np.arange(k - 1, -1, -1, dtype=np.int64))


def uniform(vocab_size: int) -> CountLM:
    """Every token 1/V: perplexity exactly V."""
    return CountLM(1, vocab_size, [np.zeros(1, np.int64)], [np.full((1, vocab_size), 1.0 / vocab_size)])


def fit_unigram(train_ids, vocab_size: int) -> CountLM:
    """Add-one (Laplace) smoothed token frequencies: (count + 1) / (N + V)."""
    ids = _check_ids(train_ids, vocab_size)
    probs = (np.bincount(ids, minlength=vocab_size) + 1.0) / (len(ids) + vocab_size)
    return CountLM(1, vocab_size, [np.zeros(1, np.int64)], [probs[None, :]])


def discount(counts: np.ndarray) -> float:
    """Ney's estimate n1 / (n1 + 2 n2); 0.5 when no count is 1 (D must stay > 0, or unseen tokens get 0)."""
    n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    return n1 / (n1 + 2 * n2) if n1 else 0.5


def _kn_counts(ids: np.ndarray, k: int, vocab_size: int, top: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sorted codes of the distinct k-grams of ids and their KN counts: raw at the top order, else continuation."""
    codes = _codes(ids, k, vocab_size)
    if top:
        return np.unique(codes, return_counts=True)
    # Each distinct (k+1)-gram x g is one left neighbour of g; the k-gram opening the text has the start as one.
    left = np.unique(_codes(ids, k + 1, vocab_size)) % vocab_size**k
    return np.unique(np.concatenate([left, codes[:1]]), return_counts=True)


def modified_discounts(counts: np.ndarray) -> np.ndarray:
    """Chen & Goodman's (1998, eq. 26) three discounts of one order from its count-of-counts n1..n4:
    Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3, as [0, D1, D2, D3+]
    (index: min(count, 3)). Where a count-of-count is zero, or a discount leaves (0, c], every count gets
    Ney's single estimate instead."""
    n1, n2, n3, n4 = (int(np.sum(counts == c)) for c in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) > 0:
        y = n1 / (n1 + 2 * n2)
        d = np.array([0.0, 1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3])
        if np.all(d[1:] > 0) and np.all(d[1:] <= [1, 2, 3]):
            return d
    return np.array([0.0, *[discount(counts)] * 3])


def fit_ngram(train_ids, vocab_size: int, n: int, discount_d: float | str | None = None) -> CountLM:
    """Interpolated Kneser-Ney n-gram (n >= 1) fitted on train_ids; see the module docstring for the method.

    discount_d: one absolute discount in (0, 1] for every order instead of Ney's estimate per order (None);
    "modified": modified Kneser-Ney, three discounts per order by count (1, 2, 3+) from its count-of-counts
    (`modified_discounts`), the mass they free going to the lower order as in the interpolated model."""
    if discount_d == "modified":
        pass
    elif discount_d is not None and not 0 < cast(float, discount_d) <= 1:  # another string fails the comparison
        raise ValueError(f"a discount must lie in (0, 1], got {discount_d}")
    ids = _check_ids(train_ids, vocab_size)
    if n < 1 or len(ids) < n:
        raise ValueError(f"need n >= 1 and at least n training tokens; got n={n}, {len(ids)} tokens")
    if vocab_size**n >= 2**63:
        raise ValueError(f"vocab_size**n = {vocab_size}**{n} overflows the int64 n-gram codes")
    V = vocab_size
    keys: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    for k in range(1, n + 1):  # order k: contexts of j = k - 1 tokens, backing off to order k - 1
        codes, counts = _kn_counts(ids, k, V, top=k == n)
        if discount_d == "modified":
            d = modified_discounts(counts)[np.minimum(counts, 3)]  # each k-gram's own discount
        else:
            d = np.full(len(counts), discount(counts) if discount_d is None else discount_d)
        ctx, word = codes // V, codes % V
        ctx_keys, row = np.unique(ctx, return_inverse=True)
        total = np.bincount(row, weights=counts)
        table = np.zeros((len(ctx_keys), V))
        table[row, word] = np.maximum(counts - d, 0.0)  # (context, word) pairs are distinct: plain assignment
        table /= total[:, None]
        # The discounted mass sum_w D(c(h w)) / c(h) goes to the lower order at h's suffix (the 1/V for k = 1);
        # that suffix was seen as a context one order down, since every k-gram's suffix is a (k-1)-gram.
        lower = probs[-1][np.searchsorted(keys[-1], ctx_keys % V ** (k - 2))] if k > 1 else 1.0 / V
        table += (np.bincount(row, weights=np.minimum(d, counts)) / total)[:, None] * lower
        keys.append(ctx_keys)
        probs.append(table)
    return CountLM(n, V, keys, probs)


def log_probs(model: CountLM, ids, start: int = 0) -> np.ndarray:
    """ln P(ids[i] | the up to n-1 tokens before it in ids) for i = start .. len(ids)-1 (shorter contexts early)."""
    ids = _check_ids(ids, model.vocab_size)
    targets = np.arange(start, len(ids))
    p = model.probs[0][0, ids[targets]]
    for j in range(1, model.n):  # longer seen contexts override shorter ones; an unseen one keeps its suffix's
        i = targets[targets >= j]
        if i.size == 0:
            break
        ctx = _codes(ids, j, model.vocab_size)[i - j]
        row = np.minimum(np.searchsorted(model.keys[j], ctx), len(model.keys[j]) - 1)
        seen = model.keys[j][row] == ctx
        p[i[seen] - start] = model.probs[j][row[seen], ids[i[seen]]]
    return np.log(p)


def next_probs(model: CountLM, context) -> np.ndarray:
    """The (V,) distribution of the token following `context` (only its last n-1 tokens matter)."""
    context = _check_ids(context, model.vocab_size)
    tail = context[len(context) - min(len(context), model.n - 1) :]
    stream = np.concatenate([np.repeat(tail[None], model.vocab_size, 0), np.arange(model.vocab_size)[:, None]], 1)
    return np.exp([log_probs(model, s, start=len(tail))[0] for s in stream])


def cross_entropy(model: CountLM, ids, context=()) -> float:
    """Mean nats per token of ids, scored as one stream that continues the last n-1 tokens of `context`."""
    context = _check_ids(context, model.vocab_size)
    tail = context[len(context) - min(len(context), model.n - 1) :]
    return float(-log_probs(model, np.concatenate([tail, _check_ids(ids, model.vocab_size)]), len(tail)).mean())


def metrics(loss: float) -> dict[str, float]:
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_char": loss / math.log(2)}


def window_losses(model: CountLM, ids, starts, length: int) -> np.ndarray:
    """-ln P of every target of the windows ids[s : s + length + 1] (s in starts), each scored with nothing before
    it (shorter contexts at its start, as the recurrent model's zero state): (len(starts), length)."""
    ids = _check_ids(ids, model.vocab_size)
    return np.stack([-log_probs(model, ids[s : s + length + 1], 1) for s in np.asarray(starts)])


def evaluate_baselines(
    train_ids,
    eval_ids,
    vocab_size: int,
    max_n: int = 5,
    context_from_train: bool = True,
    context=None,
    windows: dict | None = None,
) -> dict[str, dict[str, float]]:
    """Held-out loss, perplexity and bits/char of uniform, unigram and 2..max_n-gram models fitted on train_ids.

    eval_ids is scored as one stream continuing `context`, the tokens just before it in the text (the RNN's
    evaluator is given the same); None means train_ids, right when the held-out text follows it directly. With
    `windows` ({windows, length, seed}), on the windows protocol's windows instead (rnn_jax.scoring).
    """
    models = {"uniform": uniform(vocab_size), "unigram": fit_unigram(train_ids, vocab_size)}
    models.update({f"{n}-gram": fit_ngram(train_ids, vocab_size, n) for n in range(2, max_n + 1)})
    if windows is not None:
        starts = scoring.window_starts(len(eval_ids), windows["windows"], windows["length"], windows["seed"])
        return {
            name: scoring.window_figures(window_losses(m, eval_ids, starts, windows["length"]), windows["seed"])
            for name, m in models.items()
        }
    if context is None:
        context = train_ids if context_from_train else ()
    return {name: metrics(cross_entropy(m, eval_ids, context)) for name, m in models.items()}


def select_ngram(train_ids, val_ids, vocab_size: int, orders, discounts, context=None) -> tuple[dict, list[dict]]:
    """Every (order, discount) fitted on train_ids and scored on val_ids (continuing `context`); discount None is
    Ney's estimate per order. Returns (the best by validation loss, every row), each row {n, discount, loss, ...}."""
    rows = []
    for n in orders:
        for d in discounts:
            m = fit_ngram(train_ids, vocab_size, n, d)
            rows.append(
                {"n": n, "discount": d, **metrics(cross_entropy(m, val_ids, train_ids if context is None else context))}
            )
    return min(rows, key=lambda r: r["loss"]), rows


def adaptive_cross_entropy(
    ids, start: int, vocab_size: int, n: int, discount_d: float | str | None = None, every: int = 200
) -> float:
    """Mean nats per token of ids[start:] under an adaptive KN model: each block of `every` tokens is scored by the
    model fitted on everything before the block (ids[:block start]), so the counts grow with the text they score,
    as dynamic evaluation's parameters do (refitting after every token would be `every` = 1)."""
    ids = _check_ids(ids, vocab_size)
    if not 0 < start < len(ids) or every < 1:
        raise ValueError(f"need 0 < start < {len(ids)} and every >= 1; got start={start}, every={every}")
    total = 0.0
    for b in range(start, len(ids), every):
        m = fit_ngram(ids[:b], vocab_size, n, discount_d)
        total -= log_probs(m, ids[max(0, b - n + 1) : b + every], min(b, n - 1)).sum()
    return total / (len(ids) - start)


def ppm_bits(context: bytes, text: bytes, order: int, variant: str = "I", mem_mb: int = 256) -> int:
    """The PPMd code length (bits) of `text` read after `context`: 8 (|C(context + text)| - |C(context)|), C the
    PPMd compressor (Shkarin's PPMd var. H as in 7-Zip, or var. I as in RAR/ZIP) of the given order; `mem_mb` of
    model memory, large enough that the model is not restarted on these texts."""
    import pyppmd

    compress = lambda b: len(pyppmd.compress(b, max_order=order, mem_size=mem_mb << 20, variant=variant))
    return 8 * (compress(context + text) - (compress(context) if context else 0))


def ppm_cross_entropy(context: str, text: str, order: int, variant: str = "I") -> float:
    """Mean nats per character of `text` under PPMd given `context` (both one byte per character)."""
    enc = lambda t: t.encode("latin-1")  # one byte per character; raises for characters beyond it
    return ppm_bits(enc(context), enc(text), order, variant) * math.log(2) / len(text)


def _check_args(split: float, max_n: int) -> None:
    """Rejects options no corpus could make sense of, before reading one."""
    if not 0 < split < 1:  # also false for nan
        raise UsageError(f"--split must lie strictly between 0 and 1, got {split}")
    if max_n < 1:
        raise UsageError(f"--max-n must be at least 1 (1: uniform and unigram only), got {max_n}")


def _cut(ids: np.ndarray, split: float, max_n: int, vocab_size: int) -> int:
    """Where the training part ends, after checking that both parts and every model can exist."""
    if max_n >= 63 or vocab_size**max_n >= 2**63:  # V >= 2, so n >= 63 overflows (and skips a huge power)
        raise UsageError(f"--max-n {max_n} is too large: {vocab_size}**{max_n} overflows the int64 n-gram codes")
    cut = int(len(ids) * split)
    if cut < max_n or cut >= len(ids):
        raise UsageError(
            f"--split {split} of {len(ids)} tokens leaves {cut} for training and {len(ids) - cut} "
            f"held out; need at least {max_n} and 1"
        )
    return cut


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m rnn_jax.baselines`."""
    parser = argparse.ArgumentParser(prog="python -m rnn_jax.baselines", description=main.__doc__)
    parser.add_argument("--corpus", help="a corpus name (timemachine, shakespeare) or a text file's path")
    parser.add_argument("--data-dir", help="directory holding the named corpora's files")
    parser.add_argument(
        "--preprocess",
        choices=("book", "raw", "none"),
        default="book",
        help="the text's cleaning, as in training (default: book)",
    )
    parser.add_argument("--split", type=float, default=0.9, help="fraction of the text to fit on, in (0, 1)")
    parser.add_argument("--max-n", type=int, default=5, help="largest n-gram order (1: uniform and unigram only)")
    return parser


def main(argv=None) -> int:
    """Prints the baselines on the first `split` of the corpus vs the rest."""
    args = build_parser().parse_args(argv)
    return exitcodes.run(lambda: _print_baselines(args))


def _print_baselines(args) -> None:
    """Each baseline's loss, perplexity and bits per character on the held-out part."""
    from rnn_jax import data

    _check_args(args.split, args.max_n)
    ids, vocab = data.load_corpus(corpora.resolve_corpus(args.corpus, args.data_dir), mode=args.preprocess)
    cut = _cut(ids, args.split, args.max_n, len(vocab))
    for name, m in evaluate_baselines(ids[:cut], ids[cut:], len(vocab), args.max_n, context=ids[:cut]).items():
        print(f"{name:>8}  loss {m['loss']:.4f}  perplexity {m['perplexity']:7.3f}  bits/char {m['bits_per_char']:.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
