"""layrot_core: monitor and control layer rotation in any PyTorch training loop.

Needs only torch; where a C++ compiler is found, Layca's CPU steps use a compiled kernel
(``cpu_kernels``). ``Layca`` wraps a torch optimizer so that each layer's weights turn by a
chosen angle per step; ``RotationMonitor`` reports how far each layer moved from its initial
weights; ``param_groups`` builds Layca's per-layer groups with the paper's eq. 1 rates, on the
layers ``find_layers`` finds (``register_kernel_module`` adds module types).
"""
from layrot_core.layca import Layca
from layrot_core.layers import (
    KERNEL_MODULES,
    KernelLayer,
    find_layers,
    kernel_layers,
    layer_multipliers,
    param_groups,
    register_kernel_module,
)
from layrot_core.monitor import LAYER_METRICS, RotationMonitor

__all__ = [
    "KERNEL_MODULES",
    "LAYER_METRICS",
    "KernelLayer",
    "Layca",
    "RotationMonitor",
    "find_layers",
    "kernel_layers",
    "layer_multipliers",
    "param_groups",
    "register_kernel_module",
]
