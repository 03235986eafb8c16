"""Sweep overhead: the quick sweep's wall time against (sum of trial times / concurrency).

Trial time is what the trials spend in their epochs (the store's ``wall_seconds``), so the
ratio charges the sweep for everything else: starting Ray, starting and reusing trial actors,
loading data, checkpoints, reports and writing the store. Target on a 2-core machine: ``TARGET``.

    .venv/bin/python bench/bench_sweep_overhead.py              # the quick sweep (minutes)
    .venv/bin/python bench/bench_sweep_overhead.py --write-readme  # and write the README's figures
    .venv/bin/python bench/bench_sweep_overhead.py --smoke-test # seconds; the ratio is not meaningful
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds

import readme_block
from sweeps.launch import run_sweep
from sweeps.spec import load_spec

TARGET = 1.15   # at most this wall time over (sum of trial times / concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="quick", help="spec file or shipped spec name (default: quick)")
    parser.add_argument("--max-concurrent", type=int, default=None)
    parser.add_argument("--smoke-test", action="store_true")
    readme_block.add_flag(parser)
    args = readme_block.parse_args(parser)
    load = readme_block.load_average()

    spec = load_spec(args.spec)
    if args.smoke_test:
        spec = spec.smoke()
    slots = math.floor((os.cpu_count() or 1) / spec.cpus)
    concurrency = max(1, min(spec.num_trials, slots, args.max_concurrent or slots))

    with tempfile.TemporaryDirectory(prefix="layrot-bench-") as store:
        start, start_clock = time.time(), time.perf_counter()
        outcome = run_sweep(spec, store, max_concurrent=args.max_concurrent)
        wall = time.perf_counter() - start_clock
        trials = ds.dataset(f"{store}/trials", format="parquet").to_table().to_pandas()
        spans = trial_spans(Path(store) / "_tune" / spec.name)

    busy = float(trials["wall_seconds"].sum())
    ideal = busy / concurrency
    setup = sum(total for _, _, total in spans) - busy
    first = min(s for s, _, _ in spans) - start
    shutdown = start + wall - max(e for _, e, _ in spans)
    print(f"spec {spec.name}: {outcome.trials} trials ({outcome.completed} completed, {outcome.diverged} diverged, "
          f"{outcome.errored} errored), {concurrency} at a time on {os.cpu_count()} CPUs")
    print(f"where the rest went: {first:.0f} s to the first trial's start (Ray, Tune), {setup:.0f} s of trial time "
          f"outside epochs (imports, data, checkpoints; all trials), {shutdown:.0f} s after the last report (shutdown)")
    print(f"sum of trial times {busy:.1f} s / concurrency {concurrency} = {ideal:.1f} s; sweep wall time {wall:.1f} s")
    print(f"overhead ratio (wall / ideal): {wall / ideal:.3f}   (target <= {TARGET})")
    if args.write_readme:
        readme_block.write("bench_sweep_overhead", readme_block.wrap(
            f"**Measured** with `{readme_block.command('bench_sweep_overhead')}` (the {spec.name} sweep, "
            f"{concurrency} trials at a time; {readme_block.measured_on(load)}): {wall:.0f} s of wall time for "
            f"{busy:.0f} s of trial epochs, a ratio of {wall / ideal:.2f} to the ideal {ideal:.0f} s (target <= "
            f"{TARGET}). The rest: {first:.0f} s until the first trial started (Ray and Tune), {setup:.0f} s inside "
            f"trials outside their epochs (imports, data, checkpoints), {shutdown:.0f} s of shutdown."))


def trial_spans(experiment: Path) -> list[tuple[float, float, float]]:
    """(start, end, seconds) of each trial, from Tune's own result log: the last report's
    timestamp and time since the trial started (whole seconds for the timestamps)."""
    spans = []
    for log in experiment.glob("*/result.json"):
        last = json.loads(log.read_text().splitlines()[-1])
        spans.append((last["timestamp"] - last["time_total_s"], last["timestamp"], last["time_total_s"]))
    return spans


if __name__ == "__main__":
    main()
