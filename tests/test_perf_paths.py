"""The engine's fast paths (issue 8): channels_last, the cheap ReLU-override backward, the CPU heap, equal chunks, the
colour matmul and the autocast path. CPU tests take the same code paths as CUDA where they can; CUDA tests at the end
run only where a GPU is (bench/gpu_check.sh runs them on the GPU machine).
"""

import numpy as np
import pytest
import torch
from tiny import IMAGE_META, TinyCNN, TinySignal, export, load_tiny
from torch import nn

import vizcore
from vizcore import params, transforms
from vizcore.engine import RenderOptions, budget, device, relu
from vizcore.engine import net as engine_net

FAST = dict(steps=12, size=32, seed=0, lr=0.2)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(TinyCNN(), tmp_path_factory.mktemp("perf"))


# -- the ReLU-override backward: same gradient as the plain formula (Lucid's), in every layout and dtype -----------
def _reference_grad(x: torch.Tensor, g: torch.Tensor, lo: float | None, hi: float | None) -> torch.Tensor:
    inside = torch.ones_like(x, dtype=torch.bool)
    redirect = torch.ones_like(x, dtype=torch.bool)
    if lo is not None:
        inside &= x > lo
        redirect &= (x > lo) | (g < 0)
    if hi is not None:
        inside &= x < hi
        redirect &= (x < hi) | (g > 0)
    blocked = (g * inside).flatten(1).abs().amax(1) == 0
    return g * torch.where(blocked.view(-1, *([1] * (g.dim() - 1))), redirect, inside)


@pytest.mark.parametrize("bounds", [(0.0, None), (0.0, 6.0), (None, 1.0), (-1.0, 1.0)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "signal", "flat"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_redirected_backward_equals_the_reference(bounds, layout, dtype):
    lo, hi = bounds
    g = torch.Generator().manual_seed(1)
    shape = {"contiguous": (6, 4, 5, 5), "channels_last": (6, 4, 5, 5), "signal": (6, 4, 9), "flat": (6, 7)}[layout]
    x = (torch.randn(shape, generator=g) * 2).to(dtype)
    if lo is not None:
        x[:2] = lo - x[:2].abs() - 0.1  # images 0 and 1 are blocked at the lower bound
    if hi is not None:
        x[2] = hi + x[2].abs() + 0.1  # image 2 is blocked at the upper bound
    grad = torch.randn(shape, generator=g).to(dtype)
    if layout == "channels_last":
        x, grad = x.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    xx = x.clone().requires_grad_(True)
    y = relu.RedirectedClamp.apply(xx, lo, hi)
    assert torch.equal(y, torch.clamp(x, lo, hi))
    y.backward(grad)
    expected = _reference_grad(x, grad, lo, hi)
    assert xx.grad.dtype == dtype
    assert torch.equal(xx.grad, expected)
    assert xx.grad[:3].abs().sum() > 0  # the blocked images did get a gradient


def test_redirected_backward_without_blocked_images_is_the_plain_gradient():
    x = torch.rand(3, 2, 4, 4) + 0.5  # all inside (0, 6)
    grad = torch.randn(3, 2, 4, 4)
    xx = x.clone().requires_grad_(True)
    relu.RedirectedClamp.apply(xx, 0.0, 6.0).backward(grad)
    yy = x.clone().requires_grad_(True)
    nn.ReLU6()(yy).backward(grad)
    assert torch.equal(xx.grad, yy.grad)


@pytest.mark.parametrize("bounds", [(0.0, None), (0.0, 6.0), (None, 1.0)])
def test_override_gradient_without_the_early_exit_is_the_same(bounds):
    """The GPU path (no host sync: the masks always run) gives what the CPU's early exit gives."""
    lo, hi = bounds
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 6, 6, generator=g) * 3
    grad = torch.randn(4, 3, 6, 6, generator=g)
    x_blocked = x.clone()
    x_blocked[1] = (lo - 1.0) if lo is not None else (hi + 1.0)  # image 1 closed everywhere
    for t in (x, x_blocked):
        fast = relu.clamp_grad(grad, t, lo, hi, redirect=True, early_exit=True)
        full = relu.clamp_grad(grad, t, lo, hi, redirect=True, early_exit=False)
        assert torch.equal(fast, full)


def test_cudnn_autotune_is_on_inside_and_restored_after(monkeypatch):
    torch.backends.cudnn.benchmark = False
    with device.cudnn_autotune():
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark is False
    monkeypatch.setenv("VIZCORE_CUDNN_BENCHMARK", "0")  # read by RenderOptions.from_env, passed down
    with device.cudnn_autotune(RenderOptions.from_env().cudnn_benchmark):
        assert torch.backends.cudnn.benchmark is False


# -- channels_last --------------------------------------------------------------------------------------------------
def test_memory_format_is_channels_last_for_conv_images_only(model, monkeypatch, tmp_path):
    cut = model.cut_at([3])
    assert engine_net.memory_format(cut, (1, 3, 32, 32)) == torch.channels_last
    sig = vizcore.load(export(TinySignal(), tmp_path / "sig.onnx", (1, 2, 64)), size=64)
    assert engine_net.memory_format(sig.cut_at([2]), (1, 2, 64)) == torch.contiguous_format
    monkeypatch.setenv("VIZCORE_CHANNELS_LAST", "0")  # read by RenderOptions.from_env, passed down
    assert engine_net.memory_format(cut, (1, 3, 32, 32), RenderOptions.from_env().channels_last) == \
        torch.contiguous_format


def test_channels_last_render_matches_contiguous(model, monkeypatch):
    fast = vizcore.render(model, ["3:0", "3:4"], **FAST)
    monkeypatch.setenv("VIZCORE_CHANNELS_LAST", "0")
    plain = vizcore.render(model, ["3:0", "3:4"], **FAST)
    assert np.abs(fast.images.astype(int) - plain.images.astype(int)).max() <= 2
    np.testing.assert_allclose(fast.values, plain.values, rtol=1e-3, atol=1e-4)


def test_channels_last_network_sees_channels_last_input(model):
    seen = []
    cut = model.cut_at([3])
    net = engine_net.Net(model, cut, [3], nn.Identity(), None)
    net.memory_format = torch.channels_last
    cut.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
    net(torch.rand(2, 3, 32, 32))
    assert seen == [True]


# -- the CPU heap ---------------------------------------------------------------------------------------------------
def test_cpu_heap_changes_speed_not_results(model, monkeypatch):
    a = vizcore.render(model, "3:2", device="cpu", **FAST)
    with device.cpu_heap(), device.cpu_heap():  # nested: only the outermost exit restores glibc's settings
        b = vizcore.render(model, "3:2", device="cpu", **FAST)
    assert device._heap_depth == 0
    monkeypatch.setenv("VIZCORE_CPU_HEAP", "0")
    c = vizcore.render(model, "3:2", device="cpu", **FAST)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.images, c.images)


def test_render_keeps_its_signature_and_docstring():
    import inspect

    sig = inspect.signature(vizcore.render)
    assert sig.parameters["options"].default is None and RenderOptions().steps == 144  # defaults: RenderOptions
    assert vizcore.render.__doc__.startswith("Synthesize")


# -- before the first step: no forward pass the load already made ---------------------------------------------------
def _forwards_before_the_first_step(model, **options):
    """Whether each forward pass of the converted graph (the model's module or a cut of it: an fx GraphModule called
    from outside one) before the render's first step ran with gradients: the step's own forward does, a size
    probe does not."""
    from torch import fx
    from torch.nn.modules import module as torch_module

    model.batch_ok  # noqa: B018  measured on first use today (two forwards); the load measures it on the other branch
    seen, at_first_step, depth = [], [], [0]

    def enter(m, args):
        if isinstance(m, fx.GraphModule):
            if depth[0] == 0:
                seen.append(torch.is_grad_enabled())
            depth[0] += 1

    def leave(m, args, out):
        if isinstance(m, fx.GraphModule):
            depth[0] -= 1

    hooks = [torch_module.register_module_forward_pre_hook(enter), torch_module.register_module_forward_hook(leave)]
    try:
        vizcore.render(model, "3:0", steps=2, on_step=lambda run, st: at_first_step or at_first_step.extend(seen),
                       **options)
    finally:
        for h in hooks:
            h.remove()
    return at_first_step


def test_a_render_at_the_loaded_size_runs_no_forward_before_its_first_step(tmp_path):
    path = export(TinyCNN(), tmp_path / "m.onnx", (1, 3, 32, 32), metadata={**IMAGE_META, "vizcore.size": "32"})
    model = vizcore.load(path)  # the load runs the graph once at the model's default size (32) for the layer table
    assert model.input_shape(1) == (1, 3, 32, 32)
    assert _forwards_before_the_first_step(model) == [True]  # only the first step's own forward
    assert _forwards_before_the_first_step(model, size=32) == [True]
    assert _forwards_before_the_first_step(model, size=40) == [False, True]  # another size: probed once


@pytest.mark.filterwarnings("ignore:the model's graph only works at batch 1")  # its batch test runs at 64 px
def test_a_model_that_cannot_take_the_size_is_still_refused_before_the_first_step(tmp_path):
    from vizcore.errors import InputTooSmallError

    class Flat(nn.Module):  # a linear layer on the flattened image: runs at the loaded size only
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 16 * 16, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    model = vizcore.load(export(Flat(), tmp_path / "flat.onnx", (1, 3, 16, 16), metadata=IMAGE_META), size=16)
    assert vizcore.render(model, "class:0", steps=2, size=16, transforms="none").values.shape == (1,)
    with pytest.raises(InputTooSmallError, match="cannot run on a 24x24 input"):
        vizcore.render(model, "class:0", steps=2, size=24, transforms="none")


# -- chunking ---------------------------------------------------------------------------------------------------------
def test_chunks_are_equal_and_match_one_batch(model):
    whole = vizcore.render(model, "3:0-5", **FAST)
    parts = vizcore.render(model, "3:0-5", batch_size=4, **FAST)  # 6 units, at most 4 a chunk -> 2 chunks of 3
    assert whole.settings["chunk_units"] == 6 and parts.settings["chunk_units"] == 3
    assert np.abs(whole.images.astype(int) - parts.images.astype(int)).max() <= 2
    np.testing.assert_allclose(whole.values, parts.values, rtol=1e-3, atol=1e-4)


def test_memory_estimate_covers_the_measured_peak_of_the_network(model):
    """The chunk budget must not under-estimate what one image's forward+backward really holds."""
    est = budget.bytes_per_image(model, 3, (1, 3, 32, 32), amp=False)
    cut = model.cut_at([3])
    x = torch.rand(8, 3, 32, 32, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = cut(x)[0]
    out.mean().backward()
    assert est * 8 >= sum(saved)


# -- amp and the autocast path ------------------------------------------------------------------------------------
def test_amp_on_cpu_warns_and_runs_in_float32(model):
    msgs = []
    r = vizcore.render(model, "3:1", device="cpu", amp=True, on_warning=msgs.append, **FAST)
    assert r.settings["amp"] is False and any("CUDA" in m for m in msgs)


def test_bfloat16_autocast_step_gives_finite_gradients(model):
    """The CUDA --amp step, run with CPU autocast: redirected ReLUs, channels_last and bf16 activations together."""
    cut = model.cut_at([4])  # conv relu pool conv relu
    switch = relu.Switch()
    assert relu.redirect_relus(cut, switch) == 2
    cut.to(memory_format=torch.channels_last)
    net = engine_net.Net(model, cut, [4], nn.Identity(), None)
    net.memory_format = torch.channels_last
    img = torch.rand(4, 3, 32, 32, requires_grad=True)
    switch.on = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        acts = net(img)
    assert acts[4].dtype == torch.bfloat16
    acts[4].float()[:, 0].mean().backward()
    assert torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


# -- the image side -------------------------------------------------------------------------------------------------
def test_colour_decorrelation_equals_the_einsum():
    t = torch.randn(2, 3, 8, 9)
    to_img = params._ToImage(3, True)
    expected = torch.sigmoid(torch.einsum("nc...,dc->nd...", t, params.COLOR_DECORRELATION))
    torch.testing.assert_close(to_img(t), expected)
    sig = torch.randn(2, 3, 11)
    torch.testing.assert_close(to_img(sig), torch.sigmoid(torch.einsum("nc...,dc->nd...", sig,
                                                                       params.COLOR_DECORRELATION)))


def test_affine_rotates_without_device_copies_in_the_way():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    y = transforms.Affine(scales=[0.9], angles=[10])(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


# -- CUDA (skipped without a GPU) --------------------------------------------------------------------------------------
@cuda
def test_cuda_amp_render_raises_the_activation(model):
    r = vizcore.render(model, ["3:0", "3:1"], device="cuda", amp=True, **FAST)
    assert r.settings["amp"] is True and np.isfinite(r.values).all()
    for trace in r.traces:
        assert trace[-1] > trace[0]


@cuda
def test_cuda_matches_cpu_closely(model):
    a = vizcore.render(model, "3:3", device="cpu", **FAST)
    b = vizcore.render(model, "3:3", device="cuda", **FAST)
    assert abs(float(a.values[0]) - float(b.values[0])) <= 0.05 * max(1.0, abs(float(a.values[0])))


@cuda
def test_cuda_chunks_match_one_batch(model):
    whole = vizcore.render(model, "3:0-5", device="cuda", **FAST)
    parts = vizcore.render(model, "3:0-5", device="cuda", batch_size=2, **FAST)
    np.testing.assert_allclose(whole.values, parts.values, rtol=2e-2, atol=2e-3)


@cuda
def test_cuda_budget_covers_max_allocated(model):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    r = vizcore.render(model, "3:0-7", device="cuda", max_memory="1G", **FAST)
    peak = torch.cuda.max_memory_allocated() - base
    est = budget.bytes_per_image(model, 3, (1, 3, 32, 32), amp=False) * r.settings["chunk_units"]
    assert est >= peak, (est, peak)
