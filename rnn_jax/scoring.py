"""What a score is: the figures of a mean loss, and the two scoring protocols of a held-out part.

`stream` scores the part as one stream, the state carried from its first character to its last (each character
sees all the text before it). `windows` is nanoGPT's estimate_loss: random windows of the part, each scored from a
zero state with nothing before it, the loss averaged over every target position of every window; the windows are
a pure function of (part length, count, length, seed). The models' scoring lives in `evaluate` (recurrent) and
`baselines` (counting); the draw and the summary of windows live here, so both score the same windows.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from rnn_jax.config import ConfigError
from rnn_jax.exitcodes import Exit


class NonFinite(ArithmeticError):
    """An evaluation whose loss is NaN or infinite, or whose perplexity overflows; the message says why."""

    exit_status = Exit.DIVERGED


def figures(loss: float, tokens: int, what: str = "the model") -> dict:
    """Loss, perplexity and bits/char of a mean loss; NonFinite when there is no finite perplexity to report."""
    if not math.isfinite(loss) or loss > math.log(sys.float_info.max):
        raise NonFinite(f"{what} gives a loss of {loss} nats per character: no finite perplexity")
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_char": loss / math.log(2), "tokens": tokens}


PROTOCOLS = ("stream", "windows")  # one stream with the state carried; nanoGPT's estimate_loss over random windows
WINDOWS, WINDOW_LENGTH, WINDOW_BATCH, WINDOW_SEED = 200 * 64, 256, 64, 0  # nanoGPT: eval_iters x batch, block_size
POSITION_BANDS = ((0, 1), (1, 10), (10, 50), (50, 100), (100, None))  # the window positions summarised apart


def window_starts(num_tokens: int, windows: int, length: int, seed: int = WINDOW_SEED) -> np.ndarray:
    """Starts of `windows` windows of length + 1 tokens (length inputs, length targets) drawn uniformly with
    replacement from a part of num_tokens, as nanoGPT's get_batch draws them: i in [0, num_tokens - length - 1]."""
    if windows < 1 or length < 1:
        raise ConfigError(f"windows and window length must be at least 1, got {windows} and {length}")
    if num_tokens < length + 1:
        raise ConfigError(
            f"a window of {length} characters needs {length + 1} tokens, and the part has {num_tokens}; "
            "use a shorter --window-length"
        )
    return np.random.default_rng(seed).integers(0, num_tokens - length, size=windows)


def window_figures(nll_NL: np.ndarray, seed: int = WINDOW_SEED) -> dict:
    """The windows protocol's figures of per-target losses (windows, length): `figures` of the mean over every
    target position, its standard error over the windows (drawn independently, so std / sqrt(windows)), and the
    mean loss by band of window positions."""
    per_window = nll_NL.mean(1)
    windows, length = nll_NL.shape
    by_position = nll_NL.mean(0)
    bands = {}
    for a, b in POSITION_BANDS:
        b = min(b or length, length)
        if a < b:
            bands[str(a) if b - a == 1 else f"{a}-{b - 1}"] = float(by_position[a:b].mean())
    return {
        **figures(float(per_window.mean()), int(nll_NL.size), "the model on random windows"),
        "protocol": "windows",
        "se": float(per_window.std(ddof=1) / math.sqrt(windows)) if windows > 1 else None,
        "windows": windows,
        "window_length": length,
        "window_seed": seed,
        "by_position": bands,
    }
