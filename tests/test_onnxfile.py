"""The one reader of ONNX files and the one onnxruntime session: what `onnxfile.read` gives back, that every command
reads the model file once, that nothing else in vizcore opens a model or a session, and the package's size rule."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_onnx, tensor
from onnx import helper, numpy_helper

import vizcore
from vizcore import onnxfile
from vizcore.cli import main

PKG = Path(vizcore.__file__).resolve().parent
#: Longest module allowed in vizcore/ (lines).
MAX_MODULE_LINES = 500


def _conv_model() -> onnx.ModelProto:
    """x (N,3,H,W) -> Conv(4, 3x3, pad 1) -> Relu -> y, seeded weights, 8 px by metadata."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.full(4, 0.5, np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    m = make_onnx(nodes, [tensor("x", ["N", 3, "H", "W"])], [tensor("y", ["N", 4, "H", "W"])], [w, b], opset=17)
    m.metadata_props.add(key="vizcore.size", value="8")
    return m


def test_read_gives_the_checked_proto_and_the_file_facts(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(_conv_model(), str(path))
    f = onnxfile.read(path)
    assert f.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not f.external and f.metadata == {"vizcore.size": "8"}
    assert f.standalone() is f.data and f.data == path.read_bytes()
    assert [n.op_type for n in f.proto.graph.node] == ["Conv", "Relu"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.sha256 = "x"  # type: ignore[misc]


def test_external_data_is_inlined_and_the_session_runs_it_without_the_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(_conv_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    f = onnxfile.read(path)
    assert f.external and f.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert all(t.data_location == onnx.TensorProto.DEFAULT and t.raw_data for t in f.proto.graph.initializer)
    data = f.standalone()
    os.remove(tmp_path / "m.onnx.data")  # the session must not need the external file any more
    x = np.random.default_rng(1).random((2, 3, 8, 8), dtype=np.float32)
    c, y = onnxfile.session(data, extra_outputs=["c"]).run(["c", "y"], {"x": x})
    np.testing.assert_allclose(y, np.maximum(c, 0))
    w = numpy_helper.to_array(f.proto.graph.initializer[0])
    assert c.shape == (2, 4, 8, 8) and abs(float(c[0, 0, 4, 4]) - float((x[0, :, 3:6, 3:6] * w[0]).sum() + 0.5)) < 1e-4


def test_the_reader_and_its_prune_callers_do_not_import_torch():
    code = ("import sys, vizcore.onnxfile, vizcore.prune.api, vizcore.prune.runtime, vizcore.prune.cost, "
            "vizcore.samples, vizcore.inputspace, vizcore.onnx_compat.prepasses; "
            "print(sorted(m for m in ('torch', 'onnx2torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PKG.parent).stdout
    assert out.strip() == "[]"


def _one_read(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Count `onnxfile.read` calls; after the first, the file is moved away, so any second read of it (by vizcore
    or by onnxruntime given the path) fails."""
    calls: list[Path] = []
    real = onnxfile.read

    def read(path: str | os.PathLike[str]) -> onnxfile.ModelFile:
        calls.append(Path(path))
        f = real(path)
        os.rename(path, f"{os.fspath(path)}.moved")
        return f

    monkeypatch.setattr(onnxfile, "read", read)
    return calls


@pytest.mark.parametrize("command", ["inspect", "check"])
def test_each_command_reads_the_model_file_once(command, tmp_path, monkeypatch, capsys):
    path = tmp_path / "m.onnx"
    onnx.save_model(_conv_model(), str(path))
    calls = _one_read(monkeypatch)
    report = tmp_path / "r.json"
    argv = (["inspect", str(path), "--json"] if command == "inspect" else
            ["check", str(path), "--size", "8", "--json", str(report), "--quiet"])
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    data = json.loads(out) if command == "inspect" else json.loads(report.read_text())
    assert calls == [path]
    fid = data["fidelity"]
    assert fid["available"] is True and fid["max_abs_diff"] < 1e-5, fid  # onnxruntime ran the bytes read


#: What only `vizcore/onnxfile.py` may call: reading a model file, opening an onnxruntime session.
ONE_PLACE = re.compile(r"\bonnx\.load\(|\bonnx\.load_model\(|InferenceSession\(")


def test_only_onnxfile_reads_models_and_opens_sessions():
    found = [f"{p.relative_to(PKG.parent)}:{i}: {line.strip()}"
             for p in sorted(PKG.rglob("*.py")) if p.name != "onnxfile.py" or p.parent != PKG
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if ONE_PLACE.search(line)]
    assert not found, "use vizcore.onnxfile.read / onnxfile.session:\n" + "\n".join(found)
    assert ONE_PLACE.search((PKG / "onnxfile.py").read_text(encoding="utf-8"))  # the pattern matches the real one


def test_no_module_is_longer_than_500_lines():
    long = {str(p.relative_to(PKG.parent)): n for p in sorted(PKG.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these by job: {long}"


def test_a_model_is_built_complete_and_not_changed_afterwards(tmp_path, monkeypatch):
    """The layer table and batch_ok come with the Model: reading batch_ok runs nothing, and fields cannot be set."""
    path = tmp_path / "m.onnx"
    onnx.save_model(_conv_model(), str(path))
    m = vizcore.load(path)
    assert [l.name for l in m.layers] == ["conv", "relu"] and m.layer("y") is m.layers[1]

    def boom(*args: object) -> None:
        raise AssertionError("the graph ran after load")

    monkeypatch.setattr(m.module, "forward", boom)
    assert m.batch_ok is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.batch_ok = False  # type: ignore[misc]
    assert dataclasses.replace(m, batch_ok=False).batch_ok is False and m.batch_ok is True
