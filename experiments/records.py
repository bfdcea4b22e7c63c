"""A record file of the experiment scripts: its shape check, the rows it holds, and merging a new one into it.

The scripts write records merged into the one already there (never dropping a row), and report.py publishes none
that lost rows against git HEAD; both name a record's rows as these functions do.
"""

from __future__ import annotations

import json
from pathlib import Path

from rnn_jax import corpora, sweep
from rnn_jax.exitcodes import Exit

ROWS = ("models", "seeds", "rows", "screening")  # a record's collections of entries, each entry a row of its tables
ROW_FIELDS = ("seed", "alpha", "mode", "trained_on", "tested_on", "name")  # what names a row of a list


def row_id(entry) -> str:
    """What names one entry of a list collection: itself if a string, its naming fields (seed=0), else its JSON."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        named = [f"{f}={entry[f]}" for f in ROW_FIELDS if f in entry]
        if named:
            return ", ".join(named)
    return json.dumps(entry, sort_keys=True)


def row_ids(record: dict) -> dict[str, list[str]]:
    """The names of the entries of each collection of a record: a dict's keys, a list's row_id."""
    out = {}
    for key in ROWS:
        rows = record.get(key)
        if isinstance(rows, dict):
            out[key] = list(rows)
        elif isinstance(rows, list):
            out[key] = [row_id(e) for e in rows]
    return out


def lost_rows(old: dict, new: dict) -> list[str]:
    """The entries of `old` that `new` no longer holds, as 'collection: name'."""
    now = row_ids(new)
    return [f"{key}: {i}" for key, ids in row_ids(old).items() for i in ids if i not in now.get(key, ())]


def _merge_rows(old, new):
    """A collection's entries: every old one (replaced by the new entry of the same name), then the new ones."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**old, **new}
    if isinstance(old, list) and isinstance(new, list):
        fresh = {row_id(e): e for e in new}
        kept = [fresh.pop(row_id(e), e) for e in old]
        return kept + list(fresh.values())
    return new


def merge_records(old: dict, new: dict) -> dict:
    """`new` written over `old` without dropping an entry: its fields win, and each collection (models, seeds,
    rows) keeps the old entries it does not replace; a record over seeds has its summary recomputed."""
    merged = {**old, **new}
    for key in ROWS:
        if key in old and key in new:
            merged[key] = _merge_rows(old[key], new[key])
    if isinstance(merged.get("seeds"), list) and merged["seeds"] != new.get("seeds") and "summary" in new:
        merged["summary"] = sweep.summarize(merged["seeds"])
    return merged


class RecordError(ValueError):
    """A record under results/ that cannot be read back as one; the message names the file."""

    exit_status = Exit.USAGE


def record_problem(record) -> str | None:
    """What makes a parsed record unusable (not an object, a collection of the wrong shape), else None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not a record (an object)"
    for key in ("config", "summary", "split"):
        if key in record and not isinstance(record[key], dict):
            return f"{key} is not an object"
    if isinstance(record.get("seeds"), list):
        if not all(isinstance(r, dict) and isinstance(r.get("seed"), int) for r in record["seeds"]):
            return "seeds is not a list of objects with an integer seed"
        for r in record["seeds"]:
            if "diverged_epoch" not in r or not isinstance(r.get("curve"), list):
                return f"seed {r['seed']} has no diverged_epoch or curve list"
        if not isinstance(record.get("summary"), dict):
            return "a record over seeds has no summary object"
    models = record.get("models")
    if models is not None and not (
        isinstance(models, dict) and all(isinstance(m, dict) for m in models.values()) or isinstance(models, list)
    ):
        return "models is not an object of objects"
    for name, m in models.items() if isinstance(models, dict) else ():
        if not isinstance(m.get("kind"), str):
            return f"model {name!r} has no kind"
    rows = record.get("rows")
    if rows is not None and not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
        return "rows is not a list of objects"
    return None


def read_record(path: Path) -> dict:
    """A record read back and checked (a regular file, JSON, the shape report.py reads); RecordError names it."""
    kind = corpora.not_regular(path)
    if kind:
        raise RecordError(f"{path} is {kind}, not a record file; remove it or restore the record")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(
            f"{path} is not a readable record ({e}); restore it with git checkout or rerun its script"
        ) from None
    problem = record_problem(record)
    if problem:
        raise RecordError(f"{path} is not a record as the scripts write it ({problem}); restore it with git checkout")
    return record
