"""The test log: one JSON line per scoring of a test part, so every figure says how often its test text was seen.

A test part is for reporting, not choosing: each time one is scored (by `python -m rnn_jax.evaluate --split test`
or by an experiment script), `record` appends {time, commit, corpus, split, model, config_hash, result} to
$RNN_JAX_TEST_LOG, else the repository's experiments/results/test_log.jsonl when run from a checkout, else
the cache's test_log.jsonl. `counts` tells how many times each (corpus, split) was scored.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def log_path() -> Path:
    if os.environ.get("RNN_JAX_TEST_LOG"):
        return Path(os.environ["RNN_JAX_TEST_LOG"])
    if (REPO / "experiments" / "results").is_dir():
        return REPO / "experiments" / "results" / "test_log.jsonl"
    from rnn_jax import data

    return data.cache_dir() / "test_log.jsonl"


def config_hash(config: dict) -> str:
    """A short, stable digest of a configuration (any JSON-able dict)."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def commit() -> str | None:
    """The checkout's git commit (with '+dirty' for uncommitted changes), or None outside a checkout."""
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "HEAD")
        if head.returncode:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def record(
    corpus: str, split: str, model: str, config: dict, result: dict, path: Path | None = None, *, protocol="stream"
) -> dict:
    """Appends one scoring of a test part under a protocol (stream or windows) to the log (one line, flushed and
    synced) and returns it."""
    row = {
        "protocol": protocol,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit(),
        "corpus": corpus,
        "split": split,
        "model": model,
        "config_hash": config_hash(config),
        "result": result,
    }
    path = path or log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return row


def read(path: Path | None = None) -> list[dict]:
    """Every row of the log (none when it does not exist); a torn last line (a crash mid-write) is skipped."""
    path = path or log_path()
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def counts(rows: list[dict]) -> collections.Counter:
    """How many times each (corpus, split) was scored."""
    return collections.Counter((r["corpus"], r["split"]) for r in rows)
