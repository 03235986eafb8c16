"""The `layrot` command: a thin dispatcher.

Each subcommand lives in the package that owns the work (``<package>/cli.py`` exposing
``add_arguments(parser)`` and ``run(args) -> int``). Those modules import nothing heavy at
import time, so ``layrot --help`` stays fast; torch, Ray, pyarrow and plotly load only inside
the subcommand that needs them.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from layrot import __version__
from layrot import signals

# subcommand -> (module providing add_arguments/run, one-line help)
SUBCOMMANDS = {
    "tasks": ("trainables.cli_tasks", "list the registered training tasks"),
    "train": ("trainables.cli", "run one training without Ray"),
    "sweep": ("sweeps.cli", "run a sweep spec as Ray Tune trials into a Parquet store"),
    "report": ("analysis.cli", "write the interactive HTML report of a store"),
    "summary": ("analysis.summary_cli", "print one row per configuration of a store (seeds aggregated)"),
    "upgrade-store": ("sweeps.cli_upgrade", "rewrite a store of an older schema version in place"),
    "replay": ("analysis.cli_replay", "replay pruning policies (ASHA, median, rotation-aware) on a store's curves"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layrot",
        description="Monitor and control layer rotation (Layca) and relate it to generalization.",
    )
    parser.add_argument("--version", action="version", version=f"layrot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    previous = signals.install()   # SIGTERM ends a command as Ctrl-C does, not with a stack dump
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Boundary errors are one line naming the bad value and what is allowed.
        if os.environ.get("LAYROT_DEBUG"):
            raise
        print(f"layrot {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"layrot {args.command}: interrupted", file=sys.stderr)
        return signals.exit_status(getattr(exc, "signum", signal.SIGINT))
    finally:
        signals.restore(previous)


if __name__ == "__main__":
    raise SystemExit(main())
