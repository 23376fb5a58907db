"""Least-squares reconstruction after pruning: a removed channel that is a linear combination of kept ones is
restored exactly by re-fitting the layer that reads it (the output error goes to ~0, far below the mean fold of the
plain prune); the written ONNX passes the checker and onnxruntime agrees with the torch graph; seeded, repeatable.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from prune_models import export
from torch import nn

from vizcore.prune import runtime, surgery
from vizcore.prune.channels import analyze
from vizcore.prune.evidence import gather_evidence
from vizcore.prune.graph import Graph
from vizcore.prune.plan import Plan
from vizcore.prune.reconstruct import Reconstructor, solve
from vizcore.prune.torchgraph import graph_inputs, load_proto


class Stack(nn.Module):
    """conv 3->4 (channel 3 = channel 0 + 2 x channel 1, planted), conv 4->6 (k x k), ReLU, mean, linear."""

    def __init__(self, k: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1, self.c2, self.fc = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 6, k, padding=k // 2), nn.Linear(6, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            self.c1.weight[3] = self.c1.weight[0] + 2 * self.c1.weight[1]
            self.c1.bias[3] = self.c1.bias[0] + 2 * self.c1.bias[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.c2(self.c1(x))).mean((2, 3)))


def _pruned(model: onnx.ModelProto, feed: dict) -> onnx.ModelProto:
    """The model without the first conv's channel 3 (its mean folded into the reader's bias: the plain prune)."""
    one = runtime.head(feed, 1)
    ch = analyze(Graph(model), runtime.shapes(model, one))
    c1 = next(n.output[0] for n in model.graph.node if n.op_type == "Conv")
    root = ch.uf.find(int(ch.atoms[c1][3]))
    ev = gather_evidence(model, ch, {"data": feed}, None, 8, sketch=False)
    return surgery.apply(model, ch, Plan(approx={root}), ev)


@pytest.mark.parametrize("k", [1, 3])
def test_a_removed_linear_combination_is_restored(tmp_path, k):
    src = export(Stack(k), tmp_path / "m.onnx")
    model = onnx.load(str(src))
    x = np.random.default_rng(0).standard_normal((24, 3, 16, 16)).astype(np.float32)
    feed = {"x": x}
    ref = runtime.outputs(model, feed, 8)[0]
    pruned = _pruned(model, feed)
    rec = Reconstructor(model, None, feed, seed=1, images=16, rows=2048, ridge=1e-7)(pruned)
    onnx.checker.check_model(rec, full_check=True)
    plain, fitted = runtime.outputs(pruned, feed, 8)[0], runtime.outputs(rec, feed, 8)[0]
    scale = np.abs(ref).max()
    err_plain, err_fit = np.abs(plain - ref).max() / scale, np.abs(fitted - ref).max() / scale
    assert err_plain > 0.05 and err_fit < 1e-4, (err_plain, err_fit)
    shapes = {t.name: tuple(t.dims) for t in rec.graph.initializer}
    reader = [n for n in rec.graph.node if n.op_type == "Conv"][1]
    assert shapes[reader.input[1]] == (6, 3, k, k)  # the reader kept 3 input channels: re-fitted, not regrown
    m = load_proto(rec, None)  # onnxruntime runs the written weights as torch does
    with torch.no_grad():
        y = m.module(*graph_inputs(m, feed, slice(0, 8))).numpy()
    np.testing.assert_allclose(fitted[:8], y, rtol=1e-4, atol=1e-4 * scale)
    again = Reconstructor(model, None, feed, seed=1, images=16, rows=2048, ridge=1e-7)(pruned)
    assert again.SerializeToString() == rec.SerializeToString()  # seeded: the same model twice


def test_an_unpruned_model_is_left_as_it_is(tmp_path):
    model = onnx.load(str(export(Stack(1), tmp_path / "m.onnx")))
    feed = {"x": np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)}
    assert Reconstructor(model, None, feed, images=8, rows=256)(model) is model


def test_the_ridge_pulls_towards_the_current_weights():
    rng = np.random.default_rng(0)
    x, w0 = rng.standard_normal((4, 10)), rng.standard_normal((3, 10))  # fewer rows than inputs
    y = rng.standard_normal((4, 3))
    w_weak, _ = solve(x, y, w0, None, ridge=1e-9)
    w_strong, _ = solve(x, y, w0, None, ridge=1e6)
    assert np.abs(x @ w_weak.T - y).max() < 1e-6  # interpolates the rows
    assert np.abs(w_strong - w0).max() < 1e-3  # barely moves


def test_a_budget_prune_re_fits_its_result_once_and_keeps_it_only_if_it_helps(tmp_path):
    from prune_models import TwoBlocks

    from vizcore.prune import prune

    src = export(TwoBlocks(), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    for name, n in (("calib", 48), ("held", 24)):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "x.npy", rng.standard_normal((n, 3, 16, 16)).astype(np.float32))
    kw = dict(data=str(tmp_path / "calib"), verify_data=str(tmp_path / "held"), budget="rel=0.02", latency_reps=0,
              max_steps=8, ranking="taylor", channel_multiple=1)  # one class at a time: 8-channel tensors
    rep = prune(src, tmp_path / "a.onnx", reconstruct="final", **kw)
    assert rep.reconstruction["mode"] == "final" and rep.reconstruction["calls"] == 1, rep.reconstruction
    kinds = [s["kinds"] for s in rep.steps]
    assert ["reconstruction"] in kinds  # the planted model's readers gain from the re-fit
    at = kinds.index(["reconstruction"])
    assert rep.steps[at]["calibration"]["rel"] < rep.steps[at - 1]["calibration"]["rel"]
    assert rep.steps[at]["macs"] == rep.steps[at - 1]["macs"]
    assert rep.verified and rep.written
    onnx.checker.check_model(onnx.load(str(tmp_path / "a.onnx")), full_check=True)
    got = runtime.outputs(onnx.load(str(tmp_path / "a.onnx")), {"x": np.load(tmp_path / "held" / "x.npy")}, 8)
    assert rep.budget["held_out"]["rel"] == pytest.approx(_rel(src, got, tmp_path / "held" / "x.npy"))
    off = prune(src, tmp_path / "b.onnx", reconstruct="off", **kw)
    assert off.reconstruction is None and all(s["kinds"] != ["reconstruction"] for s in off.steps)
    none = prune(src, tmp_path / "c.onnx", **dict(kw, budget="rel=0", max_steps=2))
    assert not none.steps and none.reconstruction is None  # nothing removed: the original is never sampled


def test_an_unknown_reconstruct_mode_is_one_line():
    from vizcore.errors import OptionError
    from vizcore.prune.options import PruneOptions

    with pytest.raises(OptionError, match="--reconstruct"):
        PruneOptions(budget="top1=0.99", reconstruct="sometimes")


def _rel(src, got: list[np.ndarray], x_path) -> float:
    """The budget's rel metric of outputs `got` against the original `src` in onnxruntime."""
    from vizcore.prune.budget import agreement

    ref = runtime.outputs(onnx.load(str(src)), {"x": np.load(x_path)}, 8)
    return agreement(ref, got)["rel"]
