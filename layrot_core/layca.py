"""Layca (paper Algorithm 1): any torch optimizer, with each layer turned by exactly atan(rate).

For every parameter of a ``layca`` group, Layca takes the step the base optimizer would make,
removes its component along w, scales it to the length ||w0|| * rate and renormalises w to its
initial norm ||w0||. The result is a rotation of w by exactly ``atan(lr * lr_scale)`` per step
(tan(theta) = rate, paper section 2.2). Because w stays on its sphere, the whole update is
``w <- A*w + B*t`` with two scalars per tensor computed in closed form from two dot products,
so a step reads each tensor twice and writes it once (plain SGD reads it once and writes it
once): the renormalisation factor is 1/sqrt(1 + rate^2), no norm of the result is needed.

Two ways of getting the step:
- torch.optim.SGD without momentum: the step is -grad (weight decay only adds a multiple of w,
  which the projection removes), so t = grad and the base optimizer never runs on these groups.
- any other base: the base steps first and t is its displacement (kept in a snapshot of w).
"""
from __future__ import annotations

import math
import numbers
from collections import defaultdict
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

NORM0 = "layca_norm0"  # per-parameter state: ||w|| at its first Layca step (a Python float)


class Layca(Optimizer):
    """Wrap the optimizer class `base` so that every ``layca`` group rotates by atan(lr*lr_scale).

    Each param group may carry ``layca`` (bool, default True: Algorithm 1; False: the base
    optimizer's ordinary update) and ``lr_scale`` (float >= 0, default 1: the group's rate is
    ``lr * lr_scale``), as produced by :func:`layrot_core.param_groups`. Remaining keyword
    arguments go to `base`. Schedulers change ``lr`` as usual; ``state_dict()`` holds the base
    optimizer's state plus each layer's initial norm.
    """

    def __init__(
        self,
        params: Iterable[Any],
        base: type[Optimizer] = torch.optim.SGD,
        lr: float = 3.0**-3,
        **base_kwargs: Any,
    ) -> None:
        if not (isinstance(base, type) and issubclass(base, Optimizer)) or issubclass(base, Layca):
            given = base.__name__ if isinstance(base, type) else f"an instance of {type(base).__name__}"
            raise ValueError(
                f"base={given} is not allowed: give a torch.optim.Optimizer class such as "
                "torch.optim.SGD or torch.optim.Adam (the class, not an instance, and not Layca)"
            )
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (
            math.isfinite(lr) and lr > 0
        ):
            raise ValueError(f"lr={lr!r} must be a finite number > 0")
        # The base optimizer and Layca share the same group dicts and state, so schedulers,
        # state_dict() and load_state_dict() see one optimizer.
        self.base = base(params, lr=lr, **base_kwargs)
        super().__init__(self.base.param_groups, {**self.base.defaults, "layca": True, "lr_scale": 1.0})
        self.state = self.base.state
        self.base.param_groups = self.param_groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        layca, scale = param_group.get("layca", True), param_group.get("lr_scale", 1.0)
        if not isinstance(layca, bool):
            raise ValueError(f"layca={layca!r} must be True or False")
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (
            math.isfinite(scale) and scale >= 0
        ):
            raise ValueError(f"lr_scale={scale!r} must be a finite number >= 0")
        super().add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "base": self.base}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "base" in self.__dict__:  # load_state_dict() replaced our groups and state: share them
            self.base.__setstate__({"state": self.state, "param_groups": self.param_groups})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        via_base = [g for g in self.param_groups if not (g["layca"] and self._steps_along_grad(g))]
        first_norms = {  # ||w0|| of layers Layca has not stepped yet
            p: _norm(p)
            for g in self.param_groups if g["layca"]
            for p in g["params"] if p.requires_grad and NORM0 not in self.state.get(p, ())
        }
        snapshots = {
            p: p.detach().clone(memory_format=torch.preserve_format)
            for g in via_base if g["layca"] for p in g["params"] if p.requires_grad
        }
        if via_base:
            loss = self._base_step(via_base, closure)
        elif closure is not None:
            with torch.enable_grad():
                loss = closure()
        else:
            loss = None

        for p, norm in first_norms.items():  # after the base step: bases initialise empty state
            if p.grad is not None:
                self.state[p][NORM0] = norm.item()
        # (param, other, rate, sign, displaced); the step is s = sign * (grad or displacement):
        # along grad: param holds w and other the grad; displaced: param holds the base
        # optimizer's displacement (param - snapshot) and other the weight before it (snapshot)
        items = []
        for g in self.param_groups:
            if g["layca"]:
                rate = float(g["lr"]) * g["lr_scale"]
                for p in g["params"]:
                    if p.grad is None:
                        continue
                    if p in snapshots:
                        items.append((p.sub_(snapshots[p]), snapshots[p], rate, 1.0, True))
                    else:
                        items.append((p, p.grad, rate, 1.0 if g["maximize"] else -1.0, False))
        for device_items in _by_device(items).values():
            self._rotate_(*(list(x) for x in zip(*device_items)))
        return loss

    def _steps_along_grad(self, group: dict[str, Any]) -> bool:
        """SGD without momentum steps along -grad (its weight decay is projected away)."""
        return type(self.base) is torch.optim.SGD and group["momentum"] == 0

    def _base_step(self, groups: list[dict[str, Any]], closure: Callable[[], Any] | None) -> Any:
        """One base step on `groups` only; non-layca groups at their rate lr * lr_scale."""
        scaled = [g for g in groups if not g["layca"] and g["lr_scale"] != 1]
        rates = [g["lr"] for g in scaled]
        self.base.param_groups = groups
        try:
            for g in scaled:
                g["lr"] = g["lr"] * g["lr_scale"]
            return self.base.step(closure)
        finally:
            for g, lr in zip(scaled, rates):
                g["lr"] = lr
            self.base.param_groups = self.param_groups

    def _rotate_(self, params: list[Tensor], others: list[Tensor], rates: list[float],
                 signs: list[float], displaced: list[bool]) -> None:
        """Algorithm 1 in place for tensors of one device (items as built in step())."""
        scalars = [[self.state[p][NORM0] for p in params], rates, signs,
                   [_tolerance(p.dtype) for p in params]]
        norm0, rate, sign, tol = torch.tensor(scalars, dtype=torch.float64, device=params[0].device).unbind()
        pt = torch.stack([_dot(p, t) for p, t in zip(params, others)]).to(torch.float64)
        ss = torch.stack([_dot(p, p) if d else _dot(t, t) for p, t, d in zip(params, others, displaced)])
        a, b = _coefficients(sign * pt, ss.to(torch.float64), rate, norm0, tol)
        # w_next = a * w + b * s: along grad p <- a * p + b * sign * grad,
        # displaced p <- b * sign * p + a * snapshot
        swap = torch.tensor(displaced, device=a.device)
        _scale_add_(params, others, torch.where(swap, b * sign, a), torch.where(swap, a, b * sign))


def _coefficients(ws: Tensor, ss: Tensor, rate: Tensor, norm0: Tensor, tol: Tensor) -> tuple[Tensor, Tensor]:
    """Scalars a, b with rotate(w, s) = a * w + b * s, from w . s, s . s and |w| = norm0.

    rotate(w, s) = (w + rate * norm0 * s_perp / |s_perp|) / sqrt(1 + rate^2), with
    s_perp = s - (w . s / norm0^2) w, which has norm norm0 exactly and makes the angle
    atan(rate). A step with |s_perp|^2 <= tol * |s|^2 lies along w (up to rounding): zero step.
    """
    perp2 = (ss - ws * ws / norm0**2).clamp_min(0.0)
    moves = perp2 > tol * ss
    k = torch.where(moves, rate * norm0 / perp2.clamp_min(torch.finfo(torch.float64).tiny).sqrt(), 0.0)
    shrink = torch.where(moves, torch.rsqrt(1.0 + rate * rate), 1.0)
    return (1.0 - k * ws / norm0**2) * shrink, k * shrink


def _by_device(items: list[tuple]) -> dict[torch.device, list[tuple]]:
    groups: dict[torch.device, list[tuple]] = defaultdict(list)
    for item in items:
        groups[item[0].device].append(item)
    return groups


def _flat(t: Tensor) -> Tensor:
    """A 1-D view (a copy if non-contiguous), in at least float32 for accurate reductions."""
    t = t.reshape(-1)
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _dot(x: Tensor, y: Tensor) -> Tensor:
    return torch.dot(_flat(x), _flat(y))


def _norm(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x, dtype=torch.float64)


def _tolerance(dtype: torch.dtype) -> float:
    """|s_perp|^2 <= tol * |s|^2 is rounding noise of the subtraction that computes it."""
    return 16 * torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def _scale_add_(ws: list[Tensor], ts: list[Tensor], alphas: Tensor, betas: Tensor) -> None:
    """w <- alpha * w + beta * t for each pair."""
    if alphas.device.type == "cpu":
        _scale_add_cpu_(ws, ts, alphas.tolist(), betas.tolist())
    else:
        _scale_add_foreach_(ws, ts, alphas, betas)


def _scale_add_cpu_(ws: list[Tensor], ts: list[Tensor], alphas: list[float], betas: list[float]) -> None:
    """One pass per tensor: addr_ computes alpha*w + beta*(t outer [1]) in a single kernel."""
    for w, t, a, b in zip(ws, ts, alphas, betas):
        if w.is_contiguous() and t.is_contiguous():
            w.view(-1, 1).addr_(t.view(-1), w.new_ones(1), beta=a, alpha=b)
        else:
            w.mul_(a).add_(t, alpha=b)


def _scale_add_foreach_(ws: list[Tensor], ts: list[Tensor], alphas: Tensor, betas: Tensor) -> None:
    """Accelerators: scalars stay on the device (no host sync), two multi-tensor passes."""
    torch._foreach_mul_(ws, list(alphas.unbind()))
    torch._foreach_addcmul_(ws, ts, list(betas.unbind()))
