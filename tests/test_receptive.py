"""Receptive fields derived from the graph agree with the measured ones (gradient support) wherever the arithmetic
follows the graph (convolutions with stride and padding, max-pools, depthwise convs, residual adds, global pools),
and the measured way takes over where it cannot (a Pad op)."""

from __future__ import annotations

import pytest
from conftest import MOBILENET
from tiny import FoolingNet, export, load_cross

import vizcore
from vizcore.analysis import receptive
from vizcore.analysis.layers import default_layers
from vizcore.analysis.receptive import analytic, measured, receptive_fields
from vizcore.inputspace import resolve


def _agree(model: vizcore.Model, layers: list, size: int, space, exact: bool = True) -> int:
    """Assert the derived and measured boxes agree at the centre (not `exact`: the measured one inside the derived
    one: a max-pool's losing inputs get no gradient); returns how many layers were compared."""
    derived = analytic(model, layers, (size, size))
    found = measured(model, layers, (1, 3, size, size), space)
    for lay in layers:
        a, m = derived[lay.index], found[lay.index]
        assert (a is None) == (m is None), lay.name
        if a is None:
            continue
        h, w = (int(d) for d in lay.shape[2:])
        ba, bm = a.box((h // 2, w // 2)), m.box((h // 2, w // 2))
        assert ba == bm if exact else all(x0 <= y0 and y1 <= x1 for (x0, x1), (y0, y1) in zip(ba, bm)), lay.name
        if a.lo[0] > -1e8:  # a field that does not cover the whole input: the same offsets per position
            assert a.stride == pytest.approx(m.stride), lay.name
    return len(layers)


def test_derived_fields_equal_measured_on_the_cross_model(tmp_path):
    model = load_cross(tmp_path)
    assert _agree(model, list(model.layers[:2]), 32, None) == 2  # conv, relu
    assert _agree(model, list(model.layers[2:5]), 32, None, exact=False) == 3  # maxpool (stride 2), conv, relu
    f = analytic(model, [model.layer(4)], (32, 32))[4]
    assert (f.lo, f.hi, f.stride) == ((-3.0, -3.0), (5.0, 5.0), (2.0, 2.0))  # 3x3, pool 2, 3x3 at stride 2


def test_derived_fields_equal_measured_on_mobilenet_v2():
    model = vizcore.load(MOBILENET, size=64)
    layers = [c.layer for c in default_layers(model)][:16] + [model.layer("/GlobalAveragePool")]
    assert _agree(model, layers, 64, resolve(model)) == 17  # depthwise and strided convs, residual Adds, the GAP
    whole = analytic(model, [model.layer("/GlobalAveragePool")], (64, 64))
    assert whole[model.layer("/GlobalAveragePool").index].box((0, 0)) == ((0, 64), (0, 64))


def test_every_default_layer_of_mobilenet_v2_is_derived_without_a_backward(monkeypatch):
    model = vizcore.load(MOBILENET, size=64)
    layers = [c.layer for c in default_layers(model)]

    def no_backward(*_a, **_k):
        raise AssertionError("measured a field the graph arithmetic covers")

    monkeypatch.setattr(receptive, "measured", no_backward)
    fields = receptive_fields(model, layers, (1, 3, 64, 64), resolve(model))
    assert len(fields) == 52 and all(f is not None for f in fields.values())


def test_a_pad_op_falls_back_to_measuring(tmp_path):
    model = vizcore.load(export(FoolingNet(), tmp_path / "f.onnx", (1, 3, 32, 32), metadata={"vizcore.range": "0,1"}),
                         size=32)
    conv2 = model.layer("/conv2/Conv")
    assert analytic(model, [conv2], (32, 32)) == {}  # after the replicate Pad the arithmetic stops
    f = receptive_fields(model, [conv2], (1, 3, 32, 32), None)[conv2.index]
    assert f.box((16, 16)) == ((13, 20), (13, 20))  # 5x5 then 3x3, measured
