"""A run's files that are never half-written (each rewrite goes to a synced temporary file renamed over the old
one) and its metrics log, one JSON row per epoch appended and flushed at once, read back with a clear error when
damaged."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from rnn_jax import checkpoint, corpora, log


@contextlib.contextmanager
def naming(path: Path):
    """An OSError raised inside (a write, flush or fsync names no file) carries `path`."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


@contextlib.contextmanager
def replacing(path: Path):
    """Yields a temporary path beside `path` to write; renamed over `path` when the block succeeds, removed when
    it fails, so readers see the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # the suffix kept: writers infer formats from it
    try:
        with naming(path):
            yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_synced(path: Path, write) -> None:
    """write(f) into a binary file that replaces `path` only once it is flushed to disk."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a mix; a failure leaves the old one intact."""
    write_synced(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path, what: str) -> dict:
    """A JSON file of a run, with an error naming it when it is missing, damaged or not a regular file."""
    kind = corpora.not_regular(path)
    if kind:
        raise checkpoint.CheckpointError(f"{path} is {kind}, not a file ({what}); restore it from a copy")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise checkpoint.CheckpointError(f"{path} is missing ({what})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise checkpoint.CheckpointError(f"{path} is damaged ({what}: {e}); restore it from a copy") from None
    except OSError as e:
        raise checkpoint.CheckpointError(f"cannot read {path} ({e.strerror})") from None


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of metrics.jsonl; a last line cut short by a crash is dropped with a note (any other is an error)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    kind = corpora.not_regular(path)
    if kind:
        raise checkpoint.CheckpointError(f"{path} is {kind}, not a file; restore it from a copy")
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise checkpoint.CheckpointError(
                    f"{path} line {i + 1} is damaged; restore the file from a copy or remove that line"
                ) from None
            print(f"note: {path}: dropped a last line cut short ({line[:40]!r}...)", file=sys.stderr)
    return rows


def last_row(run_dir: Path, epoch: int) -> dict:
    """metrics.jsonl's row of `epoch`, for the summary of a run that had nothing left to train."""
    rows = [r for r in read_metrics(run_dir) if r.get("epoch") == epoch and not r.get("nonfinite")]
    if not rows:
        raise checkpoint.CheckpointError(
            f"{run_dir / 'metrics.jsonl'} holds no row of epoch {epoch}, so the run's "
            "summary cannot be written; restore the file from a copy"
        )
    return rows[-1]


class MetricsWriter:
    """Appends one JSON object per line to metrics.jsonl, flushed at once (a killed run loses no row)."""

    def __init__(self, run_dir: Path, keep_epochs_upto: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if keep_epochs_upto is not None:  # a resumed run drops rows written after its checkpoint
            rows = [r for r in read_metrics(run_dir) if r.get("epoch", 0) <= keep_epochs_upto]
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        self.f = open(self.path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        with naming(self.path):  # cut short (disk full, a size limit), it loses at most this line
            self.f.write(json.dumps(row) + "\n")
            self.f.flush()

    def close(self) -> None:
        with naming(self.path):
            self.f.close()


def plot_atomic(rows: list[dict], path: Path, title: str) -> None:
    """The perplexity curve, drawn to a temporary file and renamed (a failed draw leaves the old one)."""
    with replacing(path) as tmp:
        log.plot_curve(rows, tmp, title=title)
