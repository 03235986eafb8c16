"""The store callback driven by hand-made Tune events (the end-to-end tests drive it with real
ones): statuses, errors, a resumed driver, the progress line."""
import io
from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial

from run_records import epoch_record

from sweeps.callback import StoreCallback
from sweeps.store import read_trial_file

CONFIG = {"task": "fmnist-quick", "setting": "layca-sgd", "alpha": -0.2, "rho0": 9.0, "seed": 1, "epochs": 3,
          "_fail_once_at_epoch": 2}


def _trial(trial_id: str, status: str = Trial.RUNNING, last: dict | None = None, error: str | None = None):
    return SimpleNamespace(trial_id=trial_id, config=CONFIG, status=status, last_result=last or {},
                           get_error=lambda: error)


def _result(epoch: int, diverged: bool = False) -> dict:
    return {**epoch_record(epoch, 0.1 * epoch, [0.5, 0.25], lr=9.0, seconds=0.5, diverged=diverged),
            "training_iteration": epoch, "config": CONFIG}


def _callback(store, out=None) -> StoreCallback:
    cb = StoreCallback(str(store), "s", num_trials=2, progress_every_s=3600, out=out or io.StringIO())
    cb.setup()
    return cb


def test_statuses_errors_and_progress(tmp_path):
    out = io.StringIO()
    cb = _callback(tmp_path, out)
    diverging = _trial("t1")
    for e, d in ((1, False), (2, True)):
        diverging.last_result = _result(e, d)
        cb.on_trial_result(0, [diverging], diverging, _result(e, d))
    row = read_trial_file(str(tmp_path), "trials", "s", "t1").to_pylist()[0]
    assert (row["status"], row["epochs_done"]) == ("running", 2)

    # Tune calls a trial's end hook first, then changes its status.
    failing = _trial("t2", error="Traceback (most recent call last):\n  ...\nRuntimeError: boom\n")
    cb.on_trial_complete(0, [diverging, failing], diverging)
    diverging.status = Trial.TERMINATED
    cb.on_trial_error(0, [diverging, failing], failing)
    failing.status = Trial.ERROR

    t1 = read_trial_file(str(tmp_path), "trials", "s", "t1").to_pylist()[0]
    assert (t1["status"], t1["setting"], t1["alpha"], t1["rho0"]) == ("diverged", "layca-sgd", -0.2, 9.0)
    assert t1["epochs"] == 3 and t1["epochs_done"] == 2
    t2 = read_trial_file(str(tmp_path), "trials", "s", "t2").to_pylist()[0]
    assert (t2["status"], t2["error"], t2["epochs_done"]) == ("errored", "RuntimeError: boom", 0)
    assert "_fail_once_at_epoch" not in t2["config_json"]

    lines = out.getvalue().splitlines()
    point = "task=fmnist-quick setting=layca-sgd alpha=-0.2 rho0=3^2 seed=1"
    assert lines == [f"[s] trial 1/2 diverged: {point}: val 0.2000 test 0.1500 after 2 epochs",
                     f"[s] trial 2/2 errored: {point}: no epoch (RuntimeError: boom)"]
    cb._progress([diverging, failing])
    assert "best val_acc 0.2000 over 1 seed(s) (fmnist-quick layca-sgd alpha=-0.2 rho0=3^2)" in out.getvalue().splitlines()[-1]


def test_resumed_driver_continues_a_trials_files(tmp_path):
    first = _callback(tmp_path)
    trial = _trial("t1")
    for e in (1, 2):
        first.on_trial_result(0, [trial], trial, _result(e))

    resumed = _callback(tmp_path)  # a new driver process: no records in memory
    for e in (2, 3):  # Tune re-delivers epoch 2 (checkpoint of epoch 1), then goes on
        resumed.on_trial_result(0, [trial], trial, _result(e))
    trial.status, trial.last_result = Trial.TERMINATED, _result(3)
    resumed.on_trial_complete(0, [trial], trial)

    epochs = read_trial_file(str(tmp_path), "epochs", "s", "t1").column("epoch").to_pylist()
    assert epochs == [1, 2, 3]
    assert read_trial_file(str(tmp_path), "rotation", "s", "t1").num_rows == 3 * 2
    row = read_trial_file(str(tmp_path), "trials", "s", "t1").to_pylist()[0]
    assert (row["status"], row["epochs_done"], row["wall_seconds"]) == ("completed", 3, pytest.approx(1.5))



def test_a_store_that_lost_epochs_marks_the_trial_for_a_rerun(tmp_path):
    """A store reverted under a running sweep lacks epochs Tune's checkpoint had passed: the
    trial must not pass for a pruned (or completed) one, whose history it does not hold."""
    first = _callback(tmp_path)
    trial = _trial("t1")
    for e in (1, 2):
        first.on_trial_result(0, [trial], trial, _result(e))
    resumed = _callback(tmp_path)
    for e in (5, 6):  # Tune restored a checkpoint of epoch 4: epochs 3 and 4 never reach this store
        resumed.on_trial_result(0, [trial], trial, _result(e))
    trial.status, trial.last_result = Trial.TERMINATED, _result(6)
    resumed.on_trial_complete(0, [trial], trial)
    row = read_trial_file(str(tmp_path), "trials", "s", "t1").to_pylist()[0]
    assert row["status"] == "errored"
    assert row["error"].startswith("the store lacks epochs 3-4 of this trial")
    assert f"remove {tmp_path}/_tune/s" in row["error"]
