"""Start-up: the render/check import chain pulls in neither torchvision nor torch._dynamo (2-3 s of a 5 s import),
and onnx2torch's torchvision-backed converters (NonMaxSuppression, RoiAlign) still convert and match onnxruntime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ort_run
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
import {module}
print(json.dumps(sorted(m for m in ("torchvision", "torch._dynamo", "onnx2torch") if m in sys.modules)))
"""


@pytest.mark.parametrize("module", ["vizcore.api", "vizcore.commands.render", "vizcore.commands.check"])
def test_import_chain_has_no_torchvision_or_dynamo(module):
    p = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    loaded = json.loads(p.stdout.strip().splitlines()[-1])
    assert "torchvision" not in loaded and "torch._dynamo" not in loaded, loaded


def test_onnx2torch_is_left_whole_and_torchvision_importable():
    p = subprocess.run([sys.executable, "-c", (
        "import sys, vizcore.onnx_compat.registry\n"
        "from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY as t\n"
        "ops = {d.operation_type for d in t}\n"
        "assert {'NonMaxSuppression', 'RoiAlign'} <= ops, ops\n"
        "assert 'torchvision' not in sys.modules\n"
        "import torchvision.ops\n"
        "assert type(torchvision).__name__ == 'module' and hasattr(torchvision.ops, 'roi_align')\n"
        "print('ok')")], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def _roi_nms_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])
    rois = helper.make_tensor_value_info("rois", TensorProto.FLOAT, [3, 4])
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 5, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 5])
    idx = helper.make_tensor("idx", TensorProto.INT64, [3], [0, 0, 0])
    limits = [helper.make_tensor("max_out", TensorProto.INT64, [1], [3]),
              helper.make_tensor("iou", TensorProto.FLOAT, [1], [0.5])]
    nodes = [
        helper.make_node("RoiAlign", ["x", "rois", "idx"], ["pooled"], output_height=2, output_width=2,
                         sampling_ratio=2, spatial_scale=1.0, coordinate_transformation_mode="half_pixel"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou"], ["keep"]),
    ]
    outs = [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("keep", TensorProto.INT64, None)]
    graph = helper.make_graph(nodes, "roi_nms", [x, rois, boxes, scores], outs, [idx, *limits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], ir_version=8)


def test_nms_and_roialign_convert_and_match_onnxruntime():
    import torch

    from vizcore.convert import convert

    proto = _roi_nms_model()
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(1, 2, 8, 8)).astype(np.float32),
             "rois": np.array([[0, 0, 4, 4], [2, 2, 7, 6], [1, 3, 5, 7]], np.float32),
             "boxes": np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3], [0, 5, 1, 6], [0, 5.05, 1, 6]]],
                               np.float32),
             "scores": np.array([[[0.9, 0.8, 0.7, 0.6, 0.95]]], np.float32)}
    expected = ort_run(proto, feeds)
    gm = convert(onnx.ModelProto.FromString(proto.SerializeToString()), None, [])
    with torch.no_grad():
        pooled, keep = gm(*(torch.from_numpy(feeds[k]) for k in ("x", "rois", "boxes", "scores")))
    np.testing.assert_allclose(pooled.numpy(), expected[0], atol=1e-5)
    assert sorted(map(tuple, keep.numpy().tolist())) == sorted(map(tuple, expected[1].tolist()))
