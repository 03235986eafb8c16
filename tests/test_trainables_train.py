import io
import math

import numpy as np
import pytest
import torch

import layrot_core as lc
from layrot import tasks
from layrot.run import EPOCH_KEYS, resolve
from trainables.data import SYSTEM_FASHION_MNIST
from trainables.models import build_model
from trainables import train as train_module
from trainables.train import Run, train

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


def test_records_have_the_run_definitions_keys_and_score_the_last_epoch_on_whole_splits():
    history = train(QUICK, on_epoch=lambda m: None)
    assert [tuple(m) for m in history] == [EPOCH_KEYS] * 3
    assert [m["epoch"] for m in history] == [1, 2, 3]
    assert all(0 <= m[k] <= 1 for m in history for k in ("train_acc", "val_acc", "test_acc"))
    assert all(m["diverged"] is False and m["epoch_seconds"] > 0 for m in history)
    # fmnist-quick evaluates 2% of the splits per epoch and all 6,000 / 10,000 images at the end
    assert [(m["val_images"], m["test_images"]) for m in history] == [(120, 200), (120, 200), (6000, 10000)]
    cut = train({**QUICK, "data_fraction": 0.5, "epochs": 1}, on_epoch=lambda m: None)
    assert (cut[-1]["val_images"], cut[-1]["test_images"]) == (3000, 5000)


def test_logged_rate_is_the_one_the_optimizer_applied(monkeypatch):
    """fmnist-quick: 3 epochs, x0.2 at epoch 2 (epochs from 0): rho0, rho0, rho0 / 5; a
    scheduler that never steps shows in the log."""
    history = train({**QUICK, "rho0": 0.5, "setting": "layca-sgd"}, on_epoch=lambda m: None)
    assert [m["lr"] for m in history] == pytest.approx([0.5, 0.5, 0.1])
    monkeypatch.setattr(torch.optim.lr_scheduler.LambdaLR, "step", lambda self, *a: None)
    assert [m["lr"] for m in train({**QUICK, "rho0": 0.5, "setting": "layca-sgd"}, on_epoch=lambda m: None)] == [0.5] * 3


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_layca_turns_each_step_by_the_scheduled_angle():
    """Per epoch, the mean angle between a layer's weights before and after each step is
    atan(rho(e)) (Algorithm 1): the schedule is what the weights see, not only what is logged."""
    run = Run({**QUICK, "rho0": 0.5, "setting": "layca-sgd"})
    weight = dict(run.model.named_parameters())["0.4.weight"]
    angles: list[float] = []
    step = run.optimizer.step

    def measured_step(*args, **kwargs):
        before = weight.detach().double().clone().ravel()
        out = step(*args, **kwargs)
        after = weight.detach().double().ravel()
        angles.append(float(torch.arccos((before @ after / before.norm() / after.norm()).clamp(-1, 1))))
        return out

    run.optimizer.step = measured_step
    for e in range(3):
        angles.clear()
        run.epoch()
        assert np.mean(angles) == pytest.approx(math.atan(resolve({**QUICK, "rho0": 0.5}).rate(e)), rel=1e-3)


@pytest.mark.parametrize("setting", ["layca-sgd", "layca-adam", "sgd-l2"])
def test_resume_from_any_epoch_matches_an_uninterrupted_run(augmented_task, setting):
    config = {"task": augmented_task, "setting": setting, "alpha": -0.4,
              "rho0": 3.0**-4 if setting == "layca-adam" else 3.0**-2}
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


def test_layer_metrics_are_distances_from_the_seeded_initialisation():
    """Recomputed with NumPy from a fresh model built with the same seed."""
    run = Run({**QUICK, "setting": "sgd", "rho0": 0.3, "seed": 7, "epochs": 1})
    metrics = run.epoch()
    torch.manual_seed(7)
    initial = dict(build_model("fmnist_cnn_quick").named_parameters())
    final = dict(run.model.named_parameters())
    assert metrics["layer_names"] == [f"{n}.weight" for n in ("0.0", "0.4", "0.8", "1.2")]
    w0s, ws = [], []
    for i, name in enumerate(metrics["layer_names"]):
        w0, w = initial[name].detach().double().numpy().ravel(), final[name].detach().double().numpy().ravel()
        w0s.append(w0), ws.append(w)
        n0 = np.linalg.norm(w0)
        assert metrics["cosine_distance"][i] == pytest.approx(1 - w0 @ w / n0 / np.linalg.norm(w), abs=1e-9)
        assert metrics["relative_distance"][i] == pytest.approx(np.linalg.norm(w - w0) / n0, rel=1e-9)
        assert metrics["norm_ratio"][i] == pytest.approx(np.linalg.norm(w) / n0, rel=1e-9)
    whole0, whole = np.concatenate(w0s), np.concatenate(ws)
    assert metrics["relative_distance_network"] == pytest.approx(np.linalg.norm(whole - whole0) / np.linalg.norm(whole0))
    assert min(metrics["cosine_distance"]) > 1e-3 and max(metrics["norm_ratio"]) != pytest.approx(1.0)


def test_every_configuration_starts_from_the_seeds_initialisation():
    def initial(config):
        return [p.detach().clone() for p in Run(config).model.parameters()]
    a = initial({**QUICK, "seed": 1})
    b = initial({**QUICK, "seed": 1, "setting": "layca-adam", "alpha": 0.5, "rho0": 0.001})
    c = initial({**QUICK, "seed": 2})
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_plain_sgd_applies_eq1_multipliers_and_the_l2_penalty():
    run = Run({**QUICK, "setting": "sgd-l2", "alpha": 0.6, "rho0": 0.3})
    # eq. 1, alpha > 0, L = 4 layers: (1 - alpha) ** (5 * (L - 1 - l) / (L - 1))
    expected = [0.3 * 0.4 ** (5 * (3 - l) / 3) for l in range(4)]
    assert [g["lr"] for g in run.optimizer.param_groups] == pytest.approx(expected)
    assert {g["weight_decay"] for g in run.optimizer.param_groups} == {2 * tasks.TASKS["fmnist-quick"].l2}
    assert not isinstance(run.optimizer, lc.Layca)
    frozen_first_layers = Run({**QUICK, "alpha": 1.0, "rho0": 0.3})     # multipliers 0, 0, 0, 1
    assert [g["lr"] for g in frozen_first_layers.optimizer.param_groups] == [0, 0, 0, 0.3]
    assert frozen_first_layers.epoch()["lr"] == 0.3


def test_layca_wraps_the_named_base_with_keras_settings():
    run = Run({**QUICK, "setting": "layca-adagrad", "rho0": 0.01})
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


def test_divergence_is_caught_without_reading_the_loss_every_step(monkeypatch):
    """The loss turns NaN at the second batch; with a check every 4 steps the run stops at the
    4th batch (two steps late), not at the end of the epoch's 9 batches."""
    monkeypatch.setattr(train_module, "DIVERGENCE_CHECK_STEPS", 4)
    run = Run({**QUICK, "epochs": 1})
    steps = []
    real_step = run.optimizer.step

    def step_then_poison():
        real_step()
        steps.append(1)
        if len(steps) == 1:
            with torch.no_grad():
                next(run.model.parameters()).fill_(math.nan)

    monkeypatch.setattr(run.optimizer, "step", step_then_poison)
    metrics = run.epoch()
    assert metrics["diverged"] and math.isnan(metrics["train_loss"])
    assert len(steps) == 3


def test_too_high_rate_diverges_and_train_returns_early():
    """A rate that makes the last layer's weights overflow float32 within a few steps."""
    history = train({**QUICK, "setting": "sgd", "rho0": 1e37}, on_epoch=lambda m: None)
    assert history[-1]["diverged"] and len(history) < 3
    assert not any(m["diverged"] for m in history[:-1])


@pytest.mark.slow
def test_default_task_learns_real_fashion_mnist():
    """Three epochs of the default task (Layca-SGD at the paper's best rate) reach 75% test
    accuracy (chance: 10%)."""
    history = train({"task": "fmnist", "setting": "layca-sgd", "rho0": 3.0**-3, "epochs": 3}, on_epoch=lambda m: None)
    assert history[-1]["train_acc"] > 0.75
    assert history[-1]["test_acc"] > 0.75


def test_bf16_autocast_trains_on_cpu_with_fp32_weights():
    run = Run({**QUICK, "setting": "layca-sgd", "rho0": 0.1, "bf16": True, "epochs": 1})
    metrics = run.epoch()
    assert math.isfinite(metrics["train_loss"]) and metrics["train_acc"] > 0.2
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
