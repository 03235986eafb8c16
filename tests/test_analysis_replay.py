"""`layrot replay`: the lock-step replay against hand-computed stops, and its table against a
recomputation from its --decisions file with pandas alone."""
import io
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import load
from analysis.replay import COLUMNS, DECISION_COLUMNS, notes, pool_of, replay
from layrot.cli import main
from layrot.run import resolve
from sweeps.store import TrialRecord

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "results" / "study-30ep"

# trial -> (store status, val_acc per stored epoch, min cosine distance per stored epoch, final test acc)
CURVES = {
    "a": ("completed", [0.5, 0.6, 0.7], [0.9, 0.9, 0.9], 0.68),
    "b": ("completed", [0.8, 0.8, 0.8], [0.1, 0.1, 0.1], 0.75),
    "c": ("completed", [0.4, 0.5, 0.9], [0.95, 0.95, 0.95], 0.85),
    "d": ("diverged", [0.3, 0.1], [0.2, 0.2], 0.10),
    "e": ("running", [0.9], [0.5], 0.90),
}


def _record(epoch: int, val: float, distance: float, test: float) -> dict:
    return {"epoch": epoch, "lr": 0.1, "train_loss": 1.0, "train_acc": val, "val_acc": val, "test_acc": test,
            "val_images": 100, "test_images": 100, "relative_distance_network": 0.5, "epoch_seconds": 1.0,
            "diverged": False, "layer_names": ["conv", "fc"], "cosine_distance": [distance, 1.5],
            "relative_distance": [0.1, 0.1], "norm_ratio": [1.0, 1.0]}


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> str:
    store = str(tmp_path_factory.mktemp("replay") / "store")
    for i, (tid, (status, vals, dists, test)) in enumerate(CURVES.items()):
        rec = TrialRecord("s", tid, resolve({"task": "fmnist-quick", "rho0": 0.1 * (i + 1), "epochs": 3}))
        for e, (v, d) in enumerate(zip(vals, dists), start=1):
            rec.add_epoch(_record(e, v, d, test))
        rec.finish(status)
        rec.write(store)
    return store


def test_lockstep_replay_stops_where_computed_by_hand(small_store):
    """Rungs at epochs 1 and 3 (the last); trials a..e meet each rule in that order at epoch 1.
    ASHA's cutoff is the 2/3 quantile of the scores recorded before: c (0.4 < 0.7) and d
    (0.3 < 0.6) stop. The rotation score (min distance + val) stops b (0.9 < 1.4) and d (0.5 <
    1.233) instead. Median stopping needs 3 other trials: only d (0.3 < median 0.5) stops.
    e's store ends at epoch 1 under every policy; d diverged at epoch 2."""
    pool = pool_of(load(small_store))
    table, decisions = replay(pool, ["none", "asha", "median", "rotation"], 1, 3)
    stops = decisions.pivot(index="trial_id", columns="policy", values="stopped_at_epoch")
    assert stops.loc[list("abcde")].to_dict("list") == {
        "none": [3, 3, 3, 2, 1], "asha": [3, 3, 1, 1, 1], "median": [3, 3, 3, 1, 1], "rotation": [3, 1, 3, 1, 1]}
    rows = table.set_index("policy")
    assert rows.loc["asha", "chosen_trial"] == "b" and rows.loc["asha", "regret_pts"] == pytest.approx(10.0)
    assert (rows.loc[["none", "median", "rotation"], "chosen_trial"] == "c").all()
    assert (rows.loc[["none", "median", "rotation"], "regret_pts"] == 0).all()
    assert rows["epochs_planned"].eq(15).all() and rows["epochs_run"].tolist() == [12, 9, 11, 9]
    assert rows.loc["none", "saved_frac"] == pytest.approx(0.2)  # e never ran its planned epochs
    assert notes(pool) == [
        "1 trial(s) did not finish in the store (1 running): each runs only its stored epochs and is never chosen",
        "1 trial(s) diverged: they end where they diverged under every policy and are ranked by their final accuracy"]


def test_the_replay_table_is_what_its_decisions_imply(tmp_path, capsys):
    """The done-when check: saved_frac and regret_pts recomputed from the --decisions file and
    the store's trials table, with pandas alone."""
    decisions_file = tmp_path / "decisions.csv"
    assert main(["replay", "--store", str(STUDY), "--format", "csv", "--decisions", str(decisions_file)]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert table.columns.tolist() == COLUMNS and table.policy.tolist() == ["none", "asha", "median", "rotation"]
    decisions = pd.read_csv(decisions_file)
    assert decisions.columns.tolist() == DECISION_COLUMNS

    trials = pd.read_parquet(STUDY / "trials")
    assert (trials.status == "completed").all()
    for row in table.itertuples():
        ran = decisions[decisions.policy == row.policy].merge(trials, on="trial_id", validate="one_to_one")
        assert len(ran) == row.trials == len(trials)
        assert row.epochs_planned == trials.epochs.sum() and row.epochs_run == ran.stopped_at_epoch.sum()
        assert row.saved_frac == pytest.approx(1 - ran.stopped_at_epoch.sum() / trials.epochs.sum(), abs=5e-5)
        finished = ran[ran.stopped_at_epoch == ran.epochs]
        chosen = finished.loc[finished.final_val_acc.idxmax()]
        best = trials.loc[trials.final_val_acc.idxmax()]
        assert row.chosen_trial == chosen.trial_id
        assert row.regret_pts == pytest.approx(100 * (best.final_test_acc - chosen.final_test_acc), abs=0.005)
    assert table.saved_frac.iloc[0] == 0 and (table.saved_frac.iloc[1:] > 0.5).all()


def test_table_format_and_bad_arguments(capsys):
    assert main(["replay", "--store", str(STUDY), "--sweep", "study-rho", "--policy", "none,rotation",
                 "--grace", "2", "--eta", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == COLUMNS and [line.split()[0] for line in out[1:]] == ["none", "rotation"]
    assert all(line.split()[1] == "16" for line in out[1:])           # the sweep's 16 trials
    for argv, message in [(["--policy", "hyperband"], "--policy 'hyperband': allowed policies are"),
                          (["--eta", "1"], "eta=1 is not allowed: a number > 1"),
                          (["--grace", "0"], "grace=0 is not allowed"),
                          (["--format", "json"], "--format 'json': allowed formats are table, csv"),
                          (["--sweep", "nope"], "sweep 'nope' is not in store")]:
        assert main(["replay", "--store", str(STUDY), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def test_pruned_trials_of_a_store_are_unfinished(small_store):
    """A store a pruned sweep left: its pruned trials keep their epochs and are never chosen."""
    pool = pool_of(load(small_store))
    pool.trials.loc[pool.trials.trial_id == "c", "status"] = "pruned"
    table, _ = replay(pool, ["none"], 1, 3)
    assert table.chosen_trial.iloc[0] == "b" and math.isclose(table.regret_pts.iloc[0], 0.0)
    assert notes(pool)[0].startswith("2 trial(s) did not finish in the store (1 pruned, 1 running)")


def test_a_pool_with_no_finished_trial_has_no_pick(small_store):
    """A sweep that has only just started (every trial running): nothing to choose, no error."""
    pool = pool_of(load(small_store))
    pool.trials["status"] = "running"
    table, _ = replay(pool, ["none", "rotation"], 1, 3)
    assert table.chosen_trial.isna().all() and table.regret_pts.isna().all()
    assert table.epochs_run.iloc[0] == sum(map(len, pool.histories.values()))  # "none" runs every stored epoch


def test_the_documents_numbers_are_the_replays(monkeypatch, tmp_path, capsys):
    """docs/pruning.md and the README carry the replay's blocks of the committed stores (the
    30-epoch study and the 100-epoch one); one changed number in a copy is caught (one render
    checks all three)."""
    from analysis.pruning_doc import main as doc_main

    monkeypatch.chdir(ROOT)                    # the blocks name the stores as given: results/study-30ep, ...
    tampered = tmp_path / "pruning.md"
    text = (ROOT / "docs" / "pruning.md").read_text()
    assert "| rotation | 88 | 2640 | 434 |" in text
    tampered.write_text(text.replace("| rotation | 88 | 2640 | 434 |", "| rotation | 88 | 2640 | 433 |"))
    stores = ["results/study-30ep", "results/study"]
    assert doc_main([*stores, "--check", "docs/pruning.md", "README.md", str(tampered)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"{tampered}: generated pruning numbers differ from the replay of {', '.join(stores)}"]


def test_the_figure_has_a_point_per_policy_and_setting(small_store):
    from analysis.replay import pruning_figure, tuning_grid

    grid = tuning_grid(pool_of(load(small_store)))
    fig = pruning_figure(grid)
    assert [t.name for t in fig.data] == ["asha", "median", "rotation"]
    for trace in fig.data:
        rows = grid[grid.policy == trace.name]
        assert list(trace.x) == pytest.approx(list(100 * rows.saved_frac)) and list(trace.y) == list(rows.regret_pts)
    assert len(grid) == 4 * 3 * 2 + 4                  # grace x eta for the rung policies, grace for median
