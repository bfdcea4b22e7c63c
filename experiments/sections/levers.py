"""The levers on tiny Shakespeare's validation part under both protocols (experiments/shakespeare_levers.py)."""

from __future__ import annotations

from experiments.common import load

# the probe budget, the regularised residual LSTM's longer one, and the candidate's full one
LEVER_RECORDS = ("shakespeare_levers", "shakespeare_levers_12", "shakespeare_levers_32")
REFERENCE = "lstm-1x512"  # the recipe trained as the recurrences were: the race's clock


def levers_section(name: str = "shakespeare_levers") -> list[str]:
    """The levers on tiny Shakespeare's validation part under both protocols, with the loss by window position."""
    rec = load(name)
    if rec is None:
        return []
    w = rec["windows"]
    out = [
        f"### Levers against nanoGPT's protocol (`python experiments/shakespeare_levers.py`, {rec['epochs']} epochs)",
        "",
        "Each lever is the LSTM recipe (`--exp shakespeare`) with one change (for the recurrences, minGRU, minLSTM, "
        "LRU, RG-LRU and the LSTM itself: that cell in 3 residual blocks at the recipe's parameter count, "
        "`experiments/shakespeare_families.py`), trained once on the training part and "
        f"scored on the validation part (never the test part): as one stream, and under *windows* ({w['windows']:,} "
        f"windows of {w['length']} characters, each from a zero state; ± its standard error over the windows), "
        "with the windows' loss by position in the window. Training FLOPs: the cell's declared FLOPs per token "
        "times the tokens trained, against nanoGPT's baby GPT's ~5.2e15. Wall seconds are those of one run on one "
        "core (`taskset`), as the sweep ran, beside other work, where no cores are recorded; otherwise on the cores "
        "given, one run at a time.",
        *recipe_reference(),
        "",
        "| lever | validation, stream | validation, windows | position 0 | 1-9 | 10-49 | 50-99 | 100-255 | "
        "training FLOPs (of nanoGPT's) | wall s | cores | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in sorted(rec["levers"].items(), key=lambda kv: kv[1]["val_loss_windows"]["mean"]):
        v, bp = r["val_loss_windows"], r["val_loss_windows"]["by_position"]
        bands = " | ".join(f"{bp.get(k, float('nan')):.3f}" for k in ("0", "1-9", "10-49", "50-99", "100-255"))
        out.append(
            f"| {n} | {r['val_loss']:.4f} | {v['mean']:.4f} ± {v['se']:.4f} | {bands} | {r['train_flop']:.2e} "
            f"({r['flop_vs_nanogpt']:.3f}) | {r['wall_seconds']:.0f} | {r.get('cpu_cores') or '—'} | "
            f"{r['tokens_per_sec']:,.0f} |"
        )
    return out + ["", *equal_wall(rec)]


def at_seconds(curve: list, seconds: float) -> list | None:
    """The last validated point of a wall curve ([seconds, FLOPs, stream, windows] per epoch) at or before
    `seconds` of training, None when its first epoch ended later."""
    done = [point for point in curve if point[0] <= seconds * (1 + 1e-9)]
    return done[-1] if done else None


def equal_wall(rec: dict) -> list[str]:
    """Each lever against the recipe at the recipe's own training seconds (the race at equal wall time): its
    validation loss at the last epoch it had finished by then, beside the recipe's. Only levers that recorded the
    cores they ran on, on as many cores as the recipe's run, are compared."""
    ref = rec["levers"].get(REFERENCE)
    if not ref or not ref.get("cpu_cores"):
        return []
    budget, ref_point = ref["wall_curve"][-1][0], ref["wall_curve"][-1]
    out = [
        f"At equal wall time: each lever's validation loss after the {budget:.0f} training seconds the recipe "
        f"({REFERENCE}, {ref['cpu_cores']} cores) took for {rec['epochs']} epochs, at the last epoch it had "
        "finished by then (windows: 1,280 per epoch).",
        "",
        "| lever | epochs by then | validation, stream | validation, windows | against the recipe (stream) |",
        "|---|---|---|---|---|",
    ]
    for n, r in rec["levers"].items():
        if r.get("cpu_cores") != ref["cpu_cores"]:
            continue
        point = at_seconds(r["wall_curve"], budget)
        if point is None:
            out.append(f"| {n} | 0 | — | — | — |")
            continue
        epochs = r["wall_curve"].index(point) + 1
        windows = "—" if point[3] is None else f"{point[3]:.4f}"
        out.append(f"| {n} | {epochs} | {point[2]:.4f} | {windows} | {point[2] - ref_point[2]:+.4f} |")
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
