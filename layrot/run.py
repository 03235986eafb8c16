"""What a run is, written once: its config, the settings it trains with, the rate schedule, what
it records per epoch and per layer, how a trial is summarised, and which configuration is best.

Everything else derives from this module: the validation of spec files and of ``layrot train``,
the Tune parameter space, the store's Arrow schemas, its writer and reader, the progress lines
and the report's selection. It imports neither torch nor Ray, so a sweep driver or a report can
use it on a machine without them.

To record one more number per epoch, add a :class:`Metric` to ``EPOCH_METRICS`` (or, per kernel
layer, to ``LAYER_METRICS``) and compute it in ``trainables.train``: the store follows.
"""
from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from layrot.tasks import TASKS, Task, get_task

# ---------------------------------------------------------------------------------------------
# Settings: an optimizer with the authors' settings, optionally with L2 and/or wrapped in Layca.


@dataclass(frozen=True)
class Setting:
    """A training setting. ``name`` is the one spelling used in specs, the CLI, the store and
    Tune's trial folders; ``label`` is for figures only."""

    name: str
    base: str                      # torch.optim class name (the optimizer "family")
    kwargs: dict
    l2: bool                       # the task's L2 penalty as weight_decay = 2 * lambda
    layca: bool                    # wrapped in layrot_core.Layca
    label: str


# Keras defaults differ from torch's: eps is 1e-7 for Adam, RMSprop and Adagrad, RMSprop's decay
# (torch ``alpha``) is 0.9.
_BASES = {
    "sgd": ("SGD", {"momentum": 0.0}, "SGD"),
    "adam": ("Adam", {"betas": (0.9, 0.999), "eps": 1e-7}, "Adam"),
    "rmsprop": ("RMSprop", {"alpha": 0.9, "eps": 1e-7}, "RMSprop"),
    "adagrad": ("Adagrad", {"eps": 1e-7}, "Adagrad"),
}
_WITH_L2 = ("sgd",)                # the paper pairs L2 with plain SGD only

SETTINGS: dict[str, Setting] = {
    s.name: s
    for layca in (False, True)
    for key, (base, kwargs, label) in _BASES.items()
    for l2 in ((False, True) if key in _WITH_L2 else (False,))
    for s in [Setting(("layca-" if layca else "") + key + ("-l2" if l2 else ""), base, kwargs, l2, layca,
                      ("Layca-" if layca else "") + label + ("+L2" if l2 else ""))]
}


def get_setting(name: object) -> Setting:
    """The setting of a canonical name; an old spelling ("sgd+layca", "sgd_l2", "Layca-SGD")
    is refused with the canonical one."""
    problem = _setting_problem(name)
    if problem:
        raise ValueError(f"setting={name!r} is not allowed: {problem}")
    return SETTINGS[name]


def _setting_problem(name: object) -> str | None:
    if isinstance(name, str) and name in SETTINGS:
        return None
    guess = _canonical(name) if isinstance(name, str) else None
    return f"write {guess!r}" if guess else f"one of {', '.join(SETTINGS)}"


def _canonical(text: str) -> str | None:
    words = [w for w in re.split(r"[-_+ ]+", text.strip().lower()) if w]
    name = ("layca-" if "layca" in words else "") + "-".join(w for w in words if w != "layca")
    return name if name in SETTINGS else None


# ---------------------------------------------------------------------------------------------
# Rates: the paper writes its grids as powers of three.

_POWER = re.compile(r"^3\^(-?\d+(?:\.5)?)$")
_POWER_RANGE = re.compile(r"^3\^(-?\d+)\s*\.\.\s*3\^(-?\d+)$")
RATE_FORMS = "a number, '3^k' (k a whole or half number, e.g. 3^-3.5) or the range '3^a..3^b'"


def parse_rates(item: object, *, text_numbers: bool = False) -> list[float]:
    """One rate or range of rates: a number, "3^k" or the inclusive whole-exponent range
    "3^a..3^b". Decimal text ("0.1") is a number only with ``text_numbers`` (command lines): in
    a spec file a quoted number is refused, as for every other numeric field."""
    if _is_real(item):
        return [float(item)]
    if isinstance(item, str):
        text = item.strip()
        if m := _POWER.match(text):
            return [3.0 ** float(m.group(1))]
        if m := _POWER_RANGE.match(text):
            a, b = int(m.group(1)), int(m.group(2))
            step = 1 if b >= a else -1
            return [3.0**k for k in range(a, b + step, step)]
        if text_numbers:
            try:
                return [float(text)]
            except ValueError:
                pass
    raise ValueError(f"{item!r} is not a rate; write {RATE_FORMS}")


def rate_label(rate: float) -> str:
    """A rate as the paper writes its grid ("3^-3", "3^-3.5") where it is such a power of 3."""
    k = math.log(rate, 3) if rate > 0 else math.nan
    if math.isfinite(k) and abs(2 * k - round(2 * k)) < 1e-6:
        half = round(2 * k) / 2
        return f"3^{half:g}"
    return f"{rate:.3g}"


# ---------------------------------------------------------------------------------------------
# The config of one run: fields with their units and allowed values, one validator.


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _check_task(v):
    return None if isinstance(v, str) and v in TASKS else f"one of {', '.join(TASKS)}"


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "task": _check_task,
    "setting": _setting_problem,
    "alpha": lambda v: None if _is_real(v) and -1 <= v <= 1 else "a number in [-1, 1]",
    "rho0": lambda v: None if _is_real(v) and math.isfinite(v) and v > 0 else "a finite number > 0",
    "seed": lambda v: None if _is_int(v) and v >= 0 else "an integer >= 0",
    "epochs": lambda v: None if v is None or (_is_int(v) and v >= 1) else "an integer >= 1 (or null: the task's)",
    "data_fraction": lambda v: None if _is_real(v) and 0 < v <= 1 else "a number in (0, 1]",
    "device": lambda v: None if isinstance(v, str) and _DEVICE.match(v) else "auto, cpu, cuda or cuda:N",
    "data_dir": lambda v: None if v is None or isinstance(v, str) else "a path (or null: $LAYROT_DATA or ~/.cache/layrot)",
    "bf16": lambda v: None if isinstance(v, bool) else "true or false",
    "compile": lambda v: None if isinstance(v, bool) else "true or false",
}


def _field(default: Any, kind: type, doc: str, *, runtime: bool = False) -> Any:
    """A config field: ``kind`` is its value's type once resolved (what the store's column holds)."""
    return field(default=default, metadata={"kind": kind, "doc": doc, "runtime": runtime})


@dataclass(frozen=True)
class RunConfig:
    """A validated run config (build it with :func:`resolve`). Units in each field's doc."""

    task: str = _field(MISSING, str, "a task name (layrot.tasks): data, model and protocol")
    setting: str = _field("sgd", str, "a setting name (SETTINGS): optimizer, L2, Layca")
    alpha: float = _field(0.0, float, "eq. 1 layer-wise rate parameter in [-1, 1]; 0 = the same rate for every layer")
    rho0: float = _field(3.0**-3, float, "initial rate; per step, Layca turns each layer by atan(rate)")
    seed: int = _field(0, int, "initialisation and data order (the validation split is fixed)")
    epochs: int | None = _field(None, int, "epochs; null = the task's; milestones keep their fractions")
    data_fraction: float = _field(1.0, float, "use this fraction of every split the task uses (smoke runs)")
    device: str = _field("auto", str, "auto | cpu | cuda | cuda:N", runtime=True)
    data_dir: str | None = _field(None, str, "data root; null = $LAYROT_DATA or ~/.cache/layrot", runtime=True)
    bf16: bool = _field(False, bool, "bf16 autocast for forward and backward (CUDA)")
    compile: bool = _field(False, bool, "torch.compile the model", runtime=True)

    @property
    def task_spec(self) -> Task:
        return get_task(self.task)

    @property
    def setting_spec(self) -> Setting:
        return SETTINGS[self.setting]

    @property
    def milestones(self) -> tuple[int, ...]:
        return self.task_spec.milestones_for(self.epochs)

    @property
    def fraction(self) -> float:
        """Fraction of the data set's splits used for training and per-epoch evaluation."""
        return self.task_spec.data_fraction * self.data_fraction

    @property
    def final_fraction(self) -> float:
        """Fraction of the held-out and test splits that score the final epoch: all of them
        unless the run was cut down on purpose (``data_fraction``)."""
        return self.data_fraction

    @property
    def weight_decay(self) -> float:
        """torch weight_decay actually used: 2 * lambda for the "+L2" settings, else 0."""
        return 2 * self.task_spec.l2 if self.setting_spec.l2 else 0.0

    def rate_factor(self, epoch: int) -> float:
        """rho(e) / rho0 for epoch e counted from 0: decay ** (number of milestones <= e), as in
        the authors' code. The one definition of the schedule."""
        return self.task_spec.decay ** sum(m <= epoch for m in self.milestones)

    def rate(self, epoch: int) -> float:
        return self.rho0 * self.rate_factor(epoch)

    def to_dict(self) -> dict:
        return asdict(self)

    def experiment(self) -> dict:
        """The keys that determine the results (not where or how fast they are computed)."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_KEYS}


CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig))
CONFIG_KINDS: dict[str, type] = {f.name: f.metadata["kind"] for f in fields(RunConfig)}
RUNTIME_KEYS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig) if f.metadata["runtime"])
EXPERIMENT_KEYS: tuple[str, ...] = tuple(k for k in CONFIG_FIELDS if k not in RUNTIME_KEYS)
# A configuration is a run's experiment without its seed: seeds are its repeats.
CONFIGURATION_KEYS: tuple[str, ...] = tuple(k for k in EXPERIMENT_KEYS if k != "seed")


def field_doc(name: str) -> str:
    return next(f.metadata["doc"] for f in fields(RunConfig) if f.name == name)


def check_field(name: str, value: object) -> None:
    """Raise a one-line ValueError naming the field, the value and what is allowed."""
    if name not in _CHECKS:
        raise ValueError(f"unknown config key {name!r}; allowed: {', '.join(CONFIG_FIELDS)}")
    allowed = _CHECKS[name](value)
    if allowed:
        raise ValueError(f"{name}={value!r} is not allowed: {allowed}")


def resolve(config: Mapping[str, Any]) -> RunConfig:
    """Validate a plain config dict and fill defaults. Numbers never accept booleans or text."""
    if "task" not in config:
        raise ValueError("config needs a 'task'")
    for name, value in config.items():
        check_field(name, value)
    cfg = RunConfig(**config)
    task = cfg.task_spec
    return replace(
        cfg,
        alpha=float(cfg.alpha), rho0=float(cfg.rho0), seed=int(cfg.seed), data_fraction=float(cfg.data_fraction),
        epochs=task.epochs if cfg.epochs is None else int(cfg.epochs),
        # absolute: Ray Tune trials run in a temporary working directory
        data_dir=None if cfg.data_dir is None else str(Path(cfg.data_dir).expanduser().resolve()),
    )


# ---------------------------------------------------------------------------------------------
# What a run records: one dict per epoch (the keys of EPOCH_KEYS), and per kernel layer a list.


@dataclass(frozen=True)
class Metric:
    name: str
    kind: type                     # int | float | bool
    doc: str


EPOCH_METRICS: tuple[Metric, ...] = (
    Metric("epoch", int, "finished epochs, 1..N"),
    Metric("lr", float, "base rate the optimizer applied during the epoch (each group's lr / lr_scale)"),
    Metric("train_loss", float, "mean training loss over the epoch (nan once diverged)"),
    Metric("train_acc", float, "training accuracy over the epoch's batches, a fraction"),
    Metric("val_acc", float, "validation accuracy, a fraction of val_images"),
    Metric("test_acc", float, "test accuracy, a fraction of test_images"),
    Metric("val_images", int, "images val_acc counts: the task's subset, the whole split at the last epoch"),
    Metric("test_images", int, "images test_acc counts: the task's subset, the whole split at the last epoch"),
    Metric("relative_distance_network", float, "||W - W0|| / ||W0|| over all kernel layers as one vector"),
    Metric("epoch_seconds", float, "wall time of the epoch, training and evaluation"),
    Metric("diverged", bool, "a non-finite training loss stopped the run during this epoch"),
)
LAYER_NAMES = "layer_names"        # per-epoch list of the kernel layers' names, forward order
LAYER_METRICS: tuple[Metric, ...] = (  # per epoch, one value per kernel layer (layrot_core.RotationMonitor)
    Metric("cosine_distance", float, "1 - cos(w, w0): the layer's rotation from its initial weights"),
    Metric("relative_distance", float, "||w - w0|| / ||w0||"),
    Metric("norm_ratio", float, "||w|| / ||w0||"),
)
EPOCH_KEYS: tuple[str, ...] = (*(m.name for m in EPOCH_METRICS), LAYER_NAMES, *(m.name for m in LAYER_METRICS))


def network_relative_distance(relative: Iterable[float], initial_norms: Iterable[float]) -> float:
    """||W - W0|| / ||W0|| of all layers together, from each layer's ||w - w0|| / ||w0|| and ||w0||."""
    pairs = [(d * n, n) for d, n in zip(relative, initial_norms)]
    return math.sqrt(math.fsum(a * a for a, _ in pairs) / math.fsum(n * n for _, n in pairs))


# ---------------------------------------------------------------------------------------------
# A trial's summary: what the trials table holds besides its config.

# "running" only while a sweep runs; "pruned": its sweep's scheduler stopped it early (it keeps
# the epochs it ran, but never counts as finished)
STATUSES = ("running", "completed", "diverged", "errored", "pruned")
FINISHED = ("completed", "diverged")   # ran to their end: the runs analysis may rank
ENDED = (*FINISHED, "pruned")         # will not run again: a resumed sweep keeps them
HIGH_ROTATION = 0.9                # rotation_frac_above_0_9 counts layers beyond this distance


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


@dataclass(frozen=True)
class Summary:
    name: str
    kind: type
    doc: str
    of: Callable[[list[dict]], Any]    # the trial's epoch records (non-empty) -> the value
    before_first_epoch: Any = None


def _final(key: str) -> Callable[[list[dict]], Any]:
    return lambda epochs: epochs[-1][key]


SUMMARIES: tuple[Summary, ...] = (
    Summary("epochs_done", int, "epochs the trial finished", len, 0),
    Summary("final_train_loss", float, "train_loss of the last epoch", _final("train_loss")),
    Summary("final_train_acc", float, "train_acc of the last epoch", _final("train_acc")),
    Summary("final_val_acc", float, "val_acc of the last epoch (the whole held-out split)", _final("val_acc")),
    Summary("final_test_acc", float, "test_acc of the last epoch (the whole test split)", _final("test_acc")),
    Summary("final_val_images", int, "images final_val_acc counts", _final("val_images")),
    Summary("final_test_images", int, "images final_test_acc counts", _final("test_images")),
    Summary("rotation_mean", float, "final cosine distance, mean over layers",
            lambda e: _mean(e[-1]["cosine_distance"])),
    Summary("rotation_min", float, "final cosine distance, min over layers", lambda e: min(e[-1]["cosine_distance"])),
    Summary("rotation_max", float, "final cosine distance, max over layers", lambda e: max(e[-1]["cosine_distance"])),
    Summary("rotation_frac_above_0_9", float, f"fraction of layers whose final distance exceeds {HIGH_ROTATION}",
            lambda e: _mean([float(d > HIGH_ROTATION) for d in e[-1]["cosine_distance"]])),
    Summary("relative_distance_mean", float, "final ||w - w0|| / ||w0||, mean over layers",
            lambda e: _mean(e[-1]["relative_distance"])),
    Summary("relative_distance_network", float, "final ||W - W0|| / ||W0|| of the whole network",
            _final("relative_distance_network")),
    Summary("norm_ratio_mean", float, "final ||w|| / ||w0||, mean over layers", lambda e: _mean(e[-1]["norm_ratio"])),
    Summary("num_layers", int, "kernel layers", lambda e: len(e[-1][LAYER_NAMES])),
    Summary("wall_seconds", float, "sum of the epochs' wall times",
            lambda e: math.fsum(m["epoch_seconds"] for m in e), 0.0),
)


def summarize(epochs: list[dict]) -> dict[str, Any]:
    """The trial summary of its epoch records (in epoch order)."""
    return {s.name: (s.of(epochs) if epochs else s.before_first_epoch) for s in SUMMARIES}


# ---------------------------------------------------------------------------------------------
# Selection: the paper selects on validation accuracy, never on test; seeds are repeats.

SELECTION_METRIC = "final_val_acc"
MIN_TRAIN_ACC = 0.99               # the paper's claims are about runs that fit their training data
# A study's analysis settings, fixed in its spec files before the runs (pre-registered) and
# stored with the sweep, so the report judges it by the rule it announced: name -> (default, doc).
ANALYSIS_SETTINGS: dict[str, tuple[Any, str]] = {
    "min_train_acc": (MIN_TRAIN_ACC, "final training accuracy a run needs to count as fitting its data, in [0, 1]"),
}


def analysis_settings(given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The analysis settings with defaults filled; a one-line ValueError on a bad one."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(ANALYSIS_SETTINGS))
    if unknown:
        raise ValueError(f"unknown analysis setting(s) {unknown}; allowed: {', '.join(ANALYSIS_SETTINGS)}")
    threshold = given.get("min_train_acc", MIN_TRAIN_ACC)
    if not (_is_real(threshold) and 0 <= threshold <= 1):
        raise ValueError(f"min_train_acc={threshold!r} is not allowed: a number in [0, 1]")
    return {"min_train_acc": float(threshold)}


def configuration(config: Mapping[str, Any]) -> tuple:
    """The hashable configuration of a run config: its experiment keys without the seed."""
    return tuple((k, config[k]) for k in CONFIGURATION_KEYS)


def best_configuration(scores: Iterable[tuple[Hashable, float]]) -> Hashable | None:
    """The configuration with the highest seed-mean score among ``(configuration, one seed's
    score)`` pairs; non-finite scores are left out. Ties go to the configuration seen first."""
    by_config: dict[Hashable, list[float]] = {}
    for key, score in scores:
        if score is not None and math.isfinite(score):
            by_config.setdefault(key, []).append(float(score))
    if not by_config:
        return None
    return max(by_config, key=lambda k: math.fsum(by_config[k]) / len(by_config[k]))
