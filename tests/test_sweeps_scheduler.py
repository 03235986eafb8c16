"""The pruning rules against Tune's own schedulers, the rotation scheduler's rungs and its state
across a restore, the spec's `scheduler` key, the `pruned` status, and a real pruned sweep."""
import io
import json
import os
import pickle
import random
import signal
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler

from run_records import epoch_record
from sweep_drivers import descendants, finish, ray_env_vars, start, sweep, table

from analysis.load import load
from analysis.replay import pool_of, stopping_epochs
from sweeps.callback import StoreCallback
from sweeps.pruning import MedianRule, Pruning, RungRule, parse_pruning, rung_epochs
from sweeps.scheduler import RotationScheduler, state_file, tune_scheduler
from sweeps.spec import parse_spec
from sweeps.store import read_trial_file


class FakeTrial:
    """What Tune's schedulers read of a trial."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id

    def __hash__(self):
        return hash(self.trial_id)

    def __eq__(self, other):
        return self.trial_id == other.trial_id


class FakeController:
    def get_live_trials(self):
        return []


def lockstep(n_trials: int, epochs: int, seed: int) -> list[tuple[str, int, float]]:
    """(trial, epoch, val_acc) in lock-step order for random rising curves."""
    rng = random.Random(seed)
    levels = [rng.uniform(0.5, 0.9) for _ in range(n_trials)]
    return [(f"t{i}", e, min(1.0, levels[i] + 0.02 * np.log(e) + rng.gauss(0, 0.02)))
            for e in range(1, epochs + 1) for i in range(n_trials)]


def _stops(stream, decide) -> dict[str, int]:
    """trial -> the epoch a decision function stopped it at (trials never stopped are absent)."""
    stopped, histories = {}, {}
    for tid, epoch, value in stream:
        if tid in stopped:
            continue
        histories.setdefault(tid, []).append({"epoch": epoch, "val_acc": value})
        if decide(tid, histories[tid]):
            stopped[tid] = epoch
    return stopped


@pytest.mark.parametrize("grace,eta,seed", [(1, 3, 0), (2, 2, 1), (1, 4, 2), (3, 3, 3)])
def test_asha_rule_decides_as_tunes_asha(grace, eta, seed):
    stream, max_t = lockstep(30, 27, seed), 27
    tune = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=max_t,
                         grace_period=grace, reduction_factor=eta)
    trials = {f"t{i}": FakeTrial(f"t{i}") for i in range(30)}
    for t in trials.values():
        tune.on_trial_add(FakeController(), t)

    def tune_decide(tid, history):
        r = history[-1]
        action = tune.on_trial_result(FakeController(), trials[tid], {"epoch": r["epoch"], "val_acc": r["val_acc"]})
        return action == TrialScheduler.STOP and r["epoch"] < max_t   # Tune also stops trials that are done

    rule = RungRule("val_acc", grace, eta, max_t)
    theirs, ours = _stops(stream, tune_decide), _stops(stream, rule.decide)
    assert ours == theirs and len(ours) > 10       # most trials stopped, at the same epochs
    assert set(ours.values()) <= set(rung_epochs(grace, eta, max_t))


@pytest.mark.parametrize("grace,seed", [(1, 0), (4, 1)])
def test_median_rule_decides_as_tunes_median_stopping(grace, seed):
    stream = lockstep(12, 15, seed)
    tune = MedianStoppingRule(time_attr="epoch", metric="val_acc", mode="max", grace_period=grace)
    trials = {f"t{i}": FakeTrial(f"t{i}") for i in range(12)}

    def tune_decide(tid, history):
        r = history[-1]
        return tune.on_trial_result(FakeController(), trials[tid], dict(r)) == TrialScheduler.STOP

    rule = MedianRule(grace)
    theirs, ours = _stops(stream, tune_decide), _stops(stream, rule.decide)
    assert ours == theirs and ours and min(ours.values()) >= grace


def test_rung_epochs_are_asha_rungs():
    assert rung_epochs(1, 3, 30) == [1, 3, 9, 27]
    assert rung_epochs(2, 2, 16) == [2, 4, 8, 16]
    assert rung_epochs(1, 3, 2) == [1]


def test_rung_keeps_the_best_third_by_the_score_and_stops_non_finite():
    rule = RungRule("rotation_min", 1, 3, 9)
    record = lambda d: [{"epoch": 1, "val_acc": 0.5, "cosine_distance": [d, 1.0]}]
    # distances arrive 0.6, 0.9, 0.3, 0.95: each is compared with the 2/3 quantile of those before it
    decisions = [rule.decide(f"t{i}", record(d)) for i, d in enumerate([0.6, 0.9, 0.3, 0.95])]
    q = np.percentile([0.6, 0.9], 100 * 2 / 3)                      # 0.8 for the third trial
    assert decisions == [False, False, 0.3 < q, False]
    assert rule.decide("t9", record(float("nan"))) and rule.stopped["t9"] == 1
    assert rule.decide("t2", record(0.99))                          # a stopped trial stays stopped
    rule.stopped["t5"] = 3                                          # stopped at rung 3, then run anew:
    assert [rule.decide("t5", [{"epoch": e}]) for e in (1, 2, 3)] == [False, False, True]


def _result(epoch: int, distance: float, val: float = 0.5) -> dict:
    return {"epoch": epoch, "val_acc": val, "cosine_distance": [distance, 1.2]}


def test_restored_scheduler_keeps_decisions_and_rungs(tmp_path):
    def fresh():
        return RotationScheduler(1, 2, 8, time_attr="epoch", state_dir=str(tmp_path))

    (tmp_path / "rotation_scheduler.json").write_text(json.dumps(RungRule("val_acc", 1, 2, 8).state()))
    first = fresh()                       # a new sweep: a stale file is not read, and replaced
    pickled = pickle.dumps(first)         # as Tune keeps it when the sweep starts
    t = [FakeTrial(f"t{i}") for i in range(4)]
    assert first.on_trial_result(None, t[0], _result(1, 0.8)) == TrialScheduler.CONTINUE
    assert first.on_trial_result(None, t[1], _result(1, 0.2)) == TrialScheduler.STOP
    assert json.loads((tmp_path / "rotation_scheduler.json").read_text())["score"] == "rotation_min_plus_val"

    # A resumed sweep unpickles the scheduler as it was at the start (Tune saves no scheduler
    # state): it reads the rungs back, so t1 is stopped again if it reports its rung once more,
    # and t2 meets the scores of t0 and t1 (0.8 + 0.5 and 0.2 + 0.5, median 1.0) at rung 1.
    second = pickle.loads(pickled)
    assert second.on_trial_result(None, t[1], _result(1, 0.2)) == TrialScheduler.STOP
    assert second.on_trial_result(None, t[2], _result(1, 0.4)) == TrialScheduler.STOP   # 0.9 < 1.0
    memoryless = RotationScheduler(1, 2, 8, time_attr="epoch")
    assert memoryless.on_trial_result(None, t[2], _result(1, 0.4)) == TrialScheduler.CONTINUE
    assert second.stopped == {"t1": 1, "t2": 1}
    assert second.on_trial_result(None, t[3], {"epoch": 1}) == TrialScheduler.CONTINUE   # keys missing: no say


def test_tune_scheduler_maps_the_spec():
    base = {"tasks": ["fmnist-quick"], "settings": ["sgd"], "rho0": [0.1], "epochs": 9}
    spec = lambda s: parse_spec({**base, "name": "s", **({"scheduler": s} if s else {})})
    assert tune_scheduler(spec(None), "/tmp/x") is None
    assert tune_scheduler(spec({"type": "none"}), "/tmp/x") is None
    asha = tune_scheduler(spec({"type": "asha", "grace": 2, "eta": 3}), "/tmp/x")
    assert isinstance(asha, ASHAScheduler) and [m for m, _ in asha._brackets[0]._rungs] == [6, 2]
    assert isinstance(tune_scheduler(spec({"type": "median", "grace": 2}), "/tmp/x"), MedianStoppingRule)
    rotation = tune_scheduler(spec({"type": "rotation", "eta": 2}), "/tmp/x")
    assert isinstance(rotation, RotationScheduler) and sorted(rotation._rule.rungs) == [1, 2, 4, 8]


@pytest.mark.parametrize("raw,message", [
    ({"type": "hyperband"}, "type='hyperband' is not allowed: one of none, asha, median, rotation"),
    ({"type": "asha", "eta": 1}, "eta=1 is not allowed: a number > 1"),
    ({"type": "asha", "grace": True}, "grace=True is not allowed"),
    ({"type": "rotation", "grace": 0}, "grace=0 is not allowed"),
    ({"type": "median", "eta": 3}, "['eta'] not allowed with type='median'"),
    ("rotation", "'rotation' is not a mapping"),
])
def test_bad_scheduler_settings_are_refused_in_one_line(raw, message):
    with pytest.raises(ValueError) as err:
        parse_spec({"name": "s", "tasks": ["fmnist-quick"], "settings": ["sgd"], "scheduler": raw})
    assert message in str(err.value) and "scheduler" in str(err.value) and "\n" not in str(err.value)
    assert parse_pruning({"type": "rotation"}) == Pruning("rotation", 1, 3)


PRUNED_SPEC = """\
name: pruned
tasks: [fmnist-quick]
settings: [layca-sgd, sgd]
rho0: [3^-1, 3^-6]
epochs: 3
resources: {cpus: 1}
scheduler: {type: rotation, grace: 1, eta: 2}
"""


ray_env = pytest.fixture(scope="module")(ray_env_vars)


@pytest.mark.slow
def test_a_pruned_sweep_killed_and_resumed_keeps_its_decisions(ray_env, tmp_path):
    """Real Ray, one trial at a time (grid order, so each rung meets the trials in that order).
    The driver is killed as soon as a trial is stored pruned, then resumed: the
    trials pruned before the kill stay as they were, those after it were judged against the
    rungs from before it, and the replay of the same rule on the stored curves makes exactly
    the decisions the live sweep made."""
    spec_file, store, log = tmp_path / "pruned.yaml", tmp_path / "store", tmp_path / "driver.log"
    spec_file.write_text(PRUNED_SPEC)
    args = sweep(str(spec_file), "--store", str(store), "--max-concurrent", "1")
    driver = start(args, ray_env, log)
    deadline = time.monotonic() + 300
    while not any(pd.read_parquet(f).status.iloc[0] == "pruned" for f in (store / "trials").glob("*/*.parquet")):
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    leftovers = descendants(driver.pid)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = table(store, "trials", "pruned").set_index("trial_id")
    assert len(before) < 4 or (before.status == "running").any(), "the sweep ended before the kill"

    assert "resuming" in finish(start([*args, "--resume"], ray_env, log), log)
    trials, epochs, rotation = (table(store, t, "pruned") for t in ("trials", "epochs", "rotation"))
    trials = trials.set_index("trial_id").sort_index()
    assert len(trials) == 4 and set(trials.status) == {"completed", "pruned"}
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert not rotation.duplicated(["trial_id", "epoch", "layer"]).any()
    assert len(epochs) == trials.epochs_done.sum() and len(rotation) == (trials.epochs_done * trials.num_layers).sum()
    for tid, t in trials.iterrows():
        assert sorted(epochs[epochs.trial_id == tid].epoch) == list(range(1, t.epochs_done + 1))
        assert (t.epochs_done in (1, 2)) if t.status == "pruned" else t.epochs_done == 3
    for tid, t in before[before.status == "pruned"].iterrows():
        assert (trials.loc[tid, "status"], trials.loc[tid, "epochs_done"]) == ("pruned", t.epochs_done)

    state = json.loads((store / state_file("pruned")).read_text())
    assert set(dict(state["rungs"])[1]) == set(trials.index)           # rung 1 remembers every trial
    assert state["stopped"] == {tid: t.epochs_done for tid, t in trials.iterrows() if t.status == "pruned"}
    replayed = stopping_epochs(pool_of(load(str(store))), Pruning("rotation", 1, 2))
    assert replayed == trials.epochs_done.to_dict()


def test_a_grace_beyond_the_trials_epochs_is_refused():
    with pytest.raises(ValueError, match=r"scheduler: grace=10 is not allowed: at most the trials' 9 epochs"):
        parse_spec({"name": "s", "tasks": ["fmnist-quick"], "settings": ["sgd"], "epochs": 9,
                    "scheduler": {"type": "asha", "grace": 10}})


def test_the_store_calls_a_trial_ended_before_its_epochs_pruned(tmp_path):
    """Ended by Tune after 1 of 3 epochs: pruned, its epoch kept; after all 3: completed; a
    diverged one stays diverged however early it ended."""
    config = {"task": "fmnist-quick", "setting": "sgd", "rho0": 0.1, "epochs": 3}
    cb = StoreCallback(str(tmp_path), "s", num_trials=3, progress_every_s=3600, out=io.StringIO())
    cb.setup()
    trials = {}
    for tid, epochs, diverged in (("early", 1, False), ("full", 3, False), ("nan", 1, True)):
        trial = trials[tid] = SimpleNamespace(trial_id=tid, config=config, status=Trial.RUNNING, last_result={},
                                              get_error=lambda: None)
        for e in range(1, epochs + 1):
            trial.last_result = {**epoch_record(e, 0.1 * e, [0.5, 0.25], diverged=diverged and e == epochs),
                                 "config": config}
            cb.on_trial_result(0, list(trials.values()), trial, trial.last_result)
        trial.status = Trial.TERMINATED
        cb.on_trial_complete(0, list(trials.values()), trial)
    rows = {tid: read_trial_file(str(tmp_path), "trials", "s", tid).to_pylist()[0] for tid in trials}
    assert {tid: (r["status"], r["epochs_done"]) for tid, r in rows.items()} == {
        "early": ("pruned", 1), "full": ("completed", 3), "nan": ("diverged", 1)}
    assert read_trial_file(str(tmp_path), "epochs", "s", "early").num_rows == 1
