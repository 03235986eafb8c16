"""Layca (paper Algorithm 1): any torch optimizer, with each layer turned by exactly atan(rate).

For every parameter of a ``layca`` group, Layca takes the step s the base optimizer would make,
removes its component along w, scales it to length rate * ||w|| and puts the result on the
sphere of the initial norm ||w0||: w turns by exactly ``atan(rate)`` from where it is now,
rate = ``lr * lr_scale`` (tan(theta) = rate, paper section 2.2), and every step ends on that
sphere, whatever changed w in between (``w.mul_(2)``, ``reset_parameters()``).

The file holds three versions of one algorithm:
- :func:`algorithm1_`, a short single-tensor reference, line by line as in the paper;
- the CPU kernel (``csrc/layca_cpu.cpp``, loaded by :mod:`layrot_core.cpu_kernels`), for dense
  float32/float64 CPU tensors;
- :func:`_rotate_with_torch_ops_`, torch ops for every other tensor (GPUs, half precision).
Both implementations compute the new weight as ``a * w + b * s`` with two scalars per layer in
closed form from the three sums ``w . w``, ``w . s`` and ``s . s``, taken in one pass over w
and s; sums, scalars and the update are computed in float64 (the products of float32 values
are exact there), so a step nearly parallel to w still turns by atan(rate). (The CPU kernel
sums and writes a float32 weight in float32 when its gradient is at least 60 degrees from it,
where nothing cancels: memory speed, an angle error near 1e-8.) Neither reads a value on the
host: a GPU step never waits for the GPU.

Where the step comes from:
- torch.optim.SGD without momentum: s = -grad (its weight decay adds a multiple of w, which the
  projection removes), so the base optimizer never runs on these groups;
- any other base: the base optimizer steps, and s is its displacement from a snapshot of w
  (kept between steps: one more copy of the layca weights in memory).

Special cases, as in :func:`algorithm1_`:
- a zero-norm weight has no direction to turn: while its norm is zero it gets the base
  optimizer's ordinary update at rate lr * lr_scale, and its sphere is the one of its norm at
  its first step with a non-zero norm (a zero-initialised classifier head, a bias);
- a step with no component orthogonal to w (zero, or along w up to rounding: below
  ``ZERO_STEP``) does not turn w; w is still put back on its sphere;
- parameters that do not require grad are left alone even when they hold a gradient.
"""
from __future__ import annotations

import math
import numbers
from collections import defaultdict
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _use_grad_for_differentiable

from layrot_core import cpu_kernels

NORM0 = "layca_norm0"  # per-parameter state: ||w0||, a float64 0-d tensor on w's device; 0 while ||w|| is 0
ZERO_STEP = 64 * torch.finfo(torch.float64).eps  # |s_perp|^2 <= ZERO_STEP |s|^2: no step (float64 sums' rounding)
_LAYCA_KEYS = ("params", "param_names", "layca", "lr_scale")


def _noop() -> None:
    pass


# The wrappers torch puts around every optimizer's step: profiling and step hooks (Layca's own
# step has them), and grad mode, set with a graph break on either side. Layca calls its base's
# step without them, already under no_grad, so torch.compile of Layca's step sees no more
# graph breaks than torch's own optimizers do.
_TORCH_STEP_WRAPPERS = (_use_grad_for_differentiable(_noop).__code__,
                        Optimizer.profile_hook_step(_noop).__code__)


def _unwrapped_step(base: Optimizer) -> Callable[..., Any]:
    """`base`'s step method, without torch's wrappers (see ``_TORCH_STEP_WRAPPERS``) unless the
    base is differentiable (then its grad mode matters)."""
    step = type(base).step
    while (not base.defaults.get("differentiable", False) and hasattr(step, "__wrapped__")
           and getattr(step, "__code__", None) in _TORCH_STEP_WRAPPERS):
        step = step.__wrapped__
    return step.__get__(base)


def algorithm1_(w: Tensor, update: Tensor, rate: float, norm0: float) -> float:
    """Paper Algorithm 1 on one tensor, in place: the reference both implementations are held to.

    `update` is the base optimizer's update at rate lr * lr_scale (its direction is all that
    matters unless w is zero), `norm0` is ||w0||, or 0 when not known yet. Computed in float64.
    Returns ||w0||.
    """
    w64, s = w.double().flatten(), update.double().flatten()
    norm = w64.norm()
    if norm == 0:  # no direction: the base optimizer's own update
        w.copy_((w64 + s).view_as(w))
        return norm0
    norm0 = norm0 or norm.item()
    s = s - (s @ w64) * w64 / (w64 @ w64)  # project the step on the space orthogonal to w
    if s @ s > ZERO_STEP * (update.double().flatten() @ update.double().flatten()):
        s = s * norm / s.norm()  # rotation-based normalisation
        w64 = w64 + rate * s  # perform the update
    w.copy_((w64 * norm0 / w64.norm()).view_as(w))  # back on the sphere of w0
    return norm0


class Layca(Optimizer):
    """Wrap the optimizer class `base` so that every ``layca`` group rotates by atan(lr*lr_scale).

    Each param group may carry ``layca`` (bool, default True: Algorithm 1; False: the base
    optimizer's ordinary update at rate lr * lr_scale) and ``lr_scale`` (float >= 0, default 1:
    the group's rate is ``lr * lr_scale``), as :func:`layrot_core.param_groups` builds them.
    ``lr`` is a number >= 0 or a 1-element tensor, as in torch. Other keyword arguments go to
    `base`. Schedulers change ``lr`` as usual; ``state_dict()`` holds the base optimizer's state
    plus each layer's initial norm. A parameter may appear once among all groups.
    """

    def __init__(
        self,
        params: Iterable[Any],
        base: type[Optimizer] = torch.optim.SGD,
        lr: float | Tensor = 3.0**-3,
        **base_kwargs: Any,
    ) -> None:
        if not (isinstance(base, type) and issubclass(base, Optimizer)) or issubclass(base, Layca):
            given = base.__name__ if isinstance(base, type) else f"an instance of {type(base).__name__}"
            raise ValueError(
                f"base={given} is not allowed: give a torch.optim.Optimizer class such as "
                "torch.optim.SGD or torch.optim.Adam (the class, not an instance, and not Layca)"
            )
        if not isinstance(lr, Tensor) and (
            isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr >= 0)
        ):
            raise ValueError(f"lr={lr!r} must be a finite number >= 0 or a 1-element tensor")
        params = list(params)
        if params and isinstance(params[0], dict):
            params = [{**g, "params": _checked_list(g["params"])} for g in params]
        else:
            params = _checked_list(params)
        # Layca and its base optimizer share one state, so state_dict() and load_state_dict()
        # act on both. The groups are Layca's (schedulers act on them); the base's own list
        # holds copies that Layca updates from them before every base step (``_base_step``).
        self.base = base(params, lr=lr, **base_kwargs)
        super().__init__(self.base.param_groups, {**self.base.defaults, "layca": True, "lr_scale": 1.0})
        self.state = self.base.state
        self.base.param_groups = []
        self._snapshot_buffers: dict[Tensor, Tensor] = {}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        layca, scale = param_group.get("layca", True), param_group.get("lr_scale", 1.0)
        if not isinstance(layca, bool):
            raise ValueError(f"layca={layca!r} must be True or False")
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (
            math.isfinite(scale) and scale >= 0
        ):
            raise ValueError(f"lr_scale={scale!r} must be a finite number >= 0")
        super().add_param_group({**param_group, "params": _checked_list(param_group["params"])})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, but the initial norms stay float64 (torch casts state to each parameter's
        dtype, which would round them to bfloat16 for bfloat16 weights)."""
        super().load_state_dict(state_dict)
        saved = {i: s[NORM0] for i, s in state_dict["state"].items() if NORM0 in s}
        params = [p for g in self.param_groups for p in g["params"]]
        for i, norm0 in saved.items():
            self.state[params[i]][NORM0] = torch.as_tensor(norm0, dtype=torch.float64).to(params[i].device)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "base": self.base}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_snapshot_buffers", {})  # not pickled: rebuilt at the next step
        # load_state_dict() gave us a new state: share it (the base's group copies are rebuilt
        # at its next step)
        if "base" in self.__dict__:
            self.base.__setstate__({"state": self.state, "param_groups": []})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step: the base optimizer's, then Algorithm 1 on every layca parameter."""
        along_grad = [g["layca"] and self._steps_along_grad(g) for g in self.param_groups]
        via_base = [g for g, along in zip(self.param_groups, along_grad) if not along]
        snapshots = self._snapshot([p for g in via_base if g["layca"] for p in g["params"] if p.requires_grad])
        if via_base:
            loss = self._base_step(via_base, closure)
        elif closure is not None:
            with torch.enable_grad():
                loss = closure()
        else:
            loss = None

        # (param, other, rate, scale, sign, displaced): along grad, param holds w and other the
        # grad, s = sign * grad; displaced, param holds the base optimizer's result and other the
        # snapshot w, s = param - snapshot. The base update at rate lr * lr_scale is scale * s.
        items: dict[torch.device, list[tuple]] = defaultdict(list)
        for g, along in zip(self.param_groups, along_grad):
            if not g["layca"]:
                continue
            rate = g["lr"] * g["lr_scale"]
            for p in g["params"]:
                if p.grad is None or not p.requires_grad:
                    continue
                if NORM0 not in self.state[p]:  # only now: base optimizers initialise empty state
                    self.state[p][NORM0] = torch.zeros((), dtype=torch.float64, device=p.device)
                if along:
                    sign = 1.0 if g["maximize"] else -1.0
                    items[p.device].append((p, p.grad, rate, rate, sign, False))
                else:
                    items[p.device].append((p, snapshots[p], rate, g["lr_scale"], 1.0, True))
        for kind in items.values():
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
        """One base step on `groups`, seen by the base as copies without the parameters that do
        not require grad: non-layca groups at rate lr * lr_scale, and layca groups that differ
        only in lr_scale merged into one (the base's rate does not matter to Layca), so a
        per-layer group costs no per-group overhead.

        The copies stay in the base's ``param_groups`` list between steps and are updated in
        place while they hold the same parameters: torch.compile traces a base's
        ``_init_group`` only on groups it finds in ``param_groups`` as they were before the
        step, and it misreads a ``param_groups`` attribute assigned during the step.
        """
        merged: list[dict[str, Any]] = []
        for g in groups:
            trained = [p for p in g["params"] if p.requires_grad]
            if g["layca"] and merged and merged[-1]["layca"] and _same_settings(merged[-1], g):
                merged[-1]["params"] = merged[-1]["params"] + trained
            elif g["layca"]:
                merged.append({**g, "params": trained})
            else:
                merged.append({**g, "params": trained, "lr": g["lr"] * g["lr_scale"]})
        kept = self.base.param_groups
        if len(kept) == len(merged) and all(
                k.keys() == m.keys() and _same_tensors(k["params"], m["params"]) for k, m in zip(kept, merged)):
            for k, m in zip(kept, merged):
                for key, value in m.items():
                    if key != "params":
                        k[key] = value
        else:
            kept[:] = merged
        return _unwrapped_step(self.base)(closure)

    def _rotate_(self, params: list[Tensor], others: list[Tensor], rates: list[Any], scales: list[Any],
                 signs: list[float], displaced: list[bool]) -> None:
        """Algorithm 1, in place, on tensors of one device (items built in step()): with the CPU
        kernel for the pairs it takes, with torch ops for the rest."""
        norms0 = [self.state[p][NORM0] for p in params]
        columns = (params, others, norms0, rates, scales, signs, displaced)
        flat = _kernel_pairs(params, others)
        kernel = [i for i, f in enumerate(flat) if f is not None]
        if kernel:
            ps, ts = (list(c) for c in zip(*(flat[i] for i in kernel)))
            _, _, ns, rs, cs, sg, ds = ([c[i] for i in kernel] for c in columns)
            cpu_kernels.ops().rotate_(ps, ts, ns, [float(r) for r in rs], [float(c) for c in cs], sg, ds, ZERO_STEP)
        rest = [i for i, f in enumerate(flat) if f is None]
        if rest:
            _rotate_with_torch_ops_(*([c[i] for i in rest] for c in columns))


def _rotate_with_torch_ops_(params: list[Tensor], others: list[Tensor], norms0: list[Tensor], rates: list[Any],
                            scales: list[Any], signs: list[float], displaced: list[bool]) -> None:
    """Algorithm 1 as in Layca._rotate_, with torch ops: for each tensor the three sums from one
    Gram product of (w, s) in float64, then the scalars of all tensors at once on the device,
    then a * w + b * s in float64, rounded once to the tensor's dtype."""
    wide, device = norms0[0].dtype, params[0].device
    grams = torch.stack([(x @ x.T) for x in map(_wide_pair, params, others, displaced)])
    sign = _on_device(signs, wide, device)
    a, b, norm0 = _coefficients(grams[:, 0, 0], sign * grams[:, 0, 1], grams[:, 1, 1], torch.stack(norms0),
                                _on_device(rates, wide, device), _on_device(scales, wide, device))
    torch._foreach_copy_(norms0, list(norm0.unbind()))
    coefficients = torch.stack([a, b * sign], dim=1).unbind()
    for p, t, d, ab in zip(params, others, displaced, coefficients):
        p.copy_((ab @ _wide_pair(p, t, d)).view(p.shape))


def _coefficients(ww: Tensor, ws: Tensor, ss: Tensor, norm0: Tensor, rate: Tensor,
                  scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per layer a, b with new w = a * w + b * s, and ||w0||, from w . w, w . s, s . s (vectors).

    The new w is norm0 / sqrt(1 + rate^2) * (w / |w| + rate * u), u the unit vector along
    s_perp = s - (w . s / w . w) w; a step with |s_perp|^2 <= ZERO_STEP |s|^2 does not turn w
    (a = norm0 / |w|, b = 0), and a zero w gets the base update (a = 1, b = scale). The same
    formula, in C++, is the CPU kernel's ``coefficients``.
    """
    norm = ww.sqrt()
    norm0 = torch.where(norm0 > 0, norm0, norm)
    perp2 = ss - ws * ws / ww
    k, shrink = rate / perp2.sqrt(), norm0 / (1 + rate * rate).sqrt()
    turns = ~(perp2 <= ZERO_STEP * ss)  # written so: a NaN step gives NaN weights, as in torch
    a = torch.where(turns, shrink * (1 / norm - k * ws / ww), norm0 / norm)
    b = torch.where(turns, shrink * k, 0.0)
    has_norm = ww > 0
    return torch.where(has_norm, a, 1.0), torch.where(has_norm, b, scale), norm0


def _wide_pair(p: Tensor, t: Tensor, displaced: bool) -> Tensor:
    """(w, s) flattened into the rows of one float64 matrix."""
    if not displaced:
        return torch.stack([p.reshape(-1), t.reshape(-1)]).double()
    x = torch.stack([t.reshape(-1), p.reshape(-1)]).double()
    x[1] -= x[0]
    return x


def _on_device(values: list[Any], dtype: torch.dtype, device: torch.device) -> Tensor:
    """`values` (numbers or 1-element tensors) as one vector on `device`, without a host sync."""
    if all(isinstance(v, numbers.Real) for v in values):
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)
    return torch.stack([torch.as_tensor(v, dtype=dtype).reshape(()).to(device, non_blocking=True) for v in values])


def _kernel_pairs(params: list[Tensor], others: list[Tensor]) -> list[tuple[Tensor, Tensor] | None]:
    """The pairs the CPU kernel takes (dense float32/float64 CPU pairs of one layout, as 1-D views
    where not contiguous), None for the rest; all None where the kernel is off. All tensors
    share one device."""
    if params[0].device.type != "cpu" or cpu_kernels.ops() is None:
        return [None] * len(params)
    return [_flat_pair(p, t) if p.dtype in (torch.float32, torch.float64) else None for p, t in zip(params, others)]


def _flat_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
    """1-D views of x and y, element for element, when both share one dense memory layout
    (contiguous, channels_last, ...); None when that would need copies."""
    if x.stride() != y.stride() or x.dtype != y.dtype:
        return None
    if not x.is_contiguous():
        order = sorted(range(x.dim()), key=x.stride, reverse=True)
        x, y = x.permute(order), y.permute(order)
    return (x.view(-1), y.view(-1)) if x.is_contiguous() else None


def _same_tensors(xs: list[Tensor], ys: list[Tensor]) -> bool:
    return len(xs) == len(ys) and all(x is y for x, y in zip(xs, ys))


def _same_settings(g: dict[str, Any], h: dict[str, Any]) -> bool:
    """Same hyper-parameters, apart from the keys only Layca reads."""
    def same(x: Any, y: Any) -> bool:
        return x is y or (type(x) is type(y) and not isinstance(x, Tensor) and x == y)

    return g.keys() == h.keys() and all(k in _LAYCA_KEYS or same(g[k], h[k]) for k in g)


def _checked_list(params: Any) -> list[Any]:
    """A group's parameters as a list; one listed twice would turn twice per step: refused."""
    params = [params] if isinstance(params, Tensor) else list(params)
    seen: dict[int, int] = {}
    for i, p in enumerate(p[1] if isinstance(p, tuple) else p for p in params):
        if id(p) in seen:
            raise ValueError(f"parameter {i} of a group (shape {tuple(p.shape)}) repeats parameter {seen[id(p)]}: "
                             "each parameter may appear once")
        seen[id(p)] = i
    return params
