"""Configurations, not runs: one row per configuration with its seeds aggregated.

A configuration is a trial's experiment without its seed (``layrot.run.CONFIGURATION_KEYS``);
its seeds are repeats. Only finished trials (``layrot.run.FINISHED``) are results: a running,
errored or any later-added status is left out, and a diverged seed counts with the (chance
level) accuracies it recorded. This table is what ``layrot summary`` prints and what the
report's tables show.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from layrot.run import CONFIGURATION_KEYS, FINISHED, MIN_TRAIN_ACC, SELECTION_METRIC, best_configuration

CONFIDENCE = 0.95
# trials-table column -> the quantity's name in the configuration table (accuracies are fractions)
QUANTITIES = {
    "final_val_acc": "val_acc",
    "final_test_acc": "test_acc",
    "final_train_acc": "train_acc",
    "rotation_mean": "rotation_mean",
    "rotation_min": "rotation_min",
    "rotation_max": "rotation_max",
    "rotation_frac_above_0_9": "rotation_frac_above_0_9",
    "relative_distance_mean": "relative_distance_mean",
    "relative_distance_network": "relative_distance_network",
    "norm_ratio_mean": "norm_ratio_mean",
}
ACCURACIES = ("val_acc", "test_acc", "train_acc")
SELECTION = QUANTITIES[SELECTION_METRIC] + "_mean"
KEYS = [*CONFIGURATION_KEYS, "weight_decay"]        # weight_decay follows from task and setting
# The columns `layrot summary` promises, in this order; the rest follow.
SUMMARY_COLUMNS = ["task", "setting", "alpha", "rho0", "weight_decay", "seeds", "val_acc_mean", "test_acc_mean",
                   "test_acc_std", "test_acc_ci_low", "test_acc_ci_high", "train_acc_mean", "rotation_mean_mean",
                   "rotation_min_mean", "best_in_setting", "rho0_at_grid_edge"]


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that are results: status in ``layrot.run.FINISHED``."""
    return trials[trials["status"].isin(FINISHED)]


def configurations(trials: pd.DataFrame, min_train_acc: float = MIN_TRAIN_ACC) -> pd.DataFrame:
    """One row per configuration of the finished trials, sorted by its keys.

    Per quantity Q of ``QUANTITIES``: Q_mean, Q_std (over seeds, ddof 1), Q_ci_low and Q_ci_high
    (Student-t 95% interval of the mean, an accuracy's clipped to [0, 1]; NaN with one seed), and
    Q_n (seeds with a value: the v1 store never measured the distances). Also ``seeds``,
    ``diverged`` (seeds that diverged),
    ``fits`` (seed-mean final training accuracy >= ``min_train_acc``), ``best_in_setting`` (per
    task and setting, the highest seed-mean validation accuracy: ``layrot.run.best_configuration``)
    and ``rho0_at_grid_edge`` (a best whose rho0 is the smallest or largest its setting tried).
    """
    if not 0 <= min_train_acc <= 1:
        raise ValueError(f"min_train_acc={min_train_acc!r} must be a training accuracy in [0, 1]")
    done = finished(trials)
    columns = [*SUMMARY_COLUMNS, *(k for k in KEYS if k not in SUMMARY_COLUMNS), "diverged", "fits"]
    if done.empty:
        return pd.DataFrame(columns=columns)
    grouped = done.groupby(KEYS, sort=True, dropna=False)
    out = grouped.agg(seeds=("seed", "size"), diverged=("status", lambda s: int((s == "diverged").sum())))
    for column, name in QUANTITIES.items():
        values = grouped[column]
        mean, std, n = values.mean(), values.std(ddof=1), values.count()
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, np.maximum(n - 1, 1)) * std / np.sqrt(n)
        half = half.where(n >= 2)
        out[f"{name}_mean"], out[f"{name}_std"] = mean, std.where(n >= 2)
        low, high = mean - half, mean + half
        if name in ACCURACIES:                          # an accuracy's interval stays within [0, 1]
            low, high = low.clip(lower=0.0), high.clip(upper=1.0)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"], out[f"{name}_n"] = low, high, n
    out = out.reset_index()
    out["fits"] = out["train_acc_mean"] >= min_train_acc
    out["best_in_setting"] = _best_in_setting(done, out)
    edges = out.groupby(["task", "setting"])["rho0"].agg(["min", "max"])
    low = out[["task", "setting"]].merge(edges, left_on=["task", "setting"], right_index=True, how="left")
    out["rho0_at_grid_edge"] = out["best_in_setting"] & (out["rho0"].eq(low["min"].to_numpy())
                                                        | out["rho0"].eq(low["max"].to_numpy()))
    rest = [c for c in out.columns if c not in columns]
    return out[[*columns, *rest]]


def _best_in_setting(done: pd.DataFrame, configs: pd.DataFrame) -> np.ndarray:
    """Which rows of ``configs`` are their (task, setting)'s best by layrot.run's one rule."""
    chosen = set()
    ordered = done.sort_values([*KEYS, "seed"])
    for _, group in ordered.groupby(["task", "setting"], sort=True):
        keys = list(zip(*(group[k] for k in KEYS)))
        best = best_configuration(zip(keys, group[SELECTION_METRIC]))
        if best is not None:
            chosen.add(best)
    return np.array([key in chosen for key in zip(*(configs[k] for k in KEYS))], dtype=bool)


def best_per_setting(configs: pd.DataFrame) -> pd.DataFrame:
    """The best_in_setting rows, per task the highest validation accuracy first."""
    best = configs[configs["best_in_setting"]]
    return best.sort_values(["task", SELECTION], ascending=[True, False]).reset_index(drop=True)


def winners(configs: pd.DataFrame) -> pd.DataFrame:
    """Per task, the best_in_setting row with the highest seed-mean validation accuracy (the
    report's star). Ties go to the first in the table's order."""
    best = configs[configs["best_in_setting"]]
    return best.loc[best.groupby("task", sort=True)[SELECTION].idxmax()].reset_index(drop=True)


def seeds_of(trials: pd.DataFrame, row: pd.Series | dict) -> pd.DataFrame:
    """The finished trials of one configuration row, by seed."""
    done = finished(trials)
    mask = np.ones(len(done), dtype=bool)
    for key in KEYS:
        mask &= (done[key] == row[key]).to_numpy()
    return done[mask].sort_values("seed")


def paired_difference(trials: pd.DataFrame, row: pd.Series | dict, reference: pd.Series | dict,
                      column: str = "final_test_acc") -> dict:
    """``row`` minus ``reference`` in ``column`` over the seeds both ran (the same seed is the
    same initialisation and data order): mean, 95% Student-t interval and the number of pairs.
    Without shared seeds, the difference of the seed means, marked unpaired (no interval)."""
    a = seeds_of(trials, row).set_index("seed")[column]
    b = seeds_of(trials, reference).set_index("seed")[column]
    shared = a.index.intersection(b.index)
    if len(shared) == 0:
        return {"delta": float(a.mean() - b.mean()), "low": np.nan, "high": np.nan, "pairs": 0, "paired": False}
    d = (a.loc[shared] - b.loc[shared]).to_numpy(float)
    out = {"delta": float(d.mean()), "low": np.nan, "high": np.nan, "pairs": len(d), "paired": True}
    if len(d) >= 2:
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        out["low"], out["high"] = out["delta"] - half, out["delta"] + half
    return out

