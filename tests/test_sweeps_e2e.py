"""End to end on real Ray and real Fashion-MNIST: the store a sweep leaves, after a clean run,
a killed and resumed driver, a failing trial and a diverging one.

Each sweep runs in its own driver process with its own Ray temp dir; the processes a killed
driver leaves behind are ended by PID.
"""
import json
import math
import os
import re
import signal
import time

import pandas as pd
import pytest

from sweep_drivers import CONFIG_KEYS, check_store, descendants, finish, ray_env_vars, row_keys, start, sweep, table
from sweeps.spec import load_spec

pytestmark = pytest.mark.slow

QUICK_SMOKE = load_spec("quick").smoke()
ray_env = pytest.fixture(scope="module")(ray_env_vars)


@pytest.fixture(scope="module")
def quick_smoke_store(ray_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quick")
    store, log = tmp / "store", tmp / "driver.log"
    out = finish(start(sweep("quick", "--store", str(store), "--smoke-test"), ray_env, log), log)
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
    # The console: a start line, one line per finished trial, the final line; Ray's and Tune's
    # banners, warnings and colour codes are in the log file instead.
    n = QUICK_SMOKE.num_trials
    lines = out.splitlines()
    assert lines[0].startswith(f"[{QUICK_SMOKE.name}] starting {n} of {n} trials into {store}")
    assert [int(m.group(1)) for line in lines if (m := re.match(rf"\[{QUICK_SMOKE.name}\] trial (\d)/{n} completed: ", line))] \
        == list(range(1, n + 1))
    assert lines[-1] == f"[{QUICK_SMOKE.name}] finished: {n} completed, 0 diverged, 0 errored of {n} trials; store: {store}"
    assert all(line.startswith(f"[{QUICK_SMOKE.name}] ") for line in lines), out
    log = (store / "_tune" / f"{QUICK_SMOKE.name}.log").read_text()
    for noise in ("Token authentication is enabled", "Configuration for experiment"):
        assert noise in log and noise not in out
    assert "\x1b[" not in out
    # Plain pandas and DuckDB read the store without our code.
    assert pd.read_parquet(store / "epochs").shape[0] == len(epochs)
    duckdb = pytest.importorskip("duckdb")
    [(count,)] = duckdb.sql(f"select count(*) from read_parquet('{store}/rotation/*/*.parquet')").fetchall()
    assert count == len(rotation)


def test_killed_driver_resumes_to_the_same_rows(quick_smoke_store, ray_env, tmp_path):
    reference, _ = quick_smoke_store
    store = tmp_path / "store"
    args = sweep("quick", "--store", str(store), "--smoke-test")
    log = tmp_path / "driver.log"
    driver = start([*args, "--max-concurrent", "1"], ray_env, log)
    deadline = time.monotonic() + 300
    while not list((store / "epochs" / QUICK_SMOKE.name).glob("*.parquet")):  # first trial under way
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    leftovers = descendants(driver.pid)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    for pid in leftovers:  # Ray's own processes of the killed driver, some of which outlive it
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    before = table(store, "trials", QUICK_SMOKE.name)
    assert (before.status != "running").sum() < QUICK_SMOKE.num_trials, "the sweep ended before the kill"

    out = finish(start([*args, "--resume"], ray_env, log), log)
    assert "resuming" in out
    trials, _, rotation = check_store(store, QUICK_SMOKE.name, QUICK_SMOKE.num_trials)
    ref_trials, _, ref_rotation = check_store(reference, QUICK_SMOKE.name, QUICK_SMOKE.num_trials)
    assert row_keys(trials, rotation) == row_keys(ref_trials, ref_rotation)

    rerun = start(args, ray_env, log)  # without --resume an existing sweep is refused
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
    out = finish(start(["-c", code], ray_env, log), log)
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
