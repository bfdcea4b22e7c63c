"""The levers on tiny Shakespeare's validation part under both protocols (experiments/shakespeare_levers.py)."""

from __future__ import annotations

from experiments.common import load

LEVER_RECORDS = ("shakespeare_levers", "shakespeare_levers_32")  # the probe budget, and the candidate's full one


def levers_section(name: str = "shakespeare_levers") -> list[str]:
    """The levers on tiny Shakespeare's validation part under both protocols, with the loss by window position."""
    rec = load(name)
    if rec is None:
        return []
    w = rec["windows"]
    out = [
        f"### Levers against nanoGPT's protocol (`python experiments/shakespeare_levers.py`, {rec['epochs']} epochs)",
        "",
        "Each lever is the LSTM recipe (`--exp shakespeare`) with one change, trained once on the training part and "
        f"scored on the validation part (never the test part): as one stream, and under *windows* ({w['windows']:,} "
        f"windows of {w['length']} characters, each from a zero state; ± its standard error over the windows), "
        "with the windows' loss by position in the window. Training FLOPs: the cell's declared FLOPs per token "
        "times the tokens trained, against nanoGPT's baby GPT's ~5.2e15. Wall seconds are those of one run on one "
        "core (`taskset`), as the sweep ran, beside other work.",
        *recipe_reference(),
        "",
        "| lever | validation, stream | validation, windows | position 0 | 1-9 | 10-49 | 50-99 | 100-255 | "
        "training FLOPs (of nanoGPT's) | wall s | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in sorted(rec["levers"].items(), key=lambda kv: kv[1]["val_loss_windows"]["mean"]):
        v, bp = r["val_loss_windows"], r["val_loss_windows"]["by_position"]
        bands = " | ".join(f"{bp.get(k, float('nan')):.3f}" for k in ("0", "1-9", "10-49", "50-99", "100-255"))
        out.append(
            f"| {n} | {r['val_loss']:.4f} | {v['mean']:.4f} ± {v['se']:.4f} | {bands} | {r['train_flop']:.2e} "
            f"({r['flop_vs_nanogpt']:.3f}) | {r['wall_seconds']:.0f} | {r['tokens_per_sec']:,.0f} |"
        )
    return out + [""]


def recipe_reference() -> list[str]:
    """The recipe's own selection run (Shakespeare record), to read the levers against."""
    m = (load("shakespeare") or {}).get("models", {}).get("lstm-1x512")
    if not m:
        return []
    return [
        "",
        f"The recipe itself (`lstm-1x512`, {m['config']['epochs']} epochs, its selection run): validation "
        f"{m['val_loss']['mean']:.4f} as one stream.",
    ]
