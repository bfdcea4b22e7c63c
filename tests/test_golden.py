"""The book's model (`--exp seq`) pinned at its first update: the loss and a checksum of the updated parameters."""

import jax
import numpy as np
import pytest

from rnn_jax import data, step
from rnn_jax import experiments as experiments_lib

# Recorded from this code on a CPU. Update them only on purpose: for a change meant to alter what training
# computes, said so in its commit. Any other change that moves them has changed the book's model.
FIRST_LOSS = 3.3325035572052
PARAMS_CHECKSUM = 2321.8074551617497  # sum over the parameters of sum(|p|), in float64


def first_update(data_dir):
    """(loss, checksum of the parameters after it) of the first minibatch of `--exp seq`'s first epoch."""
    cfg = experiments_lib.EXPERIMENTS["seq"]
    tokens, vocab = data.load_corpus(data_dir / "timemachine.txt", -1, cfg.preprocess)
    X_NBT, Y_NBT = data.epoch_batches(data.splits(tokens, cfg)["train"][0], cfg, 1)
    tx = step.make_optimizer(cfg)
    state = step.init_state(cfg, len(vocab), tx)
    state, _, metrics = step.make_train_epoch(cfg, tx)(state, X_NBT[:1], Y_NBT[:1])
    checksum = sum(np.abs(np.asarray(p, np.float64)).sum() for p in jax.tree.leaves(jax.device_get(state.params)))
    return float(metrics["loss"][0]), float(checksum)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="recorded on a CPU; other devices round differently")
def test_the_books_model_first_update_is_the_recorded_one(data_dir):
    loss, checksum = first_update(data_dir)
    message = (
        f"the first update of --exp seq moved: loss {loss!r}, checksum {checksum!r}; if the change means to alter "
        "training's numbers, record these in tests/test_golden.py, else find what changed them"
    )
    assert loss == pytest.approx(FIRST_LOSS, rel=1e-6), message
    assert checksum == pytest.approx(PARAMS_CHECKSUM, rel=1e-6), message
