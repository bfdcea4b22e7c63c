"""The declared training FLOPs (rnn_jax.flops) against the matrix products the training forward really runs."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.extend
import jax.numpy as jnp
import pytest

from rnn_jax import config, flops, model, step
from rnn_jax import experiments as experiments_lib
from rnn_jax.cells import CELLS

VOCAB, BATCH, STEPS = 11, 4, 6


def counted_forward_flop(closed) -> int:
    """2 x multiply-adds of every dot_general in a jaxpr, scan bodies times their length (nested calls entered)."""
    total = 0
    for eqn in closed.jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
            continue
        assert eqn.primitive.name != "while", "a loop of unknown length: the count would be a guess"
        times = eqn.params["length"] if eqn.primitive.name == "scan" else 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    total += times * counted_forward_flop(sub)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    total += times * counted_forward_flop(jax.extend.core.ClosedJaxpr(sub, ()))
    return total


def cfg_of(cell: str, block: str, encoder: str, layers: int) -> config.Config:
    core = CELLS[cell]
    return dataclasses.replace(
        experiments_lib.BASE,
        cell=cell,
        block=block,
        encoder=encoder,
        num_layers=layers,
        hidden=8,
        embed_dim=5,
        init="scaled" if core.recurrent else "book",
        batch_size=BATCH,
        num_steps=STEPS,
    )


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize(
    ("block", "encoder", "layers"),
    [("plain", "onehot", 2), ("plain", "embed", 1), ("residual", "onehot", 2), ("residual", "embed", 1)],
)
def test_the_declared_flops_are_three_times_the_forward_products_the_program_runs(cell, block, encoder, layers):
    cfg = cfg_of(cell, block, encoder, layers)
    spec = model.ModelSpec.from_config(cfg)
    init = lambda key: model.init_params(key, VOCAB, cfg.hidden, spec, embed_dim=cfg.embed_dim)
    params = jax.eval_shape(init, jax.random.key(0))  # shapes are all a jaxpr needs
    state = step.zero_state(cfg, BATCH)
    tokens_BT = jnp.zeros((BATCH, STEPS), jnp.int32)
    closed = jax.make_jaxpr(lambda p: model.forward_fused(p, state, tokens_BT, spec))(params)
    per_token = counted_forward_flop(closed) / (BATCH * STEPS)
    assert per_token > 0
    assert flops.flop_per_token(cfg, VOCAB) == 3 * per_token, (cell, block, encoder, layers)


def test_a_run_of_steps_costs_its_tokens_times_the_flops_per_token():
    cfg = cfg_of("lstm", "plain", "onehot", 1)
    assert flops.training_flop(cfg, VOCAB, 7) == flops.flop_per_token(cfg, VOCAB) * 7 * BATCH * STEPS
    # the book's RNN: 6 H (H + V) per token, as the benchmark's limit has always counted it
    assert flops.flop_per_token(cfg_of("rnn", "plain", "onehot", 1), VOCAB) == 6 * 8 * (8 + VOCAB)
