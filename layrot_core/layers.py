"""Which weights are "layers", in which order, and how fast each one may rotate.

Layer rotation is measured on the weights that multiply a layer's input (the kernels of linear
and convolutional layers); biases and normalisation parameters are not layers. Eq. 1 of the
paper indexes layers in *forward* order, which can differ from the order in which modules were
registered, so the order can be traced from one forward pass.
"""
from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

KERNEL_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)
"""Module types whose ``weight`` multiplies the layer input (lazy variants are subclasses)."""

OTHERS = ("train", "freeze")


def layer_multipliers(num_layers: int, alpha: float) -> list[float]:
    """Per-layer rate multipliers of paper eq. 1, first layer (in forward order) first.

    alpha < 0 rotates the first layers faster, alpha > 0 the last ones, alpha = 0 gives all ones.
    At alpha = -1 only the first layer keeps a nonzero rate, at alpha = +1 only the last one
    (the other layers get 0, which freezes them under Layca). A single layer always gets 1.
    """
    if isinstance(num_layers, bool) or not isinstance(num_layers, numbers.Integral) or num_layers < 1:
        raise ValueError(f"num_layers={num_layers!r} must be an integer >= 1")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not -1.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} is not allowed: alpha must be a number in [-1, 1]")
    if num_layers == 1:
        return [1.0]
    last = int(num_layers) - 1
    alpha = float(alpha)
    if alpha > 0:
        return [(1.0 - alpha) ** (5.0 * (last - l) / last) for l in range(last + 1)]
    return [(1.0 + alpha) ** (5.0 * l / last) for l in range(last + 1)]


def kernel_layers(model: nn.Module, example_input: Any = None) -> list[tuple[str, nn.Parameter]]:
    """The kernels of `model`'s linear and convolutional layers as ``(parameter name, weight)``.

    With `example_input` (a tensor, or a tuple of positional arguments) the order is the order in
    which the layers first run in one forward pass; layers that do not run follow in module order.
    The pass runs in eval mode without gradients, so it changes no BatchNorm statistics. Without
    `example_input` the order is module registration order. A weight shared by several layers
    is listed once.
    """
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, KERNEL_MODULES)]
    if example_input is not None:
        modules = _forward_order(model, modules, example_input)
    layers: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for name, module in modules:
        weight = module.weight
        if id(weight) not in seen:
            seen.add(id(weight))
            layers.append((f"{name}.weight" if name else "weight", weight))
    if not layers:
        raise ValueError(
            f"model {type(model).__name__} has no kernel layers; allowed layer types: "
            + ", ".join(t.__name__ for t in KERNEL_MODULES)
        )
    return layers


def _forward_order(
    model: nn.Module, modules: list[tuple[str, nn.Module]], example_input: Any
) -> list[tuple[str, nn.Module]]:
    """Sort `modules` by the time each first runs in ``model(example_input)``."""
    first_call: dict[int, int] = {}

    def record(module: nn.Module, _args: Any, _output: Any) -> None:
        first_call.setdefault(id(module), len(first_call))

    handles = [m.register_forward_hook(record) for _, m in modules]
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        with torch.no_grad():
            model(*args)
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in training.items():
            m.training = mode
    never = len(modules)  # layers that did not run keep module order, after those that did
    return sorted(modules, key=lambda nm: first_call.get(id(nm[1]), never))


def param_groups(
    model: nn.Module, alpha: float = 0.0, example_input: Any = None, others: str = "train"
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for Layca: one group per kernel layer, then the rest.

    Kernel group l has ``layca=True`` and ``lr_scale`` = ``layer_multipliers(L, alpha)[l]``
    (forward order when `example_input` is given). Every other trainable parameter goes into one
    group with ``layca=False`` (ordinary base-optimizer updates) when ``others="train"``;
    ``others="freeze"`` leaves them out of the optimizer so they keep their initial values, as in
    the authors' code. Kernel group l holds ``kernel_layers(model, example_input)[l]``.
    """
    if others not in OTHERS:
        raise ValueError(f"others={others!r}; allowed: {', '.join(OTHERS)}")
    layers = kernel_layers(model, example_input)
    groups: list[dict[str, Any]] = [
        {"params": [weight], "layca": True, "lr_scale": scale}
        for (_, weight), scale in zip(layers, layer_multipliers(len(layers), alpha))
    ]
    kernels = {id(weight) for _, weight in layers}
    rest = [p for p in model.parameters() if id(p) not in kernels and p.requires_grad]
    if rest and others == "train":
        groups.append({"params": rest, "layca": False, "lr_scale": 1.0})
    return groups

