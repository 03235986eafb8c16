"""One training configuration: the plain dict a sweep or the CLI passes, validated once.

Keys, defaults and units (everything else is fixed by the task, see ``trainables.tasks``):

    task           str    a name in trainables.tasks.TASKS
    optimizer      str    sgd | sgd_l2 | adam | rmsprop | adagrad  (trainables.optimizers)
    layca          bool   wrap the optimizer in layrot_core.Layca
    alpha          float  eq. 1 layer-wise multiplier parameter in [-1, 1] (0 = uniform)
    rho0           float  initial rate (> 0); rotation per step is atan(rate) under Layca
    seed           int    fixes initialisation and data order (the validation split is fixed)
    epochs         int    None = the task's; milestones scale to keep their fractions
    data_fraction  float  in (0, 1]: use this fraction of the task's splits (smoke runs)
    device         str    auto | cpu | cuda | cuda:N
    data_dir       str    None = $LAYROT_DATA or ~/.cache/layrot
    bf16           bool   bf16 autocast for forward/backward (CUDA)
    compile        bool   torch.compile the model
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from trainables.optimizers import OPTIMIZERS
from trainables.tasks import Task, get_task

_CUDA = re.compile(r"^cuda(:\d+)?$")
# Keys that say where and how fast a run executes, not what it computes: a checkpoint may
# resume under other values.
RUNTIME_KEYS = ("device", "data_dir", "compile")


@dataclass(frozen=True)
class TrainConfig:
    task: str
    optimizer: str = "sgd"
    layca: bool = False
    alpha: float = 0.0
    rho0: float = 3.0**-3
    seed: int = 0
    epochs: int | None = None
    data_fraction: float = 1.0
    device: str = "auto"
    data_dir: str | None = None
    bf16: bool = False
    compile: bool = False

    @property
    def spec(self) -> Task:
        return get_task(self.task)

    @property
    def num_epochs(self) -> int:
        return self.epochs if self.epochs is not None else self.spec.epochs

    @property
    def milestones(self) -> tuple[int, ...]:
        return self.spec.milestones_for(self.num_epochs)

    @property
    def fraction(self) -> float:
        """Fraction of the dataset's every split actually used: the task's times ours."""
        return self.spec.data_fraction * self.data_fraction

    @property
    def weight_decay(self) -> float:
        """torch weight_decay actually used: 2 * lambda for the "+L2" optimizers, else 0."""
        return 2 * self.spec.l2 if OPTIMIZERS[self.optimizer].l2 else 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def experiment(self) -> dict:
        """The keys that determine the results (all but ``RUNTIME_KEYS``)."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_KEYS}


def resolve(config: dict) -> TrainConfig:
    """Validate a plain config dict and fill defaults; one-line ValueError on bad input."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; allowed: {sorted(known)}")
    if "task" not in config:
        raise ValueError("config needs a 'task'")
    cfg = TrainConfig(**config)
    get_task(cfg.task)
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    if not (isinstance(cfg.alpha, (int, float)) and -1.0 <= cfg.alpha <= 1.0):
        raise ValueError(f"alpha={cfg.alpha!r} is outside [-1, 1]")
    if not (isinstance(cfg.rho0, (int, float)) and math.isfinite(cfg.rho0) and cfg.rho0 > 0):
        raise ValueError(f"rho0={cfg.rho0!r} must be a finite number > 0")
    if cfg.epochs is not None and not (isinstance(cfg.epochs, int) and cfg.epochs >= 1):
        raise ValueError(f"epochs={cfg.epochs!r} must be an integer >= 1 (or None for the task's)")
    if not (isinstance(cfg.data_fraction, (int, float)) and 0 < cfg.data_fraction <= 1):
        raise ValueError(f"data_fraction={cfg.data_fraction!r} must be in (0, 1]")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise ValueError(f"seed={cfg.seed!r} must be an integer")
    for flag in ("layca", "bf16", "compile"):
        if not isinstance(getattr(cfg, flag), bool):
            raise ValueError(f"{flag}={getattr(cfg, flag)!r} must be true or false")
    if cfg.data_dir is not None and not isinstance(cfg.data_dir, str):
        raise ValueError(f"data_dir={cfg.data_dir!r} must be a path string (or None for the default)")
    if not (isinstance(cfg.device, str) and (cfg.device in ("auto", "cpu") or _CUDA.match(cfg.device))):
        raise ValueError(f"device={cfg.device!r}; allowed: auto, cpu, cuda, cuda:N")
    if cfg.data_dir is not None:   # absolute: Ray Tune trials run in a temporary working directory
        cfg = replace(cfg, data_dir=str(Path(cfg.data_dir).expanduser().resolve()))
    return cfg
