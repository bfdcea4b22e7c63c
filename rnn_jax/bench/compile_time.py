"""The compile section: seconds to lower and compile the one-jit train epoch at each T."""

from __future__ import annotations

import itertools
import time

import numpy as np

from rnn_jax.bench import variants


def compile_times(args, vocab_size: int) -> list[dict]:
    """Seconds to lower and compile each chosen one-jit epoch of every --cells cell at every --depths depth and
    every --scale-steps T (8 minibatches of 32)."""
    out = []
    for name in [v for v in args.variants if not variants.VARIANTS[v][1]] or ["fused-epoch"]:
        for cell, num_layers, num_steps in itertools.product(args.cells, args.depths, args.scale_steps):
            cfg = variants.variant_config(
                name, hidden=args.hidden, num_steps=num_steps, cell=cell, num_layers=num_layers
            )
            tx = variants.make_optimizer(cfg)
            X_NBT = np.zeros((8, cfg.batch_size, num_steps), np.int32)
            t0 = time.perf_counter()
            epoch = variants.jitted_train(cfg, tx, per_step=False)
            epoch.lower(variants.init_state(cfg, vocab_size, tx), X_NBT, X_NBT).compile()
            out.append(
                {
                    "name": name,
                    "cell": cell,
                    "num_layers": num_layers,
                    "num_steps": num_steps,
                    "compile_s": time.perf_counter() - t0,
                }
            )
    return out
