"""The committed reproduction numbers are the committed store's numbers."""
from pathlib import Path

import pandas as pd
import pytest

from analysis.reproduction import BEGIN, END, best_per_setting, configurations, main, replace_block

ROOT = Path(__file__).resolve().parents[1]
STUDY = str(ROOT / "results" / "study")  # committed; docs/reproduction.md correlates over train acc >= 0.95


def test_docs_numbers_match_the_committed_store():
    assert main([STUDY, "--min-train-acc", "0.95", "--check", str(ROOT / "docs" / "reproduction.md")]) == 0


def test_a_changed_number_is_caught(tmp_path):
    doc = (ROOT / "docs" / "reproduction.md").read_text()
    head, block = doc.split(BEGIN, 1)
    tampered = tmp_path / "reproduction.md"
    # change one digit inside the generated block only
    i = next(i for i, c in enumerate(block) if c.isdigit())
    tampered.write_text(head + BEGIN + block[:i] + str((int(block[i]) + 1) % 10) + block[i + 1:])
    assert main([STUDY, "--min-train-acc", "0.95", "--check", str(tampered)]) == 1


def test_configurations_average_seeds_and_rank_by_mean_validation():
    rows = [  # setting, alpha, rho0, seed, status, val, test
        ("layca-sgd", 0.0, 0.1, 0, "completed", 0.80, 0.70),
        ("layca-sgd", 0.0, 0.1, 1, "completed", 0.90, 0.80),
        ("layca-sgd", 0.0, 0.3, 0, "completed", 0.86, 0.90),
        ("layca-sgd", 0.0, 0.3, 1, "diverged", 0.10, 0.10),
        ("sgd", 0.0, 0.1, 0, "errored", 0.99, 0.99),
    ]
    trials = pd.DataFrame(rows, columns=["setting", "alpha", "rho0", "seed", "status", "final_val_acc", "final_test_acc"])
    for col in ("final_train_acc", "rotation_mean", "rotation_min", "rotation_frac_above_0_9"):
        trials[col] = 1.0
    configs = configurations(trials)
    assert len(configs) == 2  # the errored SGD run is not a result
    low = configs[configs["rho0"] == 0.1].iloc[0]
    assert low["val_acc"] == pytest.approx(0.85) and low["test_acc"] == pytest.approx(0.75)
    assert low["test_by_seed"] == [0.70, 0.80]
    high = configs[configs["rho0"] == 0.3].iloc[0]
    assert high["diverged"] == 1 and high["val_acc"] == pytest.approx(0.48)
    assert best_per_setting(configs).loc["layca-sgd", "rho0"] == 0.1


def test_replace_block_keeps_the_prose():
    doc = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    assert replace_block(doc, f"{BEGIN}\nnew\n{END}") == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"
    with pytest.raises(ValueError, match="no generated block"):
        replace_block("no markers", "x")
