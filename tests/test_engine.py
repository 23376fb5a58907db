import dataclasses

import numpy as np
import pytest
import torch
from tiny import TinyCNN, TinySignal, export, load_tiny
from torch import nn

import vizcore
from vizcore.errors import DeviceError, ModelLoadError, OptionError
from vizcore.objectives import Channel, Diversity

FAST = dict(steps=24, size=32, seed=0, lr=0.2)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(TinyCNN(), tmp_path_factory.mktemp("m"))


def _value_on(model, obj, img):
    obj.bind(model)
    x = (img - 0.5) / 0.25
    outs = model.cut_at(obj.targets)(x)
    return float(obj(dict(zip(obj.targets, outs))).mean())


def _probe_best(model, obj, n=16):
    g = torch.Generator().manual_seed(5)
    imgs = [torch.full((1, 3, 32, 32), 0.5)] + [torch.rand(1, 3, 32, 32, generator=g) for _ in range(n)]
    return max(_value_on(model, obj, im) for im in imgs)


@pytest.mark.parametrize("quality, margin", [("plain", 0.1), ("default", 0.0)])
def test_activation_goes_up(model, quality, margin):
    """Each unit ends above the best of 16 random pictures (the plain image by a margin: the default's
    standardized image has a fixed contrast, which caps a random tiny network's units lower)."""
    r = vizcore.render(model, ["3:0-3"], quality=quality, **FAST)
    assert r.images.shape == (4, 32, 32, 3) and r.images.dtype == np.uint8
    for i in range(4):
        best = _probe_best(model, Channel(3, i))
        assert r.values[i] > best + margin, (i, best, r.values[i])
        assert r.traces[i][-1] > r.traces[i][0]
    # the written value is the objective on the final (untransformed) image
    img = torch.from_numpy(r.images[2]).permute(2, 0, 1)[None].float() / 255
    assert _value_on(model, Channel(3, 2), img) == pytest.approx(float(r.values[2]), rel=0.05, abs=0.05)


def test_class_logit_beats_every_probe_image(model):
    from vizcore.objectives import ClassLogit

    r = vizcore.render(model, ["class:0", "class:3"], **FAST)
    for i, cls in enumerate((0, 3)):
        assert r.values[i] > _probe_best(model, ClassLogit(cls))


def test_batched_equals_one_at_a_time(model):
    both = vizcore.render(model, ["3:1", "3:5"], **FAST)
    one = vizcore.render(model, ["3:5"], **FAST)
    assert both.settings["chunk_units"] == 2
    assert np.abs(both.images[1].astype(int) - one.images[0].astype(int)).max() <= 2
    assert both.values[1] == pytest.approx(one.values[0], rel=1e-3, abs=1e-4)


def test_on_step_sees_every_step_and_can_stop_early(model):
    seen = []

    def watch(run, state):
        seen.append((run.chunk, state.step, state.values.clone()))
        if state.step == 5:
            state.stop = True

    r = vizcore.render(model, ["3:0-3"], batch_size=2, on_step=watch, **FAST)
    n_chunks = 2
    assert r.settings["chunk_units"] == 2
    assert [s for _, s, _ in seen] == [1, 2, 3, 4, 5] * n_chunks  # every chunk stopped at step 5
    assert r.trace_steps[-1] == 5
    # the callback belongs to this render only: a later render without it calls nothing
    vizcore.render(model, "3:0", **dict(FAST, steps=3))
    assert len(seen) == 5 * n_chunks


def _oom_above(limit):
    """An on_step that fails like a full GPU whenever a chunk holds more than `limit` units."""

    def step(run, state):
        if len(run.units) > limit and state.step == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    return step


def test_out_of_memory_retries_with_smaller_chunks(model):
    msgs = []
    r = vizcore.render(model, ["3:0-3"], on_step=_oom_above(1), on_warning=msgs.append, **FAST)
    assert len(r) == 4 and r.settings["chunk_units"] == 1
    assert sum("out of memory" in m for m in msgs) == 2  # 4 -> 2 -> 1
    one = vizcore.render(model, ["3:0-3"], batch_size=1, **FAST)
    assert np.array_equal(r.images, one.images)  # the retried chunks start afresh: same images as chunks of 1
    assert np.allclose(r.values, one.values)


def test_out_of_memory_with_one_unit_is_a_clear_error(model):
    with pytest.raises(DeviceError, match="out of memory") as err:
        vizcore.render(model, "3:0", on_step=_oom_above(0), **FAST)
    assert "--size" in err.value.hint


def test_other_errors_in_a_step_are_not_retried(model):
    calls = []

    def boom(run, state):
        calls.append(state.step)
        raise ValueError("a bug in a callback")

    with pytest.raises(ValueError, match="a bug"):
        vizcore.render(model, ["3:0-1"], on_step=boom, **FAST)
    assert calls == [1]


def test_best_values_are_the_best_seen(model):
    r = vizcore.render(model, ["3:0-2"], **dict(FAST, record_every=1))
    assert r.best_values is not None and r.best_values.shape == r.values.shape
    for i in range(3):
        assert r.best_values[i] >= max(r.traces[i]) - 1e-6 and r.best_values[i] >= r.values[i] - 1e-6
    assert r.to_json()["units"][0]["best_value"] == pytest.approx(float(r.best_values[0]))


def test_seeded_renders_are_reproducible(model):
    a = vizcore.render(model, "3:2", **FAST)
    b = vizcore.render(model, "3:2", **FAST)
    assert np.array_equal(a.images, b.images)


def test_chunking_by_memory_budget(model):
    r = vizcore.render(model, "3:0-5", max_memory="1M", **FAST)
    assert r.settings["chunk_units"] < 6 and len(r) == 6
    with pytest.raises(DeviceError, match="memory budget"):
        vizcore.render(model, "3:0", max_memory=1000, **FAST)


def test_batch_one_graphs_fall_back_to_one_unit_at_a_time(model, recwarn):
    msgs = []
    r = vizcore.render(dataclasses.replace(model, batch_ok=False), "3:0-2", on_warning=msgs.append, **FAST)
    assert r.settings["chunk_units"] == 1 and len(r) == 3
    assert any("batch 1" in m for m in msgs)


def test_relu_override_unblocks_a_dead_start(tmp_path):
    class Blocked(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3, padding=1)
            with torch.no_grad():
                self.conv.weight.fill_(0.1)
                self.conv.bias.fill_(-2.0)  # off for every grey-ish image; on for bright ones

        def forward(self, x):
            return torch.relu(self.conv(x))

    m = vizcore.load(export(Blocked(), tmp_path / "b.onnx", (1, 3, 16, 16),
                            metadata={"vizcore.mean": "0", "vizcore.std": "1", "vizcore.range": "0,1"}))
    kw = dict(steps=30, size=16, transforms="none", lr=0.1, quality="plain")  # a grey-ish start: blocked
    plain = vizcore.render(m, "1:0", relu_override=0.0, **kw)
    fixed = vizcore.render(m, "1:0", relu_override=0.5, **kw)
    assert plain.values[0] == 0.0
    assert fixed.values[0] > 0.02


def test_diversity_makes_images_differ(model):
    obj = Channel(3, 1) + 5.0 * Diversity(3)
    r = vizcore.render(model, [obj], images_per_unit=3, **FAST)
    assert len(r) == 3
    assert np.abs(r.images[0].astype(int) - r.images[1].astype(int)).mean() > 2


def test_fixed_size_model_is_resized(tmp_path):
    net = TinyCNN()
    path = export(net, tmp_path / "fixed.onnx", (1, 3, 24, 24), dynamic=False)
    m = vizcore.load(path)
    assert m.fixed_size == (24, 24)
    r = vizcore.render(m, "3:1", steps=8, size=40, preprocess="imagenet", value_range="0,1")
    assert r.images.shape[1:3] == (40, 40) and r.settings["network_input"] == [24, 24]


def test_signal_model_renders_line_plots(tmp_path):
    m = vizcore.load(export(TinySignal(), tmp_path / "sig.onnx", (1, 2, 64)), size=64)
    r = vizcore.render(m, "2:1", steps=12, size=64, preprocess="none", value_range="0,1")
    assert r.images.shape == (1, 64, 2)
    files = r.save(tmp_path / "out")
    assert {p.suffix for p in files} >= {".png", ".npy"}


def test_unknown_names_and_bad_options(model):
    with pytest.raises(OptionError, match="valid: fft, pixel"):
        vizcore.render(model, "3:0", param="nope", **{k: v for k, v in FAST.items()})
    with pytest.raises(OptionError, match="transform"):
        vizcore.render(model, "3:0", transforms="spin", **FAST)
    with pytest.raises(OptionError, match="positive"):
        vizcore.render(model, "3:0", steps=0)
    with pytest.raises(OptionError, match="too small"):
        vizcore.render(model, "3:0", steps=2, size=4)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA"):
            vizcore.render(model, "3:0", device="cuda", **FAST)


def test_integer_input_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "int.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises((ModelLoadError, OptionError), match="float"):
        vizcore.render(vizcore.load(path), "0", steps=2)


def test_preprocessing_guess_warns(tmp_path):
    m = vizcore.load(export(TinyCNN(), tmp_path / "nometa.onnx", (1, 3, 32, 32)), size=32)
    msgs = []
    vizcore.render(m, "3:0", steps=2, size=32, on_warning=msgs.append)
    assert any("ImageNet" in s for s in msgs)


def test_other_graph_inputs_are_made_once_per_chunk_not_every_step(tmp_path, monkeypatch):
    """A two-input model: the mask input is built once for the chunk's batch shape, not on each of the steps."""
    from check_zoo import export_kind

    m = vizcore.load(export_kind("unet1d", tmp_path))
    calls = []
    original = type(m).extra_feeds  # a Model is frozen: count on its class
    monkeypatch.setattr(type(m), "extra_feeds", lambda self, x: calls.append(tuple(x.shape)) or original(self, x))
    r = vizcore.render(m, f"{m.layers[2].index}:0-1", steps=12, transforms="none", device="cpu",
                       preprocess="none", value_range="0,1")
    assert r.traces[0][-1] > r.traces[0][0]  # the ascent still works through the cached feeds
    assert 1 <= len(calls) <= 4, calls  # one per batch shape met (probes, the chunk, the read-out): not one a step


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
@pytest.mark.parametrize("name", ["Adam", "NAdam"])
def test_render_optimizers_are_torch_step_for_step(dtype, name):
    """vizcore's Adam and NAdam (no torch.optim, so no torch._dynamo import) give torch's updates exactly, complex
    included, over enough steps for NAdam's growing momentum to matter."""
    from vizcore.engine import adam

    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, dtype=dtype, generator=g).requires_grad_(True)
    b = a.detach().clone().requires_grad_(True)
    theirs, ours = getattr(torch.optim, name)([a], lr=0.05), getattr(adam, name)([b], lr=0.05)
    for _ in range(200):
        grad = torch.randn(3, 5, dtype=dtype, generator=g)
        a.grad, b.grad = grad.clone(), grad.clone()
        theirs.step()
        ours.step()
    assert torch.equal(a, b) and not torch.equal(a, b.new_zeros(b.shape))
