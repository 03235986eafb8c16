import math

import pytest
import torch
from scipy import stats
from torch import nn

from trainables.models import MODELS, build_model, input_shape

PAPER_KERNEL_COUNTS = {"c10_cnn1": 25, "resnet32": 34, "tiny_cnn": 11, "c10_cnn2": 15, "wrn28_10": 29}
NUM_CLASSES = {"c10_cnn1": 10, "resnet32": 100, "tiny_cnn": 200, "c10_cnn2": 10, "wrn28_10": 100}


def kernels(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("name", PAPER_KERNEL_COUNTS)
def test_paper_kernel_layer_counts(name):
    assert len(kernels(build_model(name))) == PAPER_KERNEL_COUNTS[name]


@pytest.mark.parametrize("name", MODELS)
def test_kernels_are_the_only_trainable_tensors(name):
    """No biases, BatchNorm without affine: the authors' models train kernels only."""
    model = build_model(name)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(w) for w in kernels(model)}
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert not m.affine and m.eps == 1e-3


@pytest.mark.parametrize("name", PAPER_KERNEL_COUNTS)
def test_forward_backward_on_real_input_shape(name):
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.randn(2, *input_shape(name))
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES[name])
    logits.logsumexp(1).sum().backward()
    assert all(w.grad is not None and torch.isfinite(w.grad).all() for w in kernels(model))


def test_bn_momentum_follows_keras():
    """Keras momentum 0.99 is torch 0.01; tiny-CNN used Keras 0.9 (torch 0.1)."""
    def momenta(name):
        return {m.momentum for m in build_model(name).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert momenta("c10_cnn1") == {0.01}
    assert momenta("tiny_cnn") == {0.1}


def test_same_seed_same_initialisation_other_seed_differs():
    torch.manual_seed(3)
    a = kernels(build_model("c10_cnn1"))
    torch.manual_seed(3)
    b = kernels(build_model("c10_cnn1"))
    torch.manual_seed(4)
    c = kernels(build_model("c10_cnn1"))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_he_uniform_matches_keras_bounds():
    """C10-CNN1's 256x256x3x3 convs: U(-sqrt(6/fan_in), sqrt(6/fan_in)), variance 2/fan_in."""
    torch.manual_seed(0)
    w = kernels(build_model("c10_cnn1"))[-2]
    fan_in = w.shape[1] * 9
    limit = math.sqrt(6 / fan_in)
    assert w.abs().max() <= limit
    assert w.abs().max() > 0.99 * limit
    assert w.var().item() == pytest.approx(2 / fan_in, rel=0.02)


def test_he_normal_is_truncated_at_two_std():
    """Keras 2.1 he_normal: std sqrt(2/fan_in) before truncation at +-2 std (scipy reference)."""
    torch.manual_seed(0)
    w = kernels(build_model("c10_cnn2"))[10]          # 512x512x3x3
    std = math.sqrt(2 / (w.shape[1] * 9))
    assert w.abs().max() <= 2 * std
    expected = stats.truncnorm(-2, 2, scale=std).std()
    assert w.std().item() == pytest.approx(expected, rel=0.01)


def test_glorot_uniform_for_wrn():
    torch.manual_seed(0)
    w = kernels(build_model("wrn28_10"))[-2]          # a 640x640x3x3 conv or the last shortcut
    fan_in, fan_out = w.shape[1] * w[0, 0].numel(), w.shape[0] * w[0, 0].numel()
    assert w.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
    assert w.var().item() == pytest.approx(2 / (fan_in + fan_out), rel=0.02)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*c10_cnn1"):
        build_model("vgg")
