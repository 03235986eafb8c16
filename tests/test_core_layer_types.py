"""Kernel layers of today's models: attention, recurrent, embedding, parametrized and
user-registered modules, and a real torchvision ViT trained a few steps."""
import math
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import layrot_core as lc
from layrot_core import cpu_kernels
from layrot_core import layers as layers_module
from test_core_layca import angle, cpu_path  # noqa: F401 (cpu_path: a fixture)


class AttentionBlock(nn.Module):
    def __init__(self, kdim=None):
        super().__init__()
        self.fc = nn.Linear(8, 8)  # registered first, runs last
        self.attn = nn.MultiheadAttention(8, 2, kdim=kdim, vdim=kdim, batch_first=True)

    def forward(self, x, kv=None):
        kv = x if kv is None else kv
        return self.fc(self.attn(x, kv, kv)[0])


def test_attention_layers_in_the_order_the_module_uses_them():
    """Repro: out_proj is called functionally, so tracing put it after the block's fc."""
    x = torch.randn(2, 3, 8)
    assert [n for n, _ in lc.kernel_layers(AttentionBlock(), x)] == [
        "attn.in_proj_weight", "attn.out_proj.weight", "fc.weight"]
    assert [n for n, _ in lc.kernel_layers(AttentionBlock(kdim=5), (x, torch.randn(2, 4, 5)))] == [
        "attn.q_proj_weight", "attn.k_proj_weight", "attn.v_proj_weight", "attn.out_proj.weight", "fc.weight"]


class Recurrent(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.head = nn.Linear(6, 2)
        self.embed = nn.Embedding(10, 4)
        self.rnn = cell(4, 6, num_layers=2, bidirectional=True, batch_first=True)
        self.mix = nn.Linear(12, 6)

    def forward(self, tokens):
        return self.head(self.mix(self.rnn(self.embed(tokens))[0]))


@pytest.mark.parametrize("cell", [nn.RNN, nn.LSTM, nn.GRU])
def test_recurrent_and_embedding_weights_are_layers(cell):
    """Repro: these went to the base optimizer at lr * lr_scale without a word."""
    model = Recurrent(cell)
    tokens = torch.randint(0, 10, (2, 5))
    rnn = [f"rnn.weight_{kind}_l{layer}{direction}" for layer in (0, 1) for direction in ("", "_reverse")
           for kind in ("ih", "hh")]
    assert [n for n, _ in lc.kernel_layers(model, tokens)] == ["embed.weight", *rnn, "mix.weight", "head.weight"]
    assert [n for n, _ in lc.kernel_layers(model, tokens, embeddings=False)] == [*rnn, "mix.weight", "head.weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # embeddings left out on purpose: no warning about them
        groups = lc.param_groups(model, example_input=tokens, embeddings=False)
    assert any(p is model.embed.weight for p in groups[-1]["params"]) and not groups[-1]["layca"]


def test_unregistered_weights_are_named_once_in_a_warning():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    model.register_parameter("table", nn.Parameter(torch.randn(4, 3)))
    model.register_parameter("scale", nn.Parameter(torch.ones(3)))
    with pytest.warns(UserWarning, match=r"1 parameter\(s\) of two or more dimensions are not kernel layers and "
                                         r"get the base optimizer's update: table \(") as record:
        lc.param_groups(model)
    assert len(record) == 1
    with pytest.warns(UserWarning, match="stay frozen: table"):
        lc.param_groups(model, others="freeze")


class Gate(nn.Module):
    """A user's own layer: its kernel is `kernel`, and it calls its `proj` functionally."""

    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(4, 4))
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        return nn.functional.linear(x @ self.kernel, self.proj.weight)


def test_users_register_their_own_module_types(monkeypatch):
    monkeypatch.setattr(layers_module, "_REGISTRY", dict(layers_module._REGISTRY))
    model = nn.Sequential(nn.Linear(4, 4), Gate())
    with pytest.warns(UserWarning, match=r"1 parameter\(s\) .*: 1.kernel \("):
        lc.param_groups(model)
    lc.register_kernel_module(Gate, ["kernel", "proj.weight"])
    assert [n for n, _ in lc.kernel_layers(model, torch.randn(2, 4))] == ["0.weight", "1.kernel", "1.proj.weight"]
    lc.register_kernel_module(Gate, lambda m: ["proj.weight"])
    assert [n for n, _ in lc.kernel_layers(model)] == ["0.weight", "1.proj.weight"]
    for bad, message in [((int, ["weight"]), "module_type=<class 'int'> must be a subclass of torch.nn.Module"),
                         ((Gate, []), r"weights=\[\] must be attribute names")]:
        with pytest.raises(ValueError, match=message):
            lc.register_kernel_module(*bad)


def test_parametrized_weights_rotate_their_originals_and_are_monitored_afresh(cpu_path):
    """Repro: param_groups failed on a non-leaf weight, and the monitor reported 0 forever."""
    torch.manual_seed(0)

    class Symmetric(nn.Module):
        def forward(self, x):
            return x.triu() + x.triu(1).T

    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(5, 6)), nn.Tanh(), nn.Linear(6, 6))
    parametrize.register_parametrization(model[2], "weight", Symmetric())
    x = torch.randn(3, 5)
    groups = lc.param_groups(model, example_input=x)
    originals = [[model[0].parametrizations.weight.original0, model[0].parametrizations.weight.original1],
                 [model[2].parametrizations.weight.original]]
    assert [g["params"] for g in groups[:2]] == originals
    monitor = lc.RotationMonitor(model, x)
    assert monitor.names == ["0.weight", "2.weight"]
    opt = lc.Layca(groups, lr=0.1)
    for _ in range(3):
        before = [p.detach().clone() for p in originals[1]]
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
        assert angle(originals[1][0], before[0]) == pytest.approx(math.atan(0.1), rel=1e-5)
    distances = monitor.cosine_distances()
    assert all(d > 1e-4 for d in distances.values()), distances
    old_style = nn.Linear(3, 3)
    with pytest.warns(FutureWarning, match="deprecated"):
        torch.nn.utils.weight_norm(old_style)
    old_style(torch.randn(1, 3))
    with pytest.raises(ValueError, match="layer 'weight' is a computed tensor, not a parameter"):
        lc.param_groups(old_style)


@pytest.mark.parametrize("base, path", [(torch.optim.SGD, "cpu kernels"), (torch.optim.Adam, "torch ops")])
def test_torchvision_vit_stays_finite(base, path, monkeypatch):
    """Repro: vit_b_16 initialises its head at zero, and was NaN after two steps. The real
    torchvision vit_b_16 on 32 x 32 images (two patches a side); for the slower torch ops, the
    same VisionTransformer class with 12 narrow blocks."""
    torch.manual_seed(0)
    if path == "torch ops":
        monkeypatch.setattr(cpu_kernels, "_ops", None)
        model = torchvision.models.VisionTransformer(32, 16, num_layers=12, num_heads=2, hidden_dim=32, mlp_dim=64)
    else:
        model = torchvision.models.vit_b_16(weights=None, image_size=32)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    with pytest.warns(UserWarning, match="class_token, encoder.pos_embedding"):
        groups = lc.param_groups(model, alpha=0.5, example_input=x)
    names = [n for n, _ in lc.kernel_layers(model, x)]
    block = "encoder.layers.encoder_layer_0"
    assert names[:5] == ["conv_proj.weight", f"{block}.self_attention.in_proj_weight",
                         f"{block}.self_attention.out_proj.weight", f"{block}.mlp.0.weight", f"{block}.mlp.3.weight"]
    assert names[-1] == "heads.head.weight" and len(names) == 2 + 4 * 12
    for opt in (lc.Layca(groups, base=base, lr=0.01), lc.Layca(model.parameters(), base=base, lr=0.01)):
        for _ in range(3):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in model.parameters())
    assert model.heads.head.weight.norm() > 0
