import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import (ROTATION_SUMMARIES, best_configs, bootstrap_replicates, correlate, correlations,
                            fitted, status_counts)


def test_bootstrap_replicates_equal_scipy_on_the_resampled_data():
    rng = np.random.default_rng(0)
    x = np.round(rng.random(30), 1)                       # coarse values: many ties
    y = np.round(x + rng.normal(0, 0.3, 30), 1)
    counts = rng.multinomial(30, np.full(30, 1 / 30), size=200)
    boot = bootstrap_replicates(x, y, counts.astype(float))
    for b, c in enumerate(counts):
        xs, ys = np.repeat(x, c), np.repeat(y, c)
        assert boot["spearman"][b] == pytest.approx(stats.spearmanr(xs, ys).statistic, abs=1e-12)
        assert boot["kendall"][b] == pytest.approx(stats.kendalltau(xs, ys).statistic, abs=1e-12)


def test_bootstrap_replicate_of_a_constant_resample_is_nan():
    x, y = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.4, 0.8])
    boot = bootstrap_replicates(x, y, np.array([[3.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    assert np.isnan(boot["spearman"][0]) and np.isnan(boot["kendall"][0])
    assert boot["spearman"][1] == 1.0 and boot["kendall"][1] == 1.0


def test_correlate_matches_scipy_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    x = rng.random(60)
    y = x + rng.normal(0, 0.4, 60)
    out = correlate(x, y, n_boot=2000, seed=3)
    assert out["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert out["spearman_p"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    assert out["kendall"] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert out["kendall_p"] == pytest.approx(stats.kendalltau(x, y).pvalue)
    for name in ("spearman", "kendall"):
        assert -1 <= out[f"{name}_low"] < out[name] < out[f"{name}_high"] <= 1
    # The interval is scipy's percentile bootstrap interval up to Monte Carlo error.
    ref = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b).statistic, paired=True, vectorized=False,
                          n_resamples=2000, method="percentile", rng=np.random.default_rng(7))
    assert out["spearman_low"] == pytest.approx(ref.confidence_interval.low, abs=0.04)
    assert out["spearman_high"] == pytest.approx(ref.confidence_interval.high, abs=0.04)


def test_correlate_is_nan_for_too_few_or_constant_values():
    assert np.isnan(correlate(np.array([0.1, 0.2]), np.array([0.3, 0.4]))["spearman"])
    assert np.isnan(correlate(np.array([0.5, 0.5, 0.5]), np.array([0.1, 0.2, 0.3]))["kendall_high"])


def trial(task="T", optimizer="sgd", layca=True, status="completed", train=1.0, val=0.5, test=0.5,
          rot=(0.5, 0.4, 0.2), alpha=0.0, rho0=1 / 27, family=None):
    setting = ("layca-" if layca else "") + optimizer
    return {"task": task, "layca": layca, "status": status, "final_train_acc": train,
            "final_val_acc": val, "final_test_acc": test, "rotation_mean": rot[0], "rotation_min": rot[1],
            "rotation_frac_above_0_9": rot[2], "alpha": alpha, "rho0": rho0, "setting": setting,
            "family": family or ("Adam" if optimizer == "adam" else "SGD")}


def test_correlations_use_fitted_completed_trials_and_count_the_rest():
    rng = np.random.default_rng(2)
    rows = [trial(rot=tuple(rng.random(3)), test=rng.random()) for _ in range(12)]
    rows += [trial(optimizer="adam", layca=False, rot=tuple(rng.random(3)), test=rng.random()) for _ in range(5)]
    rows += [trial(train=0.95), trial(train=0.989), trial(status="diverged"), trial(status="running"),
             trial(status="errored"), trial(optimizer="adam", layca=False, status="diverged")]
    trials = pd.DataFrame(rows)
    table = correlations(trials, min_train_acc=0.99, n_boot=50)
    assert len(table) == 3 * len(ROTATION_SUMMARIES)           # families all, Adam, SGD
    pooled = table[(table["family"] == "all") & (table["summary"] == "rotation_min")].iloc[0]
    assert (pooled["n"], pooled["n_unfit"], pooled["n_diverged"], pooled["n_unfinished"]) == (17, 2, 2, 2)
    used = pd.DataFrame(rows[:17])
    assert pooled["spearman"] == pytest.approx(stats.spearmanr(used["rotation_min"], used["final_test_acc"]).statistic)
    sgd = table[(table["family"] == "SGD") & (table["summary"] == "rotation_mean")].iloc[0]
    assert (sgd["n"], sgd["n_unfit"], sgd["n_diverged"]) == (12, 2, 1)
    # A lower threshold admits the run at 0.989 but not the one at 0.95.
    looser = correlations(trials, min_train_acc=0.98, n_boot=10)
    assert looser[looser["family"] == "all"]["n"].iloc[0] == 18


def test_fitted_rejects_a_threshold_outside_0_1():
    with pytest.raises(ValueError, match=r"min_train_acc=1.5 must be a training accuracy in \[0, 1\]"):
        fitted(pd.DataFrame([trial()]), 1.5)


def test_best_configs_choose_by_validation_and_compare_to_the_best_layca_run():
    trials = pd.DataFrame([
        trial(val=0.80, test=0.70, rho0=1 / 9),                              # Layca-SGD, best val
        trial(val=0.78, test=0.75, rho0=1 / 3),                              # better test, worse val
        trial(optimizer="sgd", layca=False, val=0.60, test=0.58),
        trial(optimizer="sgd", layca=False, val=0.95, test=0.90, status="diverged"),   # never eligible
        trial(optimizer="adam", layca=True, val=0.79, test=0.72),
        trial(task="U", optimizer="sgd-l2", layca=False, val=0.5, test=0.45),
    ])
    best = best_configs(trials).set_index(["task", "setting"])
    assert best.loc[("T", "layca-sgd"), "rho0"] == pytest.approx(1 / 9)
    assert best.loc[("T", "layca-sgd"), "n_trials"] == 2
    assert best.loc[("T", "sgd"), "final_test_acc"] == 0.58
    assert best.loc[("T", "sgd"), "delta_vs_layca"] == pytest.approx(0.58 - 0.70)
    assert best.loc[("T", "layca-adam"), "delta_vs_layca"] == pytest.approx(0.72 - 0.70)
    assert np.isnan(best.loc[("U", "sgd-l2"), "delta_vs_layca"])       # no Layca run in task U


def test_status_counts_per_task():
    trials = pd.DataFrame([trial(), trial(status="running"), trial(task="U", status="diverged")])
    table = status_counts(trials)
    assert list(table.columns) == ["running", "completed", "diverged", "all"]
    assert table.loc["T"].tolist() == [1, 1, 0, 2] and table.loc["U"].tolist() == [0, 0, 1, 1]
