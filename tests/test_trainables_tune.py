"""run_trial inside real Ray Tune trials: reports, checkpoints, retry from a checkpoint; and
checkpoints that are read without unpickling code."""
import os
from pathlib import Path

import pytest
import torch

from trainables import tune_trial
from trainables.data import SYSTEM_FASHION_MNIST
from layrot.run import EPOCH_KEYS
from trainables.train import Run, train
from trainables.tune_trial import STATE_FILE, UnsafeCheckpoint, load_run_state, run_trial

QUICK = {"task": "fmnist-quick", "setting": "layca-sgd", "alpha": -0.3, "rho0": 0.1, "seed": 3}


def test_fail_once_needs_a_positive_epoch():
    with pytest.raises(ValueError, match="_fail_once_at_epoch=0 must be an integer >= 1"):
        run_trial({**QUICK, "_fail_once_at_epoch": 0})


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    ray = pytest.importorskip("ray")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # A private single-CPU instance: never attaches to (or stops) anyone else's cluster.
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield tmp_path_factory.mktemp("tune")
    ray.shutdown()


def fit(storage, name: str, config: dict):
    from ray import tune
    tuner = tune.Tuner(
        run_trial,
        param_space=config,
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1),
                                  callbacks=[tune.logger.JsonLoggerCallback()]),
    )
    grid = tuner.fit()
    assert grid.num_errors == 0
    return grid[0]


@pytest.mark.slow
@pytest.mark.skipif(not SYSTEM_FASHION_MNIST.exists(), reason="needs Debian's dataset-fashion-mnist")
def test_trial_retried_from_its_checkpoint_ends_like_an_uninterrupted_run(local_ray, monkeypatch):
    data_dir = str(local_ray / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # as the trial's worker (OMP_NUM_THREADS=1)
    try:
        reference = train({**QUICK, "data_dir": data_dir}, on_epoch=lambda m: None)
    finally:
        torch.set_num_threads(threads)

    result = fit(local_ray, "retry", {**QUICK, "data_dir": data_dir, "_fail_once_at_epoch": 2})
    assert "injected failure after epoch 2" in (Path(result.path) / "error.txt").read_text()
    # A retry from scratch would fail again at epoch 2 (max_failures=1 would then error the
    # trial): it resumed from the epoch-2 checkpoint. Tune may start a new result file for the
    # retried actor, so the reported epochs are checked for repeats, the whole run in its state.
    epochs = result.metrics_dataframe["epoch"].tolist()
    assert epochs == sorted(set(epochs)) and epochs[-1] == 3 and set(epochs) <= {1, 2, 3}
    with result.checkpoint.as_directory() as folder:
        assert [m["epoch"] for m in load_run_state(Path(folder) / STATE_FILE)["history"]] == [1, 2, 3]
    final = {k: result.metrics[k] for k in EPOCH_KEYS if k != "epoch_seconds"}
    assert final == {k: reference[-1][k] for k in EPOCH_KEYS if k != "epoch_seconds"}
    assert result.checkpoint is not None


@pytest.mark.slow
@pytest.mark.skipif(not SYSTEM_FASHION_MNIST.exists(), reason="needs Debian's dataset-fashion-mnist")
def test_diverged_trial_ends_after_its_report_without_error(local_ray):
    result = fit(local_ray, "diverge", {**QUICK, "setting": "sgd", "rho0": 1e37, "data_dir": str(local_ray / "data")})
    frame = result.metrics_dataframe
    assert frame["diverged"].tolist()[-1] and not any(frame["diverged"].tolist()[:-1])
    assert len(frame) < 3 and set(EPOCH_KEYS) <= set(result.metrics)


class _Payload:
    """Unpickling this runs ``os.system``: what a planted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant(folder: Path, marker: Path) -> Path:
    """A checkpoint that looks like a run state but carries the payload in its history."""
    state = Run({**QUICK, "data_fraction": 0.2}).state_dict()
    state["history"] = [_Payload(marker)]
    torch.save(state, folder / STATE_FILE)
    return folder


NEEDS_DATA = pytest.mark.skipif(not SYSTEM_FASHION_MNIST.exists(), reason="needs Debian's dataset-fashion-mnist")


@NEEDS_DATA
def test_a_planted_malicious_checkpoint_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    folder = _plant(tmp_path, marker)
    with pytest.raises(UnsafeCheckpoint, match=r"checkpoint '.*run_state.pt' holds more than tensors and plain "
                                               r"values; refusing to unpickle it \(.*posix.system"):
        load_run_state(folder / STATE_FILE)
    assert not marker.exists()
    with open(folder / STATE_FILE, "rb") as f:   # the file does carry a live payload
        torch.load(f, weights_only=False)
    assert marker.exists()


@NEEDS_DATA
def test_a_trial_given_a_malicious_checkpoint_fails_before_training(tmp_path, monkeypatch):
    from ray import tune
    marker = tmp_path / "pwned"
    checkpoint = tune.Checkpoint.from_directory(str(_plant(tmp_path, marker)))
    monkeypatch.setattr(tune_trial.tune, "get_checkpoint", lambda: checkpoint)
    monkeypatch.setattr(tune_trial.tune, "report", lambda *a, **k: pytest.fail("trained on a planted checkpoint"))
    with pytest.raises(UnsafeCheckpoint):
        run_trial({**QUICK, "data_fraction": 0.2})
    assert not marker.exists()


@NEEDS_DATA
@pytest.mark.parametrize("setting", ["layca-sgd", "layca-adam", "rmsprop"])
def test_the_whole_run_state_round_trips_weights_only(tmp_path, setting):
    """Model, optimizer state (Layca's initial norms included), schedule, monitor, RNGs and the
    history of metrics dicts all load under weights_only=True, unchanged."""
    run = Run({**QUICK, "setting": setting, "data_fraction": 0.2})
    run.epoch()
    state = run.state_dict()
    torch.save(state, tmp_path / STATE_FILE)
    loaded = load_run_state(tmp_path / STATE_FILE)

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return type(a) is type(b) and (a == b or a != a)   # NaN equals itself here
    assert same(state, loaded)
    assert len(loaded["history"]) == 1 and loaded["history"][0]["epoch"] == 1
