"""One mean and sample standard deviation for every record and table."""

import numpy as np

from rnn_jax import stats


def test_mean_and_sample_standard_deviation():
    assert stats.mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0}  # ddof=1: the sample's, not the population's
    assert stats.mean_std(np.array([4.0, 4.0])) == {"mean": 4.0, "std": 0.0}


def test_one_value_has_no_spread():
    assert stats.mean_std([2.5]) == {"mean": 2.5, "std": 0.0}
    assert all(type(v) is float for v in stats.mean_std(np.arange(3)).values())  # JSON-ready, not numpy scalars
