"""Speed of the book's RNN (§8.5): train-step variants against PyTorch peers and the matmul limit, and more.

Sections: throughput (variants and peers in alternating repetitions, with the fp32 limit), compile
(train-epoch compile time at T = 35 and 350), generation (one jitted scan vs the book's loop), scaling
(H x T: tokens/s and XLA memory), contention (one core kept busy; pinned vs all cores), e2e (--e2e).
FLOP per training token is 6 H (H + V): forward h W_hh (2 H^2) and h W_hq (2 H V), backward twice the
forward (gradients of activations and of weights); x W_xh is a row gather (0 FLOP), tanh/softmax are
ignored. At H 512, V 28 that is 1,658,880 ~ 1.66 MFLOP, so tokens/s limit = matmul FLOP/s / 1.66e6.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax import config as config_lib
from rnn_jax import data, distributed, generate, log, model, train

PEER_SCRIPT = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "d2l_torch_ref.py"
VARIANTS = {  # name -> (Config overrides, one jitted step per minibatch from Python (True) or one jit per epoch)
    "autodiff-step": ({"backward": "autodiff"}, True),
    "fused-step": ({"backward": "fused"}, True),
    "fused-epoch": ({"backward": "fused"}, False),
    "fused-epoch-bf16": ({"backward": "fused", "matmul_dtype": "bfloat16"}, False),
    "autodiff-epoch": ({"backward": "autodiff"}, False),
}
PEERS = {"torch-scratch": [], "torch-nn.RNN": ["--concise"]}  # the book's §8.5 pipeline, §8.6 nn.RNN
SECTIONS = ("throughput", "compile", "generation", "scaling", "devices", "contention", "e2e")
PIN = "import os, runpy; os.sched_setaffinity(0, {cpus}); runpy.run_module('rnn_jax.bench', run_name='__main__')"


def flop_per_token(hidden: int, vocab: int) -> int:
    return 6 * hidden * (hidden + vocab)


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "reps": xs}


def median_or_none(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> tuple[float, float]:
    """Busy CPU seconds of the whole machine since boot, and of this process with its reaped children."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]  # user nice system idle iowait irq softirq
    ours = sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK"), ours


def measured(fn):
    """(fn(), how many cores other processes kept busy meanwhile on average; None under 0.5 s: ticks are 10 ms)."""
    t0, (all0, ours0) = time.perf_counter(), cpu_seconds()
    result = fn()
    (all1, ours1), seconds = cpu_seconds(), time.perf_counter() - t0
    return result, (all1 - all0 - ours1 + ours0) / seconds if seconds >= 0.5 else None


def fixed_batches(tokens: np.ndarray, num_batches: int, batch_size: int, num_steps: int):
    """(X_NBT, Y_NBT) from consecutive windows at the start of the corpus, the same every epoch."""
    n = num_batches * batch_size * num_steps
    cut = lambda a: a[:n].reshape(batch_size, num_batches, num_steps).transpose(1, 0, 2)
    return cut(tokens), cut(tokens[1:])


def build(cfg: config_lib.Config, vocab_size: int, batches, per_step: bool):
    """Compiles one variant, runs a warm-up epoch; returns (run(epochs) -> tokens/s, compile s, XLA bytes)."""
    tx = train.make_optimizer(cfg)
    box = {"state": train.init_state(cfg, vocab_size, tx), "epoch": 0}
    X_NBT, Y_NBT = batches(0)
    h0_BH = model.init_hidden(cfg.batch_size, cfg.hidden)
    jitted = train.make_train_step(cfg, tx) if per_step else train.make_train_epoch(cfg, tx)
    example = (box["state"], h0_BH, X_NBT[0], Y_NBT[0]) if per_step else (box["state"], X_NBT, Y_NBT)
    t0 = time.perf_counter()
    mem = jitted.lower(*example).compile().memory_analysis()  # the jit's cache keeps the executable
    compile_s = time.perf_counter() - t0
    xla = {k: getattr(mem, f"{k}_size_in_bytes") for k in ("argument", "output", "temp", "alias")}

    def epoch_loop(state, X_NBT, Y_NBT):
        h_BH = h0_BH
        for X_BT, Y_BT in zip(X_NBT, Y_NBT):
            state, h_BH, metrics = jitted(state, h0_BH if cfg.sampling == "random" else h_BH, X_BT, Y_BT)
        return state, metrics

    def run(num_epochs: int) -> float:
        num_tokens, t0 = 0, time.perf_counter()
        for _ in range(num_epochs):
            box["epoch"] += 1
            X_NBT, Y_NBT = batches(box["epoch"])
            out = (epoch_loop if per_step else jitted)(box["state"], X_NBT, Y_NBT)
            box["state"], metrics = out[0], out[-1]  # train's epoch returns (state, [h_last,] metrics)
            jax.device_get(metrics)  # one host sync per epoch, as train.run
            num_tokens += X_NBT.size
        return num_tokens / (time.perf_counter() - t0)

    run(1)
    return run, compile_s, xla


def xla_mb(xla: dict) -> float:
    return (xla["argument"] + xla["output"] + xla["temp"] - xla["alias"]) / 2**20


def matmul_limit(hidden: int, batch_size: int = 32, steps: int = 2000):
    """run() -> GFLOP/s of the hot product: a lax.scan chain of (B, H) @ (H, H) f32 matmuls."""
    W_HH = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (hidden, hidden)))[0]  # orthogonal: |h| stays put
    h_BH = jax.random.normal(jax.random.key(1), (batch_size, hidden))
    chain = jax.jit(lambda W_HH, h_BH: jax.lax.scan(lambda h, _: (h @ W_HH, None), h_BH, None, length=steps)[0])
    jax.block_until_ready(chain(W_HH, h_BH))

    def run() -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(chain(W_HH, h_BH))
        return 2 * batch_size * hidden * hidden * steps / (time.perf_counter() - t0) / 1e9
    return run


def vm_hwm_kb(pid: int) -> int:
    """Peak RSS so far of a live process (its VmHWM), 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return 0


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
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{text[-3000:]}")
    return text, wall, peak_kb / 1024


def run_peer(args, corpus: Path, flags: list[str]) -> tuple[dict, float, float]:
    """One run of the PyTorch peer script; returns (its JSON, wall seconds, peak RSS MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        threads = [] if args.peer_threads is None or "--threads" in flags else ["--threads", str(args.peer_threads)]
        _, wall, rss = run_child([args.peer_python, str(args.peer_script), "--data", str(corpus), "--hidden",
                                  str(args.hidden), "--json-out", str(out), *threads, *flags])
        return json.loads(out.read_text()), wall, rss


def peer_tokens_per_s(args, corpus: Path, flags: list[str]) -> tuple[float, float]:
    """Peer tokens/s over --epochs epochs after one warm-up epoch (the script's own timing), peak RSS MiB."""
    report, _, rss = run_peer(args, corpus, ["--epochs", str(args.epochs + 1), "--predict-every", "0", *flags])
    return report["tokens_per_s_excl_first"], rss


def jax_worker(args, corpus: Path, cpus: list[int]) -> float:
    """fused-epoch tokens/s measured by a fresh process restricted to `cpus` before it imports jax."""
    text = run_child([sys.executable, "-c", PIN.format(cpus=set(cpus)), "--worker", "--epochs", str(args.epochs),
                      "--hidden", str(args.hidden), "--data-dir", str(corpus.parent)])[0]
    return json.loads(next(x for x in reversed(text.splitlines()) if x.startswith("{")))["tokens_per_s"]


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


def throughput(args, corpus: Path, tokens: np.ndarray, vocab: data.Vocab) -> dict:
    """Every variant and peer once per repetition, alternating; medians, ratios, limit fractions."""
    rows = {}  # name -> row; row["measure"]() -> (tokens/s, peak RSS MiB)
    for sampling in args.samplings:
        for name in args.variants:
            overrides, per_step = VARIANTS[name]
            cfg = dataclasses.replace(config_lib.BASE, hidden=args.hidden, sampling=sampling, **overrides)
            run, compile_s, xla = build(cfg, len(vocab), lambda e, cfg=cfg: data.epoch_batches(tokens, cfg, e),
                                        per_step)
            rows[f"{name} {sampling}"] = {"measure": lambda run=run: (run(args.epochs), rss_mb()),
                                          "compile_s": compile_s, "xla_mb": xla_mb(xla)}
        for name, flags in PEERS.items() if args.peer_python else ():
            flags = flags + ["--random"] * (sampling == "random")
            rows[f"{name} {sampling}"] = {"measure": lambda flags=flags: peer_tokens_per_s(args, corpus, flags)}
    limit, gflops = matmul_limit(args.hidden, steps=args.limit_steps), []
    for _ in range(args.reps):
        for row in rows.values():
            (tokens_per_s, rss), other = measured(row["measure"])
            for key, value in (("reps", tokens_per_s), ("rss", rss), ("other", other)):
                row.setdefault(key, []).append(value)
        gflops.append(limit())
    limit_tokens_per_s = statistics.median(gflops) * 1e9 / flop_per_token(args.hidden, len(vocab))
    out = []
    for name, row in rows.items():
        median, ref = statistics.median(row["reps"]), rows.get(f"torch-scratch {name.split()[-1]}")
        out.append({"name": name, "tokens_per_s": spread(row["reps"]),
                    "ratio_to_torch_scratch": median / statistics.median(ref["reps"]) if ref else None,
                    "fraction_of_fp32_limit": median / limit_tokens_per_s, "compile_s": row.get("compile_s"),
                    "xla_mb": row.get("xla_mb"), "peak_rss_mb": max(row["rss"]),
                    "other_cores": median_or_none(row["other"])})
    return {"rows": out, "limit": {"gflop_per_s": spread(gflops), "tokens_per_s": limit_tokens_per_s,
                                   "flop_per_token": flop_per_token(args.hidden, len(vocab))}}


def compile_times(args, vocab_size: int) -> list[dict]:
    """Seconds to lower and compile each chosen one-jit epoch at every --scale-steps T (8 minibatches of 32)."""
    out = []
    for name in [v for v in args.variants if not VARIANTS[v][1]] or ["fused-epoch"]:
        for num_steps in args.scale_steps:
            cfg = dataclasses.replace(config_lib.BASE, hidden=args.hidden, num_steps=num_steps, **VARIANTS[name][0])
            tx = train.make_optimizer(cfg)
            X_NBT = np.zeros((8, cfg.batch_size, num_steps), np.int32)
            t0 = time.perf_counter()
            train.make_train_epoch(cfg, tx).lower(train.init_state(cfg, vocab_size, tx), X_NBT, X_NBT).compile()
            out.append({"name": name, "num_steps": num_steps, "compile_s": time.perf_counter() - t0})
    return out


def generation(args, vocab: data.Vocab) -> dict:
    """Greedy characters: generate_ids (one jitted scan) vs predict_loop (the book's loop); 32 samples at once."""
    cfg = dataclasses.replace(config_lib.BASE, hidden=args.hidden)
    params = train.init_state(cfg, len(vocab), train.make_optimizer(cfg)).params
    prefix, n, key = "time traveller", args.gen_chars, jax.random.key(0)
    prefix_P = jnp.asarray(vocab.encode(prefix))
    methods = {  # name -> (fn, characters per call, calls per repetition)
        "generate_ids (one scan)": (lambda: vocab.decode(jax.device_get(
            generate.generate_ids(params, prefix_P, key, num_chars=n)[0])), n, 10),
        "predict_loop (book)": (lambda: generate.predict_loop(params, vocab, prefix, n)[len(prefix):], n, 1),
        "generate_ids, 32 samples, T=1": (lambda: jax.block_until_ready(generate.generate_ids(
            params, prefix_P, key, num_chars=n, num_samples=32, temperature=1.0)), 32 * n, 3),
    }
    first, rates = {}, {name: [] for name in methods}
    for name, (fn, _, _) in methods.items():
        t0 = time.perf_counter()
        first[name] = (fn(), time.perf_counter() - t0)
    for _ in range(args.reps):
        for name, (fn, chars, calls) in methods.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            rates[name].append(calls * chars / (time.perf_counter() - t0))
    (scan, scan_text), (loop, loop_text) = ((statistics.median(rates[k]), first[k][0]) for k in list(methods)[:2])
    return {"num_chars": n, "rows": [{"name": k, "chars_per_s": spread(v), "first_call_s": first[k][1]}
                                     for k, v in rates.items()],
            "scan_over_loop": scan / loop, "same_text": scan_text == loop_text}


def scaling(args, corpus: Path, vocab_size: int) -> list[dict]:
    """fused-epoch tokens/s, XLA memory and compile time over H x T (epochs of 280 // T minibatches)."""
    tokens, _ = data.load_corpus(corpus, -1)
    out = []
    for hidden in args.scale_hidden:
        for num_steps in args.scale_steps:
            cfg = dataclasses.replace(config_lib.BASE, hidden=hidden, num_steps=num_steps)
            X_NBT, Y_NBT = fixed_batches(tokens, max(1, 280 // num_steps), cfg.batch_size, num_steps)
            run, compile_s, xla = build(cfg, vocab_size, lambda e, X=X_NBT, Y=Y_NBT: (X, Y), per_step=False)
            epochs = min(args.epochs, math.ceil(run(1) / X_NBT.size))  # about a second's worth, at most --epochs
            tokens_per_s, other = measured(functools.partial(run, epochs))
            out.append({"hidden": hidden, "num_steps": num_steps, "tokens_per_s": tokens_per_s,
                        "gflop_per_s": tokens_per_s * flop_per_token(hidden, vocab_size) / 1e9,
                        "compile_s": compile_s, "xla_mb": xla_mb(xla),
                        **{f"xla_{k}_mb": v / 2**20 for k, v in xla.items()}, "peak_rss_mb": rss_mb(),
                        "other_cores": other})
    return out


def device_scaling(args, vocab_size: int, tokens: np.ndarray) -> dict:
    """Data-parallel fused-epoch over 1, 2, 4, ... local devices at one global batch (32 rows per device at most)."""
    available = jax.device_count()
    counts = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= available]
    cfg = dataclasses.replace(config_lib.BASE, hidden=args.hidden, batch_size=32 * counts[-1])
    rows = []
    for n in counts:
        mesh = distributed.make_mesh(n)
        tx = train.make_optimizer(cfg)
        state = distributed.replicate(train.init_state(cfg, vocab_size, tx), mesh)
        epoch = train.make_train_epoch(cfg, tx)
        batches = [tuple(distributed.shard_rows(a, mesh) for a in data.epoch_batches(tokens, cfg, e))
                   for e in range(args.epochs + 1)]
        state = epoch(state, *batches[0])[0]  # compile and warm up
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        for X_NBT, Y_NBT in batches[1:]:
            state, _, metrics = epoch(state, X_NBT, Y_NBT)
            distributed.to_host(metrics)
        tokens_per_s = sum(b[0].size for b in batches[1:]) / (time.perf_counter() - t0)
        rows.append({"devices": n, "batch_size": cfg.batch_size, "tokens_per_s": tokens_per_s,
                     "speedup": tokens_per_s / rows[0]["tokens_per_s"] if rows else 1.0})
    return {"note": f"{available} {jax.devices()[0].platform} device(s); global batch {cfg.batch_size}", "rows": rows}


def contention(args, corpus: Path) -> dict:
    """fused-epoch (fresh processes: all cores, or pinned to one) and the torch peer, quiet vs one core busy."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {"note": "skipped: fewer than 2 usable cores", "rows": []}
    configs = {f"jax fused-epoch, all {len(cpus)} cores": lambda: jax_worker(args, corpus, cpus),
               f"jax fused-epoch, pinned to cpu {cpus[0]}": lambda: jax_worker(args, corpus, cpus[:1])}
    for threads in (2, 1) if args.peer_python else ():
        configs[f"torch-scratch, --threads {threads}"] = \
            lambda t=threads: peer_tokens_per_s(args, corpus, ["--threads", str(t)])[0]
    def under_load(name, busy):
        with busy_core(busy):
            return configs[name]()

    runs = {(name, busy): ([], []) for name in configs for busy in (None, cpus[-1])}
    for _ in range(args.contention_reps):
        for (name, busy), (reps, others) in runs.items():
            tokens_per_s, other = measured(functools.partial(under_load, name, busy))  # the busy loop is ours
            reps.append(tokens_per_s)
            others.append(other)
    return {"note": f"busy loop pinned to cpu {cpus[-1]}", "rows": [
        {"name": name, "busy_core": busy, "tokens_per_s": spread(reps), "other_cores": median_or_none(others),
         "vs_quiet": statistics.median(reps) / statistics.median(runs[name, None][0])}
        for (name, busy), (reps, others) in runs.items()]}


def e2e(args, corpus: Path) -> list[dict]:
    """Wall time, process start to exit, of `python -m rnn_jax.train --exp seq` and of the peer's run."""
    epochs = ["--epochs", str(args.e2e_epochs)]
    with tempfile.TemporaryDirectory() as tmp:
        _, wall, rss = run_child([sys.executable, "-m", "rnn_jax.train", "--exp", "seq", *epochs, "--run-dir",
                                  f"{tmp}/run", "--data-dir", str(corpus.parent), "--hidden", str(args.hidden)])
        summary = json.loads(Path(tmp, "run", "summary.json").read_text())
    out = [{"name": "rnn_jax.train --exp seq", "wall_s": wall, "perplexity": summary["perplexity"], "peak_rss_mb": rss}]
    if args.peer_python:
        report, wall, rss = run_peer(args, corpus, epochs)
        out.append({"name": "torch-scratch (book) seq", "wall_s": wall, "perplexity": report["final_perplexity"],
                    "peak_rss_mb": rss})
    return out


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (header, key or 'key.subkey', format spec); a missing or None value prints as '-'."""
    def cell(row, path, spec):
        for key in path.split("."):
            row = row.get(key) if isinstance(row, dict) else None
        return "-" if row is None else format(row, spec)
    table = [[h for h, _, _ in columns]] + [[cell(r, k, s) for _, k, s in columns] for r in rows]
    widths = [max(len(c) for c in col) for col in zip(*table)]
    print(f"\n{title}")
    for line in table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))


def print_report(report: dict) -> None:
    tok = [(h, f"tokens_per_s.{h}", ",.0f") for h in ("median", "min", "max")]
    if "throughput" in report:
        lim = report["throughput"]["limit"]
        print_table(f"throughput, tokens/s over {report['args']['reps']} alternating reps (fp32 limit "
                    f"{lim['gflop_per_s']['median']:.0f} GFLOP/s = {lim['tokens_per_s']:,.0f} tokens/s)",
                    report["throughput"]["rows"], [("variant", "name", ""), *tok,
                    ("vs torch", "ratio_to_torch_scratch", ".2f"), ("of limit", "fraction_of_fp32_limit", ".2f"),
                    ("compile s", "compile_s", ".2f"), ("xla MB", "xla_mb", ".1f"), ("rss MB", "peak_rss_mb", ",.0f"),
                    ("other cores", "other_cores", ".2f")])
        print("xla MB: arguments + outputs + temporaries - aliased, of one jitted call (a step or an epoch); "
              "rss MB: peak RSS of the peer's process, or of this process so far;\nother cores: CPU other "
              "processes used during the measurement (median over reps); figures with > 0.1 are disturbed")
    if "compile" in report:
        print_table("compile seconds of the train epoch", report["compile"],
                    [("variant", "name", ""), ("T", "num_steps", "d"), ("compile s", "compile_s", ".2f")])
    if "generation" in report:
        g = report["generation"]
        print_table(f"generation of {g['num_chars']} characters after 'time traveller', chars/s", g["rows"],
                    [("method", "name", ""), *[(h, f"chars_per_s.{h}", ",.0f") for h in ("median", "min", "max")],
                     ("first call s", "first_call_s", ".2f")])
        print(f"one scan / the book's loop: {g['scan_over_loop']:.1f}x (same greedy text: {g['same_text']})")
    if "scaling" in report:
        print_table("scaling of fused-epoch (seq)", report["scaling"], [
            ("H", "hidden", "d"), ("T", "num_steps", "d"), ("tokens/s", "tokens_per_s", ",.0f"),
            ("GFLOP/s", "gflop_per_s", ".1f"), ("compile s", "compile_s", ".2f"), ("xla MB", "xla_mb", ".1f"),
            *[(f"{k[:4]} MB", f"xla_{k}_mb", ".1f") for k in ("argument", "output", "temp")],
            ("rss MB", "peak_rss_mb", ",.0f"), ("other cores", "other_cores", ".2f")])
    if "devices" in report:
        print_table(f"data parallel over devices ({report['devices']['note']})", report["devices"]["rows"], [
            ("devices", "devices", "d"), ("batch", "batch_size", "d"), ("tokens/s", "tokens_per_s", ",.0f"),
            ("speedup", "speedup", ".2f")])
    if "contention" in report:
        print_table(f"contention ({report['contention']['note']})", report["contention"]["rows"], [
            ("config", "name", ""), ("busy core", "busy_core", "d"), *tok, ("vs quiet", "vs_quiet", ".2f"),
            ("other cores", "other_cores", ".2f")])
    if "e2e" in report:
        print_table("end to end, process start to exit", report["e2e"], [
            ("program", "name", ""), ("wall s", "wall_s", ".1f"), ("perplexity", "perplexity", ".3f"),
            ("rss MB", "peak_rss_mb", ",.0f")])
    print(f"\npeak RSS of this process: {report['peak_rss_mb']:,.0f} MB; other processes kept busy on average "
          + ", ".join(f"{v['other_cores'] or 0:.2f} cores during {k}" for k, v in report["load"].items()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rnn_jax.bench", description=__doc__.splitlines()[0])
    ints = lambda s: [int(x) for x in s.split(",")]
    strs = lambda s: [x for x in s.split(",") if x]
    p.add_argument("--data-dir", default=None, help=f"directory holding {data.TIME_MACHINE_FILE}")
    p.add_argument("--sections", type=strs, default=list(SECTIONS[:-1]), help=f"any of {','.join(SECTIONS)}")
    p.add_argument("--variants", type=strs, default=list(VARIANTS), help=f"any of {','.join(VARIANTS)}")
    p.add_argument("--samplings", type=strs, default=None, help="seq,random (default both; quick: seq)")
    p.add_argument("--reps", type=int, default=None, help="alternating repetitions (default 5; quick 2)")
    p.add_argument("--epochs", type=int, default=None, help="timed epochs per measurement (default 10; quick 2)")
    p.add_argument("--contention-reps", type=int, default=None, help="(default min(reps, 3); quick 1)")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: fewer reps, epochs and sizes")
    p.add_argument("--hidden", type=int, default=512, help="H of every section but scaling")
    p.add_argument("--scale-hidden", type=ints, default=None, help="H values (default 256,512,1024,2048)")
    p.add_argument("--scale-steps", type=ints, default=[35, 350], help="T values of the scaling and compile sections")
    p.add_argument("--gen-chars", type=int, default=500)
    p.add_argument("--limit-steps", type=int, default=None, help="matmuls in the limit chain (default 2000)")
    p.add_argument("--peer-python", default=None, help="a Python with torch: runs the PyTorch peers")
    p.add_argument("--peer-script", type=Path, default=PEER_SCRIPT)
    p.add_argument("--peer-threads", type=int, default=None, help="torch threads of the peers but in contention "
                   "(default: the script's, 2)")
    p.add_argument("--e2e", action="store_true", help="also time whole training runs (section e2e)")
    p.add_argument("--e2e-epochs", type=int, default=500)
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    q = args.quick
    defaults = {"samplings": ["seq"] if q else ["seq", "random"], "reps": 2 if q else 5, "epochs": 2 if q else 10,
                "scale_hidden": [256, 512] if q else [256, 512, 1024, 2048], "limit_steps": 500 if q else 2000}
    for k, v in defaults.items():
        setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
    args.contention_reps = args.contention_reps or (1 if q else min(args.reps, 3))
    args.sections += ["e2e"] * (args.e2e and "e2e" not in args.sections)
    for name, got, allowed in (("section", args.sections, SECTIONS), ("variant", args.variants, VARIANTS),
                               ("sampling", args.samplings, ("seq", "random"))):
        if set(got) - set(allowed):
            raise SystemExit(f"error: unknown {name} {sorted(set(got) - set(allowed))}; known: {', '.join(allowed)}")
    if args.peer_python and not args.peer_script.is_file():
        raise SystemExit(f"error: --peer-script {args.peer_script} does not exist")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    corpus = data.resolve_corpus(None, args.data_dir)
    tokens, vocab = data.load_corpus(corpus, config_lib.BASE.max_tokens)
    if args.worker:  # one contention measurement, in a fresh process whose CPUs the parent chose
        cfg = dataclasses.replace(config_lib.BASE, hidden=args.hidden)
        run = build(cfg, len(vocab), lambda e: data.epoch_batches(tokens, cfg, e), per_step=False)[0]
        print(json.dumps({"tokens_per_s": run(args.epochs), "cpus": sorted(os.sched_getaffinity(0))}))
        return 0
    if not args.peer_python:
        print(f"note: peers skipped; pass --peer-python PATH (a Python with torch) to run the book's PyTorch "
              f"pipeline {args.peer_script} alongside ('vs torch' stays empty)", flush=True)
    report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "environment": log.environment(), "cpus": sorted(os.sched_getaffinity(0)), "load": {}}
    sections = {"throughput": lambda: throughput(args, corpus, tokens, vocab),
                "compile": lambda: compile_times(args, len(vocab)), "generation": lambda: generation(args, vocab),
                "scaling": lambda: scaling(args, corpus, len(vocab)), "contention": lambda: contention(args, corpus),
                "devices": lambda: device_scaling(args, len(vocab), data.load_corpus(corpus)[0]),
                "e2e": lambda: e2e(args, corpus)}
    for name in (s for s in SECTIONS if s in args.sections):
        t0 = time.perf_counter()
        report[name], other = measured(sections[name])
        report["load"][name] = {"seconds": time.perf_counter() - t0, "other_cores": other}
        print(f"[{name}: {report['load'][name]['seconds']:.0f} s]", file=sys.stderr, flush=True)
    report["peak_rss_mb"] = rss_mb()
    print_report(report)
    if args.json_out:
        log.write_json(args.json_out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
