"""Optimizers by the names the paper uses, with the authors' settings.

Keras defaults differ from torch's: eps is 1e-7 for Adam, RMSprop and Adagrad, RMSprop's decay
(torch ``alpha``) is 0.9. "+L2" is lambda * sum(w^2) added to the loss, i.e. torch
``weight_decay = 2 * lambda`` (lambda per task, see ``trainables.tasks``).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OptimizerSpec:
    """A named optimizer. `base` is a ``torch.optim`` class name, so this registry (and spec
    validation in a sweep driver) does not import torch."""

    name: str
    base: str
    kwargs: dict = field(default_factory=dict)
    l2: bool = False               # apply the task's L2 penalty as weight_decay = 2 * lambda


OPTIMIZERS: dict[str, OptimizerSpec] = {
    s.name: s
    for s in [
        OptimizerSpec("sgd", "SGD", {"momentum": 0.0}),
        OptimizerSpec("sgd_l2", "SGD", {"momentum": 0.0}, l2=True),
        OptimizerSpec("adam", "Adam", {"betas": (0.9, 0.999), "eps": 1e-7}),
        OptimizerSpec("rmsprop", "RMSprop", {"alpha": 0.9, "eps": 1e-7}),
        OptimizerSpec("adagrad", "Adagrad", {"eps": 1e-7}),
    ]
}
