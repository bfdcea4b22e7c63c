"""The corpus files: the named public texts (URL + SHA-1), where a run's text is found (a data directory, the cache,
a verified download, or a path), and reading a text file with errors that say which file and why."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import urllib.request
from pathlib import Path
from typing import NamedTuple

from rnn_jax.exitcodes import Exit
from rnn_jax.memory import memory_budget

TIME_MACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIME_MACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TIME_MACHINE_FILE = "timemachine.txt"


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


# ----------------------------------------------------------------------------- reading a text file
BYTES_PER_CHARACTER = 16  # held while a text is read, cleaned and encoded: str copies (up to 4 bytes), int32 ids


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
