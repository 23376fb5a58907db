"""One reader per kind of user file (`vizcore.inputs` for JSON, TOML and `.npy`; `vizcore.samples` for images;
`vizcore.onnxfile` for models), each with its size, regular-file, nesting, number and dtype rules, and the
commands that read those files answering hostile ones in one line (exit 2), never a traceback or a hang."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from test_check_models import Planted, export

from vizcore.cli import main
from vizcore.errors import OptionError
from vizcore.inputs import open_npy, parse_json, read_json, read_toml

PKG = Path(__file__).resolve().parents[1] / "vizcore"
#: call -> the modules allowed to make it (the loaders)
LOADERS = {r"\bnp\.load\(": {"inputs.py"}, r"\bjson\.loads?\(": {"inputs.py"},
           r"\b(tomllib|tomli)\b|\btoml\.loads?\(": {"inputs.py"}, r"\bImage\.open\(": {"samples.py"},
           r"\bonnx\.load(_model)?\(": {"onnxfile.py"}, r"\bpickle\.loads?\(": set()}


def test_only_the_loaders_read_user_files():
    found = []
    for path in PKG.rglob("*.py"):
        text = "\n".join(ln for ln in path.read_text(encoding="utf-8").splitlines()
                         if not ln.lstrip().startswith("#"))
        for pattern, allowed in LOADERS.items():
            if re.search(pattern, text) and path.name not in allowed:
                found.append(f"{path.relative_to(PKG)}: {pattern}")
    assert not found, "read user files through vizcore.inputs / vizcore.samples / vizcore.onnxfile: " + str(found)


def _fifo(d: Path, name: str) -> Path:
    p = d / name
    os.mkfifo(p)
    return p


def _npy_header(d: Path, shape: tuple[int, ...], name: str = "big.npy") -> Path:
    """A .npy whose header declares `shape` float32 values and which holds none of them."""
    p = d / name
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    with open(p, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
    return p


@pytest.mark.parametrize("text, why", [('{"dead": [1e400]}', "out of range"), ("[" * 100_000 + "]" * 100_000, "nested"),
                                       ('{"a": NaN}', "NaN"), ("{", "not valid JSON")])
def test_json_numbers_and_nesting(text, why):
    with pytest.raises(OptionError, match=why):
        parse_json(text, "report")


def test_files_that_block_or_explode_are_refused_unread(tmp_path):
    for reader in (lambda p: read_json(p, "report"), lambda p: read_toml(p), lambda p: open_npy(p, "feed")):
        with pytest.raises(OptionError, match="FIFO"):
            reader(_fifo(tmp_path, f"f{id(reader)}"))
    with pytest.raises(OptionError, match="declares 1,000,000,000,000 values"):
        open_npy(_npy_header(tmp_path, (1_000_000, 1_000_000)), "feed")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(OptionError, match="not a .npy array"):
        open_npy(tmp_path / "empty.npy", "feed")
    for bad in (np.array(["a"]), np.zeros(2, dtype="V4"), np.array([1 + 2j])):
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(OptionError, match="not real numbers"):
            open_npy(tmp_path / "bad.npy", "feed")
    (tmp_path / "deep.toml").write_text("a = " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(OptionError, match="nested too deeply"):
        read_toml(tmp_path / "deep.toml")


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    return export(Planted(), tmp_path / "m.onnx")


def _report(tmp_path: Path, layers: list[dict], name: str = "old.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps({"schema_version": 2, "model": {"sha256": "x"}, "passed": True, "layers": layers,
                             "fidelity": {}, "failures": []}))
    return p


CASES = {
    "check --config FIFO": (lambda d: ["check", "MODEL", "--config", str(_fifo(d, "c.toml"))], "FIFO"),
    "check --config nested": (lambda d: ["check", "MODEL", "--config", _write(d / "v.toml", "a = " + "[" * 50_000
                                                                                + "]" * 50_000)], "nested"),
    "render --feed FIFO": (lambda d: ["render", "MODEL", "0:0", "--out", str(d / "o"), "--feed",
                                      f"x={_fifo(d, 'x.npy')}"], "FIFO"),
    "render --feed 1e12": (lambda d: ["render", "MODEL", "0:0", "--out", str(d / "o"), "--feed",
                                      f"x={_npy_header(d, (10**6, 10**6))}"], "declares"),
    "prune --data FIFO .npy": (lambda d: ["prune", "MODEL", "--dry-run", "--data", str(_dir_with_fifo(d))], "FIFO"),
    "prune --data 1e15": (lambda d: ["prune", "MODEL", "--dry-run", "--data", str(_dir_with(d, (10**8, 10**7)))],
                          "declares"),
    "prune --from-check 1e400": (lambda d: ["prune", "MODEL", "--dry-run", "--from-check",
                                            _write(d / "r.json", '{"layers": [{"name": "a", "channels": 2, '
                                                                 '"dead": [1e400]}]}')], "out of range"),
    "prune --from-check nested": (lambda d: ["prune", "MODEL", "--dry-run", "--from-check",
                                             _write(d / "r.json", "[" * 100_000 + "]" * 100_000)], "nested"),
    "diff nested report": (lambda d: ["diff", _write(d / "a.json", "[" * 100_000 + "]" * 100_000), "MODEL"],
                           "nested"),
    "diff report channels -5": (lambda d: ["diff", str(_report(d, [_layer(channels=-5, dead=list(range(100)))])),
                                           str(_report(d, [_layer()], "new.json"))], "-5 channels"),
    "diff report dead out of range": (lambda d: ["diff", str(_report(d, [_layer(channels=4, dead=[7])])),
                                                 str(_report(d, [_layer()], "new.json"))], "channel 7"),
}


def _write(p: Path, text: str) -> str:
    p.write_text(text)
    return str(p)


def _layer(channels: int = 4, dead: list[int] | None = None) -> dict:
    return {"name": "/Relu", "index": 1, "channels": channels, "dead": dead or [], "constant": [], "duplicates": []}


def _dir_with_fifo(d: Path) -> Path:
    (d / "data").mkdir()
    _fifo(d / "data", "x.npy")
    return d / "data"


def _dir_with(d: Path, shape: tuple[int, ...]) -> Path:
    (d / "data").mkdir()
    _npy_header(d / "data", shape)
    return d / "data"


@pytest.mark.parametrize("case", list(CASES))
def test_commands_answer_hostile_files_in_one_line(case, planted, tmp_path, capsys):
    argv, text = CASES[case]
    args = [a.replace("MODEL", str(planted)) for a in argv(tmp_path)]
    code = main(args)
    out, err = capsys.readouterr()
    progress = ("check:", "diff:", "render:", "prune:")  # plain progress lines when stderr is not a terminal
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(progress)]
    assert code == 2 and "Traceback" not in out + err, err
    assert lines and lines[0].startswith("error:") and len(lines) <= 2 and text in lines[0], err


def _conv_relu_with(extra_nodes: list, extra_inits: list, joined: str):  # noqa: ANN202 - onnx.ModelProto
    """x (1,3,8,8) -> Conv -> Relu, plus `extra_nodes` whose scalar output `joined` is added to the result."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"), *extra_nodes,
             helper.make_node("Add", ["r", joined], ["y"], name="join")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w, *extra_inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def _scalar(name: str, value: object, dtype: object = np.int64):  # noqa: ANN202
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def _range_model():  # noqa: ANN202
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Range", ["s", "l", "d"], ["rg"], name="range"),
             helper.make_node("Cast", ["rg"], ["rgf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["rgf"], ["sm"], keepdims=0)]
    return _conv_relu_with(nodes, [_scalar("s", 0), _scalar("l", 10**13), _scalar("d", 1)], "sm")


def _loop_model():  # noqa: ANN202
    from onnx import TensorProto, helper

    scalar = lambda n, t: helper.make_tensor_value_info(n, t, [])  # noqa: E731
    body = helper.make_graph([helper.make_node("Identity", ["c_in"], ["c_out"]),
                              helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
                             [scalar("i", TensorProto.INT64), scalar("c_in", TensorProto.BOOL),
                              scalar("v_in", TensorProto.FLOAT)],
                             [scalar("c_out", TensorProto.BOOL), scalar("v_out", TensorProto.FLOAT)],
                             [_scalar("one", 1, np.float32)])
    loop = helper.make_node("Loop", ["M", "cond", "v0"], ["vf"], body=body, name="loop")
    return _conv_relu_with([loop], [_scalar("M", 10**12), _scalar("cond", True, np.bool_),
                                    _scalar("v0", 0, np.float32)], "vf")


def test_a_huge_constant_range_is_refused_before_anything_tries_to_make_it(tmp_path, capsys):
    path = tmp_path / "range.onnx"
    path.write_bytes(_range_model().SerializeToString())
    for argv in (["inspect", str(path)], ["prune", str(path), "--dry-run"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "node 'range' (Range) would make 10,000,000,000,000 values" in err and "Traceback" not in err


def test_a_loop_of_1e12_steps_is_stopped_not_waited_for(tmp_path, capsys, monkeypatch):
    import time

    from vizcore import onnxfile
    from vizcore.errors import ModelLoadError
    from vizcore.onnx_compat import prepasses

    model = _loop_model()
    sess = onnxfile.session(model, limit=0.5)
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError, match="did not finish one run"):
        sess.run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})
    assert time.perf_counter() - t0 < 5
    monkeypatch.setattr(prepasses, "PREPASS_RUN_LIMIT_S", 0.5)
    path = tmp_path / "loop.onnx"
    path.write_bytes(model.SerializeToString())
    t0 = time.perf_counter()
    assert main(["inspect", str(path)]) == 0  # the Loop is left out (not converted); fidelity on the rest
    assert time.perf_counter() - t0 < 30 and "more than 64 iterations" in capsys.readouterr().out
