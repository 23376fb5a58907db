"""Shared fixtures: paths to the embedded models and builders for tiny ONNX models (by hand or from torch).

Keep it additive: other test files rely on these names.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from tiny import TinyBNCNN  # tests/tiny.py: the one module of tiny test models
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
MOBILENET = MODELS / "mobilenet_v2.onnx"


def seeded_cnn(seed: int = 0) -> TinyBNCNN:
    """A TinyBNCNN with seeded weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = TinyBNCNN().eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 1.5)
        model.bn1.weight.uniform_(0.5, 1.5)
        model.bn1.bias.uniform_(-0.5, 0.5)
    return model


def export_torch(model: nn.Module, path: Path, *, dynamo: bool = False, shape: Sequence[int] = (1, 3, 32, 32),
                 dynamic_batch: bool = False, opset: int | None = None) -> Path:
    """Export a torch module to ONNX at `path` (TorchScript exporter unless `dynamo`); returns the path."""
    x = torch.rand(*shape)
    kwargs: dict = {"input_names": ["image"], "output_names": ["logits"]}
    if opset is not None and dynamo:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            if dynamic_batch:
                kwargs["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch")}}
            torch.onnx.export(model, (x,), str(path), dynamo=True, verbose=False, **kwargs)
        else:
            if dynamic_batch:
                kwargs["dynamic_axes"] = {"image": {0: "batch"}, "logits": {0: "batch"}}
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset or 17, **kwargs)
    return path


@pytest.fixture
def cnn_onnx(tmp_path: Path) -> Callable[..., Path]:
    """Factory: export a seeded TinyBNCNN into tmp_path; keyword arguments as `export_torch`."""

    def make(name: str = "cnn.onnx", **kwargs: object) -> Path:
        return export_torch(seeded_cnn(), tmp_path / name, **kwargs)

    return make


def make_onnx(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
              outputs: Sequence[onnx.ValueInfoProto], initializers: Sequence[np.ndarray | TensorProto] = (),
              init_names: Sequence[str] = (), opset: int = 20, ir_version: int | None = None) -> onnx.ModelProto:
    """A ModelProto from onnx.helper pieces; numpy initializers are named by `init_names`."""
    inits = [t if isinstance(t, TensorProto) else numpy_helper.from_array(np.asarray(t), n)
             for t, n in zip(initializers, list(init_names) + [""] * len(initializers))]
    graph = helper.make_graph(list(nodes), "test", list(inputs), list(outputs), inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="vizcore-tests")
    model.ir_version = ir_version or min(helper.find_min_ir_version_for([helper.make_opsetid("", opset)]) + 1, 10)
    return model


def tensor(name: str, shape: Sequence[int | str | None] | None, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input/output description."""
    return helper.make_tensor_value_info(name, dtype, shape)


@pytest.fixture
def save_onnx(tmp_path: Path) -> Callable[[onnx.ModelProto, str], Path]:
    """Factory: save a ModelProto into tmp_path (checked) and return its path."""

    def save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        onnx.checker.check_model(model)
        path = tmp_path / name
        onnx.save(model, str(path))
        return path

    return save


def ort_run(path: Path | onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs for a file or ModelProto (CPU)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    src = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture(scope="session")
def mobilenet():  # noqa: ANN201 - vizcore.Model
    """The embedded MobileNetV2, loaded once per test session (read-only: do not modify it)."""
    import vizcore

    return vizcore.load(MOBILENET)
