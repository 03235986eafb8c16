"""`layrot sweep SPEC --store DIR`: run a sweep spec as Ray Tune trials into a Parquet store.

Imports nothing heavy at module level: Ray and pyarrow load only when the command runs.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="sweep spec file (YAML), or the name of a shipped spec such as 'quick'")
    parser.add_argument("--store", required=True,
                        help="results store: a local directory or a pyarrow filesystem URI (s3://..., gs://...)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to submit to (default: $RAY_ADDRESS, else an embedded local Ray)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the sweep if it already ran in this store (else start it)")
    parser.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                        help="run at most N trials at once (default: as many as resources allow; a resumed sweep keeps its first value)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="a seconds-long version: 2 values per grid axis, 2 epochs, 5%% of the data, "
                             "sweep name suffixed '-smoke'")


def run(args: argparse.Namespace) -> int:
    from sweeps.launch import run_sweep
    from sweeps.spec import load_spec

    spec = load_spec(args.spec)
    if args.smoke_test:
        spec = spec.smoke()
    outcome = run_sweep(spec, args.store, address=args.address, resume=args.resume,
                        max_concurrent=args.max_concurrent)
    print(f"[{outcome.name}] finished: {outcome.completed} completed, {outcome.diverged} diverged, "
          f"{outcome.errored} errored of {outcome.trials} trials; store: {args.store}")
    return 1 if outcome.errored else 0
