"""`layrot sweep SPEC --store DIR`: run a sweep spec as Ray Tune trials into a Parquet store.

Imports nothing heavy at module level: Ray and pyarrow load only when the command runs.
"""
from __future__ import annotations

import argparse
import difflib
from pathlib import Path

from layrot.signals import exit_status

SPEC_FOLDER = Path(__file__).parent   # where the shipped specs live (``sweeps.spec.load_spec``)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="sweep spec file (YAML), or the name of a shipped spec such as 'quick'")
    parser.add_argument("--store", required=True,
                        help="results store: a local directory or a pyarrow filesystem URI (s3://..., gs://...)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to submit to (default: $RAY_ADDRESS, else an embedded local Ray)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the sweep if it already ran in this store (else start it); works from "
                             "the store alone when its _tune folder is gone")
    parser.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                        help="run at most N trials at once (default: as many as resources allow; a resumed sweep keeps its first value)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="a seconds-long version: 2 values per grid axis, 2 epochs, 5%% of the data, "
                             "sweep name suffixed '-smoke'")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's and Tune's own output (default: into STORE/_tune/SWEEP.log)")
    parser.add_argument("--force-unlock", action="store_true",
                        help="object stores: take over the lease of a driver that died without waiting for it "
                             "to expire (local stores need no such thing: their lock ends with its process)")


def shipped_specs() -> list[str]:
    return sorted(p.stem for p in SPEC_FOLDER.glob("*.yaml"))


def _load(name: str):
    from sweeps.spec import load_spec

    try:
        return load_spec(name)
    except FileNotFoundError:
        path = Path(name)
        if path.parent != Path(".") or path.suffix:
            raise
        near = difflib.get_close_matches(name, shipped_specs(), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise FileNotFoundError(f"no spec file {name!r} and no shipped spec of that name; {hint}"
                                f"shipped: {', '.join(shipped_specs())}") from None


def run(args: argparse.Namespace) -> int:
    from sweeps.launch import run_sweep

    spec = _load(args.spec)
    if args.smoke_test:
        spec = spec.smoke()
    outcome = run_sweep(spec, args.store, address=args.address, resume=args.resume,
                        max_concurrent=args.max_concurrent, verbose=args.verbose, force_unlock=args.force_unlock)
    if outcome.interrupted is not None:
        smoke = " --smoke-test" if args.smoke_test else ""
        print(f"interrupted: {outcome.done} of {outcome.trials} trials done; continue with: "
              f"layrot sweep {args.spec} --store {args.store}{smoke} --resume", flush=True)
        return exit_status(outcome.interrupted)
    pruned = f"{outcome.pruned} pruned, " if outcome.pruned else ""
    print(f"[{outcome.name}] finished: {outcome.completed} completed, {pruned}{outcome.diverged} diverged, "
          f"{outcome.errored} errored of {outcome.trials} trials; store: {args.store}")
    return 1 if outcome.errored else 0
