"""The fast subset of bench/coverage.py that CI runs: tiny models from both exporters and a sample of the onnx
wheel's reference nets, through the same checks as the full benchmark (parity at batch 1 and 3, gradient)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import ROOT, export_torch, seeded_cnn

_spec = importlib.util.spec_from_file_location("vizcore_bench_coverage", ROOT / "bench" / "coverage.py")
coverage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(coverage)


class TinyViTBlock(torch.nn.Module):
    """Patchify, LayerNorm, GELU MLP, mean-pool, head: the transformer ops (LayerNorm, Gelu, MatMul) in miniature."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = torch.nn.Conv2d(3, 16, 8, stride=8)
        self.norm = torch.nn.LayerNorm(16)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16))
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = t + self.mlp(self.norm(t))
        return self.head(t.mean(dim=1))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("net", ["cnn", "vit"])
def test_tiny_models_pass_the_coverage_checks(tmp_path, dynamo, net):
    model = seeded_cnn() if net == "cnn" else TinyViTBlock().eval()
    path = export_torch(model, tmp_path / f"{net}.onnx", dynamo=dynamo, opset=None if dynamo else 17)
    rec = coverage.check(path)
    assert rec["status"] == "ok", rec
    assert rec["b1"] <= coverage.TOLERANCE and rec["grad_finite"] and rec["grad_nonzero"] > 0.9
    assert isinstance(rec["b3"], float), rec  # batch 1 baked in by the export, made symbolic by the pre-pass


REFERENCE_SAMPLE = [("pytorch-converted", "test_Conv2d_depthwise_strided"), ("pytorch-converted", "test_AvgPool3d"),
                    ("pytorch-converted", "test_BatchNorm2d_eval"), ("pytorch-converted", "test_ReflectionPad2d"),
                    ("pytorch-converted", "test_PixelShuffle"), ("pytorch-operator", "test_operator_index"),
                    ("simple", "test_sequence_model3"), ("simple", "test_shrink")]


@pytest.mark.parametrize(("group", "name"), REFERENCE_SAMPLE)
def test_reference_nets_sample(group, name):
    import onnx

    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / group / name
    rec = coverage.reference_check(folder)
    assert rec["status"] == "ok", rec
