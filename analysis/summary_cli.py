"""`layrot summary`: one row per configuration of a store (seeds aggregated), as CSV, JSON or
Markdown. The report's tables are this table.

Imports nothing heavy at module level (pandas and pyarrow load inside ``run``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys

FORMATS = ("csv", "json", "markdown")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="results store: a directory or a pyarrow filesystem URI")
    parser.add_argument("--sweep", help="only this sweep of the store")
    parser.add_argument("--format", default="csv", help=f"one of {', '.join(FORMATS)} (default: csv)")
    parser.add_argument("--min-train-acc", type=float, default=None,
                        help="threshold of the `fits` column (default: the one the sweeps pre-registered)")


def run(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:
        raise ValueError(f"--format {args.format!r} is not allowed: one of {', '.join(FORMATS)}")
    from analysis.configurations import configurations
    from analysis.load import load
    from analysis.preregistration import threshold

    results = load(args.store, sweep=args.sweep)
    rule = threshold(results.store, results.sweeps, args.min_train_acc)
    table = configurations(results.trials, rule.value)
    if banner := rule.banner():
        print(banner, file=sys.stderr)
    sys.stdout.write(render(table, args.format))
    return 0


def render(table, form: str) -> str:
    """The table as text: CSV (full precision), JSON records (NaN as null) or a Markdown table."""
    if form == "csv":
        return table.to_csv(index=False)
    records = [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")]
    if form == "json":
        return json.dumps(records, indent=1) + "\n"
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join("" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)
                                for v in record.values()) + " |" for record in records]
    return "\n".join(lines) + "\n"


def _plain(value):
    """A JSON-ready value: numpy scalars as Python ones, NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value
