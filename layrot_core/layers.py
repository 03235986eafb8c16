"""Which weights are "layers", in which order, and how fast each one may rotate.

Layer rotation is measured on the weights that multiply a layer's input: the kernels of linear
and convolutional layers, the input and output projections of attention, the input and hidden
weights of recurrent layers, and embedding tables. Biases and normalisation parameters are not
layers. Eq. 1 of the paper indexes layers in *forward* order, which can differ from the order
in which modules were registered, so the order can be traced from one forward pass.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

WeightNames = Callable[[nn.Module], Sequence[str]]


def _attention_weights(module: nn.Module) -> list[str]:
    """In the order nn.MultiheadAttention uses them (out_proj is applied functionally)."""
    inputs = ["in_proj_weight"] if module.in_proj_weight is not None else ["q_proj_weight", "k_proj_weight",
                                                                            "v_proj_weight"]
    return inputs + ["out_proj.weight"]


def _recurrent_weights(module: nn.Module) -> list[str]:
    """weight_ih / weight_hh (/ weight_hr) of each layer and direction, in the module's order."""
    return [name for name, _ in module.named_parameters(recurse=False) if name.startswith("weight_")]


EMBEDDING_MODULES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
_BUILT_IN: dict[type[nn.Module], WeightNames] = {
    **{t: (lambda m: ["weight"]) for t in (
        nn.Linear, nn.Bilinear,
        nn.Conv1d, nn.Conv2d, nn.Conv3d,
        nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
        *EMBEDDING_MODULES,
    )},
    nn.MultiheadAttention: _attention_weights,
    nn.RNNBase: _recurrent_weights,  # RNN, LSTM, GRU
    nn.RNNCellBase: _recurrent_weights,  # RNNCell, LSTMCell, GRUCell
}
KERNEL_MODULES: tuple[type[nn.Module], ...] = tuple(_BUILT_IN)
"""Built-in module types with kernel weights (subclasses count, lazy variants included);
:func:`register_kernel_module` adds more."""
_REGISTRY: dict[type[nn.Module], WeightNames] = dict(_BUILT_IN)

OTHERS = ("train", "freeze")


def register_kernel_module(module_type: type[nn.Module], weights: Sequence[str] | WeightNames = ("weight",)) -> None:
    """Count the modules of `module_type` (and its subclasses) as layers from now on.

    `weights` names their kernel weights (attribute paths such as ``"weight"`` or
    ``"proj.weight"``, in the order the module uses them), or is a function of the module that
    returns them. Submodules reached through a path belong to this module's layers.
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ValueError(f"module_type={module_type!r} must be a subclass of torch.nn.Module")
    if callable(weights):
        _REGISTRY[module_type] = weights
        return
    names = [weights] if isinstance(weights, str) else list(weights)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"weights={weights!r} must be attribute names such as 'weight', or a function of the module")
    _REGISTRY[module_type] = lambda m: names


@dataclass(frozen=True)
class KernelLayer:
    """One layer: its name, and where its weight lives (``getattr(module, attr)``)."""

    name: str
    module: nn.Module
    attr: str

    @property
    def weight(self) -> Tensor:
        """The weight as the module uses it: computed afresh for a parametrized weight."""
        return getattr(self.module, self.attr)

    @property
    def params(self) -> list[nn.Parameter]:
        """The leaf parameters an optimizer changes: the weight, or a parametrization's originals."""
        if parametrize.is_parametrized(self.module, self.attr):
            chain = self.module.parametrizations[self.attr]
            return [p for name, p in chain.named_parameters() if name.startswith("original")]
        weight = self.weight
        if not isinstance(weight, nn.Parameter):
            raise ValueError(f"layer {self.name!r} is a computed tensor, not a parameter (the deprecated "
                             "torch.nn.utils.weight_norm makes such weights): use "
                             "torch.nn.utils.parametrizations.weight_norm, whose original parameters are rotated")
        return [weight]


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


def find_layers(model: nn.Module, example_input: Any = None, embeddings: bool = True) -> list[KernelLayer]:
    """`model`'s kernel layers (see :data:`KERNEL_MODULES`, :func:`register_kernel_module`).

    With `example_input` (a tensor, or a tuple of positional arguments) the order is the order in
    which the layers' modules finish their first call in one forward pass (a module's own weights
    in the order it uses them); layers that do not run follow in module order. The pass runs in
    eval mode without gradients, so it changes no BatchNorm statistics. Without `example_input`
    the order is module registration order. ``embeddings=False`` leaves embedding tables out.
    A weight shared by several layers is listed once.
    """
    owners: list[tuple[nn.Module, list[KernelLayer]]] = []
    claimed: set[int] = set()  # submodules whose weights another layer module uses (out_proj)
    for prefix, module in model.named_modules():
        names = _weight_names(module)
        if id(module) in claimed or names is None or (not embeddings and isinstance(module, EMBEDDING_MODULES)):
            continue
        layers = []
        for path in names:
            owner_path, _, attr = path.rpartition(".")
            owner = module.get_submodule(owner_path) if owner_path else module
            claimed.add(id(owner))
            if _has_weight(owner, attr):
                layers.append(KernelLayer(f"{prefix}.{path}" if prefix else path, owner, attr))
        owners.append((module, layers))
    if example_input is not None:
        owners = _forward_order(model, owners, example_input)
    found: list[KernelLayer] = []
    seen: set[int] = set()
    for _, layers in owners:
        for layer in layers:
            key = id(layer.module.parametrizations[layer.attr]) if parametrize.is_parametrized(
                layer.module, layer.attr) else id(layer.weight)
            if key not in seen:
                seen.add(key)
                found.append(layer)
    if not found:
        raise ValueError(
            f"model {type(model).__name__} has no kernel layers; allowed layer types: "
            + ", ".join(t.__name__ for t in _REGISTRY) + " (add others with layrot_core.register_kernel_module)"
        )
    return found


def kernel_layers(model: nn.Module, example_input: Any = None, embeddings: bool = True) -> list[tuple[str, Tensor]]:
    """``(name, weight)`` of each of :func:`find_layers`' layers (a parametrized weight as it is
    computed now)."""
    return [(layer.name, layer.weight) for layer in find_layers(model, example_input, embeddings)]


def _weight_names(module: nn.Module) -> Sequence[str] | None:
    """The registered kernel weights of `module`'s most specific registered type, else None."""
    for cls in type(module).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls](module)
    return None


def _has_weight(module: nn.Module, attr: str) -> bool:
    return parametrize.is_parametrized(module, attr) or getattr(module, attr, None) is not None


def _forward_order(
    model: nn.Module, owners: list[tuple[nn.Module, list[KernelLayer]]], example_input: Any
) -> list[tuple[nn.Module, list[KernelLayer]]]:
    """Sort `owners` by the time each module first finishes a call in ``model(example_input)``."""
    first_call: dict[int, int] = {}

    def record(module: nn.Module, _args: Any, _output: Any) -> None:
        first_call.setdefault(id(module), len(first_call))

    handles = [m.register_forward_hook(record) for m, _ in owners]
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
    never = len(owners)  # layers that did not run keep module order, after those that did
    return sorted(owners, key=lambda owner: first_call.get(id(owner[0]), never))


def param_groups(
    model: nn.Module, alpha: float = 0.0, example_input: Any = None, others: str = "train", embeddings: bool = True
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for Layca: one group per kernel layer, then the rest.

    Kernel group l has ``layca=True`` and ``lr_scale`` = ``layer_multipliers(L, alpha)[l]``
    (forward order when `example_input` is given) and holds ``find_layers(...)[l].params``: the
    weight, or the original parameters of a parametrized weight. Every other trainable parameter
    goes into one group with ``layca=False`` (ordinary base-optimizer updates) when
    ``others="train"``; ``others="freeze"`` leaves them out of the optimizer so they keep their
    initial values, as in the authors' code. Such parameters with two or more dimensions (other
    than embeddings left out by ``embeddings=False``) are named in one warning: they may be
    weights of a module type that is not registered.
    """
    if others not in OTHERS:
        raise ValueError(f"others={others!r}; allowed: {', '.join(OTHERS)}")
    layers = find_layers(model, example_input, embeddings)
    groups: list[dict[str, Any]] = [
        {"params": layer.params, "layca": True, "lr_scale": scale}
        for layer, scale in zip(layers, layer_multipliers(len(layers), alpha))
    ]
    in_layers = {id(p) for g in groups for p in g["params"]}
    left_out = {id(p) for m in model.modules() if isinstance(m, EMBEDDING_MODULES) and not embeddings
                for p in m.parameters(recurse=False)}
    rest = [(n, p) for n, p in model.named_parameters() if id(p) not in in_layers and p.requires_grad]
    unregistered = [n for n, p in rest if p.dim() >= 2 and id(p) not in left_out]
    if unregistered:
        fate = "get the base optimizer's update" if others == "train" else "stay frozen"
        warnings.warn(f"layrot_core: {len(unregistered)} parameter(s) of two or more dimensions are not kernel "
                      f"layers and {fate}: {', '.join(unregistered)} (layrot_core.register_kernel_module makes "
                      "their module type a layer)", UserWarning, stacklevel=2)
    if rest and others == "train":
        groups.append({"params": [p for _, p in rest], "layca": False, "lr_scale": 1.0})
    return groups
