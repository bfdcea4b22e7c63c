"""Mean and sample standard deviation over seeds: the figure every record and table reports."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """{"mean", "std"} of the values: the mean and the sample standard deviation (ddof=1; 0.0 for one value)."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}
