import copy
import gzip
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import layrot_core as lc
from layrot_core import cpu_kernels
from layrot_core import layca as layca_module

F64 = torch.float64
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle between two tensors (flattened), from the orthogonal and parallel parts of a."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    along = a @ b / b.norm()
    across = (a - (a @ b) / (b @ b) * b).norm()
    return math.atan2(across.item(), along.item())


def mlp(seed=0, dtype=F64, bias=True):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16, bias=bias), nn.Tanh(), nn.Linear(16, 12, bias=bias), nn.Tanh(),
                         nn.Linear(12, 3, bias=bias)).to(dtype)


def batch(step, dtype=F64):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(32, 6, generator=g, dtype=dtype), torch.randint(0, 3, (32,), generator=g)


def train_step(model, opt, step):
    x, y = batch(step, next(model.parameters()).dtype)
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def kernels(opt):
    return [(p, g["lr"] * g["lr_scale"]) for g in opt.param_groups if g["layca"] for p in g["params"]]


@pytest.fixture(params=["cpu kernels", "torch ops"])
def cpu_path(request, monkeypatch):
    """Run a test on both CPU code paths: the compiled kernels, and the torch ops used without them."""
    if request.param == "cpu kernels":
        assert cpu_kernels.ops() is not None, "the CPU kernels did not build here"
    else:
        monkeypatch.setattr(cpu_kernels, "_ops", None)
    return request.param


class SGDSubclass(torch.optim.SGD):
    """Same update as SGD, but not SGD itself: Layca takes the base-displacement path."""


BASES = {
    "sgd": (torch.optim.SGD, {}),
    "sgd_l2": (torch.optim.SGD, {"weight_decay": 1e-2}),
    "sgd_nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (torch.optim.Adam, {"eps": 1e-7}),
    "adamw": (torch.optim.AdamW, {"weight_decay": 0.1}),
    "rmsprop": (torch.optim.RMSprop, {"alpha": 0.9, "eps": 1e-7}),
    "adagrad": (torch.optim.Adagrad, {"eps": 1e-7}),
}


@pytest.mark.parametrize("name", BASES)
def test_each_step_turns_each_layer_by_atan_rate_and_keeps_initial_norm(name, cpu_path):
    base, kwargs = BASES[name]
    rng = np.random.default_rng(list(BASES).index(name))
    model = mlp()
    alpha, lr = float(rng.uniform(-0.9, 0.9)), float(3.0 ** rng.uniform(-5, 0))
    opt = lc.Layca(lc.param_groups(model, alpha=alpha), base=base, lr=lr, **kwargs)
    norms0 = [p.detach().norm().item() for p, _ in kernels(opt)]
    for step in range(6):
        before = [p.detach().clone() for p, _ in kernels(opt)]
        train_step(model, opt, step)
        for (p, rate), w, n0 in zip(kernels(opt), before, norms0):
            assert angle(p, w) == pytest.approx(math.atan(rate), rel=1e-9, abs=1e-12)
            assert p.detach().norm().item() == pytest.approx(n0, rel=1e-12)


def numpy_algorithm1(ws, steps, rates, norms0):
    """Paper Algorithm 1, line by line, on NumPy arrays."""
    out = []
    for w, s, rate, n0 in zip(ws, steps, rates, norms0):
        s = s - (s.ravel() @ w.ravel()) * w / (w.ravel() @ w.ravel())
        s = s * np.linalg.norm(w) / np.linalg.norm(s)
        w = w + rate * s
        out.append(w * n0 / np.linalg.norm(w))
    return out


class NumpyAdam:
    def __init__(self, shapes, betas=(0.9, 0.999), eps=1e-7):
        self.m = [np.zeros(s) for s in shapes]
        self.v = [np.zeros(s) for s in shapes]
        self.betas, self.eps, self.t = betas, eps, 0

    def steps(self, grads):
        b1, b2 = self.betas
        self.t += 1
        out = []
        for m, v, g in zip(self.m, self.v, grads):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            out.append(-(m / (1 - b1**self.t)) / (np.sqrt(v / (1 - b2**self.t)) + self.eps))
        return out


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_layca_agrees_with_numpy_algorithm1_over_50_steps(base, cpu_path):
    model, reference = mlp(seed=3), mlp(seed=3)
    groups = lc.param_groups(model, alpha=-0.4, others="freeze")
    opt = (lc.Layca(groups, lr=0.05) if base == "sgd"
           else lc.Layca(groups, base=torch.optim.Adam, lr=0.05, eps=1e-7))
    layers = [w for _, w in lc.kernel_layers(reference)]
    ws = [w.detach().numpy().copy() for w in layers]
    norms0 = [np.linalg.norm(w) for w in ws]
    rates = [0.05 * m for m in lc.layer_multipliers(3, -0.4)]
    adam = NumpyAdam([w.shape for w in ws])
    for step in range(50):
        train_step(model, opt, step)
        with torch.no_grad():
            for w, value in zip(layers, ws):
                w.copy_(torch.from_numpy(value))
        x, y = batch(step)
        reference.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        grads = [w.grad.numpy() for w in layers]
        steps = [-g for g in grads] if base == "sgd" else adam.steps(grads)
        ws = numpy_algorithm1(ws, steps, rates, norms0)
    for (_, w), expected in zip(lc.kernel_layers(model), ws):
        np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-9, atol=1e-12)


def test_grad_fast_path_equals_base_displacement_path(cpu_path):
    fast_model, slow_model = mlp(), mlp()
    fast = lc.Layca(lc.param_groups(fast_model, alpha=0.3), lr=0.2, weight_decay=0.05)
    slow = lc.Layca(lc.param_groups(slow_model, alpha=0.3), base=SGDSubclass, lr=0.2, weight_decay=0.05)
    for step in range(20):
        train_step(fast_model, fast, step)
        train_step(slow_model, slow, step)
    for a, b in zip(fast_model.parameters(), slow_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_zero_and_parallel_steps_leave_weights_unchanged(cpu_path):
    for base, kwargs in [(torch.optim.SGD, {}), (torch.optim.SGD, {"momentum": 0.5}), (torch.optim.Adam, {})]:
        w = nn.Parameter(torch.randn(4, 5, dtype=F64))
        frozen = nn.Parameter(torch.randn(3, dtype=F64))
        opt = lc.Layca([{"params": [w]}, {"params": [frozen], "lr_scale": 0.0}], base=base, lr=0.5, **kwargs)
        start, start_frozen = w.detach().clone(), frozen.detach().clone()
        w.grad, frozen.grad = torch.zeros_like(w), torch.randn_like(frozen)
        opt.step()  # (w is put back on its sphere, which it is on up to rounding)
        torch.testing.assert_close(w, start, rtol=1e-15, atol=0)
        torch.testing.assert_close(frozen, start_frozen, rtol=1e-15, atol=0)
        if base is torch.optim.SGD:  # (Adam's elementwise scaling turns a gradient along w away from w)
            w.grad = 3.0 * w.detach().clone()  # a step along w has nothing to rotate with
            opt.step()
            torch.testing.assert_close(w, start, rtol=1e-15, atol=0)


def test_non_layca_group_gets_the_base_update_at_lr_times_lr_scale():
    for base in (torch.optim.SGD, torch.optim.Adam):
        w, b = nn.Parameter(torch.randn(4, 3, dtype=F64)), nn.Parameter(torch.randn(3, dtype=F64))
        b_reference = nn.Parameter(b.detach().clone())
        opt = lc.Layca([{"params": [w]}, {"params": [b], "layca": False, "lr_scale": 0.5}], base=base, lr=0.1)
        plain = base([b_reference], lr=0.05)
        for _ in range(5):
            w.grad, b.grad = torch.randn_like(w), torch.randn_like(b)
            b_reference.grad = b.grad.clone()
            opt.step()
            plain.step()
            assert torch.equal(b, b_reference)
        assert opt.param_groups[1]["lr"] == 0.1  # the scaled rate applies only inside step()


def test_sgd_maximize_and_weight_decay():
    w1 = nn.Parameter(torch.randn(7, 3, dtype=F64))
    w2 = nn.Parameter(w1.detach().clone())
    w3 = nn.Parameter(w1.detach().clone())
    minimise = lc.Layca([w1], lr=0.3)
    maximise = lc.Layca([w2], lr=0.3, maximize=True)
    decayed = lc.Layca([w3], lr=0.3, weight_decay=0.5)
    for _ in range(4):
        g = torch.randn(7, 3, dtype=F64)
        w1.grad, w2.grad, w3.grad = g, -g, g.clone()
        minimise.step(), maximise.step(), decayed.step()
    torch.testing.assert_close(w1, w2, rtol=0, atol=1e-14)
    torch.testing.assert_close(w1, w3, rtol=0, atol=1e-14)  # weight decay is along w: projected away


@pytest.mark.parametrize("base", [torch.optim.SGD, torch.optim.Adam])
def test_state_dict_round_trip_continues_on_the_identical_trajectory(base, cpu_path):
    def make(seed):
        model = mlp(seed)
        return model, lc.Layca(lc.param_groups(model, alpha=0.2), base=base, lr=0.03)

    model, opt = make(0)
    for step in range(5):
        train_step(model, opt, step)
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, saved)
    for step in range(5, 10):
        train_step(model, opt, step)

    resumed_model, resumed_opt = make(seed=1)  # different initial weights, replaced by the checkpoint
    saved.seek(0)
    checkpoint = torch.load(saved)
    resumed_model.load_state_dict(checkpoint["model"])
    resumed_opt.load_state_dict(checkpoint["opt"])
    assert all(layca_module.NORM0 in resumed_opt.state[p] for p, _ in kernels(resumed_opt))
    for step in range(5, 10):
        train_step(resumed_model, resumed_opt, step)
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


def test_deepcopy_is_an_independent_optimizer():
    model = mlp()
    opt = lc.Layca(lc.param_groups(model), base=torch.optim.Adam, lr=0.02)
    train_step(model, opt, 0)
    clone = copy.deepcopy({"model": model, "opt": opt})
    for step in range(1, 4):
        train_step(model, opt, step)
        train_step(clone["model"], clone["opt"], step)
    for a, b in zip(model.parameters(), clone["model"].parameters()):
        assert torch.equal(a, b)


def test_multisteplr_gives_the_paper_schedule():
    rho0, factor, milestones = 0.3, 0.2, [2, 5]
    model = mlp()
    opt = lc.Layca(lc.param_groups(model), lr=rho0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=factor)
    for epoch in range(7):
        expected = rho0 * factor ** sum(m <= epoch for m in milestones)
        before = [p.detach().clone() for p, _ in kernels(opt)]
        train_step(model, opt, epoch)  # one step stands in for an epoch
        for (p, _), w in zip(kernels(opt), before):
            assert angle(p, w) == pytest.approx(math.atan(expected), rel=1e-9)
        scheduler.step()


def test_param_group_changes_take_effect():
    model = mlp()
    opt = lc.Layca(lc.param_groups(model), base=torch.optim.RMSprop, lr=0.1)
    train_step(model, opt, 0)
    opt.param_groups[1]["lr_scale"] = 0.25
    extra = nn.Parameter(torch.randn(5, 5, dtype=F64))
    opt.add_param_group({"params": [extra], "lr_scale": 2.0})
    before = [p.detach().clone() for p, _ in kernels(opt)]
    extra_before = extra.detach().clone()
    x, y = batch(1)
    opt.zero_grad()
    (F.cross_entropy(model(x), y) + extra.sum() ** 2).backward()
    opt.step()
    rates = [rate for _, rate in kernels(opt)]
    assert rates[:3] == [0.1, 0.025, 0.1] and rates[-1] == 0.2
    for (p, rate), w in zip(kernels(opt)[:3], before):
        assert angle(p, w) == pytest.approx(math.atan(rate), rel=1e-9)
    assert angle(extra, extra_before) == pytest.approx(math.atan(0.2), rel=1e-9)


def test_closure_is_evaluated_once_and_its_loss_returned():
    for base in (torch.optim.SGD, torch.optim.Adam):
        model = mlp()
        opt = lc.Layca(lc.param_groups(model), base=base, lr=0.1)
        calls = []
        x, y = batch(0)

        def closure():
            calls.append(1)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        w = model[0].weight.detach().clone()
        loss = opt.step(closure)
        assert len(calls) == 1 and loss.item() > 0
        assert angle(model[0].weight, w) == pytest.approx(math.atan(0.1), rel=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": -1.0}, "lr=-1.0 must be a finite number >= 0 or a 1-element tensor"),
    ({"lr": "0.1"}, "lr='0.1'"),
    ({"lr": math.inf}, "lr=inf"),
    ({"base": torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)}, "base=an instance of SGD is not allowed"),
    ({"base": lc.Layca}, "base=Layca is not allowed"),
    ({"base": dict}, "base=dict is not allowed: give a torch.optim.Optimizer class"),
])
def test_bad_arguments_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lc.Layca([nn.Parameter(torch.randn(3))], **kwargs)


def test_bad_group_keys_are_value_errors_and_add_nothing():
    opt = lc.Layca([nn.Parameter(torch.randn(3))])
    for group, message in [({"lr_scale": -1.0}, "lr_scale=-1.0 must be a finite number >= 0"),
                           ({"lr_scale": math.nan}, "lr_scale=nan"),
                           ({"layca": "yes"}, "layca='yes' must be True or False")]:
        with pytest.raises(ValueError, match=message):
            opt.add_param_group({"params": [nn.Parameter(torch.randn(2))], **group})
        with pytest.raises(ValueError, match=message):
            lc.Layca([{"params": [nn.Parameter(torch.randn(2))], **group}])
    assert len(opt.param_groups) == 1


def test_float32_is_accurate_and_bfloat16_reasonable(cpu_path):
    for dtype, rate, rel in [(torch.float32, 0.03, 1e-4), (torch.bfloat16, 0.2, 3e-2)]:
        model = mlp(dtype=dtype)
        opt = lc.Layca(lc.param_groups(model), lr=rate)
        norms0 = [p.detach().double().norm().item() for p, _ in kernels(opt)]
        for step in range(30):
            before = [p.detach().clone() for p, _ in kernels(opt)]
            train_step(model, opt, step)
            for (p, _), w in zip(kernels(opt), before):
                assert angle(p, w) == pytest.approx(math.atan(rate), rel=rel)
        for (p, _), n0 in zip(kernels(opt), norms0):
            assert p.dtype == dtype
            assert p.detach().double().norm().item() == pytest.approx(n0, rel=rel)


@pytest.mark.parametrize("base", [torch.optim.SGD, torch.optim.Adam])
@pytest.mark.parametrize("layout", ["transposed", "channels_last"])
def test_non_contiguous_parameters(base, layout, cpu_path):
    """Same trajectory as contiguous weights, for a strided view and a channels_last kernel
    large enough for the one-pass CPU update."""
    shape = (5, 8) if layout == "transposed" else (64, 32, 6, 6)

    def relayout(t):
        return t.t().contiguous().t() if layout == "transposed" else t.contiguous(memory_format=torch.channels_last)

    contiguous = nn.Parameter(torch.randn(shape, dtype=F64))
    other = nn.Parameter(relayout(contiguous.detach()))
    assert not other.is_contiguous() and torch.equal(contiguous, other)
    a = lc.Layca([contiguous], base=base, lr=0.2)
    b = lc.Layca([other], base=base, lr=0.2)
    for _ in range(10):
        g = torch.randn(shape, dtype=F64)
        contiguous.grad, other.grad = g, relayout(g)
        a.step(), b.step()
    assert other.stride() == relayout(contiguous.detach()).stride()
    torch.testing.assert_close(contiguous, other, rtol=1e-12, atol=1e-14)


def test_cpu_kernels_take_dense_pairs_and_leave_the_rest_to_torch_ops(cpu_path):
    dense = [(torch.randn(3, 4), torch.randn(3, 4)),
             (torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last),
              torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last))]
    mixed = [(torch.randn(4, 3).t(), torch.randn(3, 4))]
    pairs = layca_module._kernel_pairs(*map(list, zip(*dense, *mixed)))
    assert [f is not None for f in pairs] == ([True, True, False] if cpu_path == "cpu kernels" else [False] * 3)
    assert layca_module._kernel_pairs([torch.randn(3).bfloat16()], [torch.randn(3).bfloat16()]) == [None]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rotation_is_exact():
    model = mlp().cuda()
    opt = lc.Layca(lc.param_groups(model, alpha=0.5), base=torch.optim.Adam, lr=0.1)
    for step in range(3):
        before = [p.detach().clone() for p, _ in kernels(opt)]
        x, y = batch(step)
        opt.zero_grad()
        F.cross_entropy(model(x.cuda()), y.cuda()).backward()
        opt.step()
        for (p, rate), w in zip(kernels(opt), before):
            assert angle(p, w) == pytest.approx(math.atan(rate), rel=1e-9)


def read_idx(path: Path) -> np.ndarray:
    """IDX format: magic (2 zero bytes, type, ndim), big-endian dims, then the data."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed (make setup installs it)")
@pytest.mark.parametrize("base, lr", [(torch.optim.SGD, 3.0**-3), (torch.optim.Adam, 3.0**-4)])
def test_loss_decreases_on_fashion_mnist(base, lr):
    x = torch.from_numpy(read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")[:3000].copy())
    y = torch.from_numpy(read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")[:3000].astype(np.int64))
    x = (x.float().flatten(1) / 255 - 0.286) / 0.353
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = lc.Layca(lc.param_groups(model), base=base, lr=lr)
    monitor = lc.RotationMonitor(model)
    train_x, train_y, test_x, test_y = x[:2000], y[:2000], x[2000:], y[2000:]
    with torch.no_grad():
        initial = F.cross_entropy(model(test_x), test_y).item()
    for epoch in range(4):
        for i in torch.randperm(2000).split(100):
            opt.zero_grad()
            F.cross_entropy(model(train_x[i]), train_y[i]).backward()
            opt.step()
    with torch.no_grad():
        final = F.cross_entropy(model(test_x), test_y).item()
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    assert final < 0.5 * initial and accuracy > 0.75
    assert all(0 < d < 1 for d in monitor.cosine_distances().values())
