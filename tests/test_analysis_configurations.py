"""Configurations, not runs: seed aggregation, the best rule, paired differences, the
pre-registered threshold and `layrot summary`."""
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.configurations import (SUMMARY_COLUMNS, configurations, paired_difference, winners)
from analysis.preregistration import threshold
from analysis.synthetic import write_synthetic_store
from layrot.cli import main
from sweeps.store import write_sweep_file

ROOT = Path(__file__).resolve().parents[1]
STUDY = str(ROOT / "results" / "study-30ep")


def trial(setting="layca-sgd", rho0=0.1, seed=0, status="completed", val=0.5, test=0.5, train=1.0, rot=0.5,
          alpha=0.0, task="T"):
    return {"task": task, "setting": setting, "alpha": alpha, "rho0": rho0, "seed": seed, "epochs": 10,
            "data_fraction": 1.0, "bf16": False, "weight_decay": 0.0, "status": status, "final_val_acc": val,
            "final_test_acc": test, "final_train_acc": train, "rotation_mean": rot, "rotation_min": rot / 2,
            "rotation_max": rot, "rotation_frac_above_0_9": float(rot > 0.9), "relative_distance_mean": np.nan, "relative_distance_network": np.nan,
            "norm_ratio_mean": np.nan}


def test_configurations_aggregate_finished_seeds_with_t_intervals():
    trials = pd.DataFrame([
        trial(seed=0, val=0.80, test=0.70), trial(seed=1, val=0.90, test=0.80), trial(seed=2, val=0.85, test=0.78),
        trial(rho0=0.3, seed=0, val=0.86, test=0.90), trial(rho0=0.3, seed=1, status="diverged", val=0.1, test=0.1),
        trial(rho0=0.3, seed=2, status="running", val=0.99, test=0.99),
        trial(rho0=0.3, seed=3, status="pruned", val=0.99, test=0.99),      # a status added later: not a result
        trial(setting="sgd", status="errored", val=0.99, test=0.99),
    ])
    configs = configurations(trials, min_train_acc=0.99)
    assert len(configs) == 2 and list(configs.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    low = configs[configs["rho0"] == 0.1].iloc[0]
    tests = np.array([0.70, 0.80, 0.78])
    assert low["seeds"] == 3 and low["test_acc_mean"] == pytest.approx(tests.mean())
    assert low["test_acc_std"] == pytest.approx(tests.std(ddof=1))
    half = stats.t.ppf(0.975, 2) * tests.std(ddof=1) / np.sqrt(3)
    assert (low["test_acc_ci_low"], low["test_acc_ci_high"]) == pytest.approx((tests.mean() - half, tests.mean() + half))
    high = configs[configs["rho0"] == 0.3].iloc[0]
    assert high["seeds"] == 2 and high["diverged"] == 1 and high["val_acc_mean"] == pytest.approx(0.48)
    # best by seed-mean validation (0.85 > 0.48) although the other has the best single run (0.86)
    assert low["best_in_setting"] and not high["best_in_setting"]
    assert low["rho0_at_grid_edge"]                       # 0.1 is the smallest rate tried
    assert configs["relative_distance_mean_n"].tolist() == [0, 0]   # not measured: no number
    assert np.isnan(configs["relative_distance_mean_mean"]).all()


def test_one_seed_has_no_spread_and_fits_uses_the_seed_mean():
    configs = configurations(pd.DataFrame([trial(train=0.995), trial(seed=1, train=0.98)]), min_train_acc=0.99)
    assert not configs["fits"].iloc[0]                    # mean 0.9875 < 0.99
    one = configurations(pd.DataFrame([trial()]))
    assert np.isnan(one["test_acc_std"].iloc[0]) and np.isnan(one["test_acc_ci_low"].iloc[0])


def test_winner_is_the_best_in_setting_row_with_the_highest_validation():
    trials = pd.DataFrame([trial(val=0.7), trial(rho0=0.3, val=0.8, test=0.6), trial(setting="sgd", val=0.75),
                           trial(setting="adam", val=0.9, task="U")])
    star = winners(configurations(trials)).set_index("task")
    assert (star.loc["T", "setting"], star.loc["T", "rho0"]) == ("layca-sgd", 0.3)
    assert star.loc["U", "setting"] == "adam"


def test_paired_difference_uses_shared_seeds_only():
    trials = pd.DataFrame([trial(seed=0, test=0.80), trial(seed=1, test=0.84), trial(seed=2, test=0.50),
                           trial(setting="sgd", seed=0, test=0.78), trial(setting="sgd", seed=1, test=0.80)])
    configs = configurations(trials).set_index("setting")
    d = paired_difference(trials, configs.loc["sgd"].to_dict() | {"setting": "sgd"},
                          configs.loc["layca-sgd"].to_dict() | {"setting": "layca-sgd"})
    diffs = np.array([0.78 - 0.80, 0.80 - 0.84])          # seed 2 has no partner
    assert d["pairs"] == 2 and d["delta"] == pytest.approx(diffs.mean())
    half = stats.t.ppf(0.975, 1) * diffs.std(ddof=1) / np.sqrt(2)
    assert (d["low"], d["high"]) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    lone = pd.DataFrame([trial(seed=0, test=0.8), trial(setting="sgd", seed=5, test=0.7)])
    c = configurations(lone).set_index("setting")
    d = paired_difference(lone, c.loc["sgd"].to_dict() | {"setting": "sgd"},
                          c.loc["layca-sgd"].to_dict() | {"setting": "layca-sgd"})
    assert not d["paired"] and d["delta"] == pytest.approx(-0.1) and np.isnan(d["low"])


def test_threshold_comes_from_the_sweep_files(tmp_path):
    store = str(tmp_path / "store")
    write_synthetic_store(store, "a", tasks=("C10-CNN1",), n_trials=4, epochs=3, layers=2)
    write_synthetic_store(store, "b", tasks=("C10-CNN1",), n_trials=4, epochs=3, layers=2)
    rule = threshold(store, ["a", "b"])
    assert (rule.value, rule.registered, rule.overridden) == (0.99, 0.99, False) and "default" in rule.source
    write_sweep_file(store, "a", {"analysis": {"min_train_acc": 0.9}, "grid": []})
    assert threshold(store, ["a"]).value == 0.9
    with pytest.raises(ValueError, match=r"registered different min_train_acc \(a: 0.9, b: 0.99\)"):
        threshold(store, ["a", "b"])
    other = threshold(store, ["a"], 0.95)
    assert other.overridden and "0.95, not the 0.9 pre-registered" in other.banner()


def test_summary_csv_seed_means_match_a_plain_groupby_of_the_trials_table(capsys):
    assert main(["summary", "--store", STUDY, "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    files = sorted((ROOT / "results" / "study-30ep" / "trials").glob("*/*.parquet"))
    trials = pd.concat([pd.read_parquet(f) for f in files])
    trials = trials[trials["status"].isin(["completed", "diverged"])]
    keys = ["task", "setting", "alpha", "rho0"]
    expected = trials.groupby(keys).agg(n=("seed", "size"), val=("final_val_acc", "mean"),
                                        test=("final_test_acc", "mean"), test_std=("final_test_acc", "std"),
                                        train=("final_train_acc", "mean"), rot=("rotation_mean", "mean"),
                                        rot_min=("rotation_min", "mean")).reset_index()
    merged = table.merge(expected, on=keys, validate="one_to_one")
    assert len(merged) == len(table) == len(expected)
    for ours, theirs in [("seeds", "n"), ("val_acc_mean", "val"), ("test_acc_mean", "test"),
                         ("test_acc_std", "test_std"), ("train_acc_mean", "train"),
                         ("rotation_mean_mean", "rot"), ("rotation_min_mean", "rot_min")]:
        np.testing.assert_allclose(merged[ours], merged[theirs], rtol=1e-12, err_msg=ours)
    assert ((table["test_acc_mean"] >= 0) & (table["test_acc_mean"] <= 1)).all()     # fractions
    best = table[table["best_in_setting"]]
    assert sorted(best["setting"]) == sorted(trials["setting"].unique())          # one per setting
    means = expected.set_index(keys)["val"]
    for _, row in best.iterrows():
        assert row["val_acc_mean"] == pytest.approx(means.xs(row["setting"], level="setting").max())
    assert not table.loc[~table["best_in_setting"], "rho0_at_grid_edge"].any()


def test_summary_json_and_markdown_carry_the_same_rows(capsys):
    assert main(["summary", "--store", STUDY, "--sweep", "study-rho", "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 8 and all(r["seeds"] == 2 for r in records)
    assert main(["summary", "--store", STUDY, "--sweep", "study-rho", "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| task | setting | alpha | rho0 |") and len(lines) == 2 + 8
    assert main(["summary", "--store", STUDY, "--format", "xml"]) == 2
    assert "--format 'xml' is not allowed: one of csv, json, markdown" in capsys.readouterr().err


def test_an_accuracy_interval_stays_within_0_1():
    configs = configurations(pd.DataFrame([trial(test=0.99, rot=0.2), trial(seed=1, test=0.90, rot=0.9)]))
    row = configs.iloc[0]
    half = stats.t.ppf(0.975, 1) * np.std([0.99, 0.90], ddof=1) / np.sqrt(2)
    assert row["test_acc_ci_high"] == 1.0 and row["test_acc_ci_low"] == pytest.approx(0.945 - half)
    assert row["rotation_mean_ci_high"] == pytest.approx(0.55 + stats.t.ppf(0.975, 1) * np.std([0.2, 0.9], ddof=1)
                                                         / np.sqrt(2))      # not an accuracy: not clipped
