"""Seconds per epoch of every task on this machine, and what a 100-trial fmnist study costs.

Fashion-MNIST tasks: real epochs of ``trainables.train.Run`` (Layca-SGD) on real data, median
of several after a warm-up: at 1 thread, at 2 threads, and as two runs side by side at one
thread each, which is how a sweep with 2 concurrent 1-CPU trials runs them. The study estimate
is 100 trials / 2 slots x (set-up + epochs x side-by-side seconds per epoch).

Paper tasks: their data sets are not on an offline machine, so an epoch is timed from a few
Layca-SGD training steps and evaluation batches on random inputs of the real shape:
train images / 128 x seconds per step + evaluated images x seconds per evaluated image.

    .venv/bin/python bench/bench_epoch_seconds.py                  # minutes (the paper models are slow on CPU)
    .venv/bin/python bench/bench_epoch_seconds.py --skip-paper     # the Fashion-MNIST part only
    .venv/bin/python bench/bench_epoch_seconds.py --skip-fmnist    # the paper tasks only
    .venv/bin/python bench/bench_epoch_seconds.py --write-readme   # and write the README's figures of each part run
    .venv/bin/python bench/bench_epoch_seconds.py --device cuda    # on a GPU
    .venv/bin/python bench/bench_epoch_seconds.py --smoke-test     # fmnist-quick and ResNet-32 only, seconds
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch
import torch.nn.functional as F

import layrot_core as lc
import readme_block
from trainables.models import build_model, input_shape
from layrot.tasks import TASKS
from trainables.train import Run

STUDY_TRIALS, STUDY_SLOTS = 100, 2
# (train, validation + test) images per epoch under the paper's protocol
PAPER_SPLITS = {"cifar10": (45000, 15000), "cifar100": (45000, 15000), "tiny_imagenet": (90000, 20000)}


def fmnist_epoch_seconds(task: str, threads: int, epochs: int, fraction: float, device: str,
                         ) -> tuple[float, float, float]:
    """(set-up seconds, median wall seconds, median CPU seconds) per epoch of a Layca-SGD run.
    At one thread the CPU seconds are what the epoch takes on an otherwise idle core."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    run = Run({"task": task, "setting": "layca-sgd", "epochs": epochs + 1, "data_fraction": fraction, "device": device})
    setup = time.perf_counter() - start
    run.epoch()                                             # warm-up
    wall, cpu = [], []
    for _ in range(epochs):
        cpu_start = time.process_time()
        wall.append(run.epoch()["epoch_seconds"])
        cpu.append(time.process_time() - cpu_start)
    return setup, statistics.median(wall), statistics.median(cpu)


def _side_by_side_worker(args: tuple) -> tuple[float, float, float]:
    return fmnist_epoch_seconds(*args)


def paper_epoch_seconds(task_name: str, steps: int, device: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one epoch, extrapolated from timed steps."""
    task = TASKS[task_name]
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(task.model).to(dev, memory_format=torch.channels_last)
    example = torch.zeros(2, *input_shape(task.model), device=dev)
    optimizer = lc.Layca(lc.param_groups(model, example_input=example), lr=3.0**-3)
    monitor = lc.RotationMonitor(model, example)
    x = torch.randn(task.batch_size, *input_shape(task.model), device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (task.batch_size,), device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def train_step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def eval_step() -> None:
        with torch.inference_mode():
            model(x)

    def seconds(step, n: int) -> tuple[float, float]:
        step()                                              # warm-up
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            step()
        sync()
        return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n

    model.train()
    t_train = seconds(train_step, steps)
    model.eval()
    t_eval = seconds(eval_step, steps)
    monitor.cosine_distances()
    train_images, eval_images = PAPER_SPLITS[task.dataset]
    return tuple(train_images / task.batch_size * t_train[i] + eval_images / task.batch_size * t_eval[i]
                 for i in range(2))


def fmnist_part(args: argparse.Namespace, fraction: float) -> dict[str, dict[str, float]]:
    """Per Fashion-MNIST task: wall and CPU seconds per epoch alone and side by side, and for
    fmnist the study's hours as measured and on an idle machine."""
    print(f"Fashion-MNIST tasks on {args.device} (Layca-SGD, real data, median of {args.epochs} epochs; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start):")
    results = {}
    for name in ("fmnist-quick",) if args.smoke_test else ("fmnist", "fmnist-quick"):
        task = TASKS[name]
        alone = {t: fmnist_epoch_seconds(name, t, args.epochs, fraction, args.device) for t in (1, 2)}
        with mp.get_context("spawn").Pool(2) as pool:
            pair = pool.map(_side_by_side_worker, [(name, 1, args.epochs, fraction, args.device)] * 2)
        setup, side, side_cpu = (statistics.mean(p[i] for p in pair) for i in range(3))
        r = results[name] = dict(wall_1=alone[1][1], cpu_1=alone[1][2], wall_2=alone[2][1], side=side,
                                 side_cpu=side_cpu, setup=setup)
        print(f"  {name:13s} wall s/epoch: 1 thread {r['wall_1']:6.2f} | 2 threads {r['wall_2']:6.2f} | "
              f"2 runs side by side at 1 thread {side:6.2f}")
        print(f"  {name:13s} CPU  s/epoch: 1 thread {r['cpu_1']:6.2f} | 2 runs side by side at 1 thread "
              f"{side_cpu:6.2f}   (set-up {setup:.1f}s wall)")
        if name == "fmnist":
            for key, label, per_epoch in (("measured", "as measured", side),
                                          ("idle", "on an idle machine (CPU time)", side_cpu)):
                r[f"trial_{key}"] = trial = setup + task.epochs * per_epoch
                r[f"hours_{key}"] = hours = STUDY_TRIALS / STUDY_SLOTS * trial / 3600
                print(f"  {name} study, {label}: {trial:.0f}s per {task.epochs}-epoch trial; {STUDY_TRIALS} trials, "
                      f"{STUDY_SLOTS} at a time: {hours:.2f} h")
    return results


def paper_part(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    """Per paper task: (wall, CPU) seconds of one epoch."""
    torch.set_num_threads(args.paper_threads)
    print(f"Paper tasks on {args.device}, {args.paper_threads} thread(s) (Layca-SGD, batch 128, random inputs of the "
          f"real shape, {args.steps} timed steps; load average {os.getloadavg()[0]:.1f}):")
    paper = [name for name, task in TASKS.items() if task.dataset in PAPER_SPLITS]
    results = {}
    for name in paper[1:2] if args.smoke_test else paper:       # smoke test: ResNet-32 only
        epochs = TASKS[name].epochs
        wall, cpu = results[name] = paper_epoch_seconds(name, args.steps, args.device)
        print(f"  {name:12s} wall {wall:7.0f} s/epoch, CPU {cpu:7.0f} s/epoch  "
              f"({wall * epochs / 3600:6.1f} h wall for its {epochs} epochs)")
    return results


def fmnist_readme(r: dict[str, dict[str, float]], load: float) -> str:
    full, quick, epochs = r["fmnist"], r["fmnist-quick"], TASKS["fmnist"].epochs
    return readme_block.wrap(
        f"`{readme_block.command('bench_epoch_seconds')}` ({readme_block.measured_on(load)}): fmnist "
        f"{full['wall_1']:.2f} s wall / {full['cpu_1']:.2f} s CPU per epoch at 1 thread, {full['wall_2']:.2f} s wall "
        f"at 2 threads, {full['side']:.2f} s wall / {full['side_cpu']:.2f} s CPU with two runs side by side at 1 "
        f"thread each; fmnist-quick {quick['wall_1']:.2f} s wall / {quick['cpu_1']:.2f} s CPU. A {STUDY_TRIALS}-trial "
        f"fmnist study at {STUDY_SLOTS} trials x 1 thread therefore needs about {full['hours_idle']:.1f} h on an idle "
        f"machine ({full['trial_idle']:.0f} s per {epochs}-epoch trial from CPU time), {full['hours_measured']:.1f} h "
        f"at the load measured.")


def paper_readme(r: dict[str, tuple[float, float]], threads: int, load: float) -> str:
    lines = [readme_block.wrap(
        f"`{readme_block.command('bench_epoch_seconds')}` ({threads} thread{'s' * (threads > 1)}; "
        f"{readme_block.measured_on(load)}; the paper's data is not on this offline machine, so epochs are "
        f"extrapolated from timed Layca-SGD steps on random inputs of the real shape):"), "",
        "| task | CPU s/epoch | wall s/epoch | its whole schedule, wall |", "|---|---|---|---|"]
    for name, (wall, cpu) in r.items():
        lines.append(f"| {name} | {cpu:,.0f} | {wall:,.0f} | {wall * TASKS[name].epochs / 3600:,.1f} h |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3, help="timed Fashion-MNIST epochs per setting")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per paper model")
    parser.add_argument("--paper-threads", type=int, default=1)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--skip-fmnist", action="store_true")
    parser.add_argument("--smoke-test", action="store_true")
    readme_block.add_flag(parser)
    args = readme_block.parse_args(parser)
    fraction = 0.1 if args.smoke_test else 1.0
    if args.smoke_test:
        args.epochs, args.steps = 1, 1

    if not args.skip_fmnist:
        load = readme_block.load_average()
        fmnist = fmnist_part(args, fraction)
        if args.write_readme:
            readme_block.write("bench_epoch_seconds:fmnist", fmnist_readme(fmnist, load))
    if not args.skip_paper:
        load = readme_block.load_average()
        paper = paper_part(args)
        if args.write_readme:
            readme_block.write("bench_epoch_seconds:paper", paper_readme(paper, args.paper_threads, load))


if __name__ == "__main__":
    main()
