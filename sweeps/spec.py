"""Sweep spec files: YAML in, a validated grid out, before anything is launched.

A spec names one sweep (one Tune experiment, one folder per store table). Its grid is the
product of five axes; everything else is fixed for every trial::

    name: quick                      # optional, default: the file name without .yaml
    description: free text
    tasks: [fmnist]                  # layrot.tasks names
    settings: [layca-sgd, sgd, sgd-l2, adam, layca-adam]   # layrot.run.SETTINGS names
    alpha: [0.0]                     # eq. 1 multipliers, each in [-1, 1]          (default [0])
    rho0: [3^-7..3^2]                # powers of 3 ("3^k", "3^-3.5", ranges "3^a..3^b") or numbers
    seeds: [0]                       #                                              (default [0])
    epochs: 5                        # override the task's epochs (milestones scale with it)
    data_fraction: 1.0               # fraction of every split
    train: {device: auto}            # any other layrot.run config key, fixed for every trial
    resources: {cpus: 1, gpus: 0.25} # per trial; fractional GPUs let small trials share one
    max_failures: 2                  # retries of a failing trial, each from its last checkpoint
    analysis: {min_train_acc: 0.99}  # the study's pre-registered analysis settings (layrot.run)
    scheduler: {type: rotation, grace: 1, eta: 3}   # stop trials early: none | asha | median | rotation

Every value is checked by ``layrot.run.check_field``, the check a single training gets, so a
spec accepts exactly what a trial accepts: numbers are never booleans (``yes``) or quoted text.
A study is a few such files.
"""
from __future__ import annotations

import difflib
import itertools
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from layrot.run import analysis_settings, check_field, parse_rates, resolve
from sweeps.pruning import Pruning, parse_pruning
from sweeps.schema import check_sweep_name

DEFAULT_RHO0 = ["3^-7..3^2"]  # the paper's grid
AXES = ("tasks", "settings", "alpha", "rho0", "seeds")
# spec axis -> the run config key each value fills
AXIS_KEYS = {"tasks": "task", "settings": "setting", "alpha": "alpha", "rho0": "rho0", "seeds": "seed"}
RENAMED_KEYS = {"optimizers": "settings"}
KEYS = ("name", "description", *AXES, "epochs", "data_fraction", "train", "resources", "max_failures", "analysis",
        "scheduler")
RESOURCE_KEYS = ("cpus", "gpus")
SMOKE_EPOCHS = 2
SMOKE_DATA_FRACTION = 0.05
SMOKE_AXIS_VALUES = 2


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-3 as text; spec files mean a number (YAML 1.2 reads it so)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    tasks: tuple[str, ...]
    settings: tuple[str, ...]
    alpha: tuple[float, ...]
    rho0: tuple[float, ...]
    seeds: tuple[int, ...]
    fixed: dict = field(default_factory=dict)   # run config keys shared by every trial
    cpus: float = 1.0
    gpus: float = 0.0
    max_failures: int = 2
    description: str = ""
    analysis: dict = field(default_factory=analysis_settings)   # layrot.run.ANALYSIS_SETTINGS
    pruning: Pruning = field(default_factory=Pruning)           # the spec's `scheduler` (sweeps.pruning)

    def axes(self) -> dict[str, tuple]:
        """Run config key -> the grid values, in the order the grid is expanded."""
        return {AXIS_KEYS[a]: getattr(self, a) for a in AXES}

    @property
    def max_epochs(self) -> int:
        """The most epochs any trial of the grid plans (the task's, unless ``epochs`` is set)."""
        return max(resolve(config).epochs for config in self.trial_configs())

    @property
    def num_trials(self) -> int:
        return math.prod(len(v) for v in self.axes().values())

    def trial_configs(self) -> list[dict]:
        """Every grid point as a run config (what each trial trains)."""
        keys = list(self.axes())
        return [{**self.fixed, **dict(zip(keys, values))} for values in itertools.product(*self.axes().values())]

    def smoke(self) -> SweepSpec:
        """The same sweep cut down to seconds: the first values of each axis, few epochs, a
        small fraction of the data."""
        cut = {a: getattr(self, a)[:SMOKE_AXIS_VALUES] for a in AXES}
        epochs = min(self.fixed.get("epochs") or SMOKE_EPOCHS, SMOKE_EPOCHS)
        fraction = min(self.fixed.get("data_fraction", 1.0), SMOKE_DATA_FRACTION)
        fixed = {**self.fixed, "epochs": epochs, "data_fraction": fraction}
        return replace(self, **cut, fixed=fixed, name=f"{self.name}-smoke")


class _Checker:
    """Builds one-line errors that name the spec file and the field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str) -> ValueError:
        return ValueError(f"{self.source}: {where}: {message}")

    def axis(self, raw: dict, key: str, default: list | None = None) -> list:
        values = raw.get(key, default)
        if values is None:
            raise self.fail(key, "missing; give a list of values")
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise self.fail(key, "the grid is empty; give at least one value")
        return values

    def distinct(self, key: str, values: list) -> tuple:
        dupes = sorted({repr(v) for v in values if values.count(v) > 1})
        if dupes:
            raise self.fail(key, f"duplicate value(s) {', '.join(dupes)}; each grid point must be distinct")
        return tuple(values)

    def field(self, where: str, key: str, value: object) -> None:
        try:
            check_field(key, value)
        except ValueError as exc:
            raise self.fail(where, str(exc)) from None


def parse_spec(raw: object, source: str = "<spec>", default_name: str | None = None) -> SweepSpec:
    """Validate a spec's parsed YAML; the first problem raises a one-line ValueError."""
    check = _Checker(source)
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: a spec is a YAML mapping of {', '.join(KEYS)}")
    for key in raw:
        if key in RENAMED_KEYS:
            raise check.fail(str(key), f"renamed: write {RENAMED_KEYS[key]!r}")
        if key not in KEYS:
            near = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise check.fail(str(key), f"unknown key{hint}; allowed: {', '.join(KEYS)}")

    name = raw.get("name", default_name)
    try:
        check_sweep_name(name)
    except ValueError as exc:
        raise check.fail("name", str(exc)) from None

    values = {}
    for axis in AXES:
        given = check.axis(raw, axis, {"alpha": [0.0], "rho0": DEFAULT_RHO0, "seeds": [0]}.get(axis))
        if axis == "rho0":
            rates = []
            for item in given:
                try:
                    rates += parse_rates(item)
                except ValueError as exc:
                    raise check.fail(axis, str(exc)) from None
            given = rates
        for v in given:
            check.field(axis, AXIS_KEYS[axis], v)
        values[axis] = check.distinct(axis, [float(v) if axis == "alpha" else v for v in given])

    train = raw.get("train") or {}
    if not isinstance(train, dict):
        raise check.fail("train", f"{train!r} is not a mapping of run config keys")
    clash = sorted(set(train) & ({"epochs", "data_fraction"} | set(AXIS_KEYS.values())))
    if clash:
        raise check.fail("train", f"{clash} are set by their own spec keys or the grid, not under 'train'")
    fixed = {**train}
    for key in ("epochs", "data_fraction"):
        if raw.get(key) is not None:
            fixed[key] = raw[key]
    for key, value in fixed.items():
        check.field("train" if key in train else key, key, value)

    resources = raw.get("resources") or {}
    if not isinstance(resources, dict) or set(resources) - set(RESOURCE_KEYS):
        raise check.fail("resources", f"{resources!r}: allowed keys are {', '.join(RESOURCE_KEYS)}")
    cpus, gpus = resources.get("cpus", 1), resources.get("gpus", 0)
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not cpus > 0:
        raise check.fail("resources", f"cpus={cpus!r} must be a number > 0")
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0 or (gpus > 1 and gpus % 1):
        raise check.fail("resources", f"gpus={gpus!r} must be 0, a fraction in (0, 1] or a whole number")

    max_failures = raw.get("max_failures", 2)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise check.fail("max_failures", f"{max_failures!r} must be an integer >= 0")

    description = raw.get("description", "")
    if not isinstance(description, str):
        raise check.fail("description", f"{description!r} is not text")

    analysis = raw.get("analysis")
    if analysis is not None and not isinstance(analysis, dict):
        raise check.fail("analysis", f"{analysis!r} is not a mapping of analysis settings")
    try:
        analysis = analysis_settings(analysis)
    except ValueError as exc:
        raise check.fail("analysis", str(exc)) from None

    try:
        pruning = parse_pruning(raw.get("scheduler"))
    except ValueError as exc:
        raise check.fail("scheduler", str(exc)) from None

    spec = SweepSpec(name=name, **values, fixed=fixed, cpus=float(cpus), gpus=float(gpus),
                     max_failures=max_failures, description=description.strip(), analysis=analysis,
                     pruning=pruning)
    resolve(spec.trial_configs()[0])   # the fields together (each is checked above)
    if pruning.grace > spec.max_epochs:
        raise check.fail("scheduler", f"grace={pruning.grace} is not allowed: at most the trials' "
                                      f"{spec.max_epochs} epochs")
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file. A name without a folder or suffix ('quick') means the
    spec shipped in this package (sweeps/quick.yaml)."""
    path = Path(path)
    if not path.exists() and path.parent == Path(".") and not path.suffix:
        path = Path(__file__).with_name(f"{path.name}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"spec file {str(path)!r} not found")
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ValueError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    return parse_spec(raw, source=str(path), default_name=path.stem)
