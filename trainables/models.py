"""The paper's five networks, and the Fashion-MNIST ones, as the authors built them.

Shared conventions, from the authors' Keras code: no biases anywhere, BatchNorm without the
affine scale/shift (so conv and linear kernels are the only trainable tensors), Keras BatchNorm
defaults (momentum 0.99, i.e. torch ``momentum=0.01``; eps 1e-3) unless a model says otherwise,
and Keras initialisers re-expressed in torch (he-uniform, truncated he-normal, glorot-uniform).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

BN_EPS = 1e-3
KERAS_BN_MOMENTUM = 0.01  # Keras momentum 0.99


# --- Keras initialisers ------------------------------------------------------------------

def he_uniform(w: torch.Tensor) -> None:
    """Keras he_uniform: U(-sqrt(6 / fan_in), +sqrt(6 / fan_in))."""
    nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu")


def he_normal(w: torch.Tensor) -> None:
    """Keras 2.1 he_normal: normal with std sqrt(2 / fan_in), truncated at two std."""
    std = math.sqrt(2.0 / nn.init._calculate_correct_fan(w, "fan_in"))
    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)


def glorot_uniform(w: torch.Tensor) -> None:
    """Keras glorot_uniform: U(-sqrt(6 / (fan_in + fan_out)), +...)."""
    nn.init.xavier_uniform_(w)


def _init_kernels(model: nn.Module, init: Callable[[torch.Tensor], None]) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            init(m.weight)
    return model


# --- building blocks ---------------------------------------------------------------------

def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def bn2d(c: int, momentum: float = KERAS_BN_MOMENTUM) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=momentum, affine=False)


def vgg_stages(
    in_channels: int,
    widths: list[int],
    depths: list[int],
    pool_after: int,
    order: str,
    bn_momentum: float = KERAS_BN_MOMENTUM,
) -> nn.Sequential:
    """Stages of 3x3 convs; ``order`` is "conv-relu-bn" or "conv-bn-relu"; a 2x2 max-pool
    follows each of the first ``pool_after`` stages."""
    layers: list[nn.Module] = []
    cin = in_channels
    for stage, (width, depth) in enumerate(zip(widths, depths)):
        for _ in range(depth):
            layers.append(conv3x3(cin, width))
            if order == "conv-relu-bn":
                layers += [nn.ReLU(inplace=True), bn2d(width, bn_momentum)]
            else:
                layers += [bn2d(width, bn_momentum), nn.ReLU(inplace=True)]
            cin = width
        if stage < pool_after:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def gap_classifier(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes, bias=False))


# --- the paper's models ------------------------------------------------------------------

def c10_cnn1(num_classes: int = 10) -> nn.Module:
    """C10-CNN1: VGG-style, 4 stages x 6 convs (32/64/128/256), conv-ReLU-BN, 25 kernels."""
    widths = [32, 64, 128, 256]
    model = nn.Sequential(vgg_stages(3, widths, [6] * 4, 3, "conv-relu-bn"), gap_classifier(256, num_classes))
    return _init_kernels(model, he_uniform)


def tiny_cnn(num_classes: int = 200) -> nn.Module:
    """tiny-CNN: VGG-style, 5 stages x 2 convs (32..512), conv-ReLU-BN with Keras BN momentum
    0.9 (torch 0.1), 11 kernels."""
    widths = [32, 64, 128, 256, 512]
    features = vgg_stages(3, widths, [2] * 5, 4, "conv-relu-bn", bn_momentum=0.1)
    return _init_kernels(nn.Sequential(features, gap_classifier(512, num_classes)), he_uniform)


def c10_cnn2(num_classes: int = 10) -> nn.Module:
    """C10-CNN2: the cifar.torch VGG without dropout, conv-BN-ReLU, pool after every stage,
    then linear(512)-BN-ReLU-linear; 15 kernels."""
    widths = [64, 128, 256, 512, 512]
    model = nn.Sequential(
        vgg_stages(3, widths, [2, 2, 3, 3, 3], 5, "conv-bn-relu"),
        nn.Flatten(),
        nn.Linear(512, 512, bias=False),
        nn.BatchNorm1d(512, eps=BN_EPS, momentum=KERAS_BN_MOMENTUM, affine=False),
        nn.ReLU(inplace=True),
        nn.Linear(512, num_classes, bias=False),
    )
    return _init_kernels(model, he_normal)


class BasicBlock(nn.Module):
    """ResNet v1 basic block: conv-BN-ReLU-conv-BN, plus the shortcut, then ReLU. A shape change
    uses a 1x1 strided projection without BN (as in the Keras ResNet v1 example)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = bn2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = bn2d(cout)
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if (stride != 1 or cin != cout) else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet32(num_classes: int = 100) -> nn.Module:
    """C100-resnet: ResNet-32 v1, 3 stages x 5 blocks (16/32/64); 34 kernels."""
    layers: list[nn.Module] = [conv3x3(3, 16), bn2d(16), nn.ReLU(inplace=True)]
    cin = 16
    for stage, width in enumerate([16, 32, 64]):
        for block in range(5):
            layers.append(BasicBlock(cin, width, 2 if (stage > 0 and block == 0) else 1))
            cin = width
    model = nn.Sequential(*layers, gap_classifier(64, num_classes))
    return _init_kernels(model, he_normal)


class PreActBlock(nn.Module):
    """Wide-ResNet block: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, plus the shortcut. On a
    shape change the shortcut is a 1x1 conv of the pre-activated input."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = bn2d(cin)
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn2 = bn2d(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(cout, cout)
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if (stride != 1 or cin != cout) else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


def wrn28_10(num_classes: int = 100, dropout: float = 0.3) -> nn.Module:
    """C100-WRN: WRN-28-10 (pre-activation, 4 blocks per stage, 160/320/640, dropout 0.3);
    29 kernels."""
    layers: list[nn.Module] = [conv3x3(3, 16)]
    cin = 16
    for stage, width in enumerate([160, 320, 640]):
        for block in range(4):
            layers.append(PreActBlock(cin, width, 2 if (stage > 0 and block == 0) else 1, dropout))
            cin = width
    layers += [bn2d(cin), nn.ReLU(inplace=True), gap_classifier(cin, num_classes)]
    return _init_kernels(nn.Sequential(*layers), glorot_uniform)


# --- Fashion-MNIST -----------------------------------------------------------------------

def fmnist_cnn(num_classes: int = 10) -> nn.Module:
    """The offline default: C10-CNN1's recipe (conv-ReLU-BN, no biases, BN without affine,
    he-uniform) shrunk for 28x28 grey images on a CPU: stages of 1, 2, 2 convs (8/16/32),
    max-pool after stages 1-2, GAP -> linear; 6 kernels. BN momentum 0.1 (Keras 0.9, as
    tiny-CNN): its runs have few steps per epoch and the running statistics must keep up."""
    features = vgg_stages(1, [8, 16, 32], [1, 2, 2], 2, "conv-relu-bn", bn_momentum=0.1)
    return _init_kernels(nn.Sequential(features, gap_classifier(32, num_classes)), he_uniform)


def fmnist_cnn_quick(num_classes: int = 10) -> nn.Module:
    """A tiny variant for tests and smoke runs: 3 stages x 1 conv (8/16/32); 4 kernels."""
    features = vgg_stages(1, [8, 16, 32], [1, 1, 1], 2, "conv-relu-bn", bn_momentum=0.1)
    return _init_kernels(nn.Sequential(features, gap_classifier(32, num_classes)), he_uniform)


# name -> (builder, input shape (C, H, W))
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "c10_cnn1": (c10_cnn1, (3, 32, 32)),
    "resnet32": (resnet32, (3, 32, 32)),
    "tiny_cnn": (tiny_cnn, (3, 64, 64)),
    "c10_cnn2": (c10_cnn2, (3, 32, 32)),
    "wrn28_10": (wrn28_10, (3, 32, 32)),
    "fmnist_cnn": (fmnist_cnn, (1, 28, 28)),
    "fmnist_cnn_quick": (fmnist_cnn_quick, (1, 28, 28)),
}


def _entry(name: str) -> tuple[Callable[[], nn.Module], tuple[int, int, int]]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def build_model(name: str) -> nn.Module:
    """A freshly initialised model; seed torch's global RNG first for a fixed initialisation."""
    return _entry(name)[0]()


def input_shape(name: str) -> tuple[int, int, int]:
    """The model's input shape (C, H, W)."""
    return _entry(name)[1]
