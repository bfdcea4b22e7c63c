"""What a run reports: the environment that produced it, progress lines, and the perplexity curve."""

from __future__ import annotations

import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax


def environment() -> dict:
    """What produced a result: package versions, backend, devices, git commit."""
    import flax
    import numpy
    import optax
    import orbax.checkpoint

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, text=True,
                                capture_output=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(), "jax": jax.__version__, "jaxlib": jax.lib.__version__,
        "optax": optax.__version__, "flax": flax.__version__, "orbax": orbax.checkpoint.__version__,
        "numpy": numpy.__version__, "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(), "process_count": jax.process_count(), "git_commit": commit,
        "host": platform.node(),
    }


def fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """A tqdm bar on a terminal; on a pipe or CI, a plain line every `every` epochs."""

    def __init__(self, total: int, start: int = 0):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=start, unit="epoch", dynamic_ncols=True, disable=None,
                        file=sys.stdout)
        self.total, self.t0, self.start = total, time.perf_counter(), start

    def update(self, ppl: float, tokens_per_sec: float) -> None:
        self.bar.set_postfix_str(f"ppl {ppl:.3f}  {tokens_per_sec:,.0f} tok/s", refresh=False)
        self.bar.update(1)

    def line(self, epoch: int, ppl: float, tokens_per_sec: float, middle: str = "", extra: str = "") -> None:
        elapsed = time.perf_counter() - self.t0
        left = elapsed / max(epoch - self.start, 1) * (self.total - epoch)
        self.write(f"epoch {epoch:>{len(str(self.total))}}/{self.total}  ppl {ppl:8.3f}{middle}  "
                   f"{tokens_per_sec:9,.0f} tok/s  elapsed {fmt_time(elapsed)}  left {fmt_time(left)}"
                   + (f"  | {extra}" if extra else ""))

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stdout)

    def close(self) -> None:
        self.bar.close()


def plot_curve(rows: list[dict], path: Path, title: str = "") -> None:
    """perplexity.png: training (and validation, when present) perplexity per epoch, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for key, label in (("perplexity", "train"), ("val_perplexity", "validation")):
        pts = [(r["epoch"], r[key]) for r in rows if key in r and r[key] is not None and math.isfinite(r[key])]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=label)
    ax.set(xlabel="epoch", ylabel="perplexity", yscale="log", title=title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
