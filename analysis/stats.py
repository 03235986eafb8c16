"""Rank statistics: Spearman's rho and Kendall's tau-b with a deterministic bootstrap, and
Jiang et al.'s granulated Kendall coefficient Psi.

The bootstrap is reproducible: a fixed seed, and the rows sorted before resampling, so the same
data in another order gives the same interval. Statistics always use every row given: only
figures down-sample.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from layrot.run import STATUSES

BOOTSTRAP_SEED = 0


def correlate(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, confidence: float = 0.95,
              seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """Spearman's rho and Kendall's tau-b of (x, y) with p-values and percentile bootstrap
    intervals; pairs with a non-finite value are left out. NaN below 3 pairs or for a constant
    input. The pairs are sorted before resampling: the result does not depend on their order."""
    _check_bootstrap(n_boot, confidence)
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    order = np.lexsort((y[keep], x[keep]))
    x, y = x[keep][order], y[keep][order]
    out = {f"{name}{suffix}": np.nan for name in ("spearman", "kendall") for suffix in ("", "_p", "_low", "_high")}
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    spearman, kendall = stats.spearmanr(x, y), stats.kendalltau(x, y)
    n = len(x)
    draws = np.random.default_rng(seed).integers(0, n, (n_boot, n)) + n * np.arange(n_boot)[:, None]
    counts = np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)
    boot = bootstrap_replicates(x, y, counts)
    tail = 100 * (1 - confidence) / 2
    for name, result in (("spearman", spearman), ("kendall", kendall)):
        out[name], out[f"{name}_p"] = float(result.statistic), float(result.pvalue)
        if np.isfinite(boot[name]).any():
            out[f"{name}_low"], out[f"{name}_high"] = np.nanpercentile(boot[name], [tail, 100 - tail])
    return out


def bootstrap_replicates(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Spearman's rho and Kendall's tau-b of every bootstrap resample, exactly as scipy would
    compute them on the resampled data, given how often each trial was drawn (counts[b, i]).

    Working from counts costs O(n) per resample for ranks and ties (a value's rank among the
    drawn trials is the number drawn below it plus half its own draws) and one matrix product
    for Kendall's concordance: for counts c it is c^T S c / 2 with
    S_ij = sign(x_i - x_j) sign(y_i - y_j). NaN where a resample is constant.
    """
    drawn = counts.sum(1)
    rx, x_ties = _ranks_and_ties(x, counts)
    ry, y_ties = _ranks_and_ties(y, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mid = ((drawn + 1) / 2)[:, None]
        dx, dy = rx - mid, ry - mid
        weighted = counts * dx
        spearman = np.einsum("bi,bi->b", weighted, dy) / np.sqrt(
            np.einsum("bi,bi->b", weighted, dx) * np.einsum("bi,bi,bi->b", counts, dy, dy))
        concordance = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
        net = 0.5 * np.einsum("bi,bi->b", counts @ concordance, counts)
        pairs = drawn * (drawn - 1) / 2
        kendall = net / np.sqrt((pairs - x_ties) * (pairs - y_ties))
    return {"spearman": spearman, "kendall": kendall}


def _ranks_and_ties(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per resample: each trial's average rank among the drawn trials, and the number of
    drawn pairs with equal values."""
    order = np.argsort(values, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(values[order]) != 0])
    per_value = np.add.reduceat(counts[:, order], starts, axis=1)          # draws of each distinct value
    rank_of_value = np.cumsum(per_value, axis=1) - per_value + (per_value + 1) / 2
    value_of_trial = np.empty(len(values), dtype=np.intp)
    value_of_trial[order] = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(values)]))
    ties = 0.5 * ((per_value**2).sum(1) - counts.sum(1))
    return rank_of_value[:, value_of_trial], ties


def status_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per task and status (columns in the store's status order, then "all")."""
    table = pd.crosstab(trials["task"], trials["status"])
    table = table.reindex(columns=[s for s in STATUSES if s in table.columns]).rename_axis(columns=None)
    table["all"] = table.sum(axis=1)
    return table



def granulated_kendall(frame: pd.DataFrame, measure: str, target: str, axes: Sequence[str],
                       keys: Sequence[str], n_boot: int = 1000, confidence: float = 0.95,
                       seed: int = BOOTSTRAP_SEED) -> dict:
    """Jiang et al.'s (2019) granulated Kendall coefficient Psi of ``measure`` against ``target``.

    For each axis (a hyper-parameter in ``axes``), the rows (configurations, identified by
    ``keys``) are grouped by every other key; psi_axis is the mean Kendall tau-b over the groups
    with at least two rows and a defined tau (neither column constant), i.e. among configurations
    that differ only in that axis. Psi is the mean of psi_axis over the axes with such a group.
    The interval resamples each axis's groups with replacement (deterministic: groups in sorted
    order, fixed seed). Returns psi, psi_low, psi_high, groups (usable groups, all axes) and
    per_axis {axis: (psi_axis, groups)}.
    """
    _check_bootstrap(n_boot, confidence)
    x_all, y_all = frame[measure].to_numpy(float), frame[target].to_numpy(float)
    keep = np.isfinite(x_all) & np.isfinite(y_all)
    taus: dict[str, np.ndarray] = {}
    for axis in axes:
        others = [k for k in keys if k != axis]
        ids = frame.groupby(others, sort=True, dropna=False).ngroup().to_numpy()[keep]   # groups in key order
        x, y = x_all[keep], y_all[keep]
        order = np.argsort(ids, kind="stable")
        found = []
        for rows in np.split(order, np.flatnonzero(np.diff(ids[order])) + 1):
            if len(rows) >= 2 and np.ptp(x[rows]) > 0 and np.ptp(y[rows]) > 0:
                found.append(stats.kendalltau(x[rows], y[rows]).statistic)
        if found:
            taus[axis] = np.array(found)
    groups = sum(len(t) for t in taus.values())
    out = {"psi": np.nan, "psi_low": np.nan, "psi_high": np.nan, "groups": groups,
           "per_axis": {axis: (float(t.mean()), len(t)) for axis, t in taus.items()}}
    if not taus:
        return out
    out["psi"] = float(np.mean([t.mean() for t in taus.values()]))
    rng = np.random.default_rng(seed)
    replicates = np.mean([t[rng.integers(0, len(t), (n_boot, len(t)))].mean(1) for t in taus.values()], axis=0)
    tail = 100 * (1 - confidence) / 2
    out["psi_low"], out["psi_high"] = np.percentile(replicates, [tail, 100 - tail])
    return out


def _check_bootstrap(n_boot: int, confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} must be >= 1")
