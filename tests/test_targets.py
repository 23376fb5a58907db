import pytest
from tiny import TinyCNN, export

import vizcore
from vizcore.errors import LayerNotFoundError, TargetError
from vizcore.objectives import Channel, ClassLogit, DeepDream, Neuron
from vizcore.targets import resolve


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = export(TinyCNN(), tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 3, 32, 32),
                  names={0: "conv_a", 3: "conv:b"})
    return vizcore.load(path, size=32)


def test_every_shorthand(model):
    assert [type(o) for o in resolve(model, "conv_a:3")] == [Channel]
    assert resolve(model, "conv_a:3")[0].channel == 3
    n = resolve(model, "conv_a:3@4,5")[0]
    assert isinstance(n, Neuron) and (n.channel, n.x, n.y) == (3, 4, 5)
    assert [o.channel for o in resolve(model, "0:2-4")] == [2, 3, 4]
    assert len(resolve(model, "conv_a:all")) == 8
    assert isinstance(resolve(model, "conv_a")[0], DeepDream)
    c = resolve(model, "class:2")[0]
    assert isinstance(c, ClassLogit) and c.layer.op_type == "Gemm"
    assert isinstance(resolve(model, "y:1")[0], ClassLogit)
    # a layer name that itself contains a colon
    assert resolve(model, "conv:b:5")[0].layer.name == "conv:b"
    assert isinstance(resolve(model, "conv:b")[0], DeepDream)


@pytest.mark.parametrize("spec, err, text", [
    ("conv_x:1", LayerNotFoundError, "conv_a"),
    ("conv_a:99", TargetError, "8 channels"),
    ("conv_a:1-x", TargetError, "malformed"),
    ("conv_a:5-2", TargetError, "empty channel range"),
    ("class:z", TargetError, "class:IDX"),
    ("class:7", TargetError, "5 channels"),
    ("", TargetError, "empty"),
    ("99:1", LayerNotFoundError, "out of range"),
])
def test_bad_targets_say_why(model, spec, err, text):
    with pytest.raises(err, match=text):
        resolve(model, spec)
