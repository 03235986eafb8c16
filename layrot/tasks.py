"""The task registry: every hyper-parameter of a task in one place, with its units.

A task fixes data, model and protocol (epochs, rate schedule, L2 strength); a setting (optimizer)
and a rate are what a sweep varies (``layrot.run``). Dataset and model are names that
``trainables`` resolves, so this registry imports nothing and the report can use it without torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str                   # trainables.data name
    model: str                     # trainables.models name
    epochs: int
    milestones: tuple[int, ...]    # epochs (from 0) at which the rate is multiplied by `decay`
    decay: float                   # multiplicative factor at each milestone
    l2: float                      # the paper's lambda in lambda * sum(w^2); torch weight_decay = 2 * l2
    augment: bool                  # random shifts (12.5 %, reflect) + horizontal flips
    batch_size: int = 128
    data_fraction: float = 1.0     # fixed random fraction of every split used (fits a CPU budget)
    description: str = ""

    def milestones_for(self, epochs: int) -> tuple[int, ...]:
        """Milestones for a shortened (or lengthened) run: same fractions of training."""
        if epochs == self.epochs:
            return self.milestones
        scaled = sorted({max(1, round(m * epochs / self.epochs)) for m in self.milestones})
        return tuple(m for m in scaled if m < epochs)


_PAPER = [
    Task("C10-CNN1", "cifar10", "c10_cnn1", 100, (80, 90, 97), 0.2, 1e-3, False,
         description="VGG-style 25-layer CNN on CIFAR-10"),
    Task("C100-resnet", "cifar100", "resnet32", 100, (70, 90, 97), 0.1, 1e-3, False,
         description="ResNet-32 on CIFAR-100"),
    Task("tiny-CNN", "tiny_imagenet", "tiny_cnn", 80, (70,), 0.2, 1e-3, False,
         description="VGG-style 11-layer CNN on Tiny ImageNet"),
    Task("C10-CNN2", "cifar10", "c10_cnn2", 250, (100, 170, 220), 0.2, 5e-4, True,
         description="cifar.torch VGG (no dropout) on CIFAR-10 with augmentation"),
    Task("C100-WRN", "cifar100", "wrn28_10", 250, (100, 170, 220), 0.2, 5e-4, True,
         description="Wide ResNet 28-10 (dropout 0.3) on CIFAR-100 with augmentation"),
]

# Offline, on real Fashion-MNIST, built like C10-CNN1 with its protocol (100 epochs, x0.2 at 80, 90,
# 97: the length at which a pilot's Layca-SGD and SGD + L2 runs reached 99% training accuracy,
# docs/reproduction.md) and sized for a 2-core CPU (about 2 CPU-seconds per epoch of fmnist).
_FASHION_MNIST = [
    Task("fmnist", "fashion_mnist", "fmnist_cnn", 100, (80, 90, 97), 0.2, 1e-3, False, data_fraction=0.1,
         description="VGG-style 6-layer CNN on a fixed tenth of Fashion-MNIST (offline default)"),
    Task("fmnist-full", "fashion_mnist", "fmnist_cnn", 100, (80, 90, 97), 0.2, 1e-3, False,
         description="the fmnist model and protocol on the full 54k training split"),
    Task("fmnist-quick", "fashion_mnist", "fmnist_cnn_quick", 3, (2,), 0.2, 1e-3, False, data_fraction=0.02,
         description="tiny 4-layer CNN on 2% of Fashion-MNIST, seconds per run (tests, smoke runs)"),
]

TASKS: dict[str, Task] = {t.name: t for t in _PAPER + _FASHION_MNIST}
PAPER_TASKS: tuple[str, ...] = tuple(t.name for t in _PAPER)


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
