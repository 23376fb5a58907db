"""Hostile and broken inputs through the CLI: each case is built in a temp folder, run in-process, and must end
with its expected exit code, a one-line message (plus at most a hint line), no traceback, no terminal escape from
the model on the screen, nothing written outside the output folder and no partial file left behind.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_onnx, tensor
from onnx import TensorProto, helper, numpy_helper

import vizcore
from vizcore import files as vio
from vizcore.cli import main
from vizcore.errors import ModelLoadError
from vizcore.text import printable

TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"


def _conv(name: str = "conv", **kw: object) -> onnx.ModelProto:
    """x (N,3,H,W) -> Conv(4, 3x3, pad 1) -> Relu -> y; 8 px by metadata."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name=name, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    m = make_onnx(nodes, [tensor("x", ["N", 3, "H", "W"])], [tensor("y", ["N", 4, "H", "W"])], [w], opset=17)
    _meta(m, {"vizcore.size": "8", **kw})
    return m


def _meta(m: onnx.ModelProto, kv: dict) -> onnx.ModelProto:
    for k, v in kv.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    return m


def _save(m: onnx.ModelProto | bytes, path: Path) -> str:
    path.write_bytes(m if isinstance(m, bytes) else m.SerializeToString())
    return str(path)


def _scopes(value: str) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        m = _conv()
        p = m.graph.node[0].metadata_props.add()
        p.key, p.value = "pkg.torch.onnx.name_scopes", value
        return _save(m, d / "m.onnx")
    return build


def _external(location: str, where: str = "initializer") -> Callable[[Path], str]:
    """A model whose weight (or a Constant's tensor, or a subgraph's) lives in external data at `location`."""
    def build(d: Path) -> str:
        outside = d.parent / f"{d.name}-outside"
        outside.mkdir(exist_ok=True)
        np.ones(36, np.float32).tofile(outside / "w.bin")
        (d / "link").symlink_to(outside, target_is_directory=True)

        def ext(t: TensorProto) -> TensorProto:
            t.data_location = TensorProto.EXTERNAL
            t.ClearField("raw_data")
            t.external_data.add(key="location", value=location)
            return t

        m = _conv()
        if where == "initializer":
            ext(m.graph.initializer[0])
        elif where == "sparse":
            vals = ext(numpy_helper.from_array(np.ones(4, np.float32), "b"))
            m.graph.sparse_initializer.append(
                helper.make_sparse_tensor(vals, numpy_helper.from_array(np.arange(4, dtype=np.int64), "bi"), [4]))
        elif where == "attribute":
            t = ext(numpy_helper.from_array(np.ones((1, 4, 1, 1), np.float32), "k"))
            m.graph.node.insert(0, helper.make_node("Constant", [], ["k"], value=t))
            m.graph.node[-1].input[0] = "c"
        else:  # a tensor inside an If's subgraph
            t = ext(numpy_helper.from_array(np.ones(1, np.float32), "k"))
            branch = helper.make_graph([helper.make_node("Constant", [], ["k"], value=t)], "b", [],
                                       [tensor("k", [1])])
            cond = numpy_helper.from_array(np.array(True), "cond")
            m.graph.initializer.append(cond)
            m.graph.node.append(helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch))
            m.graph.output.append(tensor("z", [1]))
        return _save(m, d / "m.onnx")
    return build


def _elem_type(d: Path) -> str:
    m = _conv()
    m.graph.input[0].type.tensor_type.elem_type = 99
    return _save(m, d / "m.onnx")


def _bad_utf8(d: Path) -> str:
    return _save(_conv("conv_AB").SerializeToString().replace(b"conv_AB", b"conv\xff\xfeB"), d / "m.onnx")


def _fifo(d: Path) -> str:
    os.mkfifo(d / "m.onnx")
    return str(d / "m.onnx")


def _fixed_huge(d: Path) -> str:
    m = _conv()
    for dim, v in zip(m.graph.input[0].type.tensor_type.shape.dim, (1, 3, 100_000, 100_000)):
        dim.dim_value = v
    return _save(m, d / "m.onnx")


def _named(name: str, op: str = "Conv") -> Callable[[Path], str]:
    def build(d: Path) -> str:
        m = _conv(name)
        m.producer_version = CLEAR + "1.0" + TITLE
        m.graph.node[0].op_type = op
        return _save(m, d / "m.onnx")
    return build


def _plain(d: Path) -> str:
    return _save(_conv(), d / "m.onnx")


LONG_PATH = "/tmp/" + "a" * 5000 + ".onnx"

# id: (build(folder) -> model path, command after the program name (MODEL = the path, OUT = the output folder),
#      exit code, text in the one-line message (stderr, or stdout for exit 0))
CASES: dict[str, tuple[Callable[[Path], str], list[str], int, str]] = {
    "scopes int": (_scopes("5"), ["inspect", "MODEL", "--no-fidelity"], 0, "conv"),
    "scopes None": (_scopes("None"), ["inspect", "MODEL", "--no-fidelity"], 0, "conv"),
    "scopes dict": (_scopes("{'a': 1}"), ["inspect", "MODEL", "--no-fidelity"], 0, "conv"),
    "scopes 200k nested": (_scopes("[" * 100_000 + "]" * 100_000), ["inspect", "MODEL", "--no-fidelity"], 0, "conv"),
    "vizcore.size abc": (lambda d: _save(_conv(**{"vizcore.size": "abc"}), d / "m.onnx"),
                         ["inspect", "MODEL", "--no-fidelity"], 0, "vizcore.size = 'abc'"),
    "name not UTF-8": (_bad_utf8, ["inspect", "MODEL", "--no-fidelity"], 0, "conv\\xff\\xfeB"),
    "elem_type 99": (_elem_type, ["inspect", "MODEL"], 2, "unknown(99)"),
    "external NUL": (_external("w\0.bin"), ["inspect", "MODEL"], 2, "NUL byte"),
    "external 5000 chars": (_external("w" * 5000), ["inspect", "MODEL"], 2, "5,000 characters"),
    "external 300-char name": (_external("w" * 300), ["inspect", "MODEL"], 2, "too long"),
    "external via symlink": (_external("link/w.bin"), ["inspect", "MODEL"], 2, "outside the model's folder"),
    "sparse via symlink": (_external("link/w.bin", "sparse"), ["inspect", "MODEL"], 2, "sparse tensor 'b'"),
    "attribute via symlink": (_external("link/w.bin", "attribute"), ["inspect", "MODEL"], 2, "outside"),
    "subgraph via symlink": (_external("link/w.bin", "subgraph"), ["inspect", "MODEL"], 2, "outside"),
    "model path 5000 chars": (lambda d: LONG_PATH, ["inspect", "MODEL"], 2, "5,010 characters long"),
    "model /dev/zero": (lambda d: "/dev/zero", ["inspect", "MODEL"], 2, "character device"),
    "model FIFO": (_fifo, ["inspect", "MODEL"], 2, "is a FIFO"),
    "--size 100000": (_plain, ["inspect", "MODEL", "--size", "100000"], 2, "111.8 GiB"),
    "--size 0": (_plain, ["inspect", "MODEL", "--size", "0"], 2, "positive"),
    "fixed input too large": (_fixed_huge, ["inspect", "MODEL"], 2, "30,000,000,000 values"),
    "render --size 100000": (_plain, ["render", "MODEL", "0:0", "--out", "OUT", "--size", "100000", "--quiet"], 2,
                             "GiB"),
    "escapes in names": (_named(TITLE + "a" + CLEAR), ["inspect", "MODEL", "--no-fidelity"], 0,
                         "\\x1b]0;pwned\\x07a\\x1b[2J"),
    "escapes in an error": (_named(CLEAR + "n" + TITLE, "Loop"), ["inspect", "MODEL"], 2, "Loop"),
    "render missing model": (lambda d: str(d / "absent.onnx"), ["render", "MODEL", "0:0", "--out", "OUT"], 2,
                             "not found"),
    "check missing model": (lambda d: str(d / "absent.onnx"), ["check", "MODEL", "--json", "OUT/r.json"], 2,
                            "not found"),
    "report missing model": (lambda d: str(d / "absent.onnx"), ["report", "MODEL", "--out", "OUT", "--auto"], 2,
                             "not found"),
    "report model is a folder": (lambda d: str(d), ["report", "MODEL", "--out", "OUT", "--auto"], 2, "folder"),
    "diff NEW missing": (_plain, ["diff", "MODEL", "MODEL.missing.onnx"], 2, "missing.onnx"),
    "diff OLD report missing": (_plain, ["diff", "gone.json", "MODEL"], 2, "report file not found"),
}


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    build, argv, expected_code, text = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    model = build(work)
    out = tmp_path / "out"
    monkeypatch.chdir(work)
    before = _tree(tmp_path)
    args = [a.replace("MODEL", model).replace("OUT", str(out)) for a in argv]
    code = main(args)
    stdout, stderr = capsys.readouterr()
    assert code == expected_code, stderr
    for stream in (stdout, stderr):
        assert "Traceback" not in stream
        assert "\x1b" not in stream and "\x07" not in stream  # nothing from the model reaches the terminal raw
    if expected_code == 2:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert lines and lines[0].startswith("error:") and len(lines) <= 2, stderr
        assert text in lines[0], lines[0]
    else:
        assert text in stdout + stderr
    after = _tree(tmp_path)
    new = after - before
    assert all(p == "out" or p.startswith("out/") for p in new), new  # nothing outside the output folder
    assert not [p for p in new if p.endswith(".tmp")]  # no partial file
    if expected_code == 2:
        assert not out.exists() or not any(out.iterdir())


def test_name_scopes_are_ignored_not_fatal():
    from vizcore.proto_check import name_scopes

    assert name_scopes("['', 'features', 'features.0']") == ["", "features", "features.0"]
    for bad in ("5", "None", "{'a': 1}", "[1, 2]", "['a', None]", "[" * 100_000 + "]" * 100_000,
                "['" + "a" * 200_000 + "']", "__import__('os')"):
        assert name_scopes(bad) is None


def test_bad_utf8_names_are_repaired_consistently(tmp_path):
    """An invalid UTF-8 tensor name used by two nodes keeps the graph connected after the repair."""
    data = _conv().SerializeToString().replace(b"\x12\x01c", b"\x12\x01\xff")  # node output "c" -> b"\xff"
    data = data.replace(b"\n\x01c", b"\n\x01\xff")  # Relu's input "c"
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    model = vizcore.load(path)
    assert [l.output for l in model.layers] == ["\\xff", "y"]
    x = model.probe_input(1, 8)
    np.testing.assert_allclose(model.run(x).numpy(), np.maximum(model.cut_at([0])(x)[0].numpy(), 0), atol=1e-6)


def test_the_fifo_does_not_hang_and_dev_zero_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "f.onnx")
    for path, kind in ((tmp_path / "f.onnx", "FIFO"), ("/dev/zero", "character device")):
        with pytest.raises(ModelLoadError, match=kind):
            vizcore.load(path)


def test_oversized_model_file_is_refused_before_reading(tmp_path, monkeypatch):
    from vizcore import inputs

    path = Path(_save(_conv(), tmp_path / "m.onnx"))
    monkeypatch.setattr(inputs, "MAX_MODEL_BYTES", 100)
    with pytest.raises(ModelLoadError, match="larger than a model file can be"):
        vizcore.load(path)


def test_size_limit_names_the_estimate(tmp_path):
    path = _save(_conv(), tmp_path / "m.onnx")
    with pytest.raises(vizcore.VizcoreError, match=r"\[1, 3, 100000, 100000\] would hold 30,000,000,000 values"):
        vizcore.load(path, size=100_000)
    assert vizcore.load(path, size=64).layers[0].shape == (1, 4, 64, 64)


def _nan_model(tmp_path: Path) -> str:
    m = make_onnx([helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Sqrt", ["n"], ["y"])],
                  [tensor("x", [1, 4])], [tensor("y", [1, 4])], opset=17)
    return _save(m, tmp_path / "nan.onnx")


def _strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_inspect_json_is_strict_json_when_fidelity_is_nan(tmp_path, capsys):
    assert main(["inspect", _nan_model(tmp_path), "--json", "--all"]) == 0
    data = _strict(capsys.readouterr().out)
    # onnxruntime's own output is NaN: not measured, said so (never a NaN number in the JSON)
    assert data["fidelity"]["available"] is False and "'y' is NaN" in data["fidelity"]["reason"]


def test_plugins_json_is_strict_json(capsys):
    assert main(["plugins", "--json"]) == 0
    assert "builtin" in {p["source"] for p in _strict(capsys.readouterr().out)["plugins"]}


def test_printable():
    assert printable("a\x1b[2Jb\x07\n\x9b") == "a\\x1b[2Jb\\x07\\x0a\\x9b"
    assert printable(b"ok\xff") == "ok\\xff" and printable("é/ü") == "é/ü"
    assert printable("\u202eevil") == "\\u202eevil"


LONG = "/model/backbone/stage4/block12/attention/projection_with_a_rather_long_name/"


@pytest.mark.parametrize("width", [80, 240])
def test_long_names_stay_whole_and_distinguishable(tmp_path, capsys, monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    m = _conv(LONG + "Conv_first")
    m.graph.node[1].name = LONG + "Relu_second"
    assert main(["inspect", _save(m, tmp_path / "m.onnx"), "--no-fidelity"]) == 0
    out = capsys.readouterr().out
    assert max(len(ln) for ln in out.splitlines()) <= width or width == 80
    for name in (LONG + "Conv_first", LONG + "Relu_second"):
        assert sum(name in ln for ln in out.splitlines()) == 1, out  # whole, on one line, once


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = vio.atomic_write_text(tmp_path / "a.txt", "x")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask


def test_replacing_a_file_keeps_its_mode_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_text("old")
    path.chmod(0o640)
    vio.atomic_write_text(path, "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == "new"

    def fail(*a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vio.os, "replace", fail)
    with pytest.raises(vizcore.VizcoreError, match="No space"):
        vio.atomic_write_text(path, "newer")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_render_output_files_are_not_0600(tmp_path):
    from tiny import IMAGE_META

    m = _meta(_conv(), IMAGE_META)
    old = os.umask(0o022)
    try:
        assert main(["render", _save(m, tmp_path / "m.onnx"), "0:0", "--steps", "1", "--size", "8",
                     "--out", str(tmp_path / "out"), "--quiet"]) == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes


def test_diff_checks_nothing_before_both_inputs_exist(tmp_path, capsys, monkeypatch):
    import vizcore.health

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("OLD was checked before NEW was found missing")

    monkeypatch.setattr(vizcore.health, "check", boom)  # what `diff` calls for each .onnx side
    old = _save(_conv(), tmp_path / "old.onnx")
    assert main(["diff", old, str(tmp_path / "new.onnx")]) == 2
    assert "new.onnx" in capsys.readouterr().err


def _oversize(d: Path) -> str:
    """A plain model, read while the size limit is 100 bytes (see `test_prune_refuses_what_inspect_refuses`)."""
    return _save(_conv(), d / "m.onnx")


# id: (build(folder) -> model path, text in the one-line message; None: both commands succeed)
PRUNE_CASES: dict[str, tuple[Callable[[Path], str], str | None]] = {
    **{case: (CASES[case][0], CASES[case][3]) for case in (
        "external NUL", "external 5000 chars", "external 300-char name", "external via symlink",
        "sparse via symlink", "attribute via symlink", "subgraph via symlink", "model path 5000 chars",
        "model /dev/zero", "model FIFO")},
    "external ../": (_external("../work-outside/w.bin"), "outside the model's folder"),
    "external absolute": (_external("/etc/hostname"), "outside the model's folder"),
    "external missing": (_external("gone.bin"), "is missing"),
    "oversize": (_oversize, "larger than a model file can be"),
    "name not UTF-8": (_bad_utf8, None),
    "truncated": (lambda d: _save(_conv().SerializeToString()[:-7], d / "m.onnx"), "not an ONNX model"),
    "not ONNX": (lambda d: _save(b"name,value\n" * 40, d / "m.onnx"), "not an ONNX model"),
    "empty": (lambda d: _save(b"", d / "m.onnx"), "is empty"),
    "folder": (lambda d: str(d), "is a folder"),
    "missing": (lambda d: str(d / "absent.onnx"), "not found"),
}


@pytest.mark.parametrize("case", list(PRUNE_CASES))
def test_prune_refuses_what_inspect_refuses(case, tmp_path, capsys, monkeypatch):
    """`vizcore prune` reads the model with the same reader as `inspect`: the same exit code and the same one-line
    error (and hint) for every hostile or broken file."""
    from vizcore import inputs

    build, text = PRUNE_CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    model = build(work)
    monkeypatch.chdir(work)
    if case == "oversize":
        monkeypatch.setattr(inputs, "MAX_MODEL_BYTES", 100)
    got = {}
    for argv in (["inspect", model, "--no-fidelity"], ["prune", model, "--dry-run", "--latency-reps", "0"]):
        code = main(argv)
        stdout, stderr = capsys.readouterr()
        assert "Traceback" not in stdout + stderr
        got[argv[0]] = code, [ln for ln in stderr.splitlines() if ln.strip()]
    assert got["prune"] == got["inspect"]
    code, lines = got["inspect"]
    if text is None:
        assert code == 0
    else:
        assert code == 2 and lines[0].startswith("error:") and text in lines[0] and len(lines) <= 2, lines
