"""How many trials of each paper task can share one GPU (Ray fractional GPUs).

Measured, per task, on the real model at the paper's batch size (128), without a GPU: forward
and backward run on PyTorch's meta device, which tracks shapes but computes nothing, so the
counts are exact and the script takes seconds on a laptop:
  - parameters; forward FLOPs per image (the FLOP formulas of torch.utils.flop_counter);
  - activation memory autograd keeps for the backward pass of one batch (fp32);
  - tensor operations dispatched per training step, with the FLOPs of each; the Layca-SGD
    optimizer step's operations are counted on the CPU (its first step reads a norm), along the
    torch-ops path a GPU takes: Layca's CPU kernel is switched off before layrot_core loads.

From those and the stated ASSUMED_* figures of one GPU it models a step: every operation costs
the host a fixed dispatch time; every operation that is not a view costs the GPU its FLOPs at
the assumed rate, but at least one kernel's minimum time.
A trial whose host time exceeds its GPU time leaves the GPU idle part of each step (it keeps
it `busy` that fraction); k = ceil(1 / busy) such trials together keep it fully busy, as long
as their memory fits and each has a CPU core. That sets `resources: {gpus: 1/k}` in a spec.

    python bench/bench_gpu_share.py                  # all five paper tasks (seconds)
    python bench/bench_gpu_share.py --write-readme   # and write the README's table
    python bench/bench_gpu_share.py --smoke-test     # one task
"""
from __future__ import annotations

import os

os.environ["LAYROT_CPU_KERNELS"] = "0"   # before layrot_core loads: count the step a GPU runs

import argparse
import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

import readme_block
from layrot.run import resolve
from layrot.tasks import PAPER_TASKS, TASKS
from trainables.models import build_model, input_shape
from trainables.train import build_optimizer

BATCH = 128
# Images held on the GPU for the whole trial (uint8): train + validation + test splits.
DATASET_IMAGES = {"cifar10": 60_000, "cifar100": 60_000, "tiny_imagenet": 110_000}

# One 24 GB GPU of the NVIDIA L4 / A10G class: assumptions, not measured here.
ASSUMED_GPU = "a 24 GB L4/A10G-class card"
ASSUMED_GPU_GB = 22.0            # usable after the driver's share
ASSUMED_TFLOPS = 20.0            # sustained on convolutions (TF32, about a third of dense peak)
ASSUMED_KERNEL_US = 3.0          # shortest GPU time of one kernel (launch, tail, memory)
ASSUMED_HOST_US = 6.0            # host time to dispatch one eager PyTorch operation
CUDA_CONTEXT_GB = 0.5            # per process: CUDA context and allocator slack
MAX_TRIALS_PER_GPU = 4           # one CPU core per trial (docker/cluster.yaml's GPU node: 4 vCPUs)


class StepCounter(TorchDispatchMode):
    """Per dispatched operation: count it, its FLOPs, and an estimate of its GPU time."""

    def __init__(self):
        super().__init__()
        self.ops, self.flops, self.gpu_s = 0, 0, 0.0
        self.namespaces: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        self.namespaces.add(func.namespace)
        packet = func._overloadpacket
        flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else 0
        # A view only relabels memory: no GPU kernel.
        is_view = any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)
        if not is_view:
            self.gpu_s += max(flops / (ASSUMED_TFLOPS * 1e12), ASSUMED_KERNEL_US * 1e-6)
        self.flops += flops
        return out


def optimizer_ops(task_name: str) -> int:
    """Operations of one Layca-SGD step (the paper's optimizer), after the first."""
    model = build_model(TASKS[task_name].model)
    example = torch.zeros(2, *input_shape(TASKS[task_name].model))
    opt = build_optimizer(resolve({"task": task_name, "setting": "layca-sgd"}), model, example)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()  # the first step records each layer's initial norm
    with StepCounter() as count:
        opt.step()
    if "layrot" in count.namespaces:
        raise RuntimeError("the optimizer step ran Layca's CPU kernel, which no GPU runs; "
                           "LAYROT_CPU_KERNELS=0 must be set before layrot_core loads")
    return count.ops


def measure(task_name: str) -> dict:
    task = TASKS[task_name]
    with torch.device("meta"):
        model = build_model(task.model)
        x = torch.empty(BATCH, *input_shape(task.model))
    y = torch.zeros(BATCH, dtype=torch.long, device="meta")
    saved: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        saved[id(t)] = t.numel() * t.element_size()
        return t

    with StepCounter() as step, torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        forward_flops = step.flops
        loss.backward()
    params = sum(p.numel() for p in model.parameters())
    ops = step.ops + optimizer_ops(task_name)
    c, h, w = input_shape(task.model)
    dataset_gb = DATASET_IMAGES[task.dataset] * c * h * w / 1e9
    activations_gb = sum(saved.values()) / 1e9
    # fp32 weights, gradients, the optimizer's state and the monitor's initial weights.
    memory_gb = CUDA_CONTEXT_GB + dataset_gb + 4 * 4 * params / 1e9 + activations_gb
    host_s = ops * ASSUMED_HOST_US * 1e-6
    busy = step.gpu_s / max(step.gpu_s, host_s)  # share of a dedicated GPU one trial keeps busy
    by_memory = math.floor(ASSUMED_GPU_GB / memory_gb)
    trials = max(1, min(by_memory, math.ceil(1 / busy - 1e-9), MAX_TRIALS_PER_GPU))
    trials = 2 ** int(math.log2(trials))        # 1, 2 or 4: fractions that divide a GPU evenly
    return dict(task=task_name, params_m=params / 1e6, gflop_img=forward_flops / BATCH / 1e9,
                ops=ops, activations_gb=activations_gb, memory_gb=memory_gb,
                gpu_ms=step.gpu_s * 1e3, host_ms=host_s * 1e3, busy=busy, by_memory=by_memory, trials=trials)


def readme_table(rows: list[dict], argv: list[str] | None) -> str:
    """The README's "Trials per GPU" figures: the table, then what sets its last column."""
    lines = [readme_block.wrap(
        f"From `{readme_block.command('bench_gpu_share', argv)}` ({readme_block.measured_on(None)}): parameters, "
        f"FLOPs, operations per step (the Layca-SGD step as a GPU runs it, with torch ops) and activation memory "
        f"counted on the real models at batch {BATCH}; GPU speed assumed: {ASSUMED_GPU} at {ASSUMED_TFLOPS:g} "
        f"TFLOP/s, at least {ASSUMED_KERNEL_US:g} µs per kernel, {ASSUMED_HOST_US:g} µs host time per operation."), "",
        "| task | parameters | GFLOP / image | operations per step | GPU memory per trial "
        "| GPU busy with one trial | GPUs per trial |",
        "|---|---|---|---|---|---|---|"]
    for r in rows:
        share = "1" if r["trials"] == 1 else f"{1 / r['trials']:g} ({r['trials']} per GPU)"
        lines.append(f"| {r['task']} | {r['params_m']:.2f} M | {r['gflop_img']:.2f} | {r['ops']} | "
                     f"{r['memory_gb']:.1f} GB | {100 * r['busy']:.0f} % | {share} |")
    most = max(rows, key=lambda r: r["memory_gb"])
    idle = [f"{r['task']} ({100 * (1 - r['busy']):.0f} % idle)" for r in rows if r["trials"] > 1]
    lines += ["", readme_block.wrap(
        f"Memory never limits: {most['task']}, the largest, fits {most['by_memory']} times in {ASSUMED_GPU_GB:g} GB. "
        f"What decides is time: each step dispatches {min(r['ops'] for r in rows)} to {max(r['ops'] for r in rows)} "
        f"tensor operations from Python, and a trial whose host dispatches them more slowly than the GPU runs "
        f"them leaves the GPU idle part of every step, which a second trial fills: "
        f"{', '.join(idle) or 'none of the five'}. The others keep the GPU busy alone, so a second trial on "
        f"their GPU only halves the speed of each.")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke-test", action="store_true", help="measure one small task only")
    readme_block.add_flag(parser)
    args = readme_block.parse_args(parser, argv)
    tasks = PAPER_TASKS[1:2] if args.smoke_test else PAPER_TASKS
    print(f"batch {BATCH}; assumed GPU: {ASSUMED_GPU_GB:g} GB usable, {ASSUMED_TFLOPS:g} TFLOP/s, "
          f"{ASSUMED_KERNEL_US:g} us per kernel at least; {ASSUMED_HOST_US:g} us host time per operation")
    print(f"{'task':<12} {'params':>7} {'GFLOP/img':>9} {'ops/step':>8} {'act GB':>6} {'mem GB':>6} "
          f"{'GPU ms':>6} {'host ms':>7} {'busy':>5} {'fit':>4}  gpus per trial")
    rows = [measure(task) for task in tasks]
    for r in rows:
        print(f"{r['task']:<12} {r['params_m']:>6.2f}M {r['gflop_img']:>9.3f} {r['ops']:>8d} "
              f"{r['activations_gb']:>6.2f} {r['memory_gb']:>6.2f} {r['gpu_ms']:>6.2f} {r['host_ms']:>7.2f} "
              f"{r['busy']:>5.2f} {r['by_memory']:>4d}  {1 / r['trials']:g} ({r['trials']} per GPU)")
    if args.write_readme:
        readme_block.write("bench_gpu_share", readme_table(rows, argv), args=argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
