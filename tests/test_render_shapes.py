"""Renders at the model's own input shape: fixed non-square inputs, partly fixed dims (an OCR line of fixed
height), `--size H,W`, a feature vector of 5 values, and the input flags of `vizcore render`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import IMAGE_META, TextEncoder, TinyCNN, export, export_text, gather_output
from torch import nn

import vizcore
from vizcore.cli import main
from vizcore.errors import OptionError


class Line(nn.Module):
    """An OCR-style recognizer: conv on (N, 3, 16, W), then the 16 rows flattened into features (the height must
    be 16 or the Linear fails), a per-column classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))  # (N, 4, 16, W)
        return self.fc(h.flatten(1, 2).transpose(1, 2))  # (N, W, 6)


def _export(model: nn.Module, path: Path, shape: tuple[int, ...], axes: dict[int, str]) -> Path:
    return export(model, path, shape, metadata=IMAGE_META, axes=axes)


@pytest.fixture
def wide(tmp_path: Path) -> Path:
    """TinyCNN with a fixed [1, 3, 24, 40] input."""
    return export(TinyCNN(), tmp_path / "wide.onnx", (1, 3, 24, 40), metadata=IMAGE_META, dynamic=False)


def _render(model: vizcore.Model, size=None, **kw) -> vizcore.Result:
    opts = {"steps": 6, "device": "cpu", "seed": 0, "record_every": 1, "lr": 0.1, **kw}
    return vizcore.render(model, "class:1", size=size, **opts)


def test_a_fixed_non_square_input_renders_at_its_own_shape(wide):
    m = vizcore.load(wide)
    r = _render(m)
    assert r.images.shape == (1, 24, 40, 3)
    assert r.settings["input_size"] == [24, 40] and r.settings["size"] == 40
    assert r.traces[0][-1] > r.traces[0][0]
    r2 = _render(m, size=80)  # an int scales the fixed input, aspect kept; the network still sees 24x40
    assert r2.images.shape == (1, 48, 80, 3)
    assert r2.traces[0][-1] > r2.traces[0][0]


def test_size_height_width_on_a_free_input(tmp_path):
    m = vizcore.load(export(TinyCNN(), tmp_path / "free.onnx", (1, 3, 32, 32), metadata=IMAGE_META))
    assert _render(m, size=(16, 36)).images.shape == (1, 16, 36, 3)
    assert _render(m, size=20).images.shape == (1, 20, 20, 3)
    with pytest.raises(OptionError, match="too small"):
        _render(m, size=(16, 4))
    with pytest.raises(OptionError, match="too small"):
        vizcore.render(vizcore.load(wide_path := export(TinyCNN(), tmp_path / "w.onnx", (1, 3, 24, 40),
                                                        metadata=IMAGE_META, dynamic=False)), "class:1", size=10,
                       steps=2, device="cpu")  # scaled to 6x10
    assert wide_path.exists()


def test_a_partly_fixed_input_keeps_its_fixed_height(tmp_path):
    m = vizcore.load(_export(Line(), tmp_path / "line.onnx", (1, 3, 16, 48), {0: "N", 3: "W"}))
    assert m.fixed_size is None and m.fixed_dims == (16, None)
    assert m.input_shape(1, 64) == (1, 3, 16, 64)
    relu = next(l for l in m.layers if l.op_type == "Relu")
    # the standard transforms pad and rescale: the network must still get 16 rows (else the Linear fails)
    r = vizcore.render(m, f"{relu.name}:1", size=40, steps=6, device="cpu", seed=0, record_every=1, lr=0.1)
    assert r.images.shape == (1, 16, 40, 3)
    assert r.traces[0][-1] > r.traces[0][0]


def test_a_five_feature_vector_renders(tmp_path):
    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.a, self.b = nn.Linear(5, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    m = vizcore.load(_export(Mlp(), tmp_path / "mlp.onnx", (1, 5), {0: "N"}))
    assert m.layout.name == "NF" and m.input_shape(1) == (1, 1, 5)
    r = vizcore.render(m, "class:2", steps=8, device="cpu", seed=0, record_every=1, lr=0.1, param="pixel",
                       transforms="none")
    assert r.images.shape[:2] == (1, 5)
    assert r.traces[0][-1] > r.traces[0][0]


def test_render_cli_size_and_input_flags(wide, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["render", str(wide), "class:1", "--steps", "4", "--device", "cpu", "-q", "--out", str(out),
                 "--size", "24,40", "--layout", "NCHW", "--input-shape", "x=1,3,24,40"]) == 0
    png = next(p for p in out.iterdir() if p.suffix == ".png" and p.name != "grid.png")
    assert Image.open(png).size == (40, 24)
    assert json.loads((out / "manifest.json").read_text())["settings"]["input_size"] == [24, 40]
    capsys.readouterr()
    for bad, says in ((["--size", "24,40,9"], "3 values"), (["--size", "5"], "too small"),
                      (["--layout", "NLC"], "rank 4"), (["--input-shape", "x=1,3"], "4 dims"),
                      (["--feed", f"m={tmp_path / 'no.npy'}"], "not found")):
        assert main(["render", str(wide), "class:1", "--steps", "2", "--device", "cpu", "-q",
                     "--out", str(tmp_path / "bad"), *bad]) == 2, bad
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, (bad, err)
    assert not (tmp_path / "bad").exists()


def test_render_cli_optimizes_an_inner_tensor(tmp_path, capsys):
    path = export_text(tmp_path / "text.onnx")
    feed = tmp_path / "mask.npy"
    np.save(feed, np.ones((1, 12), np.int64))
    out = tmp_path / "out"
    assert main(["render", str(path), "class:0", "--steps", "6", "--device", "cpu", "-q", "--out", str(out),
                 "--input-node", gather_output(path), "--feed", f"attention_mask={feed}", "--size", "12",
                 "--param", "pixel", "--transforms", "none"]) == 0
    arr = np.load(next(out.glob("*.npy")))
    assert arr.shape[-2:] in ((12, 8), (8, 12))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["preprocess"]["source"] == "embedding table"
    assert not any("range" in w for w in manifest["warnings"])  # the table gives the range: nothing guessed
    tokens = manifest["units"][0]["nearest_tokens"]
    assert len(tokens) == 12 and all(0 <= c[0] < 50 and -1 <= c[1] <= 1 for pos in tokens for c in pos)
    assert "nearest tokens:" in capsys.readouterr().out


def test_nearest_tokens_find_the_table_rows_and_the_embedding_range():
    from vizcore.analysis.tokens import nearest_tokens
    from vizcore.inputspace import table_span as _table_span
    from vizcore.result import Result

    rng = np.random.default_rng(0)
    table = rng.normal(size=(40, 6)).astype(np.float32)
    got = nearest_tokens(table, table[[3, 17, 3]] * 2.5, k=2)  # scale does not change the direction
    assert [p[0][0] for p in got] == [3, 17, 3] and got[0][0][1] == pytest.approx(1.0)
    assert got[0][1][1] < 1.0
    mean, std = _table_span(table)
    pre = {"range": [0, 1], "mean": list(mean), "std": list(std)}
    img = np.array([[[0] * 6, [255] * 6]], np.uint8)  # one 2-position "signal": the ends of 0..1
    ends = Result(img, np.zeros(1), [[]], [], {"preprocess": pre}, {}).graph_values(0)  # each feature's min..max
    assert np.allclose(ends[0], table.min(0), atol=1e-5) and np.allclose(ends[1], table.max(0), atol=1e-5)


def test_hidden_states_are_channels_not_positions(tmp_path, capsys):
    path = export_text(tmp_path / "text.onnx")
    m = vizcore.load(path)  # token inputs only: probed at 16 and 24 ids
    relu = next(l for l in m.layers if l.op_type == "Relu")
    assert relu.channel_last and relu.shape == (1, 12, 16) and relu.channels == 12
    gemm = next(l for l in m.layers if l.op_type == "Gemm")
    assert not gemm.channel_last and gemm.shape == (1, 3)
    ids = torch.arange(16).reshape(1, 16) % 50
    with torch.no_grad():
        ref = torch.relu(TextEncoder().fc(TextEncoder().emb(ids)))  # (1, 16, 12), the same seeded weights
        got = m.cut_at([relu.index])(ids, torch.ones(1, 16, dtype=torch.int64))[0]
    assert got.shape == (1, 12, 16) and torch.allclose(got, ref.transpose(1, 2), atol=1e-5)
    emb = gather_output(path)
    out = tmp_path / "check.json"
    assert main(["check", str(path), "--input-node", emb, "--layers", relu.name, "--json", str(out), "-q"]) == 0
    rep = json.loads(out.read_text())
    assert [l["channels"] for l in rep["layers"]] == [12]
    assert main(["check", str(path), "--input-node", emb, "--json", str(out), "-q"]) == 0  # default: the dense layer
    assert [(l["name"], l["channels"]) for l in json.loads(out.read_text())["layers"]] == [(relu.name, 12)]
    assert main(["diff", str(path), str(path), "--input-node", emb, "-q"]) == 0  # diff reads inputs the same way
    capsys.readouterr()
    assert main(["check", str(path)]) == 1  # token ids only: nothing to probe, it says so, and that is no pass
    out = capsys.readouterr().out
    assert "inputs are token ids" in out and "nothing could be checked" in out
    assert main(["check", str(path), "--allow-empty", "-q"]) == 0


def test_render_cli_param_options(tmp_path, capsys):
    from tiny import TinySignal

    path = export(TinySignal(), tmp_path / "sig.onnx", (1, 2, 64), metadata={"vizcore.range": "-1,1"})
    out = tmp_path / "out"
    assert main(["render", str(path), "1:0", "--steps", "8", "--device", "cpu", "-q", "--out", str(out),
                 "--param-option", "dc=false", "--param-option", "rms=0.5"]) == 0
    settings = json.loads((out / "manifest.json").read_text())["settings"]
    assert settings["param"] == "signal" and settings["param_options"] == {"dc": False, "rms": 0.5}
    sig = np.load(next(out.glob("*.npy")))
    assert sig.dtype == np.float32 and sig.shape[1] == 2 and -1 <= sig.min() and sig.max() <= 1
    assert abs(float(sig.mean())) < 0.05  # dc=false: the mean stays at mid-range (0 in -1..1)
    capsys.readouterr()
    for bad, says in ((["--param-option", "bogus=1"], "no option 'bogus'"), (["--param-option", "dc"], "KEY=VALUE")):
        assert main(["render", str(path), "1:0", "--steps", "2", "--device", "cpu", "-q",
                     "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err


class DeadMlp(nn.Module):
    """6 -> 16 -> 12 -> 3 with ReLUs; hidden unit 3 of the first layer can never open (bias -100)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = nn.Linear(6, 16), nn.Linear(16, 12), nn.Linear(12, 3)
        with torch.no_grad():
            self.a.bias[3] = -100.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


def test_check_looks_at_the_hidden_units_of_a_model_without_convolutions(tmp_path):
    path = _export(DeadMlp(), tmp_path / "mlp.onnx", (1, 6), {0: "N"})
    rep = vizcore.check(path, layers=None)
    assert [(l.name, l.channels) for l in rep.layers] == [("/Relu", 16), ("/Relu_1", 12)]  # not the logits
    first = rep.layers[0]
    assert 3 in first.dead and "no input in the model's range" in first.units[3]["reason"]  # proven, not guessed
    assert len(first.dead + first.inconclusive) <= 3 and rep.layers[1].dead == []
    assert main(["check", str(path), "-q", "--max-dead-fraction", "0.05"]) == 1  # 1 of 16 > 5 %
    assert main(["check", str(path), "-q"]) == 0  # 1 of 16 <= 25 %


def test_the_input_range_bound_is_exact_for_a_dense_first_layer(tmp_path):
    """Units the bound calls closed are <= 0 at the box corner that maximizes them; the others open there. The box is
    the graph input's: 0..1 through the model's mean 0.5 / std 0.25 (IMAGE_META), so -2..2."""
    from vizcore.analysis.gating import closed_for_every_input, layer_facts
    from vizcore.analysis.layers import default_layers

    torch.manual_seed(3)
    net = DeadMlp()
    with torch.no_grad():
        net.a.bias.copy_(torch.randn(16) * 2 - 1.5)  # a mix of units that can and cannot open on 0..1 inputs
    m = vizcore.load(_export(net, tmp_path / "mix.onnx", (1, 6), {0: "N"}))
    c = default_layers(m)[0]
    closed = closed_for_every_input(m, c, layer_facts(m, c))
    w, b = net.a.weight.detach().double(), net.a.bias.detach().double()
    corner = torch.where(w > 0, 2.0, -2.0).double()  # the input in -2..2 that maximizes each unit
    best = (w * corner).sum(1) + b
    assert closed == [int(i) for i in torch.nonzero(best <= 0).reshape(-1)]
    assert 0 < len(closed) < 16  # the test has both kinds
    x = torch.rand(4096, 6, dtype=torch.float64) * 4 - 2
    assert ((x @ w.T + b)[:, closed] <= 0).all()


def test_auto_atlas_layers_for_signal_models_and_mlps(tmp_path):
    from tiny import TinySignal

    from vizcore.atlas.select import auto_layers

    sig = vizcore.load(export(TinySignal(), tmp_path / "sig.onnx", (1, 2, 64), metadata={"vizcore.range": "-1,1"}))
    assert [l.op_type for l in auto_layers(sig)] == ["Conv", "Conv"]  # 1-D convolutions are drawable
    mlp = vizcore.load(_export(DeadMlp(), tmp_path / "mlp.onnx", (1, 6), {0: "N"}))
    assert [(l.op_type, l.channels) for l in auto_layers(mlp)] == [("Gemm", 16), ("Gemm", 12)]  # not the logits
    cnn = vizcore.load(export(TinyCNN(), tmp_path / "cnn.onnx", (1, 3, 32, 32), metadata=IMAGE_META))
    assert all(len(l.shape) == 4 for l in auto_layers(cnn))  # images: only spatial layers, as before


def test_bad_feeds_are_refused_in_one_line(tmp_path, capsys):
    path = export_text(tmp_path / "text.onnx")
    cases = {"shape.npy": (np.ones((2, 5, 5), np.int64), "has shape (2, 5, 5)"),
             "text.npy": (np.array(["a", "b"]), "not real numbers")}
    for name, (arr, says) in cases.items():
        np.save(tmp_path / name, arr)
        assert main(["inspect", str(path), "--feed", f"attention_mask={tmp_path / name}", "--no-fidelity"]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err
    (tmp_path / "model.npy").write_bytes(path.read_bytes())  # not a .npy at all
    assert main(["inspect", str(path), "--feed", f"attention_mask={tmp_path / 'model.npy'}"]) == 2
    assert "is not a .npy array" in capsys.readouterr().err
