"""What several seeds cost: wall time of each way to run them (experiments/seed_cost.py)."""

from __future__ import annotations

from experiments.common import load


def seed_cost_section() -> list[str]:
    """Wall time of several seeds run each way, against one after another."""
    rec = load("seed_cost")
    if rec is None:
        return []
    out = [
        "## What several seeds cost",
        "",
        f"{rec['seeds']} seeds of `seq` for {rec['epochs']} epochs on the {rec['backend']} "
        "(`python experiments/seed_cost.py`), wall time from first start to last exit:",
        "",
        "| how | wall s | vs one after another |",
        "|---|---|---|",
    ]
    out += [f"| {r['mode']} | {r['wall_seconds']:.1f} | {r['speedup']:.2f}x |" for r in rec["rows"]]
    best = max(rec["rows"], key=lambda r: r["speedup"])
    return out + [
        "",
        f"The fastest here: {best['mode']} ({best['speedup']:.2f}x). `--mode auto` (the default of "
        "every experiment script) takes pinned processes on a CPU and one vmapped program on an "
        "accelerator.",
        "",
    ]
