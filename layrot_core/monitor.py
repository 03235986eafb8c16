"""Layer rotation curves: how far each kernel layer's weights have moved from their initial ones."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from layrot_core.layers import find_layers

LAYER_METRICS = ("cosine_distance", "relative_distance", "norm_ratio")
"""The per-layer metrics of :meth:`RotationMonitor.measure`, in its order."""


class RotationMonitor:
    """Snapshots the kernel layers' weights at construction; measures how far they moved.

    `model_or_layers` is a model (its kernel layers, in forward order when `example_input` is
    given, see :func:`layrot_core.find_layers`) or a sequence of ``(name, tensor)`` pairs. A
    parametrized weight is computed afresh at each measurement. The snapshot costs one copy of
    those weights. To resume training from a checkpoint, save ``state_dict()`` with it and
    ``load_state_dict()`` it into a new monitor, which would otherwise take the resumed weights
    as its initial ones.
    """

    def __init__(
        self, model_or_layers: nn.Module | Sequence[tuple[str, Tensor]], example_input: Any = None
    ) -> None:
        if isinstance(model_or_layers, nn.Module):
            found = find_layers(model_or_layers, example_input)
            self.names: list[str] = [layer.name for layer in found]
            self._weights: list[Callable[[], Tensor]] = [lambda layer=layer: layer.weight for layer in found]
        else:
            pairs = list(model_or_layers)
            if not pairs:
                raise ValueError("model_or_layers is an empty sequence; give a model or (name, tensor) pairs")
            self.names = [name for name, _ in pairs]
            self._weights = [lambda w=w: w for _, w in pairs]
        with torch.no_grad():
            self._set_initial([w().detach().clone() for w in self._weights])

    @property
    def initial_norms(self) -> dict[str, float]:
        """||w0|| per layer, in layer order."""
        return dict(zip(self.names, self._initial_norms.tolist()))

    def measure(self) -> dict[str, dict[str, float]]:
        """Per layer, in layer order, under the keys of :data:`LAYER_METRICS`:

        - ``cosine_distance``: ``1 - cos(w, w0)``; 0 means no rotation, 1 orthogonal to the
          initial weights, 2 opposite;
        - ``relative_distance``: ``||w - w0|| / ||w0||``;
        - ``norm_ratio``: ``||w|| / ||w0||``.

        Computed together in float64, so small rotations are not lost to rounding, and read from
        the device once. An all-zero weight has no direction: its cosine distance is nan, and a
        zero initial weight gives nan or inf ratios.
        """
        with torch.no_grad():
            sums = []
            for weight, w0 in zip(self._weights, self._initial):
                w, w0 = _float64(weight()), _float64(w0)
                sums.append(torch.stack([w @ w0, w @ w, (w - w0) @ (w - w0)]).to(self._initial[0].device))
            dot, ww, dd = torch.stack(sums).cpu().T
            norms, norms0 = ww.sqrt(), self._initial_norms
            values = (1.0 - dot / (norms * norms0), dd.sqrt() / norms0, norms / norms0)
        return {metric: dict(zip(self.names, v.tolist())) for metric, v in zip(LAYER_METRICS, values)}

    def cosine_distances(self) -> dict[str, float]:
        """``1 - cos(w_t, w_0)`` per layer, in layer order (see :meth:`measure`)."""
        return self.measure()["cosine_distance"]

    def state_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "initial": [w0.clone() for w0 in self._initial]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the initial weights of a monitor built on the same layers."""
        names, initial = state["names"], state["initial"]
        if list(names) != self.names:
            raise ValueError(f"state_dict layers {list(names)} do not match this monitor's {self.names}")
        current = [w() for w in self._weights]
        for name, w, w0 in zip(names, current, initial):
            if w0.shape != w.shape:
                raise ValueError(f"state_dict layer {name!r} has shape {tuple(w0.shape)}, expected {tuple(w.shape)}")
        self._set_initial([w0.to(device=w.device, dtype=w.dtype).clone() for w, w0 in zip(current, initial)])

    def _set_initial(self, initial: list[Tensor]) -> None:
        self._initial = initial
        self._initial_norms = torch.stack([_float64(w0).norm().to(initial[0].device) for w0 in initial]).cpu()


def _float64(t: Tensor) -> Tensor:
    return t.detach().reshape(-1).to(torch.float64)
