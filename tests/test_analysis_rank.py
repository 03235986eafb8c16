"""Rank measures over configurations: who enters, too-few guards, the baseline comparison, the
within-rho correlations, and the per-setting diagnosis."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import rank
from analysis.configurations import configurations
from analysis.diagnosis import diagnose, stop_epoch
from analysis.load import load
from analysis.synthetic import write_synthetic_store


def config(setting="layca-sgd", rho0=0.1, alpha=0.0, test=0.5, rot=0.5, fits=True, task="T"):
    return {"task": task, "setting": setting, "alpha": alpha, "rho0": rho0, "epochs": 10, "data_fraction": 1.0,
            "bf16": False, "fits": fits, "test_acc_mean": test, "rotation_mean_mean": rot,
            "rotation_min_mean": rot / 2, "relative_distance_mean_mean": np.nan,
            "relative_distance_network_mean": 2 * rot, "norm_ratio_mean_mean": np.nan}


def test_correlations_use_fitting_configurations_and_refuse_too_few():
    rng = np.random.default_rng(0)
    rows = [config(rho0=3.0**-k, test=rng.random(), rot=rng.random()) for k in range(6)]
    rows += [config(setting="adam", rho0=3.0**-k, test=rng.random(), rot=rng.random()) for k in range(4)]
    rows += [config(rho0=9.0, fits=False, test=0.99, rot=0.99)]
    table = rank.correlations(pd.DataFrame(rows), n_boot=100).set_index(["family", "measure"])
    pooled = table.loc[("all", "rotation_mean_mean")]
    used = pd.DataFrame(rows[:10])
    assert (pooled["n"], pooled["n_unfit"]) == (10, 1)
    assert pooled["kendall"] == pytest.approx(stats.kendalltau(used["rotation_mean_mean"], used["test_acc_mean"]).statistic)
    adam = table.loc[("Adam", "rotation_mean_mean")]
    assert adam["n"] == 4 and np.isnan(adam["kendall"])
    assert rank.interval_text(adam.to_dict(), "kendall") == "too few configurations (4 < 5)"


def test_predictors_compare_on_the_same_configurations_and_say_not_recorded():
    rows = [config(rho0=3.0**-k, test=0.5 + 0.05 * k, rot=0.1 * k) for k in range(6)]
    rows += [config(setting="sgd", rho0=3.0**-k, test=0.4 + 0.05 * k, rot=0.1 * (5 - k)) for k in range(6)]
    table = rank.predictors(pd.DataFrame(rows), n_boot=100).set_index("measure")
    # Along rho0: layca-sgd's rotation rises with its test accuracy (tau +1), sgd's falls (-1).
    # Along setting, at each rho0 layca-sgd tests higher and rotates more for k = 3, 4, 5 (+1),
    # less for k = 0, 1, 2 (-1): psi_setting = 0 over 6 groups.
    rot = table.loc["rotation_mean_mean"]
    assert rot["per_axis"]["rho0"] == (pytest.approx(0.0), 2)
    assert rot["per_axis"]["setting"] == (pytest.approx(0.0), 6)
    assert rot["psi"] == pytest.approx(0.0) and rot["groups"] == 8
    assert table.loc["relative_distance_network_mean", "kendall"] == pytest.approx(rot["kendall"])  # 2 * rotation
    assert rank.interval_text(table.loc["norm_ratio_mean_mean"].to_dict(), "kendall") == "not recorded"


def test_within_rho_groups_by_rate():
    rows = [config(setting=s, rho0=r, test=t, rot=t) for r in (0.1, 0.3) for s, t in
            (("sgd", 0.5), ("adam", 0.6), ("layca-sgd", 0.7), ("layca-adam", 0.8), ("rmsprop", 0.9))]
    table = rank.within_rho(pd.DataFrame(rows), n_boot=50)
    assert sorted(table["rho0"].unique()) == [0.1, 0.3]
    assert table[table["measure"] == "rotation_mean_mean"]["kendall"].tolist() == pytest.approx([1.0, 1.0])


def test_stop_epoch_is_where_the_curve_stops_rising():
    # epoch 3 (0.90) is 0.06 below the later 0.96, more than 5% of the peak (0.048); epoch 4 is not
    assert stop_epoch(np.array([0.1, 0.5, 0.9, 0.95, 0.96, 0.96])) == 4
    assert stop_epoch(np.array([0.2, 0.4, 0.3, 0.6])) == 4


def test_diagnosis_quotes_the_best_configuration_numbers(tmp_path):
    store = tmp_path / "store"
    write_synthetic_store(str(store), "d", tasks=("C10-CNN1",), epochs=8, layers=4)
    results = load(str(store))
    configs = configurations(results.trials)
    found = {d.setting: d for d in diagnose(results, configs, 0.99)}
    best = configs[configs["best_in_setting"]].set_index("setting")
    assert set(found) == set(best.index)
    for setting, d in found.items():
        row = best.loc[setting]
        text = " ".join(d.sentences)
        assert (f"min / mean / max over layers {row['rotation_min_mean']:.2f} / {row['rotation_mean_mean']:.2f} / "
                f"{row['rotation_max_mean']:.2f}") in text
        assert f"train {100 * row['train_acc_mean']:.1f}%" in text
        if row["rho0_at_grid_edge"]:
            assert "the best may lie beyond it" in text
