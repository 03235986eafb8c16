import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import bootstrap_replicates, correlate, granulated_kendall, status_counts


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


def test_bootstrap_is_identical_between_runs_and_independent_of_row_order():
    rng = np.random.default_rng(4)
    x = np.round(rng.random(25), 2)
    y = x + rng.normal(0, 0.3, 25)
    first, again = correlate(x, y, n_boot=300), correlate(x, y, n_boot=300)
    assert first == again
    order = rng.permutation(25)
    shuffled = correlate(x[order], y[order], n_boot=300)
    for key in first:
        assert shuffled[key] == pytest.approx(first[key], abs=1e-12), key
    # another seed moves the interval (the seed is what fixes it), not the estimate
    other = correlate(x, y, n_boot=300, seed=1)
    assert other["kendall"] == first["kendall"] and other["kendall_low"] != first["kendall_low"]


def test_granulated_kendall_against_a_hand_computed_example():
    # Axis a has two groups (b=0, b=1), axis b two groups (a=0, a=1); one configuration each.
    #   (a, b):  (0,0) (1,0) (2,0) | (0,1) (1,1) (2,1)
    #   m:        1     2     3    |  3     1     2
    #   acc:      1     2     3    |  1     2     3
    # Axis a: group b=0 is concordant (tau 1); group b=1 has pairs (01,11) disc., (01,21) disc.,
    # (11,21) conc.: tau (1 - 2) / 3 = -1/3. psi_a = (1 - 1/3) / 2 = 1/3.
    # Axis b: groups a=0 (m 1 -> 3, acc 1 -> 1: acc constant, no tau), a=1 (m 2 -> 1, acc 2 -> 2:
    # constant), a=2 (m 3 -> 2, acc 3 -> 3: constant): no usable group, so Psi = psi_a.
    frame = pd.DataFrame({"a": [0, 1, 2, 0, 1, 2], "b": [0, 0, 0, 1, 1, 1], "m": [1, 2, 3, 3, 1, 2],
                          "acc": [1, 2, 3, 1, 2, 3]})
    out = granulated_kendall(frame, "m", "acc", ["a", "b"], ["a", "b"], n_boot=200)
    assert out["per_axis"] == {"a": (pytest.approx(1 / 3), 2)}
    assert out["psi"] == pytest.approx(1 / 3) and out["groups"] == 2
    assert out["psi_low"] == pytest.approx(-1 / 3) and out["psi_high"] == pytest.approx(1.0)

    # With b varying too (acc differs along b), Psi averages the two axes.
    # Axis b, groups a=0: m 1 -> 3, acc 1 -> 2 (+1); a=1: m 2 -> 1, acc 2 -> 3 (-1); a=2: m 3 -> 2,
    # acc 3 -> 4 (-1): psi_b = -1/3. Axis a keeps its ranks: psi_a = 1/3.
    frame["acc"] = [1, 2, 3, 2, 3, 4]
    out = granulated_kendall(frame, "m", "acc", ["a", "b"], ["a", "b"], n_boot=200)
    assert out["per_axis"]["b"] == (pytest.approx(-1 / 3), 3)
    assert out["psi"] == pytest.approx((1 / 3 - 1 / 3) / 2)


def test_status_counts_per_task():
    trials = pd.DataFrame({"task": ["T", "T", "U"], "status": ["completed", "running", "diverged"]})
    table = status_counts(trials)
    assert list(table.columns) == ["running", "completed", "diverged", "all"]
    assert table.loc["T"].tolist() == [1, 1, 0, 2] and table.loc["U"].tolist() == [0, 0, 1, 1]
