"""Synthetic results stores: realistic sweeps without training.

They feed the tests, the benchmark and ``layrot report --smoke-test``. The simulated runs follow
the paper's qualitative findings, so a report drawn from them can be judged by eye:

- Layca turns each layer by an amount set by rho0 and the layer's eq. 1 multiplier, and
  saturates at a cosine distance near 1 when the rate is high enough; rates above 3^-3 cost a
  little accuracy, and far too high a rate rotates everything but prevents fitting.
- plain SGD stops rotating early and unevenly (first layers most); SGD + L2 rotates every layer
  towards 1; Adam rotates little, last layers most.
- test accuracy rises with the final rotation (its mean and its minimum over layers); too small
  a rate does not fit the training data; too large a rate diverges for the non-Layca settings.

Trials are written through the store's own writer, ``sweeps.store.TrialRecord``; the rate
schedule is the run definition's (``layrot.run``) and the layer-wise rates are eq. 1 from
``layrot_core`` (so writing a synthetic store needs torch; reading any store does not).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from itertools import product

import numpy as np

from layrot.run import LAYER_NAMES, resolve
from sweeps.schema import check_sweep_name
from sweeps.store import TrialRecord

# task -> (chance accuracy, best reachable test accuracy, seconds per epoch)
_TASK_LEVELS = {
    "C10-CNN1": (0.10, 0.91, 14.0),
    "C100-resnet": (0.01, 0.70, 16.0),
    "tiny-CNN": (0.005, 0.45, 40.0),
    "C10-CNN2": (0.10, 0.94, 20.0),
    "C100-WRN": (0.01, 0.81, 120.0),
}

_ALPHAS = (-0.8, -0.4, -0.2, 0.0, 0.2, 0.4, 0.8)


@dataclass(frozen=True)
class _Grid:
    setting: str                   # a layrot.run.SETTINGS name
    alphas: tuple[float, ...]
    rho0_exponents: range          # rho0 = 3 ** k


_GRIDS = (
    _Grid("layca-sgd", _ALPHAS, range(-7, 2)),
    _Grid("sgd", (0.0,), range(-5, 2)),
    _Grid("sgd-l2", (0.0,), range(-5, 2)),
    _Grid("adam", (0.0,), range(-8, -1)),
    _Grid("layca-adam", (0.0,), range(-7, 0)),
)


def grid(tasks: tuple[str, ...]) -> list[dict]:
    """One pass over the simulated sweep: every setting's (alpha, rho0) grid for each task."""
    return [
        {"task": task, "setting": g.setting, "alpha": alpha, "rho0": 3.0**k}
        for task in tasks
        for g in _GRIDS
        for alpha, k in product(g.alphas, g.rho0_exponents)
    ]


def write_synthetic_store(
    store: str,
    sweep: str = "synthetic",
    *,
    tasks: tuple[str, ...] = ("C10-CNN1", "C100-resnet"),
    n_trials: int | None = None,
    epochs: int = 30,
    layers: int = 12,
    running: int = 0,
    seed: int = 0,
    progress: bool = False,
) -> int:
    """Write a simulated sweep into `store`; returns the number of trials written.

    ``n_trials`` None is one pass over :func:`grid`; fewer spreads over it, more repeats it
    with new seeds.
    The last ``running`` trials are left mid-training (status "running"), as in a live sweep.
    """
    check_sweep_name(sweep)
    unknown = sorted(set(tasks) - set(_TASK_LEVELS))
    if unknown:
        raise ValueError(f"no synthetic model for task(s) {unknown}; allowed: {', '.join(_TASK_LEVELS)}")
    if epochs < 2 or layers < 2:
        raise ValueError(f"epochs={epochs} and layers={layers} must both be >= 2")
    configs = grid(tasks)
    n_trials = len(configs) if n_trials is None else n_trials
    if not 0 <= running <= n_trials:
        raise ValueError(f"running={running} must be between 0 and n_trials={n_trials}")
    # Fewer trials than the grid: spread them over it, so every setting appears.
    picks = (np.linspace(0, len(configs) - 1, n_trials).round().astype(int) if n_trials < len(configs)
             else np.arange(n_trials) % len(configs))
    rng = np.random.default_rng(seed)
    for i, pick in enumerate(picks):
        config = dict(configs[pick], seed=seed + i // len(configs), epochs=epochs)
        done = epochs // 2 if i >= n_trials - running else epochs
        _simulate(sweep, f"trial_{i:05d}", config, layers, done, rng).write(store)
        if progress and (i + 1) % 100 == 0:
            print(f"synthetic store: {i + 1}/{n_trials} trials", file=sys.stderr, flush=True)
    return n_trials


def _simulate(sweep: str, trial_id: str, config: dict, layers: int, done: int, rng) -> TrialRecord:
    from layrot_core import layer_multipliers

    cfg = resolve(config)
    chance, top, epoch_seconds = _TASK_LEVELS[cfg.task]
    planned, rho0, setting = cfg.epochs, cfg.rho0, cfg.setting_spec
    e = np.arange(1, planned + 1)
    lr = np.array([cfg.rate(i) for i in range(planned)])
    depth = np.linspace(0.0, 1.0, layers)
    t = e[:, None] / planned                                    # fraction of training, (E, 1)

    if setting.layca:
        drive = np.cumsum(lr[:, None] * np.array(layer_multipliers(layers, cfg.alpha)), axis=0) / planned
        rotation = 1 - np.exp(-125 * drive)
        fit = 1 - 0.25 * math.exp(-400 * rho0)
        trains = rho0 < 3.0                                     # beyond: turns too fast to learn
        diverges = False
    elif setting.name == "sgd":
        ceiling = 0.6 * (1 - math.exp(-10 * rho0)) * (1 - 0.6 * depth)
        rotation = ceiling * (1 - np.exp(-t / 0.1))
        fit, trains, diverges = 1 - 0.25 * math.exp(-150 * rho0), True, rho0 >= 3.0
    elif setting.name == "sgd-l2":
        speed = 40 * rho0 * rng.uniform(0.8, 1.2, layers)
        rotation = 1 - np.exp(-speed * t)
        fit, trains, diverges = 1 - 0.25 * math.exp(-150 * rho0), True, rho0 >= 3.0
    else:                                                       # adaptive, no Layca
        ceiling = min(0.9, 300 * rho0) * (0.3 + 0.5 * depth)
        rotation = ceiling * (1 - np.exp(-t / 0.15))
        fit, trains, diverges = 1 - 0.25 * math.exp(-3000 * rho0), True, rho0 >= 3.0**-2
    rotation = np.clip(rotation + rng.normal(0, 0.004, rotation.shape), 0.0, 1.0)

    final = rotation[-1]
    quality = 0.5 * final.mean() + 0.5 * final.min()
    if trains:
        train_final = min(1.0, fit + rng.normal(0, 0.002))
        test_final = chance + (top - chance) * (0.55 + 0.45 * quality) * train_final**4
        test_final += rng.normal(0, 0.008)
        if setting.layca:                                       # rates above 3^-3 overshoot a little
            test_final -= (top - chance) * 0.04 * max(0.0, math.log(rho0, 3) + 3)
    else:
        train_final = test_final = chance
    val_final = test_final + rng.normal(0.005, 0.005)

    if diverges:
        done = min(done, int(rng.integers(1, 4)))
    progress = (1 - np.exp(-6 * e / planned)) / (1 - math.exp(-6))

    def curve(final_value: float, power: float) -> np.ndarray:
        values = chance + (final_value - chance) * progress**power
        return np.clip(values + rng.normal(0, 0.003, planned), 0.0, 1.0)

    train_acc, val_acc, test_acc = curve(train_final, 1.0), curve(val_final, 0.8), curve(test_final, 0.8)
    train_loss = -0.8 * np.log(np.maximum(train_acc, 1e-3)) + 0.01
    if diverges:
        train_acc[done - 1] = val_acc[done - 1] = test_acc[done - 1] = chance
        train_loss[done - 1] = math.nan
    seconds = rng.normal(epoch_seconds, 0.03 * epoch_seconds, planned)
    names = [f"conv{i + 1}.weight" for i in range(layers - 1)] + ["fc.weight"]
    # distances of weights that keep their norm (Layca) or grow a little (others), from the rotation
    norm_ratio = 1.0 if setting.layca else 1.0 + 0.5 * rotation
    relative = np.sqrt(np.maximum(1 + norm_ratio**2 - 2 * norm_ratio * (1 - rotation), 0.0))
    norm_ratio = np.broadcast_to(norm_ratio, rotation.shape)
    record = TrialRecord(sweep, trial_id, cfg)
    for i in range(done):
        final = i == planned - 1 or (diverges and i == done - 1)
        record.add_epoch({
            "epoch": i + 1, "lr": float(lr[i]), "train_loss": float(train_loss[i]),
            "train_acc": float(train_acc[i]), "val_acc": float(val_acc[i]), "test_acc": float(test_acc[i]),
            "val_images": 6000 if final else 600, "test_images": 10000 if final else 1000,
            "relative_distance_network": float(np.sqrt(np.mean(relative[i] ** 2))),
            "epoch_seconds": float(seconds[i]), "diverged": diverges and i == done - 1,
            LAYER_NAMES: names, "cosine_distance": rotation[i].tolist(),
            "relative_distance": relative[i].tolist(), "norm_ratio": norm_ratio[i].tolist(),
        })
    if diverges:
        record.finish("diverged")
    elif done == planned:
        record.finish("completed")
    return record
