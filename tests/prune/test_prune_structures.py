"""`vizcore.prune.prune` on tiny models with planted dead channels: exactly the planted channels go, the pruned
model computes the same outputs in onnxruntime (relative difference <= 1e-6 on fresh inputs), passes
onnx.checker with full shape inference, and its weights have the expected shapes.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from prune_models import (
    Copies,
    DenseBlock,
    PlainCNN,
    ResBlock,
    SEBlock,
    Separable,
    Shuffle,
    conv_channels,
    export,
    max_rel_diff,
    plant,
    randomize_bn,
)

from vizcore.prune import prune

TOL = 1e-6


def _prune(tmp_path, model, dynamo=False, dynamic=True, **kw):
    tmp_path = tmp_path / str(len(list(tmp_path.iterdir())))
    tmp_path.mkdir()
    src = export(model, tmp_path / "m.onnx", dynamo=dynamo, dynamic=dynamic)
    out = tmp_path / "p.onnx"
    rep = prune(src, out, probes=8, latency_reps=0, **kw)
    assert rep.verified and rep.written, rep.to_json()
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    x = np.random.default_rng(7).standard_normal((3 if dynamic else 1, 3, 16, 16)).astype(np.float32)
    assert max_rel_diff(src, out, x) <= TOL
    return rep, conv_channels(out)


def _removed(rep, action="remove"):
    return {r["unit"] for r in rep.removed if r["action"] == action}


def test_plain_cnn_with_flatten_gemm_head(tmp_path):
    m = PlainCNN()
    randomize_bn(m)
    plant(m.b1, [2, 5])
    plant(m.b2, [3])
    rep, w = _prune(tmp_path, m)
    assert rep.counts()["removed"] == 3 and not rep.kept
    assert sorted(s[0] for s in w.values())[:2] == [5, 6]  # fc out 5; conv1 8 -> 6
    shapes = sorted(w.values())
    assert (6, 3, 3, 3) in shapes and (15, 6, 3, 3) in shapes
    assert (5, 15 * 16) in shapes  # Gemm after Flatten: the dead channel's 4x4 column block went
    assert rep.cost["macs"][1] < rep.cost["macs"][0] and rep.cost["params"][1] < rep.cost["params"][0]


def test_residual_dead_in_one_branch_is_kept(tmp_path):
    m = ResBlock()
    randomize_bn(m)
    plant(m.b2, [1])  # the branch is dead in channel 1, the identity is not: the sum is live
    rep, w = _prune(tmp_path, m)
    assert rep.counts()["removed"] == 0
    assert all(s[0] == 8 for k, s in w.items() if "head" not in k)


def test_residual_dead_in_every_tensor_is_removed(tmp_path):
    m = ResBlock()
    randomize_bn(m)
    plant(m.b2, [1])
    plant(m.sb, [1])  # the identity is dead too: relu(beta + 0) = 0 in the whole stream
    rep, w = _prune(tmp_path, m)
    assert rep.counts()["removed"] == 1
    assert w["/stem/Conv"][0] == 7 and w["/c2/Conv"][0] == 7  # both producers of the stream lose the channel
    assert w["/c1/Conv"][1] == 7 and w["/head/Conv"][1] == 7


def test_dense_concat_shifts_indices(tmp_path):
    m = DenseBlock()
    randomize_bn(m)
    plant(m.ba, [1])
    plant(m.bb, [2])
    rep, w = _prune(tmp_path, m)
    assert rep.counts()["removed"] == 2
    assert sorted(s[:2] for s in w.values()) == [(3, 3), (3, 3), (6, 6)]


def test_depthwise_separable_and_constant_fold(tmp_path):
    m = Separable()
    randomize_bn(m)
    plant(m.bdw, [3])  # dead after the depthwise BN
    with torch.no_grad():  # channel 5: dead into the depthwise conv, whose BN then outputs a constant 0.5
        m.b1.weight[5], m.b1.bias[5] = 0.0, -1.0
        m.bdw.running_mean[5], m.bdw.bias[5] = 0.0, 0.5
    rep, w = _prune(tmp_path, m)
    assert rep.counts()["removed"] == 1 and rep.counts()["folded"] == 1
    assert w["/c1/Conv"][0] == 6 and w["/dw/Conv"] == (6, 1, 3, 3) and w["/pw/Conv"][1] == 6
    nodes = onnx.load(str(tmp_path / "0" / "p.onnx")).graph.node
    group = [a.i for n in nodes for a in n.attribute if a.name == "group"]
    assert 6 in group


def test_squeeze_excitation_gate(tmp_path):
    m = SEBlock()
    randomize_bn(m)
    plant(m.b1, [2])
    rep, w = _prune(tmp_path, m)
    assert rep.counts()["removed"] == 1
    assert w["/fc1/Conv"][1] == 7 and w["/fc2/Conv"][0] == 7 and w["/c2/Conv"][1] == 7


def test_channel_shuffle_becomes_gather(tmp_path):
    """Slices of the channels shift, the shuffle of unevenly pruned groups becomes one Gather."""
    m = Shuffle()
    randomize_bn(m)
    plant(m.b1, [1, 6])
    plant(m.bb, [0])
    rep, w = _prune(tmp_path, m, dynamic=False)
    assert rep.counts()["removed"] == 3
    assert sorted(w.values())[-1][:2] == (6, 6)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "0" / "p.onnx")).graph.node]
    assert "Gather" in ops and "Transpose" not in ops


def test_channel_shuffle_torchscript_chunk_is_kept_with_reason(tmp_path):
    """TorchScript's chunk computes its split point from Shape at run time: those channels stay, named."""
    m = Shuffle(chunk=True)
    randomize_bn(m)
    plant(m.b1, [1, 6])
    plant(m.bb, [0])
    rep, w = _prune(tmp_path, m, dynamic=False)
    assert rep.counts()["removed"] == 1 and w["/cb/Conv"][0] == 3
    assert any("Slice" in k["reason"] for k in rep.kept) and any(op.startswith("Slice") for op in rep.frozen_ops)


def test_duplicates_merged_only_when_asked(tmp_path):
    rep, w = _prune(tmp_path, Copies())
    assert rep.counts()["merged"] == 0 and w["/c1/Conv"][0] == 6
    rep, w = _prune(tmp_path, Copies(), duplicates="merge")
    assert rep.counts()["merged"] == 1 and w["/c1/Conv"][0] == 5 and w["/c2/Conv"][1] == 5
    assert rep.removed[0]["unit"] == "/c1/Conv:4" and rep.removed[0]["into"] == "/c1/Conv:1"
