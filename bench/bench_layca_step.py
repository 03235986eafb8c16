"""Cost of one Layca step against its base optimizer's step, on the five paper models.

For each model, the optimizers step the model's kernel weights (one Layca group per layer, as
``layrot_core.param_groups`` builds them) with fixed random gradients. Every variant, at every
thread count of --threads, is timed in interleaved rounds within one process, and the median
wall time is kept (on a GPU after a synchronize). Printed ratios: Layca(SGD) / SGD and
Layca(Adam) / Adam (both bases with foreach=True), and the cost of ``RotationMonitor.measure()``
relative to one forward+backward pass of the model at batch size --batch (at the first thread
count). Targets on a CPU: <= 2x on C10-CNN2 and WRN-28-10, <= 3x on the other models. The last
output is a Markdown table of the results.

    .venv/bin/python bench/bench_layca_step.py                 # all five models, 1 and 2 threads
    .venv/bin/python bench/bench_layca_step.py --smoke-test    # seconds; ratios not meaningful
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch
from torch.nn import functional as F

import layrot_core as lc
from layrot_core import cpu_kernels
from trainables.models import build_model, input_shape

PAPER_MODELS = {"C10-CNN1": "c10_cnn1", "C100-resnet": "resnet32", "tiny-CNN": "tiny_cnn",
                "C10-CNN2": "c10_cnn2", "C100-WRN": "wrn28_10"}
TARGETS = {"C10-CNN2": 2.0, "C100-WRN": 2.0}  # 3.0 for the others


def median_times(fns: dict[tuple[int, str], Callable[[], object]], rounds: int,
                 sync: Callable[[], None]) -> dict[tuple[int, str], float]:
    """Median wall seconds per call of each function, keyed (threads, name), in interleaved rounds:
    each round sets each thread count once (waking its threads untimed), then times every function."""
    times: dict[tuple[int, str], list[float]] = {key: [] for key in fns}
    counts = sorted({threads for threads, _ in fns}, key=[t for t, _ in fns].index)
    for round_ in range(rounds + 1):  # round 0 warms up: optimizer state, allocator, caches
        for count in counts:
            torch.set_num_threads(count)
            torch.ones(1 << 20).sum()  # a parallel op: the thread pool is up before the clock starts
            for (threads, name), fn in fns.items():
                if threads != count:
                    continue
                sync()
                start = time.perf_counter()
                fn()
                sync()
                if round_:
                    times[threads, name].append(time.perf_counter() - start)
    return {key: statistics.median(t) for key, t in times.items()}


def bench_model(task: str, device: torch.device, rounds: int, batch: int, threads: list[int]) -> dict[int, dict]:
    """Per thread count: step times and ratios (and, at the first count, the monitor's cost)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = build_model(PAPER_MODELS[task]).to(device)
    kernels = [w for _, w in lc.kernel_layers(model)]
    for w in kernels:
        w.grad = torch.randn_like(w) * 1e-3
    optimizers = {
        "sgd": torch.optim.SGD(kernels, lr=1e-6, foreach=True),
        "layca_sgd": lc.Layca(lc.param_groups(model, others="freeze"), lr=1e-6, foreach=True),
        "adam": torch.optim.Adam(kernels, lr=1e-6, foreach=True),
        "layca_adam": lc.Layca(lc.param_groups(model, others="freeze"), base=torch.optim.Adam, lr=1e-6, foreach=True),
    }
    step = median_times({(t, name): opt.step for t in threads for name, opt in optimizers.items()}, rounds, sync)

    monitor = lc.RotationMonitor(model)
    x = torch.randn(batch, *input_shape(PAPER_MODELS[task]), device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)

    def forward_backward() -> None:
        F.cross_entropy(model(x), y).backward()

    other = median_times({(threads[0], "fwd_bwd"): forward_backward, (threads[0], "monitor"): monitor.measure},
                         max(1, min(3, rounds // 10)), sync)
    params = sum(w.numel() for w in kernels)
    return {t: {"params_m": params / 1e6, "layers": len(kernels), "sgd_ms": step[t, "sgd"] * 1e3,
                "layca_sgd": step[t, "layca_sgd"] / step[t, "sgd"], "adam_ms": step[t, "adam"] * 1e3,
                "layca_adam": step[t, "layca_adam"] / step[t, "adam"],
                "monitor": other[threads[0], "monitor"] / other[threads[0], "fwd_bwd"] if t == threads[0] else None}
            for t in threads}


def markdown_table(results: dict[str, dict[int, dict]]) -> str:
    rows = ["| model | params | threads | SGD ms | Layca(SGD)/SGD | Adam ms | Layca(Adam)/Adam | target | "
            "monitor/fwd+bwd |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for task, by_threads in results.items():
        for t, r in by_threads.items():
            monitor = "" if r["monitor"] is None else f"{r['monitor']:.4f}x"
            rows.append(f"| {task} | {r['params_m']:.2f}M | {t} | {r['sgd_ms']:.2f} | {r['layca_sgd']:.2f}x | "
                        f"{r['adam_ms']:.2f} | {r['layca_adam']:.2f}x | {TARGETS.get(task, 3.0):.1f}x | {monitor} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(PAPER_MODELS), default=list(PAPER_MODELS))
    parser.add_argument("--rounds", type=int, default=40, help="timed steps per optimizer (default 40)")
    parser.add_argument("--batch", type=int, default=128, help="batch of the forward+backward pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="CPU thread counts, measured interleaved in this process (default 1 2)")
    parser.add_argument("--smoke-test", action="store_true", help="C100-resnet only, 3 rounds, batch 8")
    args = parser.parse_args()
    if args.smoke_test:
        args.models, args.rounds, args.batch = ["C100-resnet"], 3, 8
    if any(t < 1 for t in args.threads):
        parser.error(f"--threads {args.threads}: thread counts must be >= 1")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    kernels = "on" if device.type == "cpu" and cpu_kernels.ops() is not None else "off"
    print(f"device: {name}; torch {torch.__version__}; median wall time of {args.rounds} interleaved steps; "
          f"threads {args.threads}; Layca CPU kernel {kernels}; load average {os.getloadavg()[0]:.1f}")
    results = {}
    for task in args.models:
        results[task] = bench_model(task, device, args.rounds, args.batch, args.threads)
        for t, r in results[task].items():
            print(f"{task:12s} {t} threads: SGD {r['sgd_ms']:.2f} ms, Layca(SGD)/SGD {r['layca_sgd']:.2f}x, "
                  f"Adam {r['adam_ms']:.2f} ms, Layca(Adam)/Adam {r['layca_adam']:.2f}x", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}\n")
    print(markdown_table(results))


if __name__ == "__main__":
    main()
