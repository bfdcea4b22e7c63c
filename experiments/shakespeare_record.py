"""The tiny Shakespeare record (experiments/shakespeare.py): the last one read back, the entries merged into it, the
split it states, the samples it shows, and its models printed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.classes import class_of
from rnn_jax import corpora, generate, model, runs

SAMPLES: dict[str, Any] = {"prompt": "ROMEO:", "num_chars": 300, "temperature": 0.8, "seeds": (0, 1, 2)}


def load_record(path: Path) -> dict:
    """The last record of this study ({} when there is none); one of another shape is an error naming it."""
    if not path.is_file():
        return {}
    try:
        rec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise corpora.DataError(
            f"{path} is not a JSON record ({e}); restore it (git checkout) or move it away"
        ) from None
    if not isinstance(rec, dict) or not isinstance(rec.get("models"), dict):
        raise corpora.DataError(f"{path} is not a record of this study (no 'models' object); restore or move it away")
    return rec


def merged(previous: dict, now: dict) -> dict:
    """The record's entries: those scored now, and every earlier one not scored again (a subset of the models, or
    runs that are not on this machine, never drops an entry); says which were kept."""
    kept = [n for n in previous if n not in now]
    if kept:
        print(f"kept from the last record (not scored now): {', '.join(kept)}", flush=True)
    return {n: {**m, "class": class_of(m)} for n, m in {**{n: previous[n] for n in kept}, **now}.items()}


def split_record(text: dict) -> dict:
    return {
        "corpus": text["corpus"].name,
        "sha1": text["sha1"],
        "characters": text["n"],
        "vocab_size": text["vocab_size"],
        "train": int(len(text["train"])),
        "val": int(len(text["val"][0])),
        "test": int(len(text["test"][0])),
        "rule": "test = the last n - int(0.9 n) characters (nanoGPT's val); val = the "
        "5% of the corpus before it, chosen on by models that did not train on "
        "it; final models train on train + val (nanoGPT's 90%)",
        "windows": text["draw"],
    }


def print_models(models: dict) -> None:
    """Each model's test loss under both protocols and its validation loss, best first."""
    for name, m in sorted(models.items(), key=lambda kv: kv[1]["test_loss"]["mean"]):
        w = m.get("test_loss_windows")
        windows_text = f"  windows {w['mean']:.4f}" if w else ""
        print(
            f"{name:<30} {m.get('class', m['evaluation']):<17} test {m['test_loss']['mean']:.4f} ± "
            f"{m['test_loss']['std']:.4f} nats{windows_text}  val {m['val_loss']['mean']:.4f}",
            flush=True,
        )


def samples(run_dir: Path) -> dict:
    """Seeded samples from a final run, and the command that prints the same text."""
    cfg, vocab, params, _ = runs.load_run(run_dir)
    out = []
    for seed in SAMPLES["seeds"]:
        ids = generate.generate_ids(
            params,
            jax.numpy.asarray(vocab.encode(SAMPLES["prompt"])),
            jax.random.key(seed),
            num_chars=SAMPLES["num_chars"],
            num_samples=1,
            temperature=SAMPLES["temperature"],
            top_k=0,
            spec=model.ModelSpec.from_config(cfg),
        )
        out.append(SAMPLES["prompt"] + vocab.decode(np.asarray(ids)[0]))
    run_dir = Path(os.path.relpath(run_dir, Path(__file__).resolve().parent.parent))  # from the repository
    command = (
        f"python -m rnn_jax.generate --run-dir {run_dir} --prefix '{SAMPLES['prompt']}' "
        f"--num-chars {SAMPLES['num_chars']} --temperature {SAMPLES['temperature']} --seed S"
    )
    return {"run": str(run_dir), "command": command, **SAMPLES, "texts": out}
