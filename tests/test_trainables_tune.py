"""run_trial inside real Ray Tune trials: reports, checkpoints, retry from a checkpoint."""
import os
from pathlib import Path

import pytest
import torch

from trainables.data import SYSTEM_FASHION_MNIST
from layrot.run import EPOCH_KEYS
from trainables.train import train
from trainables.tune_trial import run_trial

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
    epochs = result.metrics_dataframe["epoch"].tolist()
    assert epochs == [1, 2, 3]                       # the retry resumed after epoch 2, no repeats
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
