"""Per setting, how its best configuration's layers rotated and what the paper's rule of thumb
suggests, in sentences that carry the numbers that triggered them.

The numbers are seed means of the best configuration (``best_in_setting``): final cosine
distance min / mean / max over layers, the first-to-last layer ratio, and the epoch from which
the layer-mean rotation never rose by more than ``STOP_FRACTION`` of its peak again. A
comparison quoted from the store (e.g. Layca-Adam against Adam) is the difference of the two
best configurations' seed-mean test accuracies.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.configurations import seeds_of
from analysis.load import Results
from layrot.run import SETTINGS, rate_label

STOP_FRACTION = 0.05          # "stopped growing": within this fraction of its peak from then on
LOW_ROTATION = 0.5            # least-turned layer below this: far from the paper's "every layer near 1"
HIGH_ROTATION = 0.9           # every layer beyond this: as far as rotation goes
UNEVEN_RATIO = 2.0            # first/last layer distance beyond this factor (or below its inverse)


@dataclass(frozen=True)
class Diagnosis:
    task: str
    setting: str
    numbers: dict             # what the sentences quote
    sentences: list[str]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _curves(results: Results, trials: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """(layer-mean cosine distance per epoch, final distance per layer), both seed means."""
    rows = results.rows_of("rotation", trials)
    if rows.empty:
        return None
    per_epoch = rows.groupby("epoch")["cosine_distance"].mean().sort_index().to_numpy()
    last = rows[rows["epoch"] == rows.groupby("trial_id", observed=True)["epoch"].transform("max")]
    per_layer = last.groupby("layer")["cosine_distance"].mean().sort_index().to_numpy()
    return per_epoch, per_layer


def stop_epoch(curve: np.ndarray) -> int:
    """First epoch (1-based) from which the curve never rises more than STOP_FRACTION of its peak."""
    peak = np.nanmax(curve)
    later_max = np.maximum.accumulate(curve[::-1])[::-1]
    return int(np.argmax(later_max - curve <= STOP_FRACTION * peak)) + 1


def _gain(configs: pd.DataFrame, task: str, better: str, worse: str) -> str | None:
    best = configs[(configs["task"] == task) & configs["best_in_setting"]].set_index("setting")
    if better not in best.index or worse not in best.index:
        return None
    delta = best.loc[better, "test_acc_mean"] - best.loc[worse, "test_acc_mean"]
    return (f"in this store {SETTINGS[better].label} tested {100 * delta:+.1f} points against "
            f"{SETTINGS[worse].label} ({_pct(best.loc[better, 'test_acc_mean'])} vs "
            f"{_pct(best.loc[worse, 'test_acc_mean'])})")


def diagnose(results: Results, configs: pd.DataFrame, min_train_acc: float) -> list[Diagnosis]:
    """One diagnosis per best_in_setting row of ``configs``."""
    out = []
    for _, row in configs[configs["best_in_setting"]].iterrows():
        task, setting = row["task"], row["setting"]
        curves = _curves(results, seeds_of(results.trials, row))
        n = {"min": row["rotation_min_mean"], "mean": row["rotation_mean_mean"], "max": row["rotation_max_mean"],
             "train": row["train_acc_mean"], "test": row["test_acc_mean"], "seeds": int(row["seeds"])}
        config = f"α={row['alpha']:g}, ρ(0)={rate_label(row['rho0'])}"
        sentences = [f"Best configuration {config} ({n['seeds']} seed(s)): test {_pct(n['test'])}, train "
                     f"{_pct(n['train'])}; final cosine distance min / mean / max over layers "
                     f"{n['min']:.2f} / {n['mean']:.2f} / {n['max']:.2f}."]
        if curves is not None:
            per_epoch, per_layer = curves
            n["first_last"] = per_layer[0] / per_layer[-1] if per_layer[-1] > 0 else np.inf
            n["stop"], n["epochs"] = stop_epoch(per_epoch), len(per_epoch)
            sentences.append(f"First layer {per_layer[0]:.2f}, last {per_layer[-1]:.2f} (ratio "
                             f"{n['first_last']:.2f}); the mean rotation stopped growing at epoch {n['stop']} of "
                             f"{n['epochs']} (within {100 * STOP_FRACTION:g}% of its peak from then on).")
        fits = n["train"] >= min_train_acc
        if fits and n["min"] < LOW_ROTATION:
            advice = (f"Layers stop at {n['min']:.2f}-{n['max']:.2f} while training accuracy is {_pct(n['train'])}: "
                      "the paper finds that weight decay or Layca raise both rotation and test accuracy")
            plain = setting.removeprefix("layca-")
            pairs = [(f"layca-{plain}", plain)] + ([("sgd-l2", "sgd")] if plain in ("sgd", "sgd-l2") else [])
            evidence = [g for g in (_gain(configs, task, a, b) for a, b in pairs) if g]
            sentences.append(advice + ("; " + "; ".join(evidence) if evidence else "") + ".")
        elif not fits and n["min"] >= HIGH_ROTATION:
            sentences.append(f"Every layer turned past {n['min']:.2f} yet training accuracy is {_pct(n['train'])}, "
                             f"below the {_pct(min_train_acc)} threshold: the paper's \"too high a rate prevents "
                             "training\"; a smaller ρ(0) is indicated.")
        elif not fits:
            sentences.append(f"Training accuracy {_pct(n['train'])} is below the {_pct(min_train_acc)} threshold "
                             f"with the least-turned layer at {n['min']:.2f}: the run had not fitted its data "
                             "(more epochs, or a larger ρ(0) for a Layca setting, is what the paper's protocol uses).")
        elif n["min"] >= HIGH_ROTATION:
            sentences.append(f"Every layer turned past {n['min']:.2f} with training accuracy {_pct(n['train'])}: "
                             "what the paper finds in its best-generalizing runs.")
        ratio = n.get("first_last", 1.0)
        if not 1 / UNEVEN_RATIO <= ratio <= UNEVEN_RATIO:
            sentences.append(f"Rotation is uneven across depth (first / last layer {ratio:.2f}); the paper "
                             "ties uneven rotation to worse generalization, and Layca with α=0 turns every layer "
                             "at one rate.")
        if row["rho0_at_grid_edge"]:
            rhos = configs[(configs["task"] == task) & (configs["setting"] == setting)]["rho0"]
            side = "smallest" if row["rho0"] == rhos.min() else "largest"
            sentences.append(f"Its ρ(0)={rate_label(row['rho0'])} is the {side} rate this setting tried "
                             f"({rate_label(rhos.min())}..{rate_label(rhos.max())}): the best may lie beyond it.")
        out.append(Diagnosis(task, setting, n, sentences))
    return out
