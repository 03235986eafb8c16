import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cosine
from torch import nn

import layrot_core as lc


class HeadFirst(nn.Module):
    """Layers registered in the opposite order of the forward pass."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 2)
        self.body = nn.Linear(5, 6)
        self.stem = nn.Conv1d(1, 5, 3)

    def forward(self, x):
        return self.head(torch.relu(self.body(torch.relu(self.stem(x)).mean(-1))))


def test_distances_agree_with_scipy_in_forward_order():
    torch.manual_seed(0)
    model = HeadFirst()
    monitor = lc.RotationMonitor(model, example_input=torch.randn(2, 1, 7))
    initial = {n: p.detach().numpy().ravel().astype(np.float64).copy() for n, p in model.named_parameters()}
    assert all(d == pytest.approx(0, abs=1e-7) for d in monitor.cosine_distances().values())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * p.abs().mean() * torch.rand(()))
    distances = monitor.cosine_distances()
    assert list(distances) == ["stem.weight", "body.weight", "head.weight"] == monitor.names
    for name, d in distances.items():
        now = dict(model.named_parameters())[name].detach().numpy().ravel().astype(np.float64)
        assert d == pytest.approx(cosine(now, initial[name]), rel=1e-12, abs=1e-15)


def test_distance_of_a_known_rotation_and_of_opposite_weights():
    w = nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))
    v = nn.Parameter(torch.tensor([2.0, -1.0]))
    monitor = lc.RotationMonitor([("w", w), ("v", v)])
    with torch.no_grad():
        w.copy_(torch.tensor([math.cos(0.3), math.sin(0.3), 0.0]) * 5)  # turned by 0.3 rad, rescaled
        v.mul_(-1)
    d = monitor.cosine_distances()
    assert d["w"] == pytest.approx(1 - math.cos(0.3), rel=1e-6) and d["v"] == pytest.approx(2.0)


def test_layca_rotation_accumulates_in_a_plane():
    """With a fixed gradient, every step turns w by atan(rate) towards -g, in one plane."""
    torch.manual_seed(1)
    w = nn.Parameter(torch.randn(50, dtype=torch.float64))
    g = torch.randn(50, dtype=torch.float64)
    start_angle = math.acos((w.detach() @ -g / (w.detach().norm() * g.norm())).item())
    rate = 0.02
    monitor = lc.RotationMonitor([("w", w)])
    opt = lc.Layca([w], lr=rate)
    steps = int(0.9 * start_angle / math.atan(rate))
    for _ in range(steps):
        w.grad = g
        opt.step()
    assert monitor.cosine_distances()["w"] == pytest.approx(1 - math.cos(steps * math.atan(rate)), rel=1e-9)


def test_state_dict_lets_a_resumed_monitor_keep_the_true_initial_weights():
    torch.manual_seed(2)
    model = HeadFirst()
    monitor = lc.RotationMonitor(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-0.5).add_(0.1)
    saved = monitor.state_dict()
    resumed = lc.RotationMonitor(model)  # would take the current weights as initial ones
    assert all(d == pytest.approx(0, abs=1e-7) for d in resumed.cosine_distances().values())
    resumed.load_state_dict(saved)
    assert resumed.cosine_distances() == pytest.approx(monitor.cosine_distances(), rel=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="empty sequence"):
        lc.RotationMonitor([])
    with pytest.raises(ValueError, match="no kernel layers"):
        lc.RotationMonitor(nn.ReLU())
    monitor = lc.RotationMonitor(HeadFirst())
    state = monitor.state_dict()
    with pytest.raises(ValueError, match="do not match"):
        monitor.load_state_dict({"names": state["names"][::-1], "initial": state["initial"]})
    with pytest.raises(ValueError, match="has shape"):
        monitor.load_state_dict({"names": state["names"], "initial": [w.reshape(-1) for w in state["initial"]]})


def test_zero_weights_give_nan():
    w = nn.Parameter(torch.zeros(4))
    assert math.isnan(lc.RotationMonitor([("w", w)]).cosine_distances()["w"])


def test_measure_agrees_with_a_numpy_hand_computation():
    torch.manual_seed(3)
    model = HeadFirst()
    x = torch.randn(2, 1, 7)
    monitor = lc.RotationMonitor(model, example_input=x)
    params = dict(model.named_parameters())
    initial = {n: params[n].detach().numpy().astype(np.float64).ravel().copy() for n in monitor.names}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5).add_(torch.randn_like(p) * 0.3)
    measured = monitor.measure()
    assert tuple(measured) == lc.LAYER_METRICS == ("cosine_distance", "relative_distance", "norm_ratio")
    for metric in lc.LAYER_METRICS:
        assert list(measured[metric]) == monitor.names
    for name in monitor.names:
        w, w0 = params[name].detach().numpy().astype(np.float64).ravel(), initial[name]
        n, n0 = math.sqrt(sum(a * a for a in w)), math.sqrt(sum(a * a for a in w0))
        assert monitor.initial_norms[name] == pytest.approx(n0, rel=1e-7)  # float32 weights
        assert measured["cosine_distance"][name] == pytest.approx(1 - sum(w * w0) / (n * n0), rel=1e-12)
        assert measured["relative_distance"][name] == pytest.approx(np.linalg.norm(w - w0) / n0, rel=1e-12)
        assert measured["norm_ratio"][name] == pytest.approx(n / n0, rel=1e-12)
    assert monitor.cosine_distances() == measured["cosine_distance"]


def test_measure_reads_the_device_once(monkeypatch):
    monitor = lc.RotationMonitor(HeadFirst())
    calls = []
    original = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t, *a, **k: calls.append(1) or original(t, *a, **k))
    monitor.measure()
    assert len(calls) == 1


def test_layca_distances_follow_the_rotation_and_the_norm_stays():
    """Turning by theta on the sphere: relative distance 2 sin(theta / 2), norm ratio 1."""
    torch.manual_seed(1)
    w = nn.Parameter(torch.randn(50, dtype=torch.float64))
    g = torch.randn(50, dtype=torch.float64)
    monitor = lc.RotationMonitor([("w", w)])
    opt = lc.Layca([w], lr=0.02)
    for _ in range(20):
        w.grad = g
        opt.step()
    theta = 20 * math.atan(0.02)
    measured = monitor.measure()
    assert measured["relative_distance"]["w"] == pytest.approx(2 * math.sin(theta / 2), rel=1e-9)
    assert measured["norm_ratio"]["w"] == pytest.approx(1.0, rel=1e-13)
