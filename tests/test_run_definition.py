"""layrot.run: the one definition of a run, checked against hand computations."""
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from layrot import run
from run_records import epoch_record

from layrot.run import (EPOCH_KEYS, SETTINGS, best_configuration, check_field, configuration, get_setting,
                        network_relative_distance, parse_rates, rate_label, resolve, summarize)


def test_setting_names_are_lower_case_with_hyphens_and_carry_their_parts():
    assert set(SETTINGS) == {"sgd", "sgd-l2", "adam", "rmsprop", "adagrad", "layca-sgd", "layca-sgd-l2",
                             "layca-adam", "layca-rmsprop", "layca-adagrad"}
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name) for name in SETTINGS)
    s = get_setting("layca-sgd-l2")
    assert (s.base, s.l2, s.layca, s.label) == ("SGD", True, True, "Layca-SGD+L2")
    assert (get_setting("adam").base, get_setting("adam").layca) == ("Adam", False)


@pytest.mark.parametrize("old, canonical", [("sgd+layca", "layca-sgd"), ("sgd_layca", "layca-sgd"),
                                            ("Layca-SGD", "layca-sgd"), ("sgd_l2", "sgd-l2"),
                                            ("SGD+L2", "sgd-l2"), ("adam+layca", "layca-adam")])
def test_old_spellings_are_refused_with_the_canonical_name(old, canonical):
    with pytest.raises(ValueError, match=re.escape(f"setting={old!r} is not allowed: write {canonical!r}")):
        get_setting(old)


@pytest.mark.parametrize("name, value", [("alpha", True), ("alpha", "0.5"), ("rho0", False), ("rho0", "0.1"),
                                         ("rho0", math.inf), ("epochs", True), ("epochs", 2.0), ("seed", True),
                                         ("data_fraction", "1"), ("bf16", 1), ("device", "gpu"), ("task", "cifar")])
def test_numbers_never_accept_booleans_or_text(name, value):
    with pytest.raises(ValueError, match=re.escape(f"{name}={value!r} is not allowed: ")):
        check_field(name, value)


def test_resolve_fills_defaults_and_normalises_types():
    cfg = resolve({"task": "fmnist", "setting": "layca-sgd", "alpha": 0, "rho0": 1, "seed": np.int64(2),
                   "data_dir": "~/x"})
    assert (cfg.alpha, cfg.rho0, cfg.seed, cfg.epochs) == (0.0, 1.0, 2, 100)
    assert type(cfg.alpha) is float and type(cfg.seed) is int and cfg.data_dir.startswith("/")
    assert cfg.weight_decay == 0.0 and resolve({"task": "fmnist", "setting": "sgd-l2"}).weight_decay == 2e-3
    with pytest.raises(ValueError, match="unknown config key 'optimizer'"):
        resolve({"task": "fmnist", "optimizer": "sgd"})
    with pytest.raises(ValueError, match="needs a 'task'"):
        resolve({"setting": "sgd"})


def test_schedule_decays_at_the_milestones_by_hand():
    cfg = resolve({"task": "fmnist", "rho0": 0.5})     # 100 epochs, x0.2 at 80, 90, 97
    assert cfg.milestones == (80, 90, 97)
    assert [cfg.rate(e) for e in (0, 79, 80, 89, 90, 96, 97, 99)] == pytest.approx(
        [0.5, 0.5, 0.1, 0.1, 0.02, 0.02, 0.004, 0.004])
    assert resolve({"task": "fmnist", "epochs": 40}).milestones == (32, 36, 39)
    short = resolve({"task": "fmnist", "epochs": 10})
    assert short.milestones == (8, 9)                 # 80% and 90% (97% rounds to 10, past the end)


def test_rates_in_the_papers_notation():
    assert parse_rates("3^-3") == [3.0**-3] and parse_rates("3^-3.5") == [3.0**-3.5]
    assert parse_rates("3^1..3^-1") == [3.0, 1.0, 1 / 3] and parse_rates(0.25) == [0.25]
    assert parse_rates("0.1", text_numbers=True) == [0.1]
    for bad in ("0.1", "3^-3.25", True, "3**2"):
        with pytest.raises(ValueError, match="is not a rate"):
            parse_rates(bad)
    assert [rate_label(r) for r in (3.0**-3, 3.0**-2.5, 1.0, 9.0, 0.1)] == ["3^-3", "3^-2.5", "3^0", "3^2", "0.1"]


def test_network_relative_distance_is_the_norm_of_the_concatenated_layers():
    rng = np.random.default_rng(0)
    w0 = [rng.normal(size=n) for n in (5, 17, 3)]
    w = [a + rng.normal(scale=s, size=a.shape) for a, s in zip(w0, (0.1, 1.0, 3.0))]
    relative = [np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(w, w0)]
    expected = np.linalg.norm(np.concatenate(w) - np.concatenate(w0)) / np.linalg.norm(np.concatenate(w0))
    assert network_relative_distance(relative, [np.linalg.norm(b) for b in w0]) == pytest.approx(expected)


def test_summary_of_epoch_records_by_hand():
    epochs = [epoch_record(1, 0.5, [0.1, 0.2, 0.3]), epoch_record(2, 0.7, [0.2, 0.95, 0.91], seconds=3.0)]
    assert tuple(epochs[0]) == EPOCH_KEYS
    s = summarize(epochs)
    assert s["epochs_done"] == 2 and s["final_val_acc"] == 0.7 and s["final_test_acc"] == pytest.approx(0.65)
    assert s["rotation_mean"] == pytest.approx(2.06 / 3) and (s["rotation_min"], s["rotation_max"]) == (0.2, 0.95)
    assert s["rotation_frac_above_0_9"] == pytest.approx(2 / 3) and s["num_layers"] == 3
    assert s["relative_distance_mean"] == pytest.approx(2 * 2.06 / 3)
    assert s["norm_ratio_mean"] == pytest.approx(1 + 2.06 / 3)
    assert s["wall_seconds"] == 5.0 and s["relative_distance_network"] == pytest.approx(0.2)
    assert (s["final_val_images"], s["final_test_images"], s["final_train_acc"]) == (600, 1000, pytest.approx(0.7))
    empty = summarize([])
    assert (empty.pop("epochs_done"), empty.pop("wall_seconds")) == (0, 0.0) and set(empty.values()) == {None}


def test_best_configuration_averages_seeds_before_ranking():
    """A configuration with one lucky seed loses to a steadier one (hand computation)."""
    a = configuration({**resolve({"task": "fmnist", "rho0": 0.1}).experiment(), "seed": 0})
    b = configuration({**resolve({"task": "fmnist", "rho0": 0.3}).experiment(), "seed": 0})
    assert a != b and "seed" not in dict(a)
    scores = [(a, 0.90), (a, 0.70), (b, 0.85), (b, 0.84), (b, math.nan)]
    assert best_configuration(scores) == b            # 0.80 < 0.845
    assert best_configuration([(a, 0.8), (b, 0.8)]) == a
    assert best_configuration([(a, math.nan)]) is None


def test_the_definition_imports_neither_torch_nor_ray():
    code = ("import sys, layrot.run, sweeps.schema, sweeps.spec, analysis.load; "
            "bad = [m for m in ('torch', 'ray', 'trainables') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_metric_docs_and_store_columns_follow_the_definition():
    from sweeps.schema import EPOCHS, ROTATION, TRIALS
    assert [f.name for f in EPOCHS][2:] == [m.name for m in run.EPOCH_METRICS]
    assert [f.name for f in ROTATION][5:] == [m.name for m in run.LAYER_METRICS]
    assert {s.name for s in run.SUMMARIES} <= set(TRIALS.names) and set(run.EXPERIMENT_KEYS) <= set(TRIALS.names)
