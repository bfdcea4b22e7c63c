"""Figures of several hosts side by side: `python -m rnn_jax.bench.compare A.json B.json ...` reads the reports
that `make bench` (or `--json-out`) wrote and prints, per throughput row, each host's ratio to the book's PyTorch,
to torch's fused layer and to the fp32 limit measured in that run, then its tokens/s."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rnn_jax.bench.report import host_line, print_table
from rnn_jax.exitcodes import Exit

FIGURES = (
    ("vs torch", "ratio_to_torch_scratch", ".2f"),
    ("vs fused", "ratio_to_torch_fused", ".2f"),
    ("of limit", "fraction_of_fp32_limit", ".2f"),
    ("tokens/s", "tokens_per_s.median", ",.0f"),
)


def load(path: Path) -> dict:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable benchmark report ({e})") from None
    if "throughput" not in report:
        raise ValueError(f"{path}: no throughput section (run the benchmark with --sections throughput)")
    return report


def side_by_side(reports: dict[str, dict]) -> list[dict]:
    """One row per (variant, figure): the figure of each report, keyed by the report's label; '-' where absent."""
    names = list(dict.fromkeys(r["name"] for rep in reports.values() for r in rep["throughput"]["rows"]))
    rows = []
    for name in names:
        for header, key, spec in FIGURES:
            row = {"variant": name, "figure": header}
            for label, rep in reports.items():
                got = next((r for r in rep["throughput"]["rows"] if r["name"] == name), None)
                for part in key.split("."):
                    got = got.get(part) if isinstance(got, dict) else None
                row[label] = "-" if got is None else format(got, spec)
            rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnn_jax.bench.compare", description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", type=Path, help="JSON reports of the benchmark")
    args = p.parse_args(argv)
    try:
        reports = {f"[{i}]": load(path) for i, path in enumerate(args.reports, 1)}
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return Exit.USAGE
    for (label, rep), path in zip(reports.items(), args.reports, strict=True):
        print(f"{label} {path}: {host_line(rep)}")
    print_table(
        "throughput by host",
        side_by_side(reports),
        [("variant", "variant", ""), ("figure", "figure", ""), *[(k, k, "") for k in reports]],
    )
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
