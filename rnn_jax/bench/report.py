"""The printed report: one table per section, then the load of the whole run."""

from __future__ import annotations

TOKENS = [(h, f"tokens_per_s.{h}", ",.0f") for h in ("median", "min", "max")]


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (header, key or 'key.subkey', format spec); a missing or None value prints as '-'."""

    def cell(row, path, spec):
        for key in path.split("."):
            row = row.get(key) if isinstance(row, dict) else None
        return "-" if row is None else format(row, spec)

    table = [[h for h, _, _ in columns]] + [[cell(r, k, s) for _, k, s in columns] for r in rows]
    widths = [max(len(c) for c in col) for col in zip(*table, strict=True)]
    print(f"\n{title}")
    for line in table:
        print(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        )


def print_throughput(report: dict) -> None:
    lim = report["throughput"]["limit"]
    print_table(
        f"throughput, tokens/s over {report['args']['reps']} alternating reps (fp32 limit "
        f"{lim['gflop_per_s']['median']:.0f} GFLOP/s = {lim['tokens_per_s']:,.0f} tokens/s)",
        report["throughput"]["rows"],
        [
            ("variant", "name", ""),
            *TOKENS,
            ("vs torch", "ratio_to_torch_scratch", ".2f"),
            ("vs fused", "ratio_to_torch_fused", ".2f"),
            ("of limit", "fraction_of_fp32_limit", ".2f"),
            ("compile s", "compile_s", ".2f"),
            ("xla MB", "xla_mb", ".1f"),
            ("rss MB", "peak_rss_mb", ",.0f"),
            ("other cores", "other_cores", ".2f"),
        ],
    )
    for cell, lim in report["throughput"].get("limits", {}).items():
        print(
            f"fp32 limit of {cell}: {lim['gflop_per_s']['median']:.0f} GFLOP/s over {lim['flop_per_token']:,} "
            f"FLOP/token = {lim['tokens_per_s']:,.0f} tokens/s"
        )
    print(
        "vs torch: / the book's PyTorch scratch cell; vs fused: / torch's nn.RNN, nn.GRU or nn.LSTM; "
        "of limit: / the cell's fp32 limit"
    )
    print(
        "xla MB: arguments + outputs + temporaries - aliased, of one jitted call (a step or an epoch); "
        "rss MB: peak RSS of the peer's process, or of this process so far;\nother cores: CPU other "
        "processes used during the measurement (median over reps); figures with > 0.1 are disturbed"
    )


def print_compile(report: dict) -> None:
    print_table(
        "compile seconds of the train epoch",
        report["compile"],
        [
            ("variant", "name", ""),
            ("cell", "cell", ""),
            ("layers", "num_layers", "d"),
            ("T", "num_steps", "d"),
            ("compile s", "compile_s", ".2f"),
        ],
    )


def print_generation(report: dict) -> None:
    g = report["generation"]
    print_table(
        f"generation of {g['num_chars']} characters after 'time traveller', chars/s",
        g["rows"],
        [
            ("method", "name", ""),
            *[(h, f"chars_per_s.{h}", ",.0f") for h in ("median", "min", "max")],
            ("first call s", "first_call_s", ".2f"),
        ],
    )
    print(f"one scan / the book's loop: {g['scan_over_loop']:.1f}x (same greedy text: {g['same_text']})")


def print_scaling(report: dict) -> None:
    print_table(
        "scaling of fused-epoch (seq)",
        report["scaling"],
        [
            ("cell", "cell", ""),
            ("H", "hidden", "d"),
            ("T", "num_steps", "d"),
            ("tokens/s", "tokens_per_s", ",.0f"),
            ("GFLOP/s", "gflop_per_s", ".1f"),
            ("compile s", "compile_s", ".2f"),
            ("xla MB", "xla_mb", ".1f"),
            *[(f"{k[:4]} MB", f"xla_{k}_mb", ".1f") for k in ("argument", "output", "temp")],
            ("rss MB", "peak_rss_mb", ",.0f"),
            ("other cores", "other_cores", ".2f"),
        ],
    )


def print_devices(report: dict) -> None:
    print_table(
        f"data parallel over devices ({report['devices']['note']})",
        report["devices"]["rows"],
        [
            ("devices", "devices", "d"),
            ("batch", "batch_size", "d"),
            ("tokens/s", "tokens_per_s", ",.0f"),
            ("speedup", "speedup", ".2f"),
        ],
    )


def print_contention(report: dict) -> None:
    print_table(
        f"contention ({report['contention']['note']})",
        report["contention"]["rows"],
        [
            ("config", "name", ""),
            ("busy core", "busy_core", "d"),
            *TOKENS,
            ("vs quiet", "vs_quiet", ".2f"),
            ("other cores", "other_cores", ".2f"),
        ],
    )


def print_e2e(report: dict) -> None:
    print_table(
        "end to end, process start to exit",
        report["e2e"],
        [
            ("program", "name", ""),
            ("wall s", "wall_s", ".1f"),
            ("perplexity", "perplexity", ".3f"),
            ("rss MB", "peak_rss_mb", ",.0f"),
        ],
    )


def print_recipe(report: dict) -> None:
    r = report["recipe"]
    print_table(
        "recipe: --exp shakespeare's training epoch (LSTM 512, batch 64 x 100), tokens/s over "
        f"{report['args']['reps']} alternating reps (fp32 limit {r['limit']['gflop_per_s']['median']:.0f} GFLOP/s = "
        f"{r['limit']['tokens_per_s']:,.0f} tokens/s)",
        r["rows"],
        [
            ("products", "name", ""),
            *TOKENS,
            ("torch nn.LSTM", "torch_tokens_per_s.median", ",.0f"),
            ("vs torch", "ratio_to_torch", ".2f"),
            ("of limit", "fraction_of_fp32_limit", ".2f"),
            ("of own dtype's limit", "fraction_of_own_limit", ".2f"),
        ],
    )
    bf16 = r.get("limit_bfloat16")
    if bf16:
        print(f"bf16 limit: {bf16['gflop_per_s']['median']:.0f} GFLOP/s = {bf16['tokens_per_s']:,.0f} tokens/s")
    print("torch nn.LSTM: the same shape and dtype (bf16 by autocast), shared/bench/recipe_torch_peer.py")


def print_recurrences(report: dict) -> None:
    r = report["recurrences"]
    print_table(
        "recurrences: the recipe's training epoch (batch 64 x 100, float32) of each linear recurrence in residual "
        f"blocks beside the LSTM at an equal parameter count, {report['args']['reps']} alternating reps "
        f"(dense float32 products: {r['limit']['gflop_per_s']['median']:.0f} GFLOP/s)",
        r["rows"],
        [
            ("model", "name", ""),
            ("params", "params", ",d"),
            *TOKENS,
            ("vs LSTM", "ratio_to_lstm", ".2f"),
            ("FLOP/token", "flop_per_token", ",d"),
            ("GFLOP/s", "gflop_per_s", ".1f"),
            ("of limit", "fraction_of_dense_limit", ".2f"),
        ],
    )


PRINTERS = {
    "throughput": print_throughput,
    "compile": print_compile,
    "generation": print_generation,
    "scaling": print_scaling,
    "devices": print_devices,
    "contention": print_contention,
    "recipe": print_recipe,
    "recurrences": print_recurrences,
    "e2e": print_e2e,
}


def host_line(report: dict) -> str:
    """Where the figures come from: the CPU model, its logical CPUs (those this run could use), its largest cache,
    the XLA flags and the fp32 limit measured in the same run (ratios travel between hosts, tokens/s do not)."""
    env = report.get("environment", {})
    cache = env.get("cache") or {}
    largest = cache[max(cache)] if cache else "?"
    lim = report.get("throughput", {}).get("limit")
    limit = f"; fp32 limit {lim['gflop_per_s']['median']:.0f} GFLOP/s" if lim else ""
    flags = f"; XLA_FLAGS={report['xla_flags']}" if report.get("xla_flags") else ""
    return (
        f"host: {env.get('cpu_model') or '?'}, {env.get('cpu_count') or '?'} logical CPUs "
        f"({len(report.get('cpus') or []) or '?'} usable), largest cache {largest}; jax {env.get('jax', '?')}"
        f"{flags}{limit}"
    )


def print_report(report: dict) -> None:
    """The host, the table of every section in the report, in the sections' order, and the run's load."""
    print(host_line(report))
    for name, printer in PRINTERS.items():
        if name in report:
            printer(report)
    print(
        f"\npeak RSS of this process: {report['peak_rss_mb']:,.0f} MB; other processes kept busy on average "
        + ", ".join(f"{v['other_cores'] or 0:.2f} cores during {k}" for k, v in report["load"].items())
    )
