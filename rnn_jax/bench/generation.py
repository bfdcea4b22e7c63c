"""The generation section: greedy characters from one jitted scan vs the book's per-character loop."""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp

from rnn_jax import data, generate
from rnn_jax import experiments as experiments_lib
from rnn_jax.bench.common import spread
from rnn_jax.bench.variants import fresh_state

PREFIX = "time traveller"


def methods(params, vocab: data.Vocab, num_chars: int) -> dict:
    """name -> (fn, characters per call, calls per repetition); the first two return their greedy text."""
    n, key, prefix_P = num_chars, jax.random.key(0), jnp.asarray(vocab.encode(PREFIX))
    return {
        "generate_ids (one scan)": (
            lambda: vocab.decode(jax.device_get(generate.generate_ids(params, prefix_P, key, num_chars=n)[0])),
            n,
            10,
        ),
        "predict_loop (book)": (lambda: generate.predict_loop(params, vocab, PREFIX, n)[len(PREFIX) :], n, 1),
        "generate_ids, 32 samples, T=1": (
            lambda: jax.block_until_ready(
                generate.generate_ids(params, prefix_P, key, num_chars=n, num_samples=32, temperature=1.0)
            ),
            32 * n,
            3,
        ),
    }


def timed(fns: dict, reps: int) -> tuple[dict, dict]:
    """({name: (first call's result, its seconds)}, {name: chars/s of each repetition}) of methods()' fns."""
    first, rates = {}, {name: list[float]() for name in fns}
    for name, (fn, _, _) in fns.items():
        t0 = time.perf_counter()
        first[name] = (fn(), time.perf_counter() - t0)
    for _ in range(reps):
        for name, (fn, chars, calls) in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            rates[name].append(calls * chars / (time.perf_counter() - t0))
    return first, rates


def summarise(num_chars: int, first: dict, rates: dict) -> dict:
    """Rows of chars/s; the first method's median over the second's, and whether their first texts agree."""
    (scan, scan_text), (loop, loop_text) = ((statistics.median(rates[k]), first[k][0]) for k in list(rates)[:2])
    return {
        "num_chars": num_chars,
        "rows": [{"name": k, "chars_per_s": spread(v), "first_call_s": first[k][1]} for k, v in rates.items()],
        "scan_over_loop": scan / loop,
        "same_text": scan_text == loop_text,
    }


def generation(args, vocab: data.Vocab) -> dict:
    """Greedy characters: generate_ids (one jitted scan) vs predict_loop (the book's loop); 32 samples at once."""
    cfg = dataclasses.replace(experiments_lib.BASE, hidden=args.hidden)
    params = fresh_state(cfg, len(vocab))[1].params
    return summarise(args.gen_chars, *timed(methods(params, vocab, args.gen_chars), args.reps))
