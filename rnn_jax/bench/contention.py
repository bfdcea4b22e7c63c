"""The contention section: fused-epoch and the torch peer in fresh processes, quiet vs one core kept busy."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rnn_jax.bench.common import measured, median_or_none, peer_tokens_per_s, run_child, spread, usable_cpus

PIN = "import os, runpy; os.sched_setaffinity(0, {cpus}); runpy.run_module('rnn_jax.bench', run_name='__main__')"


def worker_report(args, corpus: Path, cpus: list[int]) -> dict:
    """The JSON line of a fresh worker process restricted to `cpus` before it imports jax: tokens/s, its cpus."""
    text = run_child([sys.executable, "-c", PIN.format(cpus=set(cpus)), "--worker", "--epochs", str(args.epochs),
                      "--hidden", str(args.hidden), "--data-dir", str(corpus.parent)])[0]
    return json.loads(next(x for x in reversed(text.splitlines()) if x.startswith("{")))


def jax_worker(args, corpus: Path, cpus: list[int]) -> float:
    """fused-epoch tokens/s measured by a fresh process restricted to `cpus` before it imports jax."""
    return worker_report(args, corpus, cpus)["tokens_per_s"]


@contextlib.contextmanager
def busy_core(cpu: int | None):
    """A child process spinning on `cpu` while the block runs (nothing when cpu is None)."""
    if cpu is None:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(proc.pid, {cpu})
        yield
    finally:
        proc.kill()
        proc.wait()


def configs(args, corpus: Path, cpus: list[int]) -> dict:
    """name -> fn() -> tokens/s: jax on all cores, jax pinned to the first, the torch peer on 2 and 1 threads."""
    out = {f"jax fused-epoch, all {len(cpus)} cores": lambda: jax_worker(args, corpus, cpus),
           f"jax fused-epoch, pinned to cpu {cpus[0]}": lambda: jax_worker(args, corpus, cpus[:1])}
    for threads in (2, 1) if args.peer_python else ():
        out[f"torch-scratch, --threads {threads}"] = \
            lambda t=threads: peer_tokens_per_s(args, corpus, ["--threads", str(t)])[0]
    return out


def summarise(runs: dict) -> list[dict]:
    """Rows of runs {(name, busy cpu or None): (tokens/s reps, other-core reps)}; vs_quiet: busy median / quiet."""
    return [{"name": name, "busy_core": busy, "tokens_per_s": spread(reps), "other_cores": median_or_none(others),
             "vs_quiet": statistics.median(reps) / statistics.median(runs[name, None][0])}
            for (name, busy), (reps, others) in runs.items()]


def contention(args, corpus: Path) -> dict:
    """fused-epoch (fresh processes: all cores, or pinned to one) and the torch peer, quiet vs one core busy."""
    cpus = usable_cpus()
    if len(cpus) < 2:
        return {"note": "skipped: fewer than 2 usable cores", "rows": []}
    fns = configs(args, corpus, cpus)

    def under_load(name, busy):
        with busy_core(busy):
            return fns[name]()

    runs = {(name, busy): ([], []) for name in fns for busy in (None, cpus[-1])}
    for _ in range(args.contention_reps):
        for (name, busy), (reps, others) in runs.items():
            tokens_per_s, other = measured(functools.partial(under_load, name, busy))  # the busy loop is ours
            reps.append(tokens_per_s)
            others.append(other)
    return {"note": f"busy loop pinned to cpu {cpus[-1]}", "rows": summarise(runs)}
