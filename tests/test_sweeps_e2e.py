"""End to end on real Ray and real Fashion-MNIST: the store a sweep leaves, after a clean run,
a killed and resumed driver, a failing trial and a diverging one.

Each sweep runs in its own driver process with its own Ray temp dir; the processes a killed
driver leaves behind are ended by PID.
"""
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from sweeps.spec import load_spec

pytestmark = pytest.mark.slow

QUICK_SMOKE = load_spec("quick").smoke()
CONFIG_KEYS = ["task", "setting", "alpha", "rho0", "seed"]


@pytest.fixture(scope="module")
def ray_env():
    """Environment for driver processes: a private, short Ray temp dir (socket paths are
    limited in length) and no cluster address, so each driver starts its own embedded Ray."""
    with tempfile.TemporaryDirectory(prefix="lrt", dir="/tmp") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        yield {**env, "RAY_TMPDIR": tmp, "PYTHONUNBUFFERED": "1"}


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A driver process whose output goes to ``log`` (a pipe could fill up and stall it)."""
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=f, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    proc.wait(timeout=timeout)
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    return out


def _sweep(*args: str) -> list[str]:
    return ["-m", "layrot", "sweep", *args]


def _table(store: Path, table: str, sweep: str) -> pd.DataFrame:
    data = ds.dataset(str(store / table), format="parquet").to_table(filter=ds.field("sweep") == sweep)
    return data.to_pandas()


def check_store(store: Path, sweep: str, num_trials: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Row counts are exactly trials x epochs (x layers), keys are unique, and every value of
    the trials table agrees with a recomputation from the epochs and rotation tables."""
    trials, epochs, rotation = (_table(store, t, sweep) for t in ("trials", "epochs", "rotation"))
    assert len(trials) == num_trials and trials.trial_id.is_unique
    assert set(trials.status) <= {"completed", "diverged"}, trials[["trial_id", "status", "error"]]
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert not rotation.duplicated(["trial_id", "epoch", "layer"]).any()
    assert len(epochs) == trials.epochs_done.sum()
    assert len(rotation) == (trials.epochs_done * trials.num_layers).sum()

    for t in trials.itertuples():
        e = epochs[epochs.trial_id == t.trial_id].sort_values("epoch")
        r = rotation[rotation.trial_id == t.trial_id]
        assert e.epoch.tolist() == list(range(1, t.epochs_done + 1))
        if t.status == "completed":
            assert t.epochs_done == t.epochs
        last = e.iloc[-1]
        assert t.final_test_acc == last.test_acc and t.final_val_acc == last.val_acc
        assert t.final_train_acc == last.train_acc
        assert (math.isnan(t.final_train_loss) and math.isnan(last.train_loss)) or t.final_train_loss == last.train_loss
        assert (t.final_val_images, t.final_test_images) == (last.val_images, last.test_images)
        assert t.wall_seconds == pytest.approx(e.epoch_seconds.sum())
        for epoch, group in r.groupby("epoch"):
            assert sorted(group.layer) == list(range(t.num_layers))
        final = r[r.epoch == t.epochs_done].cosine_distance.to_numpy()
        # a diverged trial's weights may have overflowed: its final rotation is then nan, honestly
        assert t.rotation_mean == pytest.approx(final.mean(), nan_ok=True)
        assert t.rotation_min == pytest.approx(final.min(), nan_ok=True)
        assert t.relative_distance_mean == pytest.approx(r[r.epoch == t.epochs_done].relative_distance.to_numpy().mean(),
                                                         nan_ok=True)
        assert t.rotation_frac_above_0_9 == pytest.approx(np.mean(final > 0.9))
        config = json.loads(t.config_json)
        assert {k: config[k] for k in CONFIG_KEYS} == {k: getattr(t, k) for k in CONFIG_KEYS}
    return trials, epochs, rotation


def _row_keys(trials: pd.DataFrame, rotation: pd.DataFrame) -> set:
    """(config, epoch, layer) of every rotation row: comparable across sweeps, whose trial ids differ."""
    merged = rotation.merge(trials[["trial_id", *CONFIG_KEYS]], on="trial_id")
    return set(merged[[*CONFIG_KEYS, "epoch", "layer"]].itertuples(index=False, name=None))


@pytest.fixture(scope="module")
def quick_smoke_store(ray_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quick")
    store, log = tmp / "store", tmp / "driver.log"
    out = _finish(_start(_sweep("quick", "--store", str(store), "--smoke-test"), ray_env, log), log)
    return store, out


def test_quick_smoke_sweep_fills_a_consistent_store(quick_smoke_store):
    store, out = quick_smoke_store
    trials, epochs, rotation = check_store(store, QUICK_SMOKE.name, QUICK_SMOKE.num_trials)
    epochs_each = QUICK_SMOKE.fixed["epochs"]
    assert (trials.status == "completed").all()
    assert len(epochs) == QUICK_SMOKE.num_trials * epochs_each
    assert len(rotation) == QUICK_SMOKE.num_trials * epochs_each * trials.num_layers.iloc[0]
    expected = {tuple(c[k] for k in CONFIG_KEYS) for c in QUICK_SMOKE.trial_configs()}
    assert set(trials.setting) == {"layca-sgd", "sgd"}      # the canonical names, as in the spec
    folders = [p.name for p in (store / "_tune" / QUICK_SMOKE.name).iterdir() if p.is_dir()]
    assert sorted(f.split("_")[0] for f in folders) == sorted(trials.setting)
    assert set(trials[CONFIG_KEYS].itertuples(index=False, name=None)) == expected
    assert f"{QUICK_SMOKE.num_trials}/{QUICK_SMOKE.num_trials} done" in out  # progress lines
    # Plain pandas and DuckDB read the store without our code.
    assert pd.read_parquet(store / "epochs").shape[0] == len(epochs)
    duckdb = pytest.importorskip("duckdb")
    [(count,)] = duckdb.sql(f"select count(*) from read_parquet('{store}/rotation/*/*.parquet')").fetchall()
    assert count == len(rotation)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_killed_driver_resumes_to_the_same_rows(quick_smoke_store, ray_env, tmp_path):
    reference, _ = quick_smoke_store
    store = tmp_path / "store"
    args = _sweep("quick", "--store", str(store), "--smoke-test")
    log = tmp_path / "driver.log"
    driver = _start([*args, "--max-concurrent", "1"], ray_env, log)
    deadline = time.monotonic() + 300
    while not list((store / "epochs" / QUICK_SMOKE.name).glob("*.parquet")):  # first trial under way
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    leftovers = _descendants(driver.pid)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    for pid in leftovers:  # Ray's own processes of the killed driver, some of which outlive it
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    before = _table(store, "trials", QUICK_SMOKE.name)
    assert (before.status != "running").sum() < QUICK_SMOKE.num_trials, "the sweep ended before the kill"

    out = _finish(_start([*args, "--resume"], ray_env, log), log)
    assert "resuming" in out
    trials, _, rotation = check_store(store, QUICK_SMOKE.name, QUICK_SMOKE.num_trials)
    ref_trials, _, ref_rotation = check_store(reference, QUICK_SMOKE.name, QUICK_SMOKE.num_trials)
    assert _row_keys(trials, rotation) == _row_keys(ref_trials, ref_rotation)

    rerun = _start(args, ray_env, log)  # without --resume an existing sweep is refused
    assert rerun.wait(timeout=120) == 2 and "pass --resume" in log.read_text()


def test_failing_trials_go_on_from_their_checkpoint_and_diverged_ones_are_recorded(ray_env, tmp_path):
    """Every trial raises once, right after reporting epoch 2. rho0 = 1e37 overflows the last
    layer's weights in the first epoch (a real non-finite loss); the paper's highest rate, 3^2,
    trains badly here but its loss stays finite, and it is recorded as what it reported."""
    store = tmp_path / "store"  # given as a file:// URI: the pyarrow filesystem path of the store
    spec = {"name": "faults", "tasks": ["fmnist-quick"], "settings": ["sgd"], "rho0": ["3^-3", "3^2", 1e37],
            "epochs": 3, "data_fraction": 0.25, "max_failures": 1}
    code = (
        "import json; from sweeps.launch import run_sweep; from sweeps.spec import parse_spec;"
        f"o = run_sweep(parse_spec({spec!r}), 'file://{store}', extra_config={{'_fail_once_at_epoch': 2}});"
        "print('OUTCOME', json.dumps(o.__dict__))"
    )
    log = tmp_path / "driver.log"
    out = _finish(_start(["-c", code], ray_env, log), log)
    outcome = json.loads(out.split("OUTCOME ", 1)[1].splitlines()[0])
    assert outcome["trials"] == 3 and outcome["errored"] == 0

    trials, _, _ = check_store(store, "faults", 3)
    assert out.count("retrying from its last checkpoint") == (trials.epochs_done >= 2).sum()
    for t in trials.itertuples():
        reports = [json.loads(line) for path in (store / "_tune" / "faults").glob("*/result.json")
                   for line in path.read_text().splitlines() if json.loads(line)["config"]["rho0"] == t.rho0]
        # A retried trial went on from its epoch-2 checkpoint: Tune logged each epoch once
        # (a restart from scratch would log 1, 2, 1, 2, 3).
        assert [r["epoch"] for r in reports] == list(range(1, t.epochs_done + 1))
        assert t.status == ("diverged" if reports[-1]["diverged"] else "completed")
    overflow = trials[trials.rho0 == 1e37].iloc[0]
    assert (overflow.status, overflow.epochs_done) == ("diverged", 1) and math.isnan(overflow.final_train_loss)
    assert trials[trials.rho0 == 3.0**-3].iloc[0].status == "completed"
    assert (outcome["completed"], outcome["diverged"]) == ((trials.status == "completed").sum(),
                                                            (trials.status == "diverged").sum())
