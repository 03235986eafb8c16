"""The committed reproduction numbers are the committed stores' numbers."""
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


def test_a_sweep_in_progress_stays_out_of_the_numbers(tmp_path):
    """A sweep whose grid has points still to run would enter with seeds missing: the block
    names it and counts only the finished sweeps."""
    from run_records import epoch_record

    from analysis.load import load
    from analysis.preregistration import whole_sweeps
    from analysis.reproduction import render
    from layrot.run import resolve
    from sweeps.store import TrialRecord, write_sweep_file

    store = str(tmp_path / "store")
    for sweep, statuses in (("done", ["completed", "diverged"]), ("busy", ["completed", "running"])):
        write_sweep_file(store, sweep, {"grid": ["a", "b", "c"] if sweep == "busy" else ["a", "b"],
                                        "analysis": {"min_train_acc": 0.99}})
        for i, status in enumerate(statuses):
            rec = TrialRecord(sweep, f"{sweep}{i}", resolve({"task": "fmnist-quick", "setting": "layca-sgd",
                                                              "rho0": 0.1 * (i + 1), "epochs": 2}))
            for e in (1, 2):
                rec.add_epoch(epoch_record(e, 0.5, [0.3, 0.4]))
            rec.finish(status)
            rec.write(store)
    results = load(store)
    finished, running = whole_sweeps(results)
    assert (finished.sweeps, running) == (["done"], "busy (1 of 3 trials ended)")
    block = render(results, "x", n_boot=10)
    assert "Store: 2 trials (1 completed, 1 diverged) in 2 configurations, sweeps done." in block
    assert "In progress, not in these numbers: busy (1 of 3 trials ended)." in block
