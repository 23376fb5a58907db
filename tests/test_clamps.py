"""Conv + clamp fusion on the CPU: same values and gradients as the unfused graph, override included."""

import numpy as np
import pytest
import torch
from tiny import load_tiny
from torch import nn

import vizcore
from vizcore.engine import RenderOptions, fusion, relu

FAST = dict(steps=10, size=32, seed=0, lr=0.2)


class Blocks(nn.Module):
    """conv+ReLU6 (Clip), depthwise stride-2 conv without bias + ReLU, 1x1 conv + ReLU6, 1x1 conv (no clamp)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 12, 1)
        self.out = nn.Conv2d(12, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(self.c1(x), 0, 6)
        x = torch.relu(self.dw(x))
        x = torch.clamp(self.pw(x) * 3, 0, 6)  # a Mul between conv and clamp: not a conv -> clamp pair
        return nn.functional.relu6(self.out(x))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(Blocks(), tmp_path_factory.mktemp("clamps"))


def _run(cut, x, grad):
    xx = x.clone().requires_grad_(True)
    outs = cut(xx)
    outs[-1].backward(grad)
    return [o.detach() for o in outs], xx.grad


def _last(model):
    return len(model.layers) - 1


def test_fused_graph_gives_the_same_values_and_input_gradient(model):
    last = _last(model)
    plain, fused = model.cut_at([last]), model.cut_at([last])
    assert fusion.fuse_conv_clamps(fused) == 3  # c1+clip, dw+relu, out+relu6; pw is followed by a Mul
    assert sum(isinstance(m, fusion.FusedConvClamp) for m in fused.modules()) == 3
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 3, 32, 32, generator=g) * 2).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 4, 16, 16, generator=g)
    (y0,), gx0 = _run(plain, x, grad)
    (y1,), gx1 = _run(fused, x, grad)
    assert torch.allclose(y0, y1, rtol=1e-5, atol=1e-6)
    assert (y1 > 0).any() and (y1 == 0).any()  # the clamp was active somewhere (the test is not vacuous)
    assert gx0.abs().sum() > 0
    assert torch.allclose(gx0, gx1, rtol=1e-5, atol=1e-6)


def test_fused_pairs_keep_the_relu_override(model):
    """With the switch on, a fused graph redirects exactly as the unfused, redirected graph does."""
    last = _last(model)
    plain, fused = model.cut_at([last]), model.cut_at([last])
    s0, s1 = relu.Switch(), relu.Switch()
    relu.redirect_relus(plain, s0)
    relu.redirect_relus(fused, s1)
    assert fusion.fuse_conv_clamps(fused, s1) == 3
    # an image whose output channel 0 is closed everywhere (its true gradient is all zero), beside an open one
    with torch.no_grad():
        closed = next(c for c in torch.linspace(-8, 8, 33)
                      if float(plain(torch.full((1, 3, 32, 32), float(c)))[0][0, 0].max()) == 0.0)
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    x[0] = closed
    grad = torch.zeros(2, 4, 16, 16)
    grad[:, 0] = -1.0  # maximize channel 0
    s0.on = s1.on = True
    _, gx0 = _run(plain, x, grad)
    _, gx1 = _run(fused, x, grad)
    assert torch.allclose(gx0, gx1, rtol=1e-5, atol=1e-6)
    s0.on = s1.on = False
    _, gx2 = _run(plain, x, grad)
    assert not torch.allclose(gx0, gx2)  # the override did change something here


def test_a_target_at_the_raw_conv_output_is_not_fused(model):
    conv = next(lay.index for lay in model.layers if lay.op_type == "Conv")
    cut = model.cut_at([conv, _last(model)])
    assert fusion.fuse_conv_clamps(cut) == 2  # the first conv's raw output is a target: left alone
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(cut(x)[0], model.cut_at([conv])(x)[0])


def test_fusion_can_be_turned_off(model, monkeypatch):
    monkeypatch.setenv("VIZCORE_FUSE", "0")  # read by RenderOptions.from_env, passed down
    assert fusion.fuse_conv_clamps(model.cut_at([_last(model)]), enabled=RenderOptions.from_env().fuse) == 0


def test_renders_with_and_without_fusion_agree(model, monkeypatch):
    target = f"{_last(model)}:0-2"
    on = vizcore.render(model, target, device="cpu", **FAST)
    monkeypatch.setenv("VIZCORE_FUSE", "0")
    off = vizcore.render(model, target, device="cpu", **FAST)
    assert on.settings["fused_conv_clamps"] == 3 and off.settings["fused_conv_clamps"] == 0
    assert np.abs(on.images.astype(int) - off.images.astype(int)).max() <= 1
    assert np.allclose(on.values, off.values, rtol=1e-3, atol=1e-4)


def test_fused_pairs_fall_back_under_autocast(model):
    cut = model.cut_at([_last(model)])
    assert fusion.fuse_conv_clamps(cut) == 3
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = cut(x)[0]
    assert y.dtype == torch.bfloat16  # the unfused modules ran (the fused kernel is float32 only)
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
