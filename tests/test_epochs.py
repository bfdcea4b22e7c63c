"""The per-epoch record and stop rule: which epochs do periodic work, how non-finite steps are counted, the row an
epoch's step metrics make, and validation that diverges."""

import dataclasses
import math

import numpy as np
import pytest

from rnn_jax import epochs, scoring
from rnn_jax import experiments as experiments_lib

CFG = dataclasses.replace(experiments_lib.EXPERIMENTS["tiny"], epochs=10, eval_every=3)


def metrics(loss, grad_norm=None, finite=None):
    loss = np.asarray(loss, dtype=np.float32)
    return {
        "loss": loss,
        "grad_norm": np.ones_like(loss) if grad_norm is None else np.asarray(grad_norm, dtype=np.float32),
        "finite": np.isfinite(loss) if finite is None else np.asarray(finite),
    }


def test_periodic_work_is_due_on_multiples_and_always_on_the_last_epoch():
    assert [e for e in range(1, 11) if epochs.due(CFG, e, 3)] == [3, 6, 9, 10]
    assert [e for e in range(1, 11) if epochs.due(CFG, e, 0)] == [10]  # 0: never, but for the last epoch


def test_skips_are_counted_in_a_row_across_epochs_and_stop_past_the_limit():
    skip = dataclasses.replace(CFG, on_nonfinite="skip", max_skips=2)
    assert epochs.count_skips(np.array([True, True]), 5, skip) == (0, None)  # a finite epoch resets the count
    assert epochs.count_skips(np.array([True, False, False]), 0, skip) == (2, None)
    assert epochs.count_skips(np.array([False, True, False]), 2, skip) == (3, 0)  # carried in from the last epoch
    assert epochs.count_skips(np.array([False, True, False, False, False]), 0, skip) == (3, 4)
    stop = dataclasses.replace(CFG, on_nonfinite="stop")
    assert epochs.count_skips(np.array([True, True, False, False]), 0, stop)[1] == 2  # the first bad step


def test_a_row_holds_the_means_of_the_finite_steps_and_counts_the_updates():
    rule = epochs.EpochRule(dataclasses.replace(CFG, on_nonfinite="skip", max_skips=3), step=10)
    row = rule.row(4, metrics([1.0, np.nan, 3.0], grad_norm=[0.5, np.nan, 1.5]), 123.0, 2.0)
    assert row == {
        "epoch": 4,
        "step": 13,
        "loss": 2.0,
        "perplexity": math.exp(2.0),
        "grad_norm": 1.0,
        "tokens_per_sec": 123.0,
        "seconds": 2.0,
        "skipped": 1,
    }
    assert rule.step == 13 and rule.skips_in_a_row == 0  # the last step was finite
    assert "skipped" not in rule.row(5, metrics([1.0, 1.0]), 1.0, 1.0)


def test_a_stopped_run_says_where_and_records_the_bad_step():
    rule = epochs.EpochRule(dataclasses.replace(CFG, on_nonfinite="stop"), step=6)
    with pytest.raises(epochs.Diverged, match=r"epoch 2, step 8: loss nan, .*no checkpoint was written") as e:
        rule.row(2, metrics([1.0, np.nan, 1.0]), 1.0, 1.0)
    assert e.value.row == {
        "epoch": 2,
        "step": 8,
        "nonfinite": True,
        "loss": e.value.row["loss"],
        "grad_norm": 1.0,
        "skipped": 1,
    }
    assert math.isnan(e.value.row["loss"]) and epochs.HINT in str(e.value)


def test_a_finite_loss_whose_exponential_overflows_diverges():
    with pytest.raises(epochs.Diverged, match="epoch 1, step 2"):
        epochs.EpochRule(CFG).row(1, metrics([1000.0, 1000.0]), 1.0, 1.0)


def test_validation_joins_the_row_on_its_epochs_only_and_a_nonfinite_one_diverges():
    rule, row = epochs.EpochRule(CFG), {"epoch": 3}
    val = {"loss": 1.5, "perplexity": math.exp(1.5), "bits_per_char": 1.5 / math.log(2)}
    rule.validate(3, row, lambda: val)
    assert row == {
        "epoch": 3,
        "val_loss": 1.5,
        "val_perplexity": val["perplexity"],
        "val_bits_per_char": val["bits_per_char"],
    }
    rule.validate(4, row := {"epoch": 4}, lambda: pytest.fail("validated on an epoch it is not due"))
    assert row == {"epoch": 4}

    def nonfinite():
        raise scoring.NonFinite("the loss is nan")

    with pytest.raises(epochs.Diverged, match="diverged at epoch 6: on the validation text the loss is nan"):
        rule.validate(6, {"epoch": 6}, nonfinite)
