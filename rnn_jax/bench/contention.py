"""The contention section: fused-epoch and the torch peers in fresh processes, on all cores or one, quiet vs one
core kept busy. Each --cells cell against its own peers (the scratch cell and torch's fused layer) on 2 threads and
1: the two-core speed-up of each program, and what a busy core takes from it."""

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
from rnn_jax.bench.throughput import peers, row_name

PIN = "import os, runpy; os.sched_setaffinity(0, {cpus}); runpy.run_module('rnn_jax.bench', run_name='__main__')"


def worker_report(args, corpus: Path, cpus: list[int], cell: str = "rnn") -> dict:
    """The JSON line of a fresh worker process restricted to `cpus` before it imports jax: tokens/s, its cpus."""
    text = run_child(
        [
            sys.executable,
            "-c",
            PIN.format(cpus=set(cpus)),
            "--worker",
            "--epochs",
            str(args.epochs),
            "--hidden",
            str(args.hidden),
            "--cells",
            cell,
            "--data-dir",
            str(corpus.parent),
        ]
    )[0]
    return json.loads(next(x for x in reversed(text.splitlines()) if x.startswith("{")))


def jax_worker(args, corpus: Path, cpus: list[int], cell: str = "rnn") -> float:
    """fused-epoch tokens/s of `cell` measured by a fresh process restricted to `cpus` before it imports jax."""
    return worker_report(args, corpus, cpus, cell)["tokens_per_s"]


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
    """name -> fn() -> tokens/s, per --cells cell: jax on all cores, jax pinned to the first, each torch peer on 2
    and 1 threads."""
    out = {}
    for cell in args.cells:
        for label, chosen in ((f"all {len(cpus)} cores", cpus), (f"pinned to cpu {cpus[0]}", cpus[:1])):
            out[row_name(cell, f"jax fused-epoch, {label}")] = lambda c=cell, s=chosen: jax_worker(args, corpus, s, c)
        for name, flags in peers(cell).items() if args.peer_python else ():
            for threads in (2, 1):
                out[f"{name}, --threads {threads}"] = lambda f=flags, t=threads: peer_tokens_per_s(
                    args, corpus, [*f, "--threads", str(t)]
                )[0]
    return out


def summarise(runs: dict) -> list[dict]:
    """Rows of runs {(name, busy cpu or None): (tokens/s reps, other-core reps)}; vs_quiet: busy median / quiet."""
    return [
        {
            "name": name,
            "busy_core": busy,
            "tokens_per_s": spread(reps),
            "other_cores": median_or_none(others),
            "vs_quiet": statistics.median(reps) / statistics.median(runs[name, None][0]),
        }
        for (name, busy), (reps, others) in runs.items()
    ]


def contention(args, corpus: Path) -> dict:
    """fused-epoch (fresh processes: all cores, or pinned to one) and the torch peer, quiet vs one core busy."""
    cpus = usable_cpus()
    if len(cpus) < 2:
        return {"note": "skipped: fewer than 2 usable cores", "rows": []}
    fns = configs(args, corpus, cpus)

    def under_load(name, busy):
        with busy_core(busy):
            return fns[name]()

    runs: dict[tuple, tuple[list, list]] = {(name, busy): ([], []) for name in fns for busy in (None, cpus[-1])}
    for _ in range(args.contention_reps):
        for (name, busy), (reps, others) in runs.items():
            tokens_per_s, other = measured(functools.partial(under_load, name, busy))  # the busy loop is ours
            reps.append(tokens_per_s)
            others.append(other)
    return {"note": f"busy loop pinned to cpu {cpus[-1]}", "rows": summarise(runs)}
