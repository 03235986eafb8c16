"""Does a measure rank configurations as their test accuracy does? Over configurations (seed
means), never over runs: seeds of one configuration are repeats, not independent evidence.

Only configurations that fit their training data enter (``fits``: seed-mean final training
accuracy at least the study's threshold), as the paper's claim is about such runs. A family
with fewer than ``MIN_CONFIGURATIONS`` of them gets no number: "too few configurations".
The measures are the final cosine distance from init (layer rotation) and, as baselines, the
relative L2 distance from init and the weight-norm ratio: the same configurations, the same
statistics, so they can be compared.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.stats import correlate, granulated_kendall
from layrot.run import CONFIGURATION_KEYS, SETTINGS

MIN_CONFIGURATIONS = 5        # below, a bootstrap over configurations degenerates
MIN_GROUPS = 5                # Psi's interval resamples its groups: as few make it as degenerate
TARGET = "test_acc_mean"
AXES = ("alpha", "rho0", "setting")
# configuration-table column -> what it measures
ROTATION_MEASURES = {
    "rotation_mean_mean": "cosine distance, mean over layers",
    "rotation_min_mean": "cosine distance, min over layers",
}
MEASURES = {
    **ROTATION_MEASURES,
    "relative_distance_mean_mean": "relative L2 distance from init, mean over layers",
    "relative_distance_network_mean": "relative L2 distance from init, whole network",
    "norm_ratio_mean_mean": "weight norm ratio to init, mean over layers",
}
ALL_FAMILIES = "all"


def family(setting: str) -> str:
    """A setting's optimizer family (Layca and L2 variants share it)."""
    known = SETTINGS.get(setting)
    return known.base if known else setting


def _rank_row(frame: pd.DataFrame, measure: str, n_boot: int, seed: int, recorded: bool) -> dict:
    """n and the correlations of ``frame``'s rows; ``recorded``: whether the store measured it at all."""
    usable = frame[np.isfinite(frame[measure].to_numpy(float)) & np.isfinite(frame[TARGET].to_numpy(float))]
    row = {"n": len(usable), "recorded": recorded}
    x, y = usable[measure].to_numpy(float), usable[TARGET].to_numpy(float)
    few = len(usable) < MIN_CONFIGURATIONS
    return {**row, **correlate(x[:0] if few else x, y[:0] if few else y, n_boot, seed=seed)}


def _recorded(configs: pd.DataFrame, measure: str) -> bool:
    return bool(configs[measure].notna().any())


def correlations(configs: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                 measures: dict[str, str] = ROTATION_MEASURES) -> pd.DataFrame:
    """Spearman and Kendall of each measure with test accuracy over the fitting configurations,
    per task and optimizer family ("all" pools a task's families). Counts: n (used), n_unfit."""
    rows = []
    for task, of_task in configs.groupby("task", sort=True):
        families = of_task["setting"].map(family)
        for name in [ALL_FAMILIES, *sorted(families.unique())]:
            group = of_task if name == ALL_FAMILIES else of_task[families == name]
            fit = group[group["fits"]]
            for measure in measures:
                rows.append({"task": task, "family": name, "measure": measure, "n_unfit": int((~group["fits"]).sum()),
                             **_rank_row(fit, measure, n_boot, seed, _recorded(group, measure))})
    return pd.DataFrame(rows)


def within_rho(configs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The same correlations among the fitting configurations of one rho(0) at a time: a pooled
    correlation can come from the rate alone (Simpson's paradox); within a rate it cannot."""
    rows = []
    fit = configs[configs["fits"]]
    for (task, rho0), group in fit.groupby(["task", "rho0"], sort=True):
        for measure in ROTATION_MEASURES:
            rows.append({"task": task, "rho0": rho0, "measure": measure,
                         **_rank_row(group, measure, n_boot, seed, _recorded(configs, measure))})
    return pd.DataFrame(rows)


def predictors(configs: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Rotation against the baselines: per task and measure, Kendall's tau over the fitting
    configurations and the granulated Psi over the axes alpha, rho(0) and setting."""
    rows = []
    for task, of_task in configs.groupby("task", sort=True):
        fit = of_task[of_task["fits"]]
        for measure in MEASURES:
            row = {"task": task, "measure": measure, **_rank_row(fit, measure, n_boot, seed, _recorded(of_task, measure))}
            psi = granulated_kendall(fit, measure, TARGET, AXES, CONFIGURATION_KEYS, n_boot, seed=seed)
            if psi["groups"] < MIN_GROUPS:
                psi["psi_low"] = psi["psi_high"] = np.nan
            rows.append({**row, **{k: psi[k] for k in ("psi", "psi_low", "psi_high", "groups")},
                         "per_axis": psi["per_axis"]})
    return pd.DataFrame(rows)


def interval_text(row: pd.Series | dict, name: str) -> str:
    """'0.54 [0.23, 0.76]', or why there is no number ("not recorded", "too few configurations")."""
    if not row.get("recorded", True):
        return "not recorded"
    value = row.get(name, np.nan)
    if not np.isfinite(value):
        if name == "psi":
            return "no pair of configurations differing in one axis"
        if row["n"] < MIN_CONFIGURATIONS:
            return f"too few configurations ({row['n']} < {MIN_CONFIGURATIONS})"
        return f"undefined (a constant column, n={row['n']})"
    low, high = row.get(f"{name}_low", np.nan), row.get(f"{name}_high", np.nan)
    if not (np.isfinite(low) and np.isfinite(high)):
        why = f"{row['groups']} group(s)" if name == "psi" else "no interval"
        return f"{value:.2f} (too few for an interval: {why})"
    degenerate = " (every resample gave this value)" if low == high else ""
    return f"{value:.2f} [{low:.2f}, {high:.2f}]{degenerate}"
