"""layrot_core: monitor and control layer rotation in any PyTorch training loop.

Needs only torch; where a C++ compiler is found, Layca's CPU steps use compiled kernels
(``cpu_kernels``). ``Layca`` wraps a torch optimizer so that each layer's weights turn by a
chosen angle per step; ``RotationMonitor`` reports each layer's cosine distance from its
initial weights; ``param_groups`` builds Layca's per-layer groups with the paper's eq. 1 rates.
"""
from layrot_core.layca import Layca
from layrot_core.layers import KERNEL_MODULES, kernel_layers, layer_multipliers, param_groups
from layrot_core.monitor import RotationMonitor

__all__ = [
    "KERNEL_MODULES",
    "Layca",
    "RotationMonitor",
    "kernel_layers",
    "layer_multipliers",
    "param_groups",
]
