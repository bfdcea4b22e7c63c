"""The test log: one JSON line per scoring of a test part, so every figure says how often its test text was seen.

A test part is for reporting, not choosing: each time one is scored (by `python -m rnn_jax.evaluate` on a part that
holds test text, or by an experiment script), `record` appends {time, commit, corpus, split, model, config_hash,
result, protocol, and where known text_sha1 and span} to $RNN_JAX_TEST_LOG, else experiments/results/test_log.jsonl
of the checkout the command runs in (rnn_jax.checkout: the current folder's, or the one a script passes), else the
cache's test_log.jsonl. `counts` tells how many times each (corpus, split) was scored.

The log is an append-only journal: each row is one os.write on an O_APPEND descriptor, synced, under flock on
<log>.lock; a torn last line is moved to <log>.torn-<time> before the next append; a failed append is cut back off.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rnn_jax import checkout as checkout_lib

PACKAGE = Path(__file__).resolve().parent  # the code that scores, whose commit each row records


def log_path(checkout: Path | None = None) -> Path:
    """$RNN_JAX_TEST_LOG, else experiments/results/test_log.jsonl of `checkout` (default: the one holding the current
    folder) where it has that folder, else the cache's test_log.jsonl."""
    if os.environ.get("RNN_JAX_TEST_LOG"):
        return Path(os.environ["RNN_JAX_TEST_LOG"])
    tree = checkout or checkout_lib.root()
    if tree is not None and (tree / "experiments" / "results").is_dir():
        return tree / "experiments" / "results" / "test_log.jsonl"
    from rnn_jax import corpora

    return corpora.cache_dir() / "test_log.jsonl"


def config_hash(config: dict) -> str:
    """A short, stable digest of a configuration (any JSON-able dict)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def commit() -> str | None:
    """The git commit of the code that scores (with '+dirty' for uncommitted changes), or None outside a checkout."""
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(PACKAGE), *a], capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "HEAD")
        if head.returncode:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


class LogError(OSError):
    """An append to the test log that did not happen; the log is left as it was and the message names it."""


def record(
    corpus: str,
    split: str,
    model: str,
    config: dict,
    result: dict,
    path: Path | None = None,
    *,
    protocol: str = "stream",
    text_sha1: str | None = None,
    span: tuple[int, int] | None = None,
) -> dict:
    """Appends one scoring of a test part to the log (one whole line, synced) and returns it.

    protocol: how the part was scored ("stream", "windows"); text_sha1 and span: the SHA-1 of the corpus file and
    [start, end) of the scored part in the cleaned text's tokens."""
    row: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit(),
        "corpus": corpus,
        "split": split,
        "model": model,
        "config_hash": config_hash(config),
        "result": result,
        "protocol": protocol,
    }
    if text_sha1 is not None:
        row["text_sha1"] = text_sha1
    if span is not None:
        row["span"] = [int(span[0]), int(span[1])]
    append(row, path or log_path())
    return row


def lock_path(path: Path) -> Path:
    """The sidecar file whose flock guards the log at `path` (every writer and reader takes it)."""
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def locked(path: Path, exclusive: bool = True):
    """Holds flock on the log's sidecar lock file (shared for readers); without one to open, reads go on unlocked."""
    try:
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if exclusive:
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def append(row: dict, path: Path) -> None:
    """Writes `row` as one line with a single write on an O_APPEND descriptor, synced, under the log's lock; a
    failed write is cut back off, so the log is as it was, and raises LogError."""
    line = (json.dumps(row, sort_keys=True) + "\n").encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with locked(path):
            set_aside_torn_tail(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_line(fd, line, path)
            finally:
                os.close(fd)
    except LogError:
        raise
    except OSError as e:
        raise LogError(e.errno, f"{e.strerror or e}; the scoring was not logged", str(path)) from None


def _write_line(fd: int, line: bytes, path: Path) -> None:
    """One os.write of the whole line and an fsync; anything less is truncated back to the size before."""
    size = os.fstat(fd).st_size
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(errno.EFBIG, f"only {written} of {len(line)} bytes written")
        os.fsync(fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
            os.fsync(fd)
        raise LogError(
            e.errno, f"{e.strerror or e}; the log is left as it was and the scoring was not logged", str(path)
        ) from None


def _torn_tail(blob: bytes) -> int | None:
    """Where the log's last line starts when it is torn (no final newline, or not a JSON object), else None."""
    if not blob:
        return None
    start = blob.rfind(b"\n", 0, len(blob) - 1) + 1
    if blob.endswith(b"\n") and _row(blob[start:]) is not None:
        return None
    return start


def _row(line: bytes) -> dict | None:
    """The JSON object of one line, else None."""
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def set_aside_torn_tail(path: Path) -> Path | None:
    """Moves a torn last line (a write cut short) to <log>.torn-<time>, synced, then cuts it off the log, so the
    next row starts on a line of its own; returns the file it went to. Call with the lock held."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    start = _torn_tail(blob)
    if start is None:
        return None
    aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{time.time_ns()}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        if os.write(fd, blob[start:]) != len(blob) - start:  # the log is cut only once the copy is whole
            raise OSError(errno.ENOSPC, f"could not keep its torn last line in {aside}")
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(path, "r+b") as f:
        f.truncate(start)
        os.fsync(f.fileno())
    print(f"warning: {path} ended in a torn line ({len(blob) - start} bytes); moved it to {aside}", file=sys.stderr)
    return aside


def read(path: Path | None = None) -> list[dict]:
    """Every row of the log (none when it does not exist); a line that is not a scoring (a torn line, not JSON, not
    an object with corpus and split) is skipped with a warning on stderr naming its line number."""
    path = path or log_path()
    if not path.is_file():
        return []
    with locked(path, exclusive=False):
        blob = path.read_bytes()
    rows = []
    for number, line in enumerate(blob.splitlines(), 1):
        row = _row(line)
        if row is None or not isinstance(row.get("corpus"), str) or not isinstance(row.get("split"), str):
            print(f"warning: {path} line {number} is not a scoring row (torn or damaged); skipped", file=sys.stderr)
            continue
        rows.append(row)
    return rows


def counts(rows: list[dict]) -> collections.Counter:
    """How many times each (corpus, split) was scored."""
    return collections.Counter((r["corpus"], r["split"]) for r in rows)
