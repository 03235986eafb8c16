"""`layrot upgrade-store STORE`: bring a store written by an older layrot to this schema version."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="results store: a directory or a pyarrow filesystem URI")


def run(args: argparse.Namespace) -> int:
    from sweeps.schema import SCHEMA_VERSION
    from sweeps.upgrade import upgrade_store

    upgraded = upgrade_store(args.store, out=sys.stderr)
    print(f"upgraded {upgraded} trial(s) of {args.store} to schema version {SCHEMA_VERSION}")
    return 0
