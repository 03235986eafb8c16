"""`layrot replay`: what each pruning policy would have saved and cost on a store's curves.

Imports nothing heavy at module level (pandas and pyarrow load inside ``run``).
"""
from __future__ import annotations

import argparse
import sys

from sweeps.pruning import DEFAULT_ETA, DEFAULT_GRACE, POLICIES, parse_pruning

FORMATS = ("table", "csv")
# what the printed table rounds to; --decisions holds exact epochs to recompute it from
ROUND = {"saved_frac": 4, "chosen_test_acc": 4, "best_test_acc": 4, "regret_pts": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, metavar="DIR", help="results store: a directory or a pyarrow filesystem URI")
    parser.add_argument("--sweep", metavar="NAME", help="replay only this sweep (default: every trial of the store, one pool)")
    parser.add_argument("--policy", default=",".join(POLICIES), metavar=",".join(POLICIES),
                        help=f"comma-separated policies to replay (default: {','.join(POLICIES)})")
    parser.add_argument("--grace", type=int, default=DEFAULT_GRACE, metavar="N",
                        help=f"epochs before any stop, the first rung (default: {DEFAULT_GRACE})")
    parser.add_argument("--eta", type=float, default=DEFAULT_ETA, metavar="K",
                        help=f"rungs at grace * eta^k, each keeps the best 1/eta (default: {DEFAULT_ETA:g})")
    parser.add_argument("--format", default="table", metavar="|".join(FORMATS), help=f"{' or '.join(FORMATS)} (default: table)")
    parser.add_argument("--decisions", metavar="FILE",
                        help="also write CSV rows policy, trial_id, stopped_at_epoch (the last epoch each trial ran)")


def run(args: argparse.Namespace) -> int:
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise ValueError(f"--policy {args.policy!r}: allowed policies are {', '.join(POLICIES)}")
    if args.format not in FORMATS:
        raise ValueError(f"--format {args.format!r}: allowed formats are {', '.join(FORMATS)}")
    eta = int(args.eta) if float(args.eta).is_integer() else args.eta
    parse_pruning({"type": "asha", "grace": args.grace, "eta": eta})   # one-line errors for bad values

    from analysis.load import load
    from analysis.replay import notes, pool_of, replay

    pool = pool_of(load(args.store, sweep=args.sweep))
    for note in notes(pool):
        print(f"layrot replay: note: {note}", file=sys.stderr)
    table, decisions = replay(pool, policies, args.grace, eta)
    table = table.round(ROUND)
    if args.format == "csv":
        table.to_csv(sys.stdout, index=False)
    else:
        print(table.to_string(index=False))
    if args.decisions:
        decisions.to_csv(args.decisions, index=False)
    return 0
