import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import layrot_core as lc
from layrot_core import cpu_kernels
from layrot_core.layca import ZERO_STEP
from test_core_layca import numpy_algorithm1

ROOT = Path(__file__).resolve().parents[1]
SIZES = [0, 1, 7, 2047, 2048, 2049, 100_003]  # around the kernel's block of 2048 elements


@pytest.fixture(scope="module")
def ops():
    built = cpu_kernels.ops()
    assert built is not None, "the CPU kernels did not build here (a C++ compiler and ninja are needed)"
    return built


def rotate(ops, ps, ts, rates, signs, norms0, displaced):
    """The kernel on these pairs; returns the norms it keeps (0 for none known yet)."""
    kept = [torch.tensor(float(n), dtype=torch.float64) for n in norms0]
    ops.rotate_(ps, ts, kept, rates, [0.0] * len(ps), signs, displaced, ZERO_STEP)
    return [n.item() for n in kept]


@pytest.mark.parametrize("dtype, rel", [(torch.float32, 2e-6), (torch.float64, 1e-13)])
@pytest.mark.parametrize("displaced", [False, True])
def test_rotate_matches_numpy_algorithm1(ops, dtype, rel, displaced):
    """Along the gradient, p holds w and t the gradient (s = sign * t); displaced, p holds w + s
    and t holds w. Sizes around the kernel's block of 2048 elements."""
    rng = np.random.default_rng(int(displaced))
    sizes = [n for n in SIZES if n > 1]
    ws = [rng.standard_normal(n) for n in sizes]
    steps = [rng.standard_normal(n) * rng.uniform(1e-3, 1) + 0.2 * w for n, w in zip(sizes, ws)]
    rates = list(rng.uniform(1e-3, 1.0, len(sizes)))
    signs = [1.0 if displaced else float(rng.choice([-1.0, 1.0])) for _ in sizes]
    w_t = [torch.from_numpy(w).to(dtype) for w in ws]
    if displaced:
        ps, ts = [torch.from_numpy(w + s).to(dtype) for w, s in zip(ws, steps)], [w.clone() for w in w_t]
    else:
        ps, ts = [w.clone() for w in w_t], [torch.from_numpy(s / sign).to(dtype) for s, sign in zip(steps, signs)]
    # the reference sees exactly the values the kernel reads
    w64 = [w.double().numpy() for w in w_t]
    s64 = [(p.double() - t.double()).numpy() if displaced else sign * t.double().numpy()
           for p, t, sign in zip(ps, ts, signs)]
    norms0 = [float(np.linalg.norm(w)) for w in w64]
    expected = numpy_algorithm1(w64, s64, rates, norms0)
    rotate(ops, ps, ts, rates, signs, norms0, [displaced] * len(sizes))
    for p, e, n0 in zip(ps, expected, norms0):
        assert p.dtype == dtype
        assert np.abs(p.double().numpy() - e).max() <= rel * n0


def test_rotate_leaves_zero_and_parallel_steps_on_the_sphere(ops):
    """Along the gradient: a zero gradient, one along w. Displaced: a base result equal to w, and
    one along w (p must come back to w, rescaled to the kept norm: here twice w's)."""
    w = torch.randn(5000, dtype=torch.float64)
    ps = [w.clone(), w.clone(), w.clone(), -0.5 * w]
    ts = [torch.zeros_like(w), 3.0 * w, w.clone(), w.clone()]
    rotate(ops, ps, ts, [0.5] * 4, [-1.0, -1.0, 1.0, 1.0], [2 * w.norm().item()] * 4, [False, False, True, True])
    for p in ps:
        torch.testing.assert_close(p, 2 * w, rtol=1e-15, atol=0)


def test_rotate_gives_a_zero_weight_its_base_update_and_then_its_norm(ops):
    g = torch.randn(3000)
    p = torch.zeros(3000)
    kept = torch.zeros((), dtype=torch.float64)
    ops.rotate_([p], [g], [kept], [0.2], [0.05], [-1.0], [False], ZERO_STEP)
    torch.testing.assert_close(p, -0.05 * g, rtol=3e-7, atol=0)
    assert kept.item() == 0.0
    ops.rotate_([p], [torch.randn(3000)], [kept], [0.2], [0.05], [-1.0], [False], ZERO_STEP)
    assert kept.item() == pytest.approx(0.05 * g.double().norm().item(), rel=1e-7)
    assert p.double().norm().item() == pytest.approx(kept.item(), rel=1e-7)


def test_rotate_does_not_depend_on_the_number_of_threads(ops):
    torch.manual_seed(0)
    w, g = torch.randn(1_000_003), torch.randn(1_000_003)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            p = w.clone()
            rotate(ops, [p], [g], [0.1], [-1.0], [w.norm().item()], [False])
            results.append(p)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_kernels_refuse_what_they_cannot_read(ops):
    def call(p, t, lists=1, norm0=None):
        norm0 = torch.zeros((), dtype=torch.float64) if norm0 is None else norm0
        ops.rotate_([p], [t], [norm0], [0.1] * lists, [1.0], [1.0], [False], 1e-6)

    with pytest.raises(RuntimeError, match="contiguous tensors of equal size"):
        call(torch.randn(4, 3).t(), torch.randn(3, 4))
    with pytest.raises(RuntimeError, match="contiguous tensors of equal size"):
        call(torch.randn(4), torch.randn(5))
    with pytest.raises(RuntimeError, match="float32 or float64 pairs only"):
        call(torch.randn(3), torch.randn(3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="float32 or float64 pairs only"):
        call(torch.randn(3).bfloat16(), torch.randn(3).bfloat16())
    with pytest.raises(RuntimeError, match="lists of different lengths"):
        call(torch.randn(3), torch.randn(3), lists=2)
    with pytest.raises(RuntimeError, match="norms0 must be float64 scalars"):
        call(torch.randn(3), torch.randn(3), norm0=torch.zeros(()))


def test_switched_off_kernels_are_not_loaded(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_ops", cpu_kernels._NOT_LOADED)
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    monkeypatch.setattr(cpu_kernels, "_load", lambda: pytest.fail("switched off, yet built"))
    assert cpu_kernels.ops() is None


def test_a_failed_build_warns_once_and_layca_still_rotates(monkeypatch):
    def no_compiler():
        raise RuntimeError("Error building extension 'layrot_cpu': c++: not found\nmore detail")

    monkeypatch.setattr(cpu_kernels, "_ops", cpu_kernels._NOT_LOADED)
    monkeypatch.delenv(cpu_kernels.ENV_SWITCH, raising=False)
    monkeypatch.setattr(cpu_kernels, "_load", no_compiler)
    w = nn.Parameter(torch.randn(50, 40, dtype=torch.float64))
    w0 = w.detach().clone()
    opt = lc.Layca([w], lr=0.1)
    w.grad = torch.randn_like(w)
    with pytest.warns(RuntimeWarning, match=r"unavailable \(Error building extension 'layrot_cpu': c\+\+: not found\)"
                                            r"; using torch ops.*LAYROT_CPU_KERNELS=0"):
        opt.step()
    cos = (w.detach().flatten() @ w0.flatten() / w0.norm() ** 2).item()
    assert cos == pytest.approx(1 / np.sqrt(1 + 0.1**2), rel=1e-12)  # turned by atan(0.1), same norm
    assert cpu_kernels.ops() is None  # decided once per process: no second build, no second warning


def test_first_use_compiles_once_and_later_processes_only_load(tmp_path):
    """A fresh build folder: the first process compiles (and says so), the second loads the library."""
    script = ("import torch, layrot_core as lc\n"
              "w = torch.nn.Parameter(torch.randn(300, 200))\n"
              "opt = lc.Layca([w], lr=0.1); w.grad = torch.randn_like(w); opt.step()\n"
              "from layrot_core import cpu_kernels; assert cpu_kernels.ops() is not None\n"
              "print(cpu_kernels.build_directory())\n")
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    env.pop(cpu_kernels.ENV_SWITCH, None)
    runs = [subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert Path(run.stdout.strip()).parent == tmp_path
    assert "compiling Layca's CPU kernels" in runs[0].stderr
    assert "compiling" not in runs[1].stderr and "Warning" not in runs[1].stderr
    assert (Path(runs[0].stdout.strip()) / "layrot_cpu.so").is_file()


def test_compiled_step_follows_the_eager_trajectory(ops):
    """torch.compile(opt.step) works with the kernel (traced through its fake version) and gives
    the eager results."""
    torch.manual_seed(0)
    eager_model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    compiled_model = copy.deepcopy(eager_model)
    eager = lc.Layca(lc.param_groups(eager_model), lr=0.1)
    compiled = lc.Layca(lc.param_groups(compiled_model), lr=0.1)
    compiled_step = torch.compile(compiled.step)
    for _ in range(3):
        x = torch.randn(8, 20)
        for model, opt, step in ((eager_model, eager, eager.step), (compiled_model, compiled, compiled_step)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            step()
    for a, b in zip(eager_model.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
