"""The committed reproduction numbers are the committed stores' numbers."""
import json
from pathlib import Path

import pytest

from analysis.reproduction import begin, block_name, end, main, replace_block

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reproduction.md"
# The committed stores and docs/reproduction.md's arguments for each: the pre-registered
# threshold, and 0.95 as a labelled exploratory one.
STUDIES = {str(ROOT / "results" / "study-30ep"): ["--exploratory", "0.95"],
           str(ROOT / "results" / "study"): ["--exploratory", "0.95"]}
OLD = str(ROOT / "results" / "study-30ep")


@pytest.mark.parametrize("store", STUDIES)
def test_docs_numbers_match_the_committed_store(store):
    assert main([store, *STUDIES[store], "--check", str(DOC)]) == 0


def test_a_changed_number_is_caught(tmp_path):
    doc = DOC.read_text()
    head, block = doc.split(begin(block_name(OLD)), 1)
    tampered = tmp_path / "reproduction.md"
    # change one digit inside the store's generated block only
    i = next(i for i, c in enumerate(block) if c.isdigit())
    tampered.write_text(head + begin(block_name(OLD)) + block[:i] + str((int(block[i]) + 1) % 10) + block[i + 1:])
    assert main([OLD, *STUDIES[OLD], "--check", str(tampered)]) == 1


def test_replace_block_keeps_the_prose_and_the_other_blocks():
    doc = f"intro\n{begin('a')}\nold a\n{end('a')}\nmiddle\n{begin('b')}\nold b\n{end('b')}\noutro\n"
    assert replace_block(doc, "b", f"{begin('b')}\nnew\n{end('b')}") == \
        f"intro\n{begin('a')}\nold a\n{end('a')}\nmiddle\n{begin('b')}\nnew\n{end('b')}\noutro\n"
    with pytest.raises(ValueError, match="no generated block 'c'"):
        replace_block(doc, "c", "x")


def test_block_names_are_store_folders():
    assert block_name("results/study-30ep/") == "study-30ep" and block_name("/x/results/study") == "study"


def test_the_confound_table_bins_configurations_by_rotation_and_names_the_extremes():
    import pandas as pd

    from analysis.reproduction import _confound_lines

    configs = pd.DataFrame({
        "setting": ["layca-sgd", "sgd", "sgd-l2", "layca-sgd"], "rho0": [1 / 9, 9.0, 1.0, 1 / 27],
        "alpha": [0.0, 0.0, 0.0, 0.4], "rotation_mean_mean": [0.85, 0.84, 0.89, 0.1],
        "test_acc_mean": [0.8819, 0.8650, 0.8757, 0.80], "train_acc_mean": [0.9892, 0.997, 0.9994, 0.9]})
    within = pd.DataFrame([{"rho0": 1 / 9, "measure": "rotation_mean_mean", "n": 6, "kendall": 0.6,
                            "kendall_low": 0.2, "kendall_high": 0.9, "recorded": True}])
    lines = _confound_lines(configs, within)
    assert "| [0, 0.2) | 1 | 1 | 80.00 | layca-sgd 3^-3 alpha 0.4: 80.00 (train 90.00) |" in "\n".join(lines)
    assert ("| [0.8, 0.9) | 3 | 3 | 86.50-88.19 | sgd 3^2: 86.50 (train 99.70) | layca-sgd 3^-2: 88.19 "
            "(train 98.92) |") in lines
    assert lines[-1].endswith("3^-2: 0.60 [0.20, 0.90] (n = 6).")


def test_a_setting_in_progress_stays_out_of_the_numbers(tmp_path):
    """A setting whose grid has points still to run would enter with seeds missing (and its best
    chosen from part of its grid): the reproduction block names it and counts the settings that
    have ended, while a pruning replay leaves the whole sweep out (its trials ran together)."""
    from run_records import epoch_record

    from analysis.load import load
    from analysis.preregistration import ended_part
    from analysis.reproduction import render
    from layrot.run import resolve
    from sweeps.store import TrialRecord, write_sweep_file

    store = str(tmp_path / "store")
    sweeps = {"done": [("layca-sgd", "completed"), ("layca-sgd", "diverged")],
              "busy": [("sgd", "completed"), ("sgd", "completed"), ("adam", "completed"), ("adam", "running")]}
    for sweep, trials in sweeps.items():
        write_sweep_file(store, sweep, {"grid": [json.dumps({"setting": s, "i": i}) for i, (s, _) in enumerate(trials)]
                                        + ([json.dumps({"setting": "adam", "i": 9})] if sweep == "busy" else []),
                                        "analysis": {"min_train_acc": 0.99}})
        for i, (setting, status) in enumerate(trials):
            rec = TrialRecord(sweep, f"{sweep}{i}", resolve({"task": "fmnist-quick", "setting": setting,
                                                              "rho0": 0.1 * (i + 1), "epochs": 2}))
            for e in (1, 2):
                rec.add_epoch(epoch_record(e, 0.5, [0.3, 0.4]))
            rec.finish(status)
            rec.write(store)
    results = load(store)
    by_sweep, running = ended_part(results)
    assert (by_sweep.sweeps, running) == (["done"], "busy (3 of 5 trials ended)")
    by_setting, running = ended_part(results, by_setting=True)
    assert sorted(set(zip(by_setting.trials["sweep"], by_setting.trials["setting"]))) == [
        ("busy", "sgd"), ("done", "layca-sgd")]
    assert running == "busy (3 of 5 trials ended; settings in: sgd)"
    assert len(by_setting.epochs) == 8 and set(by_setting.epochs["trial_id"]) == {"done0", "done1", "busy0", "busy1"}
    block = render(results, "x", n_boot=10)
    assert "Store: 4 trials (3 completed, 1 diverged) in 4 configurations, sweeps busy, done." in block
    assert ("In progress, only the settings whose whole grid has ended in these numbers: "
            "busy (3 of 5 trials ended; settings in: sgd).") in block
