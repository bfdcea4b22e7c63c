"""A finished run's scores, kept in its directory: a part is scored once per checkpoint, setting and protocol.

- `scores.json`: one row {part, setting, best, protocol, loss} per stream scoring (static, or dynamic evaluation's
  setting);
- `token_losses_<part>.npz`: -ln P of every character of a part as one stream (for mixtures and ensembles);
- `windows_<part>.npz`: the windows protocol's (windows, length) losses, with the draw they came from.

Each is computed under a lock on the run (`RUN/.scores.lock`), so two processes never score the same test part
twice; a cache that cannot be read, or was drawn otherwise, is scored again (saying so). Every scoring of a test
part goes to the test log with its protocol.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from experiments.common import test_log
from rnn_jax import config, heldout, model, scoring, testlog
from rnn_jax.files import write_json
from rnn_jax.runs import load_run


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Holds flock on RUN/.scores.lock: the scorings of one run happen one process at a time."""
    with open(run_dir / ".scores.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stored(path: Path) -> list[dict]:
    """The rows of scores.json; an unreadable file or one of another shape is set aside and scored again."""
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
        if isinstance(rows, list) and all(isinstance(r, dict) and {"part", "loss"} <= set(r) for r in rows):
            return rows
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    print(f"warning: {path} is not a list of scores; it is moved aside and its parts are scored again", file=sys.stderr)
    path.replace(path.with_suffix(".unreadable.json"))
    return []


def _log(run_dir: Path, name: str, corpus: str, cfg, extra: dict, result: dict, protocol: str) -> None:
    details = {"config": config.to_dict(cfg), "run": run_dir.name, **extra}
    testlog.record(corpus, "test", f"{run_dir.parent.name} {name}", details, result, test_log(), protocol=protocol)


def score(run_dir: Path, part: str, text: dict, setting: dict | None, *, best: bool, corpus: str) -> float:
    """The stream loss of one part (val or test) under a finished run's checkpoint (its best by validation, or its
    last), statically (setting None) or with dynamic evaluation's setting."""
    path = run_dir / "scores.json"
    with locked(run_dir):
        stored = _stored(path)
        for row in stored:
            if (row["part"], row.get("setting"), row.get("best"), row.get("protocol", "stream")) == (
                part,
                setting,
                best,
                "stream",
            ):
                return row["loss"]
        cfg, _, params, _ = load_run(run_dir, best=best)
        tokens, context = text[part]
        if setting is None:
            r = heldout.evaluate(params, tokens, model.ModelSpec.from_config(cfg), context=context)
        else:
            r = heldout.dynamic_evaluate(params, tokens, model.ModelSpec.from_config(cfg), **setting, context=context)
        if part == "test":
            _log(run_dir, "dynamic" if setting else "static", corpus, cfg, {"dynamic": setting}, r, "stream")
        row = {"part": part, "setting": setting, "best": best, "protocol": "stream", "loss": r["loss"]}
        write_json(path, [*stored, row])
    return r["loss"]


def _read_npz(path: Path, want: dict) -> np.ndarray | None:
    """The array `nll` of a cache whose recorded draw equals `want`; None (saying why) when unreadable or stale."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"])) if "meta" in z else {}
            if meta == want:
                return np.asarray(z["nll"], np.float64)
        reason = f"it was computed for {meta or 'an unrecorded draw'}"
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        reason = f"it cannot be read ({e})"
    print(f"warning: {path} is scored again: {reason}", file=sys.stderr)
    return None


def _write_npz(path: Path, nll: np.ndarray, meta: dict) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, nll=nll, meta=np.asarray(json.dumps(meta, sort_keys=True)))
    tmp.replace(path)


def token_losses(run_dir: Path, part: str, text: dict, *, best: bool, corpus: str) -> np.ndarray:
    """-ln P of every character of one part, as one stream, under a finished run's checkpoint."""
    path, meta = run_dir / f"token_losses_{part}.npz", {"best": best, "protocol": "stream"}
    with locked(run_dir):
        nll = _read_npz(path, meta)
        if nll is None:
            cfg, _, params, _ = load_run(run_dir, best=best)
            nll = heldout.token_losses(params, text[part][0], model.ModelSpec.from_config(cfg), context=text[part][1])
            if part == "test":
                _log(run_dir, "per-character", corpus, cfg, {}, {"loss": float(nll.mean())}, "stream")
            _write_npz(path, nll, meta)
    return nll


def window_losses(run_dir: Path, part: str, text: dict, *, best: bool, corpus: str, draw: dict) -> np.ndarray:
    """The windows protocol's (windows, length) losses of one part under a finished run's checkpoint; `draw`:
    {windows, length, seed}."""
    path, meta = run_dir / f"windows_{part}.npz", {"best": best, "protocol": "windows", **draw}
    with locked(run_dir):
        nll = _read_npz(path, meta)
        if nll is None:
            cfg, _, params, _ = load_run(run_dir, best=best)
            spec = model.ModelSpec.from_config(cfg)
            tokens = text[part][0]
            nll = heldout.window_losses(
                params, tokens, spec, windows=draw["windows"], length=draw["length"], seed=draw["seed"]
            )
            if part == "test":
                _log(run_dir, "static", corpus, cfg, {}, scoring.window_figures(nll, draw["seed"]), "windows")
            _write_npz(path, nll.astype(np.float32), meta)
    return nll
