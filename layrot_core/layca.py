"""Layca (paper Algorithm 1): any torch optimizer, with each layer turned by exactly atan(rate).

For every parameter of a ``layca`` group, Layca takes the step s the base optimizer would make,
removes its component along w, scales it to length rate * ||w0|| and puts w back on the sphere
of its initial norm ||w0||: w turns by exactly ``atan(rate)``, rate = ``lr * lr_scale``
(tan(theta) = rate, paper section 2.2). Since w stays on that sphere, the new weight is
``a * w + b * s`` with two scalars computed in closed form from ``w . s`` and ``s . s`` (the
renormalisation factor is 1 / sqrt(1 + rate^2)): two reductions and one fused update per tensor,
which :mod:`layrot_core.cpu_kernels` does in two passes over memory on a CPU.

Where the step comes from:
- torch.optim.SGD without momentum: s = -grad (its weight decay adds a multiple of w, which the
  projection removes), so the base optimizer never runs on these groups;
- any other base: the base optimizer steps, and s is its displacement from a snapshot of w
  (kept between steps: one more copy of the layca weights in memory).

The initial norm is recorded in the optimizer state at a parameter's first Layca step, so it
survives state_dict() and the weights cannot drift off their sphere over long runs.
"""
from __future__ import annotations

import math
import numbers
from collections import defaultdict
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor
from torch.optim import Optimizer

from layrot_core import cpu_kernels

NORM0 = "layca_norm0"  # per-parameter state: ||w|| at its first Layca step (a Python float)
CPU_ONE_PASS_ELEMENTS = 2**16  # from this size on, a CPU tensor's update is worth its own call
_LAYCA_KEYS = ("params", "param_names", "layca", "lr_scale")


class Layca(Optimizer):
    """Wrap the optimizer class `base` so that every ``layca`` group rotates by atan(lr*lr_scale).

    Each param group may carry ``layca`` (bool, default True: Algorithm 1; False: the base
    optimizer's ordinary update) and ``lr_scale`` (float >= 0, default 1: the group's rate is
    ``lr * lr_scale``), as :func:`layrot_core.param_groups` builds them. Other keyword arguments
    go to `base`. Schedulers change ``lr`` as usual; ``state_dict()`` holds the base optimizer's
    state plus each layer's initial norm.
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
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr={lr!r} must be a finite number > 0")
        # Layca and its base optimizer share one list of group dicts and one state, so
        # schedulers, state_dict() and load_state_dict() act on both.
        self.base = base(params, lr=lr, **base_kwargs)
        super().__init__(self.base.param_groups, {**self.base.defaults, "layca": True, "lr_scale": 1.0})
        self.state = self.base.state
        self.base.param_groups = self.param_groups
        self._snapshot_buffers: dict[Tensor, Tensor] = {}

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
        self.__dict__.setdefault("_snapshot_buffers", {})  # not pickled: rebuilt at the next step
        if "base" in self.__dict__:  # load_state_dict() gave us new groups and state: share them
            self.base.__setstate__({"state": self.state, "param_groups": self.param_groups})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step: the base optimizer's, then Algorithm 1 on every layca parameter."""
        by_grad = [g["layca"] and self._steps_along_grad(g) for g in self.param_groups]
        along_grad = [g for g, yes in zip(self.param_groups, by_grad) if yes]
        via_base = [g for g, yes in zip(self.param_groups, by_grad) if not yes]
        first_norms = {
            p: _norm(p)
            for g in self.param_groups if g["layca"]
            for p in g["params"] if p.requires_grad and NORM0 not in self.state.get(p, ())
        }
        snapshots = self._snapshot([p for g in via_base if g["layca"] for p in g["params"] if p.requires_grad])
        if via_base:
            loss = self._base_step(via_base, closure)
        elif closure is not None:
            with torch.enable_grad():
                loss = closure()
        else:
            loss = None
        for p, norm in first_norms.items():  # only now: base optimizers initialise empty state
            if p.grad is not None:
                self.state[p][NORM0] = norm.item()

        # (param, other, rate, sign, displaced): along grad, param holds w and other the grad,
        # and s = sign * grad; displaced, param holds the base optimizer's result and other the
        # snapshot w, and s = param - snapshot
        items = []
        for g in along_grad:
            rate, sign = float(g["lr"]) * g["lr_scale"], 1.0 if g["maximize"] else -1.0
            items += [(p, p.grad, rate, sign, False) for p in g["params"] if p.grad is not None]
        for g in via_base:
            if g["layca"]:
                rate = float(g["lr"]) * g["lr_scale"]
                items += [(p, snapshots[p], rate, 1.0, True) for p in g["params"] if p.grad is not None]
        for kind in _by_device_and_dtype(items):
            self._rotate_(*(list(column) for column in zip(*kind)))
        return loss

    def _snapshot(self, params: list[Tensor]) -> dict[Tensor, Tensor]:
        """Copies of `params` in buffers kept between steps (allocating them anew every step
        costs as much as the copy itself)."""
        buffers = self._snapshot_buffers
        for p in params:
            kept = buffers.get(p)
            if kept is None or kept.shape != p.shape or kept.stride() != p.stride() or kept.dtype != p.dtype \
                    or kept.device != p.device:
                buffers[p] = torch.empty_like(p, memory_format=torch.preserve_format)
        if params:
            torch._foreach_copy_([buffers[p] for p in params], params)
        return {p: buffers[p] for p in params}

    def _steps_along_grad(self, group: dict[str, Any]) -> bool:
        """SGD without momentum steps along -grad (its weight decay is projected away)."""
        return type(self.base) is torch.optim.SGD and group["momentum"] == 0

    def _base_step(self, groups: list[dict[str, Any]], closure: Callable[[], Any] | None) -> Any:
        """One base step on `groups`, seen by the base as temporary copies: non-layca groups at
        rate lr * lr_scale, and layca groups that differ only in lr_scale merged into one (the
        base's rate does not matter to Layca), so a per-layer group costs no per-group overhead."""
        merged: list[dict[str, Any]] = []
        for g in groups:
            if g["layca"] and merged and merged[-1]["layca"] and _same_settings(merged[-1], g):
                merged[-1]["params"] = merged[-1]["params"] + g["params"]
            elif g["layca"]:
                merged.append(dict(g))
            else:
                merged.append({**g, "lr": g["lr"] * g["lr_scale"]})
        self.base.param_groups = merged
        try:
            return self.base.step(closure)
        finally:
            self.base.param_groups = self.param_groups

    def _rotate_(self, params: list[Tensor], others: list[Tensor], rates: list[float],
                 signs: list[float], displaced: list[bool]) -> None:
        """Algorithm 1, in place, on tensors of one device and dtype (items built in step()):
        with the CPU kernels for the pairs they take, with torch ops for the rest."""
        norms0 = [self.state[p][NORM0] for p in params]
        tol = 16 * torch.finfo(torch.float64 if params[0].dtype == torch.float64 else torch.float32).eps
        flat = _kernel_pairs(params, others)
        kernel = [i for i, f in enumerate(flat) if f is not None]
        if kernel:
            ps, ts = (list(c) for c in zip(*(flat[i] for i in kernel)))
            cpu_kernels.ops().rotate_(ps, ts, *([c[i] for i in kernel] for c in (rates, signs, norms0, displaced)), tol)
        rest = [i for i, f in enumerate(flat) if f is None]
        if rest:
            columns = (params, others, rates, signs, norms0, displaced)
            _rotate_with_torch_ops_(*([c[i] for i in rest] for c in columns), tol)


def _rotate_with_torch_ops_(params: list[Tensor], others: list[Tensor], rates: list[float], signs: list[float],
                            norms0: list[float], displaced: list[bool], tol: float) -> None:
    """Algorithm 1 as in Layca._rotate_, with torch ops: three passes over memory per tensor."""
    moved = [(p, t) for p, t, d in zip(params, others, displaced) if d]
    if moved:  # param <- base result - snapshot = the base optimizer's step
        torch._foreach_sub_(*(list(x) for x in zip(*moved)))
    steps = [p if d else t for p, t, d in zip(params, others, displaced)]
    wide = torch.float64 if params[0].dtype == torch.float64 else torch.float32
    ss = torch._foreach_powsum(steps, 2, dtype=wide)
    ps = [_dot(p, t) for p, t in zip(params, others)]
    # the scalars are read on the host once per step (one device sync on accelerators)
    ss, ps = torch.stack([torch.stack(ss), torch.stack(ps)]).tolist()
    alphas, betas = [], []
    for s2, pt, rate, sign, norm0, d in zip(ss, ps, rates, signs, norms0, displaced):
        a, b = _coefficients(sign * pt, s2, rate, norm0, tol)
        # new w = a * w + b * s; along grad: p <- a * p + (b * sign) * grad;
        # displaced: p <- (b * sign) * p + a * snapshot
        alphas.append(b * sign if d else a)
        betas.append(a if d else b * sign)
    _scale_add_(params, others, alphas, betas)


def _kernel_pairs(params: list[Tensor], others: list[Tensor]) -> list[tuple[Tensor, Tensor] | None]:
    """The pairs the CPU kernels take (dense float32/float64 CPU pairs of one layout, as 1-D views
    where not contiguous), None for the rest; all None where the kernels are off. All tensors
    share one device and dtype."""
    if params[0].device.type != "cpu" or params[0].dtype not in (torch.float32, torch.float64) \
            or cpu_kernels.ops() is None:
        return [None] * len(params)
    return [(p, t) if p.is_contiguous() and t.is_contiguous() else _flat_pair(p, t) for p, t in zip(params, others)]


def _coefficients(ws: float, ss: float, rate: float, norm0: float, tol: float) -> tuple[float, float]:
    """Scalars a, b with rotated(w, s) = a * w + b * s, from w . s, s . s and |w| = norm0.

    rotated(w, s) = (w + rate * norm0 * u) / sqrt(1 + rate^2), with u the unit vector along
    s_perp = s - (w . s / norm0^2) w: norm norm0 and an angle of atan(rate) to w. A step with
    |s_perp|^2 <= tol * |s|^2 lies along w up to rounding, and is a zero step: a = 1, b = 0.
    """
    perp2 = ss - ws * ws / norm0**2
    if perp2 <= tol * ss:
        return 1.0, 0.0
    k = rate * norm0 / math.sqrt(perp2)
    shrink = 1.0 / math.sqrt(1.0 + rate * rate)
    return (1.0 - k * ws / norm0**2) * shrink, k * shrink


def _same_settings(g: dict[str, Any], h: dict[str, Any]) -> bool:
    """Same hyper-parameters, apart from the keys only Layca reads."""
    def same(x: Any, y: Any) -> bool:
        return x is y or (type(x) is type(y) and not isinstance(x, Tensor) and x == y)

    return g.keys() == h.keys() and all(k in _LAYCA_KEYS or same(g[k], h[k]) for k in g)


def _by_device_and_dtype(items: list[tuple]) -> Iterator[list[tuple]]:
    kinds: dict[tuple[torch.device, torch.dtype], list[tuple]] = defaultdict(list)
    for item in items:
        kinds[item[0].device, item[0].dtype].append(item)
    return iter(kinds.values())


def _flat_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
    """1-D views of x and y, element for element, when both share one dense memory layout
    (contiguous, channels_last, ...); None when that would need copies."""
    if x.stride() != y.stride():
        return None
    if not x.is_contiguous():
        order = sorted(range(x.dim()), key=x.stride, reverse=True)
        x, y = x.permute(order), y.permute(order)
    return (x.view(-1), y.view(-1)) if x.is_contiguous() else None


def _dot(x: Tensor, y: Tensor) -> Tensor:
    """x . y, accumulated in at least float32."""
    x, y = _flat_pair(x, y) or (x.reshape(-1), y.reshape(-1))
    if x.dtype in (torch.float16, torch.bfloat16):
        x, y = x.float(), y.float()
    return torch.dot(x, y)


def _norm(x: Tensor) -> Tensor:
    return torch.linalg.vector_norm(x, dtype=torch.float64)


def _scale_add_(ws: list[Tensor], ts: list[Tensor], alphas: list[float], betas: list[float]) -> None:
    """w <- alpha * w + beta * t for each pair, with the arithmetic in at least float32.

    Large dense CPU tensors take one pass each (addr_ computes alpha * w + beta * (t outer [1])
    in one kernel); the rest two multi-tensor passes.
    """
    flat = [_flat_pair(w, t) if w.device.type == "cpu" and w.numel() >= CPU_ONE_PASS_ELEMENTS else None
            for w, t in zip(ws, ts)]
    for pair, a, b in zip(flat, alphas, betas):
        if pair is not None:
            w, t = pair
            w.view(-1, 1).addr_(t, w.new_ones(1), beta=a, alpha=b)
    rest = [i for i, pair in enumerate(flat) if pair is None]
    if rest:  # w + (alpha - 1) * w * 1, then + beta * t * 1: faster than mul_ for small tensors
        rest_ws, ones = [ws[i] for i in rest], [ws[rest[0]].new_ones(1)] * len(rest)
        torch._foreach_addcmul_(rest_ws, rest_ws, ones, [alphas[i] - 1.0 for i in rest])
        torch._foreach_addcmul_(rest_ws, [ts[i] for i in rest], ones, [betas[i] for i in rest])
