"""Corpus, vocabulary, train/val/test splits and the book's two minibatch schemes (pure in seed, epoch)."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import stat
import tempfile
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnn_jax.exitcodes import Exit

TIME_MACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIME_MACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TIME_MACHINE_FILE = "timemachine.txt"
UNK = "<unk>"


class Corpus(NamedTuple):
    """A named public text: where it is downloaded from, its SHA-1, and its file name in a data directory."""

    url: str
    sha1: str
    file: str
    title: str  # what error messages call it


# --corpus NAME: each is downloaded once into the cache, verified, or read from --data-dir / $RNN_JAX_DATA_DIR.
CORPORA = {
    "timemachine": Corpus(TIME_MACHINE_URL, TIME_MACHINE_SHA1, TIME_MACHINE_FILE, "the book"),
    # char-rnn's tiny Shakespeare (1,115,394 characters), the file nanoGPT's shakespeare_char prepares
    "shakespeare": Corpus(
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        "04486597058d11dcc2c556b1d0433891eb639d2e",
        "tinyshakespeare.txt",
        "tiny Shakespeare",
    ),
}


class DataError(ValueError):
    """A corpus problem the user can fix; the message says what happened and what to do."""

    exit_status = Exit.USAGE


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


BYTES_PER_CHARACTER = 16  # held while a text is read, cleaned and encoded: str copies (up to 4 bytes), int32 ids
CGROUP_ROOT = Path("/sys/fs/cgroup")
NO_LIMIT = 2**60  # a cgroup v1 limit at or above this means none


def _cgroup_dirs() -> dict[str, str]:
    """This process's cgroup directory per hierarchy ("" for v2's unified one, "memory" for v1's), from /proc."""
    dirs = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                dirs[c] = where.lstrip("/")
    return dirs


def cgroup_memory_limit() -> int | None:
    """The smallest memory limit of this process's cgroup (v2 memory.max, v1 memory.limit_in_bytes), if any."""
    dirs = _cgroup_dirs()
    files = [
        CGROUP_ROOT / dirs.get("", "") / "memory.max",
        CGROUP_ROOT / "memory.max",
        CGROUP_ROOT / "memory" / dirs.get("memory", "") / "memory.limit_in_bytes",
        CGROUP_ROOT / "memory" / "memory.limit_in_bytes",
    ]
    limits = []
    for f in dict.fromkeys(files):
        with contextlib.suppress(OSError, ValueError):
            value = int(f.read_text().strip())  # "max" (no limit) raises ValueError
            if value < NO_LIMIT:
                limits.append(value)
    return min(limits, default=None)


def available_physical_memory() -> int | None:
    """MemAvailable of /proc/meminfo, else the machine's physical memory."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
        return int(line.split()[1]) * 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def memory_budget() -> tuple[int, str] | None:
    """(bytes, what sets it) that this process can allocate: the smallest of available physical memory, the
    address-space limit (RLIMIT_AS, ulimit -v) and the cgroup's memory limit; None when none can be read."""
    limits = {
        "available physical memory": available_physical_memory(),
        "the cgroup's memory limit": cgroup_memory_limit(),
    }
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY:
        limits["the address-space limit (ulimit -v)"] = soft
    known = [(v, k) for k, v in limits.items() if v is not None]
    return min(known) if known else None


def check_size(path: Path, what: str) -> None:
    """Raises DataError when the file at `path` is too large to load within this process's memory budget."""
    budget = memory_budget()
    try:
        size = path.stat().st_size
    except OSError:  # no figure: the read reports what goes wrong
        return
    if budget and size * BYTES_PER_CHARACTER > budget[0]:
        raise DataError(
            f"{what} {path} is {size / 2**30:.1f} GiB: too large to load within the {budget[0] / 2**30:.1f} "
            f"GiB of {budget[1]} (about {BYTES_PER_CHARACTER} bytes per character); is it the right file?"
        )


KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def not_regular(path: str | os.PathLike) -> str | None:
    """What an existing path that is not a regular file is ("a directory", "a FIFO", ...), else None."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    return None if stat.S_ISREG(mode) else next((k for test, k in KINDS if test(mode)), "not a regular file")


def check_regular(path: str | os.PathLike, what: str) -> None:
    """Raises DataError when `path` exists but is not a regular file (reading a FIFO or a device would hang)."""
    kind = not_regular(path)
    if kind:
        raise DataError(f"{what} {path} is {kind}, not a regular file; pass a regular file")


def read_text(path: str | os.PathLike, newline: str | None = None) -> str:
    """Reads a UTF-8 text file (universal newlines; newline="": every character as it is), with errors that say
    which file and why."""
    path = Path(path)
    check_regular(path, "corpus file")
    if not path.is_file():
        raise DataError(
            f"corpus file {path} does not exist (or is not a file); pass --corpus PATH to an existing text file"
        )
    check_size(path, "corpus file")
    try:
        with open(path, encoding="utf-8", newline=newline) as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise DataError(
            f"corpus file {path} is not valid UTF-8 ({e.reason} at byte {e.start}); convert it to UTF-8 first"
        ) from None
    except OSError as e:
        raise DataError(f"cannot read corpus file {path}: {e.strerror}") from None


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


# ----------------------------------------------------------------------------- where the corpus comes from
def cache_dir() -> Path:
    return Path(os.environ.get("RNN_JAX_CACHE") or Path.home() / ".cache" / "rnn_jax")


def sha1_of(path: str | os.PathLike) -> str:
    """The SHA-1 of a regular file's bytes."""
    check_regular(path, "file")
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _checked(path: Path, source: str, corpus: Corpus) -> Path:
    check_regular(path, source)
    if not path.is_file():
        raise DataError(
            f"{source}: {path} does not exist; put {corpus.file} there, or pass --corpus PATH for another text"
        )
    got = sha1_of(path)
    if got != corpus.sha1:
        raise DataError(
            f"{source}: {path} has SHA-1 {got}, not {corpus.title}'s {corpus.sha1}; "
            f"replace it with {corpus.title}'s file, or pass it as --corpus PATH to train on it anyway"
        )
    return path


def download(url: str, dest: Path, sha1: str, timeout: float = 60.0) -> Path:
    """Downloads url to dest atomically, keeping it only if its SHA-1 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                shutil.copyfileobj(r, tmp)
        except (OSError, ValueError) as e:
            tmp.close()
            os.unlink(tmp.name)
            raise DataError(
                f"could not download {url} ({e}); without network, get {dest.name} "
                "some other way and pass --data-dir DIR or set RNN_JAX_DATA_DIR"
            ) from None
    got = sha1_of(tmp.name)
    if got != sha1:
        os.unlink(tmp.name)
        raise DataError(
            f"the download of {url} has SHA-1 {got}, expected {sha1}; nothing was kept. "
            f"Retry later, or pass --data-dir DIR holding {dest.name}"
        )
    os.replace(tmp.name, dest)
    return dest


def resolve_corpus(corpus: str | None = None, data_dir: str | None = None) -> Path:
    """The text to read. --corpus is a name of CORPORA (default: the book's, timemachine) or a file's path.
    A name is read from --data-dir DIR, else $RNN_JAX_DATA_DIR, else the cache, else a verified download."""
    if corpus and corpus not in CORPORA:
        path = Path(corpus).expanduser()
        check_regular(path, "--corpus")
        if not path.is_file():
            raise DataError(f"--corpus {corpus}: no such file, and not a corpus name ({', '.join(CORPORA)})")
        return path
    named = CORPORA[corpus or "timemachine"]
    if data_dir:
        return _checked(Path(data_dir).expanduser() / named.file, "--data-dir", named)
    if os.environ.get("RNN_JAX_DATA_DIR"):
        return _checked(Path(os.environ["RNN_JAX_DATA_DIR"]) / named.file, "RNN_JAX_DATA_DIR", named)
    cached = cache_dir() / named.file
    if cached.is_file() and sha1_of(cached) == named.sha1:
        return cached
    url = os.environ.get(f"RNN_JAX_URL_{(corpus or 'timemachine').upper()}", named.url)
    if named.file == TIME_MACHINE_FILE:
        url = os.environ.get("RNN_JAX_DATA_URL", url)
    return download(url, cached, named.sha1)


def corpus_name(path: str | os.PathLike, sha1: str | None = None) -> str:
    """The CORPORA name of a file by its SHA-1, else its file name."""
    sha1 = sha1 or sha1_of(path)
    return next((name for name, c in CORPORA.items() if c.sha1 == sha1), Path(path).name)


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
