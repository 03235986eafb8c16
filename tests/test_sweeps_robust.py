"""A sweep under signals, concurrent launches, lost Tune state and repeated SIGKILLs, on real
Ray and real Fashion-MNIST: it never reports an unfinished sweep as finished, never runs twice
at once, listens on loopback only, and every resume ends with the rows of an uninterrupted
sweep (the same values, bit for bit: each trial is deterministic on CPU), none twice.
"""
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import yaml

from sweep_drivers import (check_store, descendants, finish, is_loopback, kill_tree, listening_sockets,
                           ray_env_vars, row_values, start, sweep, table, unreadable_files)

pytestmark = pytest.mark.slow

TINY = {"name": "tiny", "tasks": ["fmnist-quick"], "settings": ["sgd", "layca-sgd"], "rho0": ["3^-3", "3^-1"],
        "epochs": 3}
TRIALS, EPOCHS = 4, 4 * 3
ray_env = pytest.fixture(scope="module")(ray_env_vars)


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _args(spec_file: Path, store: Path, *extra: str) -> list[str]:
    return sweep(str(spec_file), "--store", str(store), "--max-concurrent", "1", *extra)


@pytest.fixture(scope="module")
def reference(ray_env, spec_file, tmp_path_factory):
    """An uninterrupted sweep: its rows, and its wall time."""
    tmp = tmp_path_factory.mktemp("reference")
    began = time.monotonic()
    finish(start(_args(spec_file, tmp / "store"), ray_env, tmp / "log"), tmp / "log")
    wall = time.monotonic() - began
    trials, _, rotation = check_store(tmp / "store", "tiny", TRIALS)
    return row_values(trials, rotation), wall


def _wait_for(predicate, proc, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


def _read(store: Path, name: str):
    """The sweep's rows of one table while a driver may be replacing its files (None: no file yet)."""
    for _ in range(20):
        if not any((store / name / "tiny").glob("*.parquet")):
            return None
        try:
            return table(store, name, "tiny")
        except (FileNotFoundError, OSError):   # a file replaced between listing and reading
            time.sleep(0.01)
    raise AssertionError(f"cannot read the {name} table of {store}")


def _epoch_rows(store: Path) -> int:
    epochs = _read(store, "epochs")
    return 0 if epochs is None else len(epochs)


def _done(store: Path) -> set:
    trials = _read(store, "trials")
    return set() if trials is None else set(trials[trials.status.isin(["completed", "diverged"])].config_json)


def _assert_matches(store: Path, reference) -> None:
    trials, _, rotation = check_store(store, "tiny", TRIALS)
    assert row_values(trials, rotation) == reference[0]
    assert unreadable_files(store) == []


def test_ctrl_c_stops_cleanly_and_a_running_sweep_listens_on_loopback_only_and_refuses_a_second_driver(
        ray_env, spec_file, reference, tmp_path):
    store, log = tmp_path / "store", tmp_path / "driver.log"
    driver = start(_args(spec_file, store), ray_env, log, own_group=True)
    try:
        _wait_for(lambda: "trial 1/4 completed" in log.read_text(), driver, log)

        # Every socket the embedded Ray listens on (GCS, raylet, driver, trial worker, agents).
        sockets = listening_sockets([driver.pid, *descendants(driver.pid)])
        assert len({pid for _, _, pid in sockets}) >= 3, sockets
        assert [s for s in sockets if not is_loopback(s[0])] == []

        began = time.monotonic()
        second = start(_args(spec_file, store, "--resume"), ray_env, tmp_path / "second.log")
        assert second.wait(timeout=10) == 2 and time.monotonic() - began < 10
        refusal = (tmp_path / "second.log").read_text()
        assert f"sweep 'tiny' is already running into '{store}': pid {driver.pid} on " in refusal
        assert refusal.count("\n") == 1

        os.killpg(driver.pid, signal.SIGINT)     # Ctrl-C: the driver and all of its Ray get SIGINT
        assert driver.wait(timeout=120) == 130
    finally:
        kill_tree(driver.pid)
    out = log.read_text()
    done = len(_done(store))
    assert 1 <= done < TRIALS and "finished" not in out
    assert [line for line in out.splitlines() if "interrupted" in line] == [
        f"interrupted: {done} of {TRIALS} trials done; continue with: layrot sweep {spec_file} --store {store} --resume"]
    assert unreadable_files(store) == []

    out = finish(start(_args(spec_file, store, "--resume"), ray_env, log), log)
    assert f"resuming {TRIALS - done} of {TRIALS} trials" in out and "finished: 4 completed" in out
    _assert_matches(store, reference)


def test_sigterm_twice_stops_at_once_and_leaves_a_readable_store(ray_env, spec_file, reference, tmp_path):
    store, log = tmp_path / "store", tmp_path / "driver.log"
    driver = start(_args(spec_file, store), ray_env, log)
    try:
        _wait_for(lambda: _epoch_rows(store) >= 2, driver, log)
        driver.send_signal(signal.SIGTERM)
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=60) == 143
    finally:
        kill_tree(driver.pid)
    out = log.read_text()
    assert "finished" not in out and out.splitlines()[-1].startswith("interrupted: ")
    assert "Traceback" not in out
    assert unreadable_files(store) == []
    finish(start(_args(spec_file, store, "--resume"), ray_env, log), log)
    _assert_matches(store, reference)


def test_resume_from_the_store_alone_after_tune_state_is_lost(ray_env, spec_file, reference, tmp_path):
    """A new machine with the committed store only: done trials stay as they are, the one that
    was running restarts from scratch, the rest run; the grid record is in the committed part."""
    store, log = tmp_path / "store", tmp_path / "driver.log"
    driver = start(_args(spec_file, store), ray_env, log)
    try:
        _wait_for(lambda: len(_done(store)) >= 2 and _epoch_rows(store) > 2 * 3, driver, log)
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=120) == 130
    finally:
        kill_tree(driver.pid)
    before = table(store, "trials", "tiny")
    kept = before[before.status == "completed"][["trial_id", "updated_at"]]
    assert (store / "_sweeps" / "tiny.json").is_file()
    shutil.rmtree(store / "_tune")

    out = finish(start(_args(spec_file, store, "--resume"), ray_env, log), log)
    assert f"resuming {TRIALS - len(kept)} of {TRIALS} trials" in out
    _assert_matches(store, reference)
    after = table(store, "trials", "tiny")
    assert kept.merge(after, on=["trial_id", "updated_at"]).shape[0] == len(kept)   # not run again
    assert set(before.trial_id) - set(kept.trial_id) - set(after.trial_id)          # partial ones replaced


def test_three_sigkills_at_random_moments_then_resume_end_like_an_uninterrupted_sweep(
        ray_env, spec_file, reference, tmp_path):
    rng = random.Random(int(os.environ.get("LAYROT_CHAOS_SEED", time.time_ns() % 10**6)))
    targets = sorted(rng.sample(range(1, EPOCHS), 3))   # kill once the store holds this many epochs ...
    delays = [rng.uniform(0, 0.5) for _ in targets]     # ... plus a little, to land anywhere in a write
    store, log = tmp_path / "store", tmp_path / "driver.log"
    progress: list[tuple[int, int]] = []    # (done trials, epoch rows), sampled while the sweep runs
    wall = 0.0
    for target, delay in zip(targets, delays):
        began = time.monotonic()
        driver = start(_args(spec_file, store, "--resume"), ray_env, log)

        def reached():
            progress.append((len(_done(store)), _epoch_rows(store)))
            return progress[-1][1] >= target
        try:
            _wait_for(reached, driver, log)
            time.sleep(delay)
        finally:
            kill_tree(driver.pid)
            driver.wait()
        wall += time.monotonic() - began
        assert unreadable_files(store) == [], f"after the kill at {target} epochs + {delay:.2f} s"
        progress.append((len(_done(store)), _epoch_rows(store)))
    began = time.monotonic()
    finish(start(_args(spec_file, store, "--resume"), ray_env, log), log)
    wall += time.monotonic() - began
    progress.append((len(_done(store)), _epoch_rows(store)))

    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(progress, progress[1:])), \
        f"progress went backwards: {progress}"
    _assert_matches(store, reference)
    print(f"\nchaos: kills at {targets} epochs (+{', '.join(f'{d:.2f}' for d in delays)} s); "
          f"{wall:.1f} s of drivers against {reference[1]:.1f} s uninterrupted ({wall / reference[1]:.2f}x)")
