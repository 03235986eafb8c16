import io
import math
import re

import numpy as np
import pytest
import torch

import layrot_core as lc
import trainables
from trainables import tasks
from trainables.data import SYSTEM_FASHION_MNIST
from trainables.models import build_model
from trainables.train import METRIC_KEYS, Run, train

pytestmark = pytest.mark.skipif(not SYSTEM_FASHION_MNIST.exists(), reason="needs Debian's dataset-fashion-mnist")

QUICK = {"task": "fmnist-quick"}


@pytest.fixture(autouse=True)
def one_thread_and_private_cache(monkeypatch, tmp_path_factory):
    """Results must not depend on the thread count; the data cache goes to a temp root."""
    monkeypatch.setenv("LAYROT_DATA", str(tmp_path_factory.getbasetemp() / "data"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def augmented_task(monkeypatch):
    """The quick task with the paper's augmentation switched on (exercises its RNG)."""
    quick = tasks.TASKS["fmnist-quick"]
    task = tasks.Task("quick-augmented", quick.dataset, quick.model, 3, (2,), 0.2, quick.l2, True,
                      data_fraction=quick.data_fraction)
    monkeypatch.setitem(tasks.TASKS, task.name, task)
    return task.name


def round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in history]


def test_metric_keys_are_the_documented_contract():
    documented = re.findall(r"^    (\w+)\s+(?:int|float|bool|list)", trainables.__doc__, re.M)
    assert tuple(documented) == METRIC_KEYS
    history = train(QUICK, on_epoch=lambda m: None)
    assert [tuple(m) for m in history] == [METRIC_KEYS] * 3
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert all(0 <= m[k] <= 1 for m in history for k in ("train_acc", "val_acc", "test_acc"))
    assert all(m["diverged"] is False and m["epoch_seconds"] > 0 for m in history)


def test_rate_follows_the_step_schedule():
    """fmnist-quick: 3 epochs, x0.2 at epoch 2 (epochs from 0): rho0, rho0, rho0 / 5."""
    history = train({**QUICK, "rho0": 0.5, "layca": True}, on_epoch=lambda m: None)
    assert [m["lr"] for m in history] == pytest.approx([0.5, 0.5, 0.1])


@pytest.mark.parametrize("optimizer, layca", [("sgd", True), ("adam", True), ("sgd_l2", False)])
def test_resume_from_any_epoch_matches_an_uninterrupted_run(augmented_task, optimizer, layca):
    config = {"task": augmented_task, "optimizer": optimizer, "layca": layca, "alpha": -0.4,
              "rho0": 3.0**-4 if optimizer == "adam" else 3.0**-2}
    reference = Run(config)
    while not reference.done:
        reference.epoch()
    for stop_after in (1, 2):
        first = Run(config)
        for _ in range(stop_after):
            first.epoch()
        state = round_trip(first.state_dict())
        del first
        resumed = Run(config)
        resumed.load_state_dict(state)
        while not resumed.done:
            resumed.epoch()
        assert without_time(resumed.history) == without_time(reference.history)
        for a, b in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()):
            assert torch.equal(a, b)


def test_resume_refuses_another_runs_checkpoint():
    state = round_trip(Run({**QUICK, "rho0": 0.1}).state_dict())
    with pytest.raises(ValueError, match="checkpoint is of another run"):
        Run({**QUICK, "rho0": 0.2}).load_state_dict(state)


def test_rotation_is_the_cosine_distance_from_the_seeded_initialisation():
    """Recomputed with NumPy from a fresh model built with the same seed."""
    run = Run({**QUICK, "layca": True, "rho0": 0.3, "seed": 7, "epochs": 1})
    metrics = run.epoch()
    torch.manual_seed(7)
    initial = dict(build_model("fmnist_cnn_quick").named_parameters())
    final = dict(run.model.named_parameters())
    assert metrics["layer_names"] == [f"{n}.weight" for n in ("0.0", "0.4", "0.8", "1.2")]
    for name, distance in zip(metrics["layer_names"], metrics["rotation"]):
        w0, w = initial[name].detach().double().numpy().ravel(), final[name].detach().double().numpy().ravel()
        assert distance == pytest.approx(1 - w0 @ w / np.linalg.norm(w0) / np.linalg.norm(w), abs=1e-9)
    assert min(metrics["rotation"]) > 0.01


def test_every_configuration_starts_from_the_seeds_initialisation():
    def initial(config):
        return [p.detach().clone() for p in Run(config).model.parameters()]
    a = initial({**QUICK, "seed": 1})
    b = initial({**QUICK, "seed": 1, "optimizer": "adam", "layca": True, "alpha": 0.5, "rho0": 0.001})
    c = initial({**QUICK, "seed": 2})
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_plain_sgd_applies_eq1_multipliers_and_the_l2_penalty():
    run = Run({**QUICK, "optimizer": "sgd_l2", "alpha": 0.6, "rho0": 0.3})
    # eq. 1, alpha > 0, L = 4 layers: (1 - alpha) ** (5 * (L - 1 - l) / (L - 1))
    expected = [0.3 * 0.4 ** (5 * (3 - l) / 3) for l in range(4)]
    assert [g["lr"] for g in run.optimizer.param_groups] == pytest.approx(expected)
    assert {g["weight_decay"] for g in run.optimizer.param_groups} == {2 * tasks.TASKS["fmnist-quick"].l2}
    assert not isinstance(run.optimizer, lc.Layca)
    frozen_first_layers = Run({**QUICK, "alpha": 1.0, "rho0": 0.3})     # multipliers 0, 0, 0, 1
    assert [g["lr"] for g in frozen_first_layers.optimizer.param_groups] == [0, 0, 0, 0.3]
    assert frozen_first_layers.epoch()["lr"] == 0.3


def test_layca_wraps_the_named_base_with_keras_settings():
    run = Run({**QUICK, "optimizer": "adagrad", "layca": True, "rho0": 0.01})
    assert isinstance(run.optimizer, lc.Layca) and isinstance(run.optimizer.base, torch.optim.Adagrad)
    assert {g["eps"] for g in run.optimizer.param_groups} == {1e-7}
    assert {g["lr"] for g in run.optimizer.param_groups} == {0.01}


def test_non_finite_loss_stops_the_run_and_counts_nothing_right(monkeypatch):
    run = Run(QUICK)
    with torch.no_grad():
        next(run.model.parameters()).fill_(math.nan)
    metrics = run.epoch()
    assert metrics["diverged"] is True and run.done and math.isnan(metrics["train_loss"])
    # all logits are NaN: argmax would pick some class, but nothing may count as correct
    assert metrics["train_acc"] == metrics["val_acc"] == metrics["test_acc"] == 0.0
    with pytest.raises(RuntimeError, match="already finished"):
        run.epoch()


def test_too_high_rate_diverges_and_train_returns_early():
    """A rate that makes the last layer's weights overflow float32 within a few steps."""
    history = train({**QUICK, "optimizer": "sgd", "rho0": 1e37}, on_epoch=lambda m: None)
    assert history[-1]["diverged"] and len(history) < 3
    assert not any(m["diverged"] for m in history[:-1])


@pytest.mark.slow
def test_default_task_learns_real_fashion_mnist():
    """Three epochs of the default task (Layca-SGD at the paper's best rate) reach 75% test
    accuracy (chance: 10%)."""
    history = train({"task": "fmnist", "layca": True, "rho0": 3.0**-3, "epochs": 3}, on_epoch=lambda m: None)
    assert history[-1]["train_acc"] > 0.75
    assert history[-1]["test_acc"] > 0.75


def test_bf16_autocast_trains_on_cpu_with_fp32_weights():
    run = Run({**QUICK, "layca": True, "rho0": 0.1, "bf16": True, "epochs": 1})
    metrics = run.epoch()
    assert math.isfinite(metrics["train_loss"]) and metrics["train_acc"] > 0.2
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
