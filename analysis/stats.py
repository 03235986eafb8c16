"""Does final layer rotation predict test accuracy, and which configuration wins?

The paper's claim is about runs that fit their training data, so correlations use completed
trials whose final training accuracy reaches a threshold (default ``layrot.run.MIN_TRAIN_ACC``); diverged, unfinished
and unfit trials are left out and counted. Each correlation comes with scipy's p-value and a
percentile bootstrap interval over resampled trials. Statistics always use every trial and
epoch in the store: only figures down-sample.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from layrot.run import MIN_TRAIN_ACC, STATUSES

# The trials table's summaries of the final rotation, as the report names them.
ROTATION_SUMMARIES = {
    "rotation_mean": "mean over layers",
    "rotation_min": "min over layers",
    "rotation_frac_above_0_9": "fraction of layers > 0.9",
}
ALL_FAMILIES = "all"


def fitted(trials: pd.DataFrame, min_train_acc: float = MIN_TRAIN_ACC) -> pd.DataFrame:
    """Completed trials whose final training accuracy is at least `min_train_acc`."""
    _check_threshold(min_train_acc)
    return trials[(trials["status"] == "completed") & (trials["final_train_acc"] >= min_train_acc)]


def correlations(
    trials: pd.DataFrame,
    min_train_acc: float = MIN_TRAIN_ACC,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Spearman and Kendall correlation of each rotation summary with final test accuracy.

    One row per (task, optimizer family, summary); family "all" pools the task's families.
    Columns: n (trials used), n_unfit, n_diverged, n_unfinished (running or errored), then
    spearman, spearman_p, spearman_low, spearman_high and the same for kendall (tau-b).
    Statistics are NaN where fewer than 3 trials remain or an input is constant.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    if n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} must be >= 1")
    _check_threshold(min_train_acc)
    rows = []
    for task in sorted(trials["task"].unique()):
        of_task = trials[trials["task"] == task]
        for family in [ALL_FAMILIES, *sorted(of_task["family"].unique())]:
            group = of_task if family == ALL_FAMILIES else of_task[of_task["family"] == family]
            chosen = fitted(group, min_train_acc)
            counts = {
                "n": len(chosen),
                "n_unfit": int((group["status"] == "completed").sum()) - len(chosen),
                "n_diverged": int((group["status"] == "diverged").sum()),
                "n_unfinished": int(group["status"].isin(["running", "errored"]).sum()),
            }
            for summary in ROTATION_SUMMARIES:
                x = chosen[summary].to_numpy(float)
                y = chosen["final_test_acc"].to_numpy(float)
                rows.append({"task": task, "family": family, "summary": summary, **counts,
                             **correlate(x, y, n_boot, confidence, seed)})
    return pd.DataFrame(rows)


def correlate(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, confidence: float = 0.95,
              seed: int = 0) -> dict[str, float]:
    """Spearman's rho and Kendall's tau-b of (x, y) with p-values and bootstrap intervals."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
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


def best_configs(trials: pd.DataFrame) -> pd.DataFrame:
    """The best completed trial per (task, setting) by final validation accuracy (the paper's
    rule), with its test accuracy and `delta_vs_layca`: test accuracy minus that of the task's
    best Layca trial (chosen the same way), as in the paper's figure titles.
    """
    done = trials[trials["status"] == "completed"].dropna(subset=["final_val_acc"])
    if done.empty:
        return pd.DataFrame(columns=[*trials.columns, "n_trials", "delta_vs_layca"])
    best = done.loc[done.groupby(["task", "setting"])["final_val_acc"].idxmax()].copy()
    best["n_trials"] = done.groupby(["task", "setting"]).size().reindex(
        pd.MultiIndex.from_frame(best[["task", "setting"]])).to_numpy()
    layca = done[done["layca"]]
    reference = layca.loc[layca.groupby("task")["final_val_acc"].idxmax()].set_index("task")["final_test_acc"]
    best["delta_vs_layca"] = best["final_test_acc"] - best["task"].map(reference)
    return best.sort_values(["task", "final_test_acc"], ascending=[True, False]).reset_index(drop=True)


def status_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per task and status (columns in the store's status order, then "all")."""
    table = pd.crosstab(trials["task"], trials["status"])
    table = table.reindex(columns=[s for s in STATUSES if s in table.columns]).rename_axis(columns=None)
    table["all"] = table.sum(axis=1)
    return table


def _check_threshold(min_train_acc: float) -> None:
    if not 0 <= min_train_acc <= 1:
        raise ValueError(f"min_train_acc={min_train_acc!r} must be a training accuracy in [0, 1]")
