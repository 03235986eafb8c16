"""Layer rotation curves: each kernel layer's cosine distance from its initial weights, with the
two obvious alternatives beside it (relative distance from init and norm ratio)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from layrot_core.layers import kernel_layers

LAYER_METRICS = ("cosine_distance", "relative_distance", "norm_ratio")


class RotationMonitor:
    """Snapshots the kernel layers' weights at construction; reports ``1 - cos(w_t, w_0)``.

    `model_or_layers` is a model (its kernel layers, in forward order when `example_input` is
    given, see :func:`layrot_core.kernel_layers`) or a sequence of ``(name, tensor)`` pairs.
    The snapshot costs one copy of those weights. To resume training from a checkpoint, save
    ``state_dict()`` with it and ``load_state_dict()`` it into a new monitor, which would
    otherwise take the resumed weights as its initial ones.
    """

    def __init__(
        self, model_or_layers: nn.Module | Sequence[tuple[str, Tensor]], example_input: Any = None
    ) -> None:
        if isinstance(model_or_layers, nn.Module):
            layers = kernel_layers(model_or_layers, example_input)
        else:
            layers = list(model_or_layers)
            if not layers:
                raise ValueError("model_or_layers is an empty sequence; give a model or (name, tensor) pairs")
        self.names: list[str] = [name for name, _ in layers]
        self._weights: list[Tensor] = [w for _, w in layers]
        self._initial: list[Tensor] = [w.detach().clone() for w in self._weights]
        self._initial_norms = _norms(self._initial)

    def measure(self) -> dict[str, dict[str, float]]:
        """Per layer, in layer order: ``cosine_distance`` 1 - cos(w_t, w_0) (0 no rotation, 1
        orthogonal, 2 opposite; nan for an all-zero weight), ``relative_distance``
        ||w_t - w_0|| / ||w_0|| and ``norm_ratio`` ||w_t|| / ||w_0||. Computed in float64, so
        small rotations are not lost to rounding."""
        with torch.no_grad():
            dots = torch.stack([torch.dot(_float64(w), _float64(w0)).cpu() for w, w0 in zip(self._weights, self._initial)])
            norms, norms0 = _norms(self._weights), self._initial_norms
            moved = torch.stack([torch.linalg.vector_norm(_float64(w) - _float64(w0)).cpu()
                                 for w, w0 in zip(self._weights, self._initial)])
            values = {
                "cosine_distance": 1.0 - dots / (norms * norms0),
                "relative_distance": moved / norms0,
                "norm_ratio": norms / norms0,
            }
        return {name: dict(zip(self.names, values[name].tolist())) for name in LAYER_METRICS}

    def cosine_distances(self) -> dict[str, float]:
        """``1 - cos(w_t, w_0)`` per layer (see :meth:`measure`)."""
        return self.measure()["cosine_distance"]

    @property
    def initial_norms(self) -> dict[str, float]:
        """||w_0|| per layer, to combine the layers' relative distances into the network's."""
        return dict(zip(self.names, self._initial_norms.tolist()))

    def state_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "initial": [w0.clone() for w0 in self._initial]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the initial weights of a monitor built on the same layers."""
        names, initial = state["names"], state["initial"]
        if list(names) != self.names:
            raise ValueError(f"state_dict layers {list(names)} do not match this monitor's {self.names}")
        for name, w, w0 in zip(names, self._weights, initial):
            if w0.shape != w.shape:
                raise ValueError(f"state_dict layer {name!r} has shape {tuple(w0.shape)}, expected {tuple(w.shape)}")
        self._initial = [w0.to(device=w.device, dtype=w.dtype).clone() for w, w0 in zip(self._weights, initial)]
        self._initial_norms = _norms(self._initial)


def _float64(t: Tensor) -> Tensor:
    return t.detach().reshape(-1).to(torch.float64)


def _norms(tensors: list[Tensor]) -> Tensor:
    """float64 Euclidean norms, on the CPU."""
    with torch.no_grad():
        return torch.stack([torch.linalg.vector_norm(t.detach(), dtype=torch.float64).cpu() for t in tensors])
