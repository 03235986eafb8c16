import math

import numpy as np
import pytest
import torch
from torch import nn

import layrot_core as lc


def eq1(num_layers: int, alpha: float) -> np.ndarray:
    """Paper eq. 1, written out independently (NumPy, vectorised over l)."""
    l = np.arange(num_layers, dtype=np.float64)
    L = num_layers
    if alpha > 0:
        return (1 - alpha) ** (5 * (L - 1 - l) / (L - 1))
    return (1 + alpha) ** (5 * l / (L - 1))


@pytest.mark.parametrize("num_layers", [2, 3, 11, 25, 34])
@pytest.mark.parametrize("alpha", [-0.8, -0.3, -0.1, 0.1, 0.4, 0.8])
def test_multipliers_follow_eq1(num_layers, alpha):
    np.testing.assert_allclose(lc.layer_multipliers(num_layers, alpha), eq1(num_layers, alpha), rtol=1e-13)


def test_multipliers_random_alpha_and_direction():
    rng = np.random.default_rng(0)
    for alpha in rng.uniform(-0.99, 0.99, size=20):
        m = lc.layer_multipliers(15, float(alpha))
        np.testing.assert_allclose(m, eq1(15, alpha), rtol=1e-13)
        # the prioritised end of the network keeps the full rate, the other end gets (1-|a|)^5
        assert m[-1 if alpha > 0 else 0] == 1.0
        assert m[0 if alpha > 0 else -1] == pytest.approx((1 - abs(alpha)) ** 5, rel=1e-13)
        assert np.all(np.diff(m) > 0) if alpha > 0 else np.all(np.diff(m) < 0)


def test_multipliers_edges():
    assert lc.layer_multipliers(7, 0.0) == [1.0] * 7
    assert lc.layer_multipliers(4, 1.0) == [0.0, 0.0, 0.0, 1.0]
    assert lc.layer_multipliers(4, -1.0) == [1.0, 0.0, 0.0, 0.0]
    assert lc.layer_multipliers(1, 0.7) == [1.0]
    assert lc.layer_multipliers(1, -1.0) == [1.0]


@pytest.mark.parametrize("num_layers, alpha", [(3, 1.5), (3, -1.01), (3, math.nan), (3, "0.2"),
                                               (0, 0.0), (2.5, 0.0), (True, 0.0)])
def test_multipliers_reject_bad_input(num_layers, alpha):
    with pytest.raises(ValueError, match="alpha|num_layers"):
        lc.layer_multipliers(num_layers, alpha)


class HeadFirst(nn.Module):
    """Registers its layers in the opposite order of the forward pass, plus an unused layer."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.unused = nn.Linear(2, 2)
        self.block = nn.Sequential(nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8))
        self.stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x = self.block(torch.relu(self.stem(x)))
        return self.head(self.dropout(x.mean(dim=(2, 3))))


def test_forward_order_differs_from_registration_order():
    model = HeadFirst()
    x = torch.randn(2, 1, 5, 5)
    registered = [name for name, _ in lc.kernel_layers(model)]
    traced = [name for name, _ in lc.kernel_layers(model, example_input=x)]
    assert registered == ["head.weight", "unused.weight", "block.0.weight", "stem.weight"]
    assert traced == ["stem.weight", "block.0.weight", "head.weight", "unused.weight"]
    params = dict(model.named_parameters())
    assert all(w is params[name] for name, w in lc.kernel_layers(model, x))


def test_tracing_has_no_side_effects():
    model = HeadFirst()
    model.block[1].eval()  # one submodule deliberately in another mode than its parent
    bn = model.block[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    lc.kernel_layers(model, example_input=torch.randn(4, 1, 5, 5))
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    assert model.training and model.head.training and not bn.training
    assert not any(m._forward_hooks for m in model.modules())


def test_kernel_layers_covers_all_kernel_types_and_dedups_shared_weights():
    shared = nn.Linear(4, 4, bias=False)
    model = nn.Sequential(
        nn.Conv1d(1, 2, 3), nn.Conv3d(1, 2, 1), nn.ConvTranspose1d(2, 2, 1), nn.ConvTranspose2d(2, 2, 1),
        nn.ConvTranspose3d(2, 2, 1), nn.LayerNorm(4), nn.Embedding(5, 4), shared, shared,
    )
    names = [name for name, _ in lc.kernel_layers(model)]
    assert names == ["0.weight", "1.weight", "2.weight", "3.weight", "4.weight", "6.weight", "7.weight"]


def test_no_kernel_layers_is_an_error():
    with pytest.raises(ValueError, match="no kernel layers.*Linear"):
        lc.kernel_layers(nn.Sequential(nn.ReLU(), nn.LayerNorm(3)))
    with pytest.raises(ValueError, match="no kernel layers"):
        lc.param_groups(nn.BatchNorm1d(3))


def test_param_groups_rates_in_forward_order_and_others():
    model = HeadFirst()
    x = torch.randn(2, 1, 5, 5)
    groups = lc.param_groups(model, alpha=-0.5, example_input=x)
    kernels, others = groups[:-1], groups[-1]
    params = dict(model.named_parameters())
    assert [g["params"] for g in kernels] == [
        [params["stem.weight"]], [params["block.0.weight"]], [params["head.weight"]], [params["unused.weight"]]]
    np.testing.assert_allclose([g["lr_scale"] for g in kernels], eq1(4, -0.5), rtol=1e-13)
    assert all(g["layca"] for g in kernels) and not others["layca"] and others["lr_scale"] == 1.0
    assert [id(p) for p in others["params"]] == [id(params[n]) for n in [
        "head.bias", "unused.bias", "block.0.bias", "block.1.weight", "block.1.bias"]]
    # every trainable parameter is in exactly one group
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_param_groups_freeze_leaves_others_out():
    model = HeadFirst()
    groups = lc.param_groups(model, others="freeze")
    assert len(groups) == 4 and all(g["layca"] for g in groups)
    with pytest.raises(ValueError, match="others='keep'.*train, freeze"):
        lc.param_groups(model, others="keep")
    with pytest.raises(ValueError, match="alpha"):
        lc.param_groups(model, alpha=2.0)
