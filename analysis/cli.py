"""`layrot report`: write the interactive HTML report of a results store.

Imports nothing heavy at module level (pandas, pyarrow and plotly load inside ``run``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from layrot.run import MIN_TRAIN_ACC


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="results store: a directory or a pyarrow filesystem URI (s3://...)")
    parser.add_argument("--sweep", help="report only this sweep of the store")
    parser.add_argument("--task", action="append", help="only this task (repeatable)")
    parser.add_argument("--setting", action="append", help="only this setting, e.g. layca-sgd (repeatable)")
    parser.add_argument("-o", "--output", help="HTML file to write (default: report.html)")
    parser.add_argument("--min-train-acc", type=float, default=None,
                        help="configurations enter the correlations only if their seed-mean final training "
                             "accuracy reaches this (default: the threshold the sweeps pre-registered, else "
                             f"{MIN_TRAIN_ACC:g}); another value is announced at the top of the report")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for the correlation intervals (default: 1000)")
    parser.add_argument("--smoke-test", action="store_true",
                        help="report a small synthetic store in a temporary folder (seconds)")


def run(args: argparse.Namespace) -> int:
    from layrot.run import get_setting

    for name in args.setting or []:
        get_setting(name)            # an old spelling is refused with the canonical one
    if args.min_train_acc is not None and not 0 <= args.min_train_acc <= 1:
        raise ValueError(f"--min-train-acc {args.min_train_acc} must be in [0, 1]")
    if args.bootstrap < 1:
        raise ValueError(f"--bootstrap {args.bootstrap} must be >= 1")
    if args.output or not args.smoke_test:   # before loading: a bad path must not cost the work
        from layrot.paths import check_output_file
        check_output_file(args.output or "report.html", "-o/--output")
    if args.smoke_test:
        return _smoke_test(args)
    if not args.store:
        raise ValueError("--store DIR is required (or --smoke-test)")
    return _report(args.store, args.output or "report.html", args)


def _report(store: str, output: str, args: argparse.Namespace) -> int:
    from analysis.load import describe, load
    from analysis.report import write_report

    start = time.perf_counter()
    _progress(f"loading {store} ...")
    results = load(store, sweep=args.sweep, task=args.task, setting=args.setting)
    _progress(f"loaded {describe(results)} in {time.perf_counter() - start:.1f} s; drawing the report ...")
    size = write_report(results, output, min_train_acc=args.min_train_acc, n_boot=args.bootstrap)
    print(f"wrote {output} ({size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return 0


def _smoke_test(args: argparse.Namespace) -> int:
    from analysis.synthetic import write_synthetic_store

    with tempfile.TemporaryDirectory(prefix="layrot-report-smoke-") as folder:
        store = os.path.join(folder, "store")
        write_synthetic_store(store, "smoke", tasks=("C10-CNN1",), epochs=12, layers=8, running=2)
        return _report(store, args.output or os.path.join(folder, "report.html"), args)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
