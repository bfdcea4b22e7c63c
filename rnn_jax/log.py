"""What a run reports: the environment that produced it, progress lines, and the perplexity curve."""

from __future__ import annotations

import json
import math
import os
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
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, text=True, capture_output=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__,
        "optax": optax.__version__,
        "flax": flax.__version__,
        "orbax": orbax.checkpoint.__version__,
        "numpy": numpy.__version__,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "git_commit": commit,
        "host": platform.node(),
        **cpu_info(),
    }


def cpu_info() -> dict:
    """The host's CPU model, its logical CPUs and its largest cache, so figures from several hosts can be told
    apart (Linux; missing fields are None elsewhere)."""
    info: dict[str, object] = {"cpu_model": platform.processor() or None, "cpu_count": os.cpu_count(), "cache": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next(
            (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), info["cpu_model"]
        )
        cache: dict[str, str] = {}
        for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):  # L1d, L1i, L2, L3
            cache[f"L{(index / 'level').read_text().strip()}"] = (index / "size").read_text().strip()
        info["cache"] = cache or None
    except OSError:
        pass
    return info


def fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """A tqdm bar on a terminal; on a pipe or CI, a plain line every `every` epochs."""

    def __init__(self, total: int, start: int = 0):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=start, unit="epoch", dynamic_ncols=True, disable=None, file=sys.stdout)
        self.total, self.t0, self.start = total, time.perf_counter(), start

    def update(self, ppl: float, tokens_per_sec: float) -> None:
        self.bar.set_postfix_str(f"ppl {ppl:.3f}  {tokens_per_sec:,.0f} tok/s", refresh=False)
        self.bar.update(1)

    def line(self, epoch: int, ppl: float, tokens_per_sec: float, middle: str = "", extra: str = "") -> None:
        elapsed = time.perf_counter() - self.t0
        left = elapsed / max(epoch - self.start, 1) * (self.total - epoch)
        self.write(
            f"epoch {epoch:>{len(str(self.total))}}/{self.total}  ppl {ppl:8.3f}{middle}  "
            f"{tokens_per_sec:9,.0f} tok/s  elapsed {fmt_time(elapsed)}  left {fmt_time(left)}"
            + (f"  | {extra}" if extra else "")
        )

    def write(self, text: str) -> None:
        self.bar.write(text, file=sys.stdout)

    def close(self) -> None:
        self.bar.close()


def plot_curve(rows: list[dict], path: Path, title: str = "") -> None:
    """perplexity.png: training (and validation, when present) perplexity per epoch, log scale."""
    from matplotlib.figure import Figure  # not pyplot: no backend to choose, none changed for a notebook

    fig = Figure(figsize=(6, 3.6), dpi=120)
    ax = fig.subplots()
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


TENSORBOARD_INSTALL = "pip install -e '.[tensorboard]'"
# metrics.jsonl's keys -> TensorBoard tags: a section per quantity, training and validation side by side
TAGS = {
    "loss": "loss/train",
    "val_loss": "loss/val",
    "perplexity": "perplexity/train",
    "val_perplexity": "perplexity/val",
    "val_bits_per_char": "bits_per_char/val",
    "grad_norm": "optim/grad_norm",
    "lr": "optim/lr",
    "step": "optim/updates",
    "skipped": "optim/skipped",
    "tokens_per_sec": "speed/tokens_per_sec",
    "seconds": "speed/seconds",
}


def _code(text: str) -> str:
    """Markdown that TensorBoard's text plugin shows verbatim."""
    return "\n".join("    " + line for line in text.splitlines())


class TensorBoard:
    """Event files in log_dir, one point per epoch (step = epoch): every number of a metrics row, the step size, the
    predictions and the config as text, written synchronously (a killed process keeps every epoch it finished).
    Each process starts its file with a session start at its first epoch: TensorBoard takes every start after a
    run's first as a restart and drops the points written before it at that step and later, so the epochs a
    resumed process trains again are not shown twice."""

    def __init__(self, log_dir: Path, config: dict, start: int):
        from tensorboardX import summary
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self.summary, self.Event = summary, Event
        log_dir.mkdir(parents=True, exist_ok=True)
        # TensorBoard reads a run's files in name order, and the name holds seconds and host: the nanoseconds
        # keep two processes' files in order (and the pid apart)
        self.events = EventsWriter(str(log_dir / "events"), f".{time.time_ns() % 10**9:09d}.{os.getpid()}")
        start_event = Event(wall_time=time.time(), step=start, session_log=SessionLog(status=SessionLog.START))
        self.events.write_event(start_event)
        self._add(self.summary.text("config", _code(json.dumps(config, indent=2))), start)
        self.events.flush()

    def _add(self, summary, step: int) -> None:
        self.events.write_event(self.Event(wall_time=time.time(), step=step, summary=summary))

    def write(self, row: dict, lr: float | None = None, predictions: dict | None = None) -> None:
        """One epoch's row (and its step size and predictions), on disk when this returns."""
        epoch = row["epoch"]
        for key, value in {**row, "lr": lr}.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._add(self.summary.scalar(TAGS.get(key, key), value), epoch)
        if predictions:
            self._add(self.summary.text("predictions", _code("\n".join(predictions.values()))), epoch)
        self.events.flush()

    def close(self) -> None:
        self.events.close()
