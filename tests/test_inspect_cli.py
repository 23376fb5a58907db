"""`vizcore inspect`: tables, --json, --verbose, and every bad input as exit 2 with a one-line error."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import MOBILENET, make_onnx, tensor
from onnx import helper

from vizcore.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_mobilenet_table(capsys):
    code, out, err = _run(capsys, "inspect", str(MOBILENET))
    assert code == 0, err
    for text in ("producer", "opset", "image", "logits", "parameters", "fidelity", "Conv", "112"):
        assert text in out
    assert "max |torch - onnxruntime|" in out


def test_inspect_json_is_parseable_with_fidelity(capsys):
    code, out, _ = _run(capsys, "inspect", str(MOBILENET), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["fidelity"]["available"] and data["fidelity"]["max_abs_diff"] <= 1e-4
    assert data["batch_ok"] is True
    assert data["inputs"][0]["name"] == "image" and data["inputs"][0]["shape"][1:2] == [3]
    assert data["layer_count"] >= len(data["layers"]) > 50  # default: the visual layers only
    conv = next(l for l in data["layers"] if l["op_type"] == "Conv")
    assert conv["shape"] == [1, 32, 112, 112] and conv["channels"] == 32
    assert {"name", "changes"} <= set(data["prepasses"][0])


def test_inspect_all_and_verbose(capsys, cnn_onnx):
    path = cnn_onnx()  # a TorchScript export with batch 1 baked in: symbolic_batch runs
    code, out, _ = _run(capsys, "inspect", str(path), "--all", "--verbose", "--no-fidelity")
    assert code == 0
    assert "pre-passes" in out and "symbolic_batch" in out
    assert "skipped" in out
    code, out, _ = _run(capsys, "inspect", str(path), "--json", "--all", "--no-fidelity")
    data = json.loads(out)
    assert len(data["layers"]) == data["layer_count"]


def _bad_files(tmp_path):
    from PIL import Image

    (tmp_path / "rand.onnx").write_bytes(np.random.default_rng(1).bytes(2048))
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "photo.onnx", format="JPEG")
    (tmp_path / "cut.onnx").write_bytes(MOBILENET.read_bytes()[:200_000])
    bad = make_onnx([helper.make_node("Relu", ["missing"], ["y"])], [tensor("x", [1])], [tensor("y", [1])], opset=17)
    onnx.save(bad, str(tmp_path / "checker.onnx"))
    for name, location in (("escape.onnx", "../../etc/passwd"), ("gone.onnx", "gone.bin")):
        w = onnx.numpy_helper.from_array(np.ones((2, 1, 1, 1), dtype=np.float32), "w")
        w.data_location = onnx.TensorProto.EXTERNAL
        w.ClearField("raw_data")
        w.external_data.add(key="location", value=location)
        ext = make_onnx([helper.make_node("Conv", ["x", "w"], ["y"])], [tensor("x", [1, 1, 2, 2])],
                        [tensor("y", [1, 2, 2, 2])], [w], opset=17)
        (tmp_path / name).write_bytes(ext.SerializeToString())
    loop_body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                                   helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
                                  [tensor("i", [], onnx.TensorProto.INT64),
                                   tensor("cond_in", [], onnx.TensorProto.BOOL), tensor("v_in", [1, 3])],
                                  [tensor("cond_out", [], onnx.TensorProto.BOOL), tensor("v_out", [1, 3])])
    loop = make_onnx([helper.make_node("Loop", ["n", "", "x"], ["y"], name="the_loop", body=loop_body)],
                     [tensor("x", [1, 3])], [tensor("y", [1, 3])], [np.array(1000, dtype=np.int64)], ["n"], opset=17)
    # (1000 iterations: too many to unroll, so the Loop stays unsupported; 2 would be unrolled)
    onnx.save(loop, str(tmp_path / "loop.onnx"))
    return {
        "missing file": (str(tmp_path / "absent.onnx"), "not found"),
        "directory": (str(tmp_path), "folder"),
        "random bytes": (str(tmp_path / "rand.onnx"), "not an ONNX model"),
        "jpeg": (str(tmp_path / "photo.onnx"), "not an ONNX model"),
        "truncated": (str(tmp_path / "cut.onnx"), "ONNX"),
        "checker failure": (str(tmp_path / "checker.onnx"), "not a valid ONNX model"),
        "external data outside folder": (str(tmp_path / "escape.onnx"), "outside"),
        "external data missing": (str(tmp_path / "gone.onnx"), "missing"),
        "unsupported op": (str(tmp_path / "loop.onnx"), "Loop@16"),
    }


@pytest.mark.parametrize("case", ["missing file", "directory", "random bytes", "jpeg", "truncated", "checker failure",
                                  "external data outside folder", "external data missing", "unsupported op"])
def test_bad_model_exits_2_with_one_line_error(capsys, tmp_path, case):
    path, expected = _bad_files(tmp_path)[case]
    code, out, err = _run(capsys, "inspect", path)
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert lines[0].startswith("error:") and expected.lower() in lines[0].lower()
    assert len(lines) <= 2  # the message, then the hint


def test_unsupported_op_error_names_version_node_and_hook(capsys, tmp_path):
    path, _ = _bad_files(tmp_path)["unsupported op"]
    code, _, err = _run(capsys, "inspect", path)
    assert code == 2
    assert "ai.onnx::Loop@16 (opset 17)" in err and "'the_loop'" in err and "vizcore_add_onnx_converters" in err


def test_debug_shows_traceback(capsys, tmp_path):
    code, _, err = _run(capsys, "--debug", "inspect", str(tmp_path / "absent.onnx"))
    assert code == 2 and "Traceback" in err and "not found" in err


@pytest.mark.parametrize(("target", "expected"), [("/conv2/Convv:0", "closest: /conv2/Conv"),
                                                  ("9999:0", "out of range")])
def test_bad_layer_on_the_command_line_exits_2(capsys, tmp_path, cnn_onnx, target, expected):
    """Layer names and indices reach the Model through `vizcore render` targets."""
    code, _, err = _run(capsys, "render", str(cnn_onnx()), target, "--steps", "1", "--out", str(tmp_path / "o"),
                        "--quiet", "--preprocess", "none")
    assert code == 2 and "Traceback" not in err
    line = next(ln for ln in err.splitlines() if ln.startswith("error:"))
    assert expected in line
