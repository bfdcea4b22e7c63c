"""Figures of several hosts side by side: `python -m rnn_jax.bench.compare A.json B.json ...` reads the reports
that `make bench` (or `--json-out`) wrote and prints, per throughput row, each host's ratio to the book's PyTorch,
to torch's fused layer and to the fp32 limit measured in that run, then its tokens/s."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rnn_jax import corpora, exitcodes
from rnn_jax.bench.report import host_line, print_table
from rnn_jax.exitcodes import UsageError

FIGURES = (
    ("vs torch", "ratio_to_torch_scratch", ".2f"),
    ("vs fused", "ratio_to_torch_fused", ".2f"),
    ("of limit", "fraction_of_fp32_limit", ".2f"),
    ("tokens/s", "tokens_per_s.median", ",.0f"),
)


def load(path: Path) -> dict:
    """A benchmark report read back and checked: a regular file holding a JSON object of the expected shape."""
    corpora.check_regular(path, "benchmark report")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: not a readable benchmark report ({e})") from None
    if not isinstance(report, dict):
        raise UsageError(f"{path}: a JSON {type(report).__name__}, not a benchmark report (an object)")
    if "throughput" not in report:
        raise UsageError(f"{path}: no throughput section (run the benchmark with --sections throughput)")
    problem = shape_problem(report)
    if problem:
        raise UsageError(f"{path}: not a benchmark report as `make bench` writes it ({problem})")
    return report


def shape_problem(report: dict) -> str | None:
    """What in a report's parts that compare reads is not of its expected type, else None."""
    for key in ("environment", "throughput"):
        if key in report and not isinstance(report[key], dict):
            return f"{key} is not an object"
    env, tp = report.get("environment", {}), report["throughput"]
    if not isinstance(env.get("cache") or {}, dict):
        return "environment.cache is not an object"
    limit = tp.get("limit")
    if limit is not None and not _is_number(_get(limit, "gflop_per_s.median")):
        return "throughput.limit.gflop_per_s.median is not a number"
    rows = tp.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in rows):
        return "throughput.rows is not a list of objects with a name"
    for i, row in enumerate(rows):
        for _, key, _ in FIGURES:
            value = _get(row, key)
            if value is not None and not _is_number(value):
                return f"throughput.rows[{i}].{key} is {value!r}, not a number"
    return None


def _get(value, key: str):
    """value[a][b] for key 'a.b'; None where a part is missing."""
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m rnn_jax.bench.compare`."""
    p = argparse.ArgumentParser(
        prog="python -m rnn_jax.bench.compare",
        description="Figures of several hosts side by side, from the JSON reports the benchmark wrote.",
    )
    p.add_argument("reports", nargs="+", type=Path, help="JSON reports of the benchmark")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return exitcodes.run(lambda: _compare(args.reports))


def _compare(paths: list[Path]) -> None:
    """Each report's host line, then the throughput figures side by side."""
    reports = {f"[{i}]": load(path) for i, path in enumerate(paths, 1)}
    for (label, rep), path in zip(reports.items(), paths, strict=True):
        print(f"{label} {path}: {host_line(rep)}")
    print_table(
        "throughput by host",
        side_by_side(reports),
        [("variant", "variant", ""), ("figure", "figure", ""), *[(k, k, "") for k in reports]],
    )


if __name__ == "__main__":
    sys.exit(main())
