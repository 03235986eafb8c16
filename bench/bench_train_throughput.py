"""Training throughput: our training function against a minimal hand-written PyTorch loop.

Both train the same model (same initialisation) on the same device-resident data with batch
size 128 and plain SGD, evaluate validation and test accuracy and measure every kernel
layer's cosine distance from init once per epoch (monitoring on), in the same memory format;
the ratio of their images/s is the cost of everything ``trainables.train.Run`` adds (metrics,
divergence checks, schedule, RNG handling). Epochs alternate between the two so that load from
other processes hits both alike; the median epoch of each counts. Target: ratio >= ``TARGET``.

    .venv/bin/python bench/bench_train_throughput.py                 # fmnist, 1 thread
    .venv/bin/python bench/bench_train_throughput.py --write-readme  # and write the README's line
    .venv/bin/python bench/bench_train_throughput.py --threads 2 --epochs 5
    .venv/bin/python bench/bench_train_throughput.py --smoke-test    # seconds; ratio not meaningful
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import readme_block
from trainables.models import build_model
from trainables.train import Run

TARGET = 0.95   # images/s of trainables.train.Run over the hand-written loop's


class HandLoop:
    """What a researcher would write by hand for the same job."""

    def __init__(self, run: Run):
        self.data, self.batch_size = run.data, run.task.batch_size
        torch.manual_seed(run.cfg.seed)
        self.model = build_model(run.task.model).to(run.device, memory_format=torch.channels_last)
        self.kernels = [m.weight for m in self.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        self.initial = [w.detach().clone() for w in self.kernels]
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=run.cfg.rho0)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.data.mean) / self.data.std).contiguous(memory_format=torch.channels_last)

    def epoch(self) -> None:
        self.model.train()
        train = self.data.train
        order = torch.randperm(len(train))
        for start in range(0, len(train), self.batch_size):
            idx = order[start:start + self.batch_size]
            loss = F.cross_entropy(self.model(self.prepare(train.x[idx])), train.y[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        self.model.eval()
        with torch.no_grad():
            self.accuracy = []
            for split in (self.data.val, self.data.test):
                correct = 0
                for start in range(0, len(split), 1000):
                    logits = self.model(self.prepare(split.x[start:start + 1000]))
                    correct += (logits.argmax(1) == split.y[start:start + 1000]).sum().item()
                self.accuracy.append(correct / len(split))
            self.rotation = [1 - F.cosine_similarity(w.flatten(), w0.flatten(), 0).item()
                             for w, w0 in zip(self.kernels, self.initial)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="fmnist")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of each (after one warm-up each)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke-test", action="store_true")
    readme_block.add_flag(parser)
    args = readme_block.parse_args(parser)
    load = readme_block.load_average()
    torch.set_num_threads(args.threads)
    config = {"task": args.task, "setting": "sgd", "rho0": 0.1, "device": args.device, "epochs": 10**6}
    if args.smoke_test:
        config["data_fraction"], args.epochs = 0.05, 1

    ours = Run(config)
    hand = HandLoop(ours)
    images = len(ours.data.train)
    sync = torch.cuda.synchronize if ours.device.type == "cuda" else (lambda: None)

    def timed(epoch) -> float:
        sync()
        start = time.perf_counter()
        epoch()
        sync()
        return images / (time.perf_counter() - start)

    timed(ours.epoch), timed(hand.epoch)                     # warm-up
    rates = {"ours": [], "hand": []}
    for _ in range(args.epochs):
        rates["ours"].append(timed(ours.epoch))
        rates["hand"].append(timed(hand.epoch))
    ours_rate, hand_rate = statistics.median(rates["ours"]), statistics.median(rates["hand"])
    print(f"task {args.task} on {ours.device}, {args.threads} thread(s), {images} training images per epoch, "
          f"batch {ours.task.batch_size}, {args.epochs} timed epochs each (median)")
    print(f"  trainables.train.Run : {ours_rate:9.0f} images/s")
    print(f"  hand-written loop    : {hand_rate:9.0f} images/s")
    print(f"  ratio ours / hand    : {ours_rate / hand_rate:.3f}   (target >= {TARGET})")
    if args.write_readme:
        readme_block.write("bench_train_throughput", readme_block.wrap(
            f"- `{readme_block.command('bench_train_throughput')}` ({args.task}, {args.threads} thread"
            f"{'s' * (args.threads > 1)}, median of "
            f"{args.epochs} alternating epochs): `trainables.train.Run` against a minimal hand-written loop on "
            f"the same model, data, batch size and monitoring: ratio {ours_rate / hand_rate:.3f} ({ours_rate:,.0f} "
            f"vs {hand_rate:,.0f} images/s); target >= {TARGET}; {readme_block.measured_on(load)}.", bullet=True))


if __name__ == "__main__":
    main()
