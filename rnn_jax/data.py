"""The text as the model sees it: cleaning modes, vocabulary, train/val/test splits and the book's two minibatch
schemes (pure in seed, epoch). Which file a run reads, and reading it, is `rnn_jax.corpora`."""

from __future__ import annotations

import collections
import json
import os
import re
from pathlib import Path

import numpy as np

from rnn_jax.corpora import DataError, read_text

UNK = "<unk>"


# ----------------------------------------------------------------------------- text
def preprocess(text: str) -> str:
    """The book's cleaning: per line, runs of non-letters -> one space, strip, lowercase; join with ''."""
    return "".join(re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in text.split("\n"))


def preprocess_raw(text: str) -> str:
    """Keeps case, digits and punctuation; every run of whitespace (newlines too) becomes one space."""
    return re.sub(r"\s+", " ", text).strip()


def preprocess_none(text: str) -> str:
    """Every character as it is: case, punctuation, newlines, carriage returns (nanoGPT's shakespeare_char)."""
    return text


PREPROCESS = {"book": preprocess, "raw": preprocess_raw, "none": preprocess_none}

_GUTENBERG_START = re.compile(r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """Drops a Project Gutenberg header and licence (text outside the START/END markers), if present."""
    start, end = _GUTENBERG_START.search(text), _GUTENBERG_END.search(text)
    if start:
        text_end = end.start() if end and end.start() > start.end() else len(text)
        return text[start.end() : text_end]
    return text


# ----------------------------------------------------------------------------- vocabulary
class Vocab:
    """Characters <-> ids: `<unk>` = 0, then tokens by descending frequency, ties by first occurrence."""

    def __init__(self, tokens: list[str]):
        if not tokens or tokens[0] != UNK:
            raise DataError(f"a vocabulary must start with {UNK!r}")
        self.idx_to_token = list(tokens)
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}

    @classmethod
    def build(cls, text: str) -> Vocab:
        counts = collections.Counter(text)  # insertion-ordered, and sorted() is stable: ties by first seen
        return cls([UNK] + [t for t, _ in sorted(counts.items(), key=lambda kv: kv[1], reverse=True)])

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.idx_to_token == other.idx_to_token

    def unknown(self, text: str) -> collections.Counter:
        """Counts of the characters of `text` that are not in the vocabulary."""
        return collections.Counter(c for c in text if c not in self.token_to_idx)

    def encode(self, text: str) -> np.ndarray:
        get = self.token_to_idx.get
        return np.fromiter((get(c, 0) for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.idx_to_token[int(i)] for i in ids)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"idx_to_token": self.idx_to_token}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        return cls(json.loads(Path(path).read_text())["idx_to_token"])


def load_text(path: str | os.PathLike, mode: str = "book") -> str:
    """The corpus as the model sees it: Gutenberg header/licence stripped, then cleaned by `mode` (none reads every
    character as it is, \r included; the others read universal newlines)."""
    return PREPROCESS[mode](strip_gutenberg(read_text(path, "" if mode == "none" else None)))


def load_corpus(path: str | os.PathLike, max_tokens: int = -1, mode: str = "book") -> tuple[np.ndarray, Vocab]:
    """Token ids of the cleaned text (first max_tokens; -1: all) and the vocabulary of the whole text."""
    text = load_text(path, mode)
    if not text:
        raise DataError(f"corpus {path} has no letters after cleaning; is it the right file?")
    vocab = Vocab.build(text)
    tokens = vocab.encode(text)
    return (tokens if max_tokens < 0 else tokens[:max_tokens]), vocab


def split_corpus(tokens: np.ndarray, val_fraction: float = 0.0, test_fraction: float = 0.0, rule: str = "round"):
    """(train, val, test) by position: the test part is the end of the text, validation just before it.
    rule "round": the last round(n * test_fraction) tokens are the test part; "floor": the tokens from
    int(n * (1 - test_fraction)) on, as nanoGPT cuts train | val (`int(n * 0.9)`)."""
    n = len(tokens)
    n_test = n - int(n * (1 - test_fraction)) if rule == "floor" else int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return tokens[: n - n_val - n_test], tokens[n - n_val - n_test : n - n_test], tokens[n - n_test :]


def splits(tokens: np.ndarray, cfg) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Each part of a run's text (train after max_tokens, val, test, all, and unseen: the rest of the training part
    after the max_tokens trained on) with the text just before it."""
    train, val, test = split_corpus(tokens, cfg.val_fraction, cfg.test_fraction, cfg.split_rule)
    trained = len(train) if cfg.max_tokens < 0 else min(cfg.max_tokens, len(train))
    return {
        "train": (train[:trained], None),
        "val": (val, train),
        "test": (test, tokens[: len(tokens) - len(test)]),
        "all": (tokens, None),
        "unseen": (train[trained:], train[:trained]),
    }


def span_of(tokens: np.ndarray, cfg, split: str) -> tuple[int, int]:
    """[start, end) of a part of `splits` in the whole text's tokens."""
    part, context = splits(tokens, cfg)[split]
    start = 0 if split in ("train", "all") else len(context) if context is not None else 0
    return start, start + len(part)


def overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two [start, end) spans share a position."""
    return a[0] < b[1] and b[0] < a[1]


# ----------------------------------------------------------------------------- minibatches
def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The data-order generator of one epoch: a pure function of (seed, epoch), so resumes are exact."""
    return np.random.default_rng([seed, epoch])


def seq_batches(corpus: np.ndarray, batch_size: int, num_steps: int, rng: np.random.Generator):
    """Sequential partitioning: (X_NBT, Y_NBT); row r of minibatch i+1 continues row r of minibatch i."""
    offset = int(rng.integers(0, num_steps + 1))  # inclusive upper bound, as in the book
    n = (len(corpus) - offset - 1) // batch_size * batch_size
    xs = corpus[offset : offset + n].reshape(batch_size, -1)
    ys = corpus[offset + 1 : offset + 1 + n].reshape(batch_size, -1)
    num_batches = xs.shape[1] // num_steps
    cut = num_batches * num_steps
    split = lambda a: a[:, :cut].reshape(batch_size, num_batches, num_steps).transpose(1, 0, 2)
    return split(xs), split(ys)


def random_batches(corpus: np.ndarray, batch_size: int, num_steps: int, rng: np.random.Generator):
    """Random sampling: (X_NBT, Y_NBT) of non-overlapping subsequences at shuffled starts."""
    corpus = corpus[int(rng.integers(0, num_steps)) :]
    num_subseqs = (len(corpus) - 1) // num_steps
    starts = rng.permutation(num_subseqs) * num_steps
    num_batches = num_subseqs // batch_size
    starts = starts[: num_batches * batch_size].reshape(num_batches, batch_size)
    idx = starts[..., None] + np.arange(num_steps)
    return corpus[idx], corpus[idx + 1]


SCHEMES = {"seq": seq_batches, "random": random_batches}


def min_batches(num_tokens: int, batch_size: int, num_steps: int, sampling: str) -> int:
    """Minibatches per epoch at the least favourable random offset."""
    if sampling == "seq":
        return (num_tokens - num_steps - 1) // batch_size // num_steps
    return (num_tokens - num_steps) // num_steps // batch_size


def check_length(num_tokens: int, batch_size: int, num_steps: int, sampling: str) -> None:
    if min_batches(num_tokens, batch_size, num_steps, sampling) < 1:
        need = batch_size * num_steps + num_steps + 1
        raise DataError(
            f"the training corpus has {num_tokens} tokens, too few for one minibatch of "
            f"batch_size={batch_size} x num_steps={num_steps} with {sampling} sampling "
            f"(needs about {need}); use a longer corpus, a larger --max-tokens, "
            "or a smaller --batch-size / --num-steps"
        )


def epoch_batches(corpus: np.ndarray, cfg, epoch: int):
    """All minibatches of one epoch of cfg's scheme: (X_NBT, Y_NBT) int32."""
    return SCHEMES[cfg.sampling](corpus, cfg.batch_size, cfg.num_steps, epoch_rng(cfg.seed, epoch))
