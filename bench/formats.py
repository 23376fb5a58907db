"""Production formats: quantized (QDQ, QOperator, dynamic) and fp16/bf16 copies of a tiny CNN and of the embedded
MobileNetV2, checked against onnxruntime; writes the "production formats" section of bench/COVERAGE.md.

    python bench/formats.py                  # the table (a few minutes on 2 cores)
    python bench/formats.py --goldfish       # also render the quantized MobileNetV2's goldfish and judge it
    python bench/formats.py --goldfish --goldfish-variant "QDQ per-channel QUInt8 QInt8"   # that model instead

Quantized models are made by `onnxruntime.quantization` (static: calibrated on 6 skimage photos, normalized as
the model says; dynamic: no calibration), fp16 by `onnxconverter_common.float16`. A quantized row gives the max
|vizcore - onnxruntime| in quantization steps of the output (the output DequantizeLinear's scale) at batch 1
and 3; a float row the ratio max |diff| / max |onnxruntime|. `grad` is the fraction of input pixels with a
non-zero gradient of the output's sum (the straight-through round).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
MOBILENET = ROOT / "models" / "mobilenet_v2.onnx"
EFFNET = ROOT / "models" / "efficientnet_lite0.onnx"
GOAL_STEPS = 1.0
GOAL_REL = 1e-4


def photos(size: int) -> list[np.ndarray]:
    """Six skimage photos as float32 HWC 0..1 at `size` x `size`."""
    from PIL import Image
    from skimage import data

    imgs = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field(),
            data.immunohistochemistry()]
    return [np.asarray(Image.fromarray(i).convert("RGB").resize((size, size)), np.float32) / 255 for i in imgs]


def calibration(src: Path, size: int):  # noqa: ANN201 - a CalibrationDataReader
    import onnx
    from onnxruntime.quantization import CalibrationDataReader

    m = onnx.load(str(src))
    meta = {p.key: p.value for p in m.metadata_props}
    mean = np.array([float(v) for v in meta.get("vizcore.mean", "0").split(",")], np.float32)
    std = np.array([float(v) for v in meta.get("vizcore.std", "1").split(",")], np.float32)
    name = m.graph.input[0].name
    feeds = [{name: ((p - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)} for p in photos(size)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    return Reader()


def make(src: Path, variant: str, out: Path, size: int) -> Path:
    """Write `variant` of `src` to `out` (metadata_props kept, so vizcore knows the preprocessing)."""
    import onnx
    from onnxconverter_common import float16
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if variant.startswith("fp16"):
        onnx.save(float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=variant == "fp16 keep_io"),
                  str(out))
    elif variant.startswith("dynamic"):
        quantize_dynamic(str(src), str(out), weight_type=getattr(QuantType, variant.split()[1]))
    else:
        fmt, gran, act, wt = variant.split()
        quantize_static(str(src), str(out), calibration(src, size), quant_format=getattr(QuantFormat, fmt),
                        per_channel=gran == "per-channel", activation_type=getattr(QuantType, act),
                        weight_type=getattr(QuantType, wt))
    m = onnx.load(str(out))
    if not m.metadata_props:
        m.metadata_props.extend(onnx.load(str(src)).metadata_props)
        onnx.save(m, str(out))
    return out


def measure(path: Path, size: int) -> dict:
    """Parity at batch 1 and 3 (steps or relative), and the non-zero gradient fraction at batch 1."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper

    import vizcore

    m = vizcore.load(path, size=size)
    g = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    step = next((float(inits[n.input[1]]) for n in g.node
                 if n.output[0] == g.output[0].name and n.op_type == "DequantizeLinear"), None)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    row = {"prepasses": ", ".join(f"{n} {c}" for n, c in m.prepasses if c), "step": step}
    for batch in (1, 3):
        x = m.probe_input(batch, size, seed=batch)
        ref = sess.run(None, {inp.name: x.numpy().astype(np.float16 if "float16" in inp.type else np.float32)})[0]
        x.requires_grad_(True)
        got = m.module(x)
        got.sum().backward()
        diff = float(np.abs(got.detach().numpy() - ref.astype(np.float32)).max())
        row[f"b{batch}"] = diff / step if step else diff / float(np.abs(ref).max())
        if batch == 1:
            row["grad"] = float((x.grad != 0).float().mean()) if torch.isfinite(x.grad).all() else float("nan")
    return row


VARIANTS = ["QDQ per-tensor QInt8 QInt8", "QDQ per-channel QInt8 QInt8", "QDQ per-channel QUInt8 QUInt8",
            "QDQ per-tensor QUInt8 QInt8", "QOperator per-tensor QInt8 QInt8", "QOperator per-channel QInt8 QInt8",
            "QOperator per-channel QUInt8 QUInt8", "QOperator per-tensor QUInt8 QInt8", "dynamic QInt8",
            "dynamic QUInt8", "fp16 keep_io", "fp16 fp16-io"]


def cell(row: dict) -> str:
    unit = "steps" if row["step"] else "rel"
    fmt = (lambda v: f"{v:.0f}") if row["step"] else (lambda v: f"{v:.0e}")
    return f"{fmt(row['b1'])} / {fmt(row['b3'])} {unit}"


def table(folder: Path) -> list[str]:
    from conftest import export_torch, seeded_cnn

    cnn = export_torch(seeded_cnn(), folder / "cnn.onnx", dynamic_batch=True)
    lines = ["| variant | tiny CNN (b1 / b3) | MobileNetV2 (b1 / b3) | grad ≠ 0 (MobileNetV2) "
             "| pre-passes (MobileNetV2) |", "|---|---|---|---|---|"]
    for v in VARIANTS:
        t0 = time.perf_counter()
        tag = re.sub(r"\W+", "_", v)
        small = measure(make(cnn, v, folder / f"cnn_{tag}.onnx", 32), 32)
        big = measure(make(MOBILENET, v, folder / f"mb_{tag}.onnx", 224), 224)
        lines.append(f"| {v} | {cell(small)} | {cell(big)} | {big['grad']:.1%} | {big['prepasses'] or '-'} |")
        print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return lines


GOLDFISH_VARIANT = "QOperator per-channel QUInt8 QInt8"
STATIC = [f"{f} {g} {a} {w}" for f in ("QDQ", "QOperator") for g in ("per-tensor", "per-channel")
          for a in ("QInt8", "QUInt8") for w in ("QInt8", "QUInt8")]
_WORDS = {"QUInt8": "uint8", "QInt8": "int8"}


def goldfish(folder: Path, variant: str = GOLDFISH_VARIANT) -> str:
    """Render class:1 of the quantized MobileNetV2 (`variant`) with default settings; the transfer test's p."""
    import onnxruntime as ort
    from PIL import Image

    from vizcore.cli import main

    path = make(MOBILENET, variant, folder / "mb_goldfish.onnx", 224)
    t0 = time.perf_counter()
    assert main(["render", str(path), "class:1", "--out", str(folder / "r"), "--quiet"]) == 0
    png = next((folder / "r").glob("*class_1.png"))
    img = np.asarray(Image.open(png).convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255
    probs = {}
    for name, model, mean, std in (("EfficientNet-Lite0", EFFNET, 0.498, 0.502),
                                   ("quantized MobileNetV2", path, np.array([0.485, 0.456, 0.406]),
                                    np.array([0.229, 0.224, 0.225])),
                                   ("float MobileNetV2", MOBILENET, np.array([0.485, 0.456, 0.406]),
                                    np.array([0.229, 0.224, 0.225]))):
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        x = ((img - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        y = sess.run(None, {sess.get_inputs()[0].name: x})[0][0].astype(np.float64)
        p = np.exp(y - y.max())
        probs[name] = float(p[1] / p.sum())
    Image.open(png).save(ROOT / "bench" / "goldfish_quantized.png")
    fmt, gran, act, wt = variant.split()
    return (f"Goldfish (`class:1`) of MobileNetV2 quantized {fmt} {gran} ({_WORDS[act]} activations, "
            f"{_WORDS[wt]} weights), "
            f"default render settings, {time.perf_counter() - t0:.0f} s: p(goldfish) = "
            + ", ".join(f"{k} {v:.3f}" for k, v in probs.items())
            + " (goal, as tests/test_quality.py for the float model: EfficientNet-Lite0 >= 0.9); "
              "image: bench/goldfish_quantized.png.")


NOTES = (
    "A quantized cell is max |vizcore - onnxruntime| in steps of the output's scale at batch 1 / batch 3; a float "
    "cell is max |diff| / max |onnxruntime|. QDQ graphs first go through the pre-pass `fuse_qdq`: each node group "
    "that onnxruntime's CPU provider fuses into an integer kernel (DQ -> Conv/MatMul/Gemm/Add/Mul/"
    "GlobalAveragePool/Sigmoid/LeakyRelu/Concat -> Q, a redundant Relu/Clip absorbed) becomes that QLinear op and "
    "is computed by the QOperator converters (QLinearAdd in MLAS's x86 AVX2 arithmetic: FMA, zero points folded). "
    "With uint8 activations MobileNetV2 fuses completely (64 groups, as onnxruntime: 52 QLinearConv, 10 "
    "QLinearAdd, QLinearGlobalAveragePool, QGemm). With int8 activations onnxruntime on x86 runs no "
    "int8-activation Conv: it makes an int8 Q -> DQ pair uint8 only where the Q feeds one DQ read by one node, so "
    "the 15 Convs and 10 Adds next to MobileNetV2's residual tensors (read by two nodes) run in float there (MLAS "
    "float convolution) and here (torch float convolution, the same groups left unfused): their sums round "
    "differently, a value at a rounding tie lands one step apart and the difference grows towards the output. "
    "The 39 fused groups are exact.")


def write(section: list[str]) -> None:
    cov = ROOT / "bench" / "COVERAGE.md"
    text = cov.read_text()
    start = text.find("## Production formats")
    if start >= 0:
        end = text.find("\n## ", start + 3)
        text = text[:start] + text[end + 1:] if end >= 0 else text[:start]
    cov.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n")


def command(args: argparse.Namespace) -> str:
    """The goldfish options as typed."""
    tail = f' --goldfish-variant "{args.goldfish_variant}"' if args.goldfish_variant != GOLDFISH_VARIANT else ""
    return " --goldfish" + tail


def main_(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--goldfish", action="store_true", help="also render and judge the quantized goldfish")
    ap.add_argument("--goldfish-variant", default=GOLDFISH_VARIANT, choices=STATIC,
                    help=f"the quantized model to render (default: {GOLDFISH_VARIANT})")
    ap.add_argument("--no-write", action="store_true", help="print, do not touch bench/COVERAGE.md")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")  # onnxconverter_common's "truncated to 1e-07" notes, one per tiny weight
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "consider pre-processing" advice
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines = table(folder)
        gold = goldfish(folder, args.goldfish_variant) if args.goldfish else None
    section = ["## Production formats", "",
               f"Generated by `python bench/formats.py{command(args) if gold else ''}` in "
               f"{(time.perf_counter() - t0) / 60:.1f} min. Goal: quantized graphs within {GOAL_STEPS:g} "
               f"quantization step of onnxruntime's output, float graphs within {GOAL_REL:g} relative; fp16 with "
               "fp16 inputs: onnxruntime rounds the input to fp16 (2**-11 relative), vizcore computes in float32. "
               "Static models are calibrated on 6 skimage photos. Quantized MobileNetV2 at 224 px, tiny CNN at "
               "32 px; inputs seeded uniform 0..1.", ""] + lines
    section += ["", NOTES]
    if gold:
        section += ["", gold]
    print("\n".join(section))
    if not args.no_write:
        write(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
