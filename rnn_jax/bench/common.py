"""Measuring tools shared by the sections: spreads, CPU load, peak RSS, child processes and the PyTorch peer."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from rnn_jax import checkout
from rnn_jax.exitcodes import Exit


def peer_script() -> Path:
    """The PyTorch peer of the checkout the benchmark runs in: <checkout>/../shared/bench/d2l_torch_ref.py (or under
    $RNN_JAX_SHARED); the recipe's peer, recipe_torch_peer.py, lies beside it."""
    return checkout.shared() / "bench" / "d2l_torch_ref.py"


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "reps": xs}


def median_or_none(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def busy_seconds(stat_line: str, ticks_per_s: float) -> float:
    """Busy CPU seconds in /proc/stat's first line: user + nice + system + irq + softirq (not idle, iowait)."""
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in stat_line.split()[1:8])
    return (user + nice + system + irq + softirq) / ticks_per_s


def cpu_seconds() -> tuple[float, float]:
    """Busy CPU seconds of the whole machine since boot, and of this process with its reaped children."""
    with open("/proc/stat") as f:
        machine = busy_seconds(f.readline(), os.sysconf("SC_CLK_TCK"))
    ours = sum(
        getattr(resource.getrusage(who), field)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for field in ("ru_utime", "ru_stime")
    )
    return machine, ours


def measured(fn, read_cpu=cpu_seconds, clock=time.perf_counter):
    """(fn(), how many cores other processes kept busy meanwhile on average; None under 0.5 s: ticks are 10 ms)."""
    t0, (all0, ours0) = clock(), read_cpu()
    result = fn()
    (all1, ours1), seconds = read_cpu(), clock() - t0
    return result, (all1 - all0 - ours1 + ours0) / seconds if seconds >= 0.5 else None


def vm_hwm_kb(pid: int) -> int:
    """Peak RSS so far of a live process (its VmHWM), 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return 0


class ChildFailed(RuntimeError):
    """A measured child process (a worker, a training run, a PyTorch peer) ended with an error; the message names
    the command and its last line of output."""

    exit_status = Exit.FAILED


def run_child(cmd: list[str]) -> tuple[str, float, float]:
    """Runs cmd to completion; returns (its stdout + stderr, wall seconds, its peak RSS in MiB)."""
    with tempfile.TemporaryFile("w+") as out:
        t0, peak_kb = time.perf_counter(), 0
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:  # polled: wait4's ru_maxrss would count this process's RSS, which a spawned child starts from
            while not (done := os.waitpid(proc.pid, os.WNOHANG))[0]:
                peak_kb = max(peak_kb, vm_hwm_kb(proc.pid))
                time.sleep(0.05)
        except BaseException:
            proc.kill()
            raise
        wall, proc.returncode = time.perf_counter() - t0, os.waitstatus_to_exitcode(done[1])
        out.seek(0)
        text = out.read()
    if proc.returncode:
        last = (text.strip().splitlines() or [""])[-1][:500]
        raise ChildFailed(f"{' '.join(cmd)} failed with exit code {proc.returncode}: {last}")
    return text, wall, peak_kb / 1024


def run_peer(args, corpus: Path, flags: list[str]) -> tuple[dict, float, float]:
    """One run of the PyTorch peer script; returns (its JSON, wall seconds, peak RSS MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        threads = [] if args.peer_threads is None or "--threads" in flags else ["--threads", str(args.peer_threads)]
        _, wall, rss = run_child(
            [
                args.peer_python,
                str(args.peer_script),
                "--data",
                str(corpus),
                "--hidden",
                str(args.hidden),
                "--json-out",
                str(out),
                *threads,
                *flags,
            ]
        )
        return json.loads(out.read_text()), wall, rss


def peer_tokens_per_s(args, corpus: Path, flags: list[str]) -> tuple[float, float]:
    """Peer tokens/s over --epochs epochs after one warm-up epoch (the script's own timing), peak RSS MiB."""
    report, _, rss = run_peer(args, corpus, ["--epochs", str(args.epochs + 1), "--predict-every", "0", *flags])
    return report["tokens_per_s_excl_first"], rss
