"""Is `layrot report` on a 1,000-trial store under 10 s and 2 GB?

The store is synthetic (analysis.synthetic): 1,000 trials x 100 epochs x 30 kernel layers,
about 3M rotation rows (diverged trials stop early). It is generated once, untimed, and kept
when --store names a folder. `layrot report` then runs in a fresh process, so the timing
includes start-up and imports; its wall time, CPU time and peak memory (max RSS) are printed
against the budgets. Usage: python bench/bench_report.py [--store DIR] [--smoke-test] [--write-readme]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import pyarrow.dataset as ds

import readme_block

FULL_SIZE = dict(n_trials=1000, epochs=100, layers=30)
WALL_BUDGET_S = 10.0
MEMORY_BUDGET_GB = 2.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="folder for the synthetic store (reused if it exists)")
    parser.add_argument("--smoke-test", action="store_true", help="60 trials x 10 epochs x 8 layers")
    readme_block.add_flag(parser)
    args = readme_block.parse_args(parser)
    size = dict(n_trials=60, epochs=10, layers=8) if args.smoke_test else FULL_SIZE
    with tempfile.TemporaryDirectory(prefix="layrot-bench-") as scratch:
        store = args.store or os.path.join(scratch, "store")
        ensure_store(store, size)
        figures = measure(store, os.path.join(scratch, "report.html"))
        if figures is None:
            return 1
        if args.write_readme:
            rows = ds.dataset(os.path.join(store, "rotation"), format="parquet").count_rows()
            readme_block.write("bench_report", readme_text(figures, rows))
    return 0


def readme_text(figures: dict[str, float], rotation_rows: int) -> str:
    wall, cpu, peak_gb = figures["wall"], figures["cpu"], figures["peak_gb"]
    return readme_block.wrap(
        f"- `{readme_block.command('bench_report')}`: `layrot report` (start-up included) on a synthetic store of "
        f"{FULL_SIZE['n_trials']:,} trials × {FULL_SIZE['epochs']} epochs × {FULL_SIZE['layers']} layers "
        f"({rotation_rows:,} rotation rows: diverged trials stop early): wall time {wall:.2f} s "
        f"({wall / WALL_BUDGET_S:.2f} × the {WALL_BUDGET_S:g} s budget), {cpu:.1f} s of CPU and {peak_gb:.2f} GB "
        f"peak memory ({peak_gb / MEMORY_BUDGET_GB:.2f} × the {MEMORY_BUDGET_GB:g} GB budget); "
        f"{readme_block.measured_on(figures['load'])}.", bullet=True)


def ensure_store(store: str, size: dict) -> None:
    if os.path.isdir(os.path.join(store, "trials")):
        print(f"reusing the store in {store}")
        return
    from analysis.synthetic import write_synthetic_store

    start = time.perf_counter()
    write_synthetic_store(store, "bench", tasks=("C10-CNN1", "C100-resnet", "tiny-CNN"), running=20,
                          progress=True, **size)
    print(f"generated {size} in {store} in {time.perf_counter() - start:.0f} s (not timed)")


def measure(store: str, output: str) -> dict[str, float] | None:
    """Wall and CPU seconds and peak GB of `layrot report` on `store`, and the load average
    before it; None if it failed."""
    load_before = readme_block.load_average()
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "layrot", "report", "--store", store, "-o", output])
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        print("layrot report failed", file=sys.stderr)
        return None
    peak_gb = usage.ru_maxrss / 1024**2              # ru_maxrss is in KiB on Linux
    cpu = usage.ru_utime + usage.ru_stime
    print(f"load+report wall time  {wall:6.2f} s  = {wall / WALL_BUDGET_S:.2f} x the {WALL_BUDGET_S:g} s budget")
    print(f"load+report CPU time   {cpu:6.2f} s  (user + system, {os.cpu_count()} cores on this machine)")
    print(f"peak memory (max RSS)  {peak_gb:6.2f} GB = {peak_gb / MEMORY_BUDGET_GB:.2f} x the "
          f"{MEMORY_BUDGET_GB:g} GB budget")
    print(f"machine load average at start: {load_before:.1f}  (others' work slows the wall time)")
    return dict(wall=wall, cpu=cpu, peak_gb=peak_gb, load=load_before)


if __name__ == "__main__":
    raise SystemExit(main())
