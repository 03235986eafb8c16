"""Cost of one Layca step against its base optimizer's step, on the five paper models.

For each model, the optimizers step the model's kernel weights (one Layca group per layer, as
``layrot_core.param_groups`` builds them) with fixed random gradients; every variant is timed
in interleaved rounds and the median is kept. On a CPU the clock is the process's CPU time, so
other processes on a shared machine do not inflate it; on a GPU it is wall time.
Printed ratios: Layca(SGD) / SGD and Layca(Adam) / Adam (both bases with foreach=True), and the
cost of ``RotationMonitor.cosine_distances()`` relative to one forward+backward pass of the
model at batch size --batch. Targets on a CPU: <= 2x on C10-CNN2 and WRN-28-10, <= 3x on the
other models.

    .venv/bin/python bench/bench_layca_step.py                 # all five models (a few minutes)
    .venv/bin/python bench/bench_layca_step.py --smoke-test    # seconds; ratios not meaningful
"""
from __future__ import annotations

import argparse
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


def median_times(fns: dict[str, Callable[[], object]], rounds: int, sync: Callable[[], None],
                 clock: Callable[[], float]) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up: optimizer state, allocator, caches
        fn()
    sync()
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = clock()
            fn()
            sync()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_model(task: str, device: torch.device, rounds: int, batch: int) -> dict[str, float]:
    cuda = device.type == "cuda"
    sync, clock = (torch.cuda.synchronize, time.perf_counter) if cuda else (lambda: None, time.process_time)
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
    step = median_times({name: opt.step for name, opt in optimizers.items()}, rounds, sync, clock)

    monitor = lc.RotationMonitor(model)
    x = torch.randn(batch, *input_shape(PAPER_MODELS[task]), device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)

    def forward_backward() -> None:
        F.cross_entropy(model(x), y).backward()

    other = median_times({"fwd_bwd": forward_backward, "monitor": monitor.cosine_distances},
                         max(1, min(3, rounds // 10)), sync, clock)
    params = sum(w.numel() for w in kernels)
    return {"params_m": params / 1e6, "layers": len(kernels), "sgd_ms": step["sgd"] * 1e3,
            "layca_sgd": step["layca_sgd"] / step["sgd"], "adam_ms": step["adam"] * 1e3,
            "layca_adam": step["layca_adam"] / step["adam"], "monitor": other["monitor"] / other["fwd_bwd"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(PAPER_MODELS), default=list(PAPER_MODELS))
    parser.add_argument("--rounds", type=int, default=40, help="timed steps per optimizer (default 40)")
    parser.add_argument("--batch", type=int, default=128, help="batch of the forward+backward pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1, as in a sweep trial; stable on a shared machine)")
    parser.add_argument("--smoke-test", action="store_true", help="C100-resnet only, 3 rounds, batch 8")
    args = parser.parse_args()
    if args.smoke_test:
        args.models, args.rounds, args.batch = ["C100-resnet"], 3, 8
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    kernels = "on" if device.type == "cpu" and cpu_kernels.ops() is not None else "off"
    print(f"device: {name}; torch {torch.__version__}; median of {args.rounds} interleaved steps; "
          f"Layca CPU kernels {kernels}")
    print(f"{'model':12s} {'params':>8s} {'layers':>6s} {'SGD ms':>8s} {'Layca/SGD':>10s} "
          f"{'Adam ms':>8s} {'Layca/Adam':>10s} {'target':>6s} {'monitor/fwd+bwd':>15s}")
    for task in args.models:
        r = bench_model(task, device, args.rounds, args.batch)
        print(f"{task:12s} {r['params_m']:7.2f}M {r['layers']:6d} {r['sgd_ms']:8.2f} {r['layca_sgd']:9.2f}x "
              f"{r['adam_ms']:8.2f} {r['layca_adam']:9.2f}x {TARGETS.get(task, 3.0):5.1f}x "
              f"{r['monitor']:14.4f}x", flush=True)


if __name__ == "__main__":
    main()
