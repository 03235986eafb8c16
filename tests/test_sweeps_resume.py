"""Resuming a sweep from its store alone (no Tune state): which grid points are done, which
trials' partial files go, and the grid check. The store is written by the real callback."""
import io
import json
from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial

from run_records import epoch_record

from sweeps.callback import StoreCallback
from sweeps.launch import previous_state
from sweeps.resume import check_grid, drop_trial, grid_points, plan_from_store, recorded_grid, save_grid
from sweeps.spec import parse_spec
from sweeps.store import read_trial_file

RAW = {"name": "r", "tasks": ["fmnist-quick"], "settings": ["sgd", "layca-sgd"], "rho0": ["3^-3", "3^-1"],
       "epochs": 3}
SPEC = parse_spec(RAW)


def _result(epoch: int, diverged: bool = False) -> dict:
    return {**epoch_record(epoch, 0.4, [0.1, 0.2], seconds=0.1, diverged=diverged), "test_acc": 0.3}


def _play(store, trial_id: str, point: dict, epochs: int, end: str | None, diverged: bool = False) -> None:
    """What a driver's callback writes for one trial: ``epochs`` reports, then ``end``."""
    cb = StoreCallback(str(store), "r", SPEC.num_trials, out=io.StringIO())
    cb.setup()
    trial = SimpleNamespace(trial_id=trial_id, config={**SPEC.fixed, **point}, status=Trial.RUNNING,
                            last_result={}, get_error=lambda: "RuntimeError: boom")
    for e in range(1, epochs + 1):
        trial.last_result = _result(e, diverged and e == epochs)
        cb.on_trial_result(0, [trial], trial, trial.last_result)
    if end == "complete":
        cb.on_trial_complete(0, [trial], trial)
    elif end == "error":
        cb.on_trial_error(0, [trial], trial)


@pytest.fixture
def half_done_store(tmp_path):
    """Point 0 completed, point 1 diverged, point 2 interrupted after epoch 1, point 3 errored."""
    points = grid_points(SPEC)
    save_grid(SPEC, str(tmp_path))
    _play(tmp_path, "a_00000", points[0], 3, "complete")
    _play(tmp_path, "a_00001", points[1], 2, "complete", diverged=True)
    _play(tmp_path, "a_00002", points[2], 1, None)
    _play(tmp_path, "a_00003", points[3], 0, "error")
    return tmp_path


def test_grid_points_are_the_specs_trials_in_order():
    points = grid_points(SPEC)
    assert len(points) == SPEC.num_trials == 4
    assert [(p["setting"], p["rho0"]) for p in points] == [
        ("sgd", 3.0**-3), ("sgd", 3.0**-1), ("layca-sgd", 3.0**-3), ("layca-sgd", 3.0**-1)]


def test_done_points_are_kept_and_the_others_rerun_from_scratch(half_done_store):
    store = str(half_done_store)
    plan = plan_from_store(SPEC, store)
    assert sorted(t.trial_id for t in plan.done) == ["a_00000", "a_00001"]
    assert {t.status for t in plan.done} == {"completed", "diverged"}
    assert sorted(plan.stale) == ["a_00002", "a_00003"]
    assert plan.remaining == grid_points(SPEC)[2:]

    for trial_id in plan.stale:
        drop_trial(store, "r", trial_id)
    for table in ("trials", "epochs", "rotation"):
        assert read_trial_file(store, table, "r", "a_00002") is None
        assert read_trial_file(store, table, "r", "a_00000") is not None
    assert read_trial_file(store, "epochs", "r", "a_00000").num_rows == 3
    again = plan_from_store(SPEC, store)
    assert again.stale == [] and again.remaining == plan.remaining


def test_a_resume_needs_the_grid_the_sweep_started_with(half_done_store):
    store = str(half_done_store)
    check_grid(SPEC, store)
    check_grid(parse_spec({**RAW, "train": {"device": "cpu"}}), store)   # where it runs may change
    for changed in ({**RAW, "rho0": ["3^-3", "3^-2"]}, {**RAW, "epochs": 4}, {**RAW, "seeds": [0, 1]},
                    {**RAW, "analysis": {"min_train_acc": 0.95}}, {**RAW, "scheduler": {"type": "asha", "grace": 1}}):
        with pytest.raises(ValueError, match="the spec of sweep 'r' changed since it started"):
            check_grid(parse_spec(changed), store)


def test_the_grid_record_of_older_stores_and_stores_without_one(tmp_path):
    legacy = tmp_path / "_tune" / "r" / "layrot_grid.json"   # where the first store version kept it
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps(SPEC.trial_configs(), sort_keys=True))
    assert recorded_grid(str(tmp_path), "r") == recorded_grid(str(_saved(tmp_path / "new")), "r")
    with pytest.raises(ValueError, match="changed"):
        check_grid(parse_spec({**RAW, "epochs": 4}), str(tmp_path))

    bare = tmp_path / "bare"          # no record at all: the stored trials must be grid points
    _play(bare, "b_00000", grid_points(SPEC)[1], 1, None)
    check_grid(SPEC, str(bare))
    with pytest.raises(ValueError, match="changed"):
        check_grid(parse_spec({**RAW, "rho0": ["3^-3"]}), str(bare))


def _saved(store):
    save_grid(SPEC, str(store))
    return store


def test_previous_state_chooses_how_to_start(half_done_store, tmp_path):
    assert previous_state(SPEC, str(tmp_path / "empty"), resume=True) == "new"
    assert previous_state(SPEC, str(half_done_store), resume=True) == "store"
    with pytest.raises(ValueError, match="sweep 'r' already ran in .*; pass --resume"):
        previous_state(SPEC, str(half_done_store), resume=False)


def test_tune_state_without_a_trial_snapshot_resumes_from_the_store(half_done_store):
    """Repro: a driver killed before Tune's first snapshot of its trials leaves tuner.pkl
    alone; Tuner.restore then created the trials with an empty config (KeyError: 'setting')."""
    experiment = half_done_store / "_tune" / "r"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"")
    assert previous_state(SPEC, str(half_done_store), resume=True) == "store"
    (experiment / "experiment_state-2026-12-01_14-00-00.json").write_text("{}")
    assert previous_state(SPEC, str(half_done_store), resume=True) == "tune"
