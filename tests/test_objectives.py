import pytest
import torch
from tiny import TinyCNN, load_tiny

from vizcore.errors import TargetError
from vizcore.objectives import Channel, ClassLogit, DeepDream, Direction, Diversity, Neuron, batch_values


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_tiny(TinyCNN(), tmp_path_factory.mktemp("m"))


def _acts(model, x):
    layers = [l.index for l in model.layers if l.shape]
    outs = model.cut_at(layers)(x)
    return dict(zip(layers, outs))


def test_algebra_matches_the_arithmetic(model):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    acts = _acts(model, x)
    a, b = Channel(0, 3).bind(model), Channel(2, 7).bind(model)
    combo = (a - 0.5 * b + 1).bind(model)
    assert torch.allclose(combo(acts), a(acts) - 0.5 * b(acts) + 1)
    assert torch.allclose((-a).bind(model)(acts), -a(acts))
    assert torch.allclose((a / 2).bind(model)(acts), a(acts) / 2)
    assert set(combo.targets) == {0, 2}
    assert combo.label == "0:3 - 0.5*2:7 + 1"


def test_channel_neuron_deepdream_direction_values(model):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    acts = _acts(model, x)
    a0 = acts[0]
    assert torch.allclose(Channel(0, 1).bind(model)(acts), a0[:, 1].mean((1, 2)))
    assert torch.allclose(Neuron(0, 1).bind(model)(acts), a0[:, 1, 16, 16])
    assert torch.allclose(Neuron(0, 1, 3, 5).bind(model)(acts), a0[:, 1, 5, 3])
    assert torch.allclose(DeepDream(0).bind(model)(acts), (a0 ** 2).mean((1, 2, 3)))
    v = torch.zeros(8)
    v[2] = 2.0
    assert torch.allclose(Direction(0, v).bind(model)(acts), a0[:, 2].mean((1, 2)))


def test_class_logit_reads_the_output(model):
    x = torch.rand(3, 3, 32, 32)
    out = model.run(x)
    obj = ClassLogit(4).bind(model)
    acts = _acts(model, x)
    assert torch.allclose(obj(acts), out[:, 4])


def test_diversity_is_zero_for_identical_images_and_higher_for_different(model):
    same = _acts(model, torch.rand(1, 3, 32, 32).repeat(3, 1, 1, 1))
    diff = _acts(model, torch.rand(3, 3, 32, 32))
    d = Diversity(2).bind(model)
    assert torch.allclose(d(same), torch.full((3,), -1.0), atol=1e-5)
    assert (d(diff) > d(same)).all()


def test_batched_gather_equals_per_unit_loop(model):
    x = torch.rand(6, 3, 32, 32)
    acts = _acts(model, x)
    objs = [Channel(3, c).bind(model) for c in (0, 5, 9)]
    fast = batch_values(objs, acts, per_unit=2)
    slow = torch.cat([o({k: v[i * 2:(i + 1) * 2] for k, v in acts.items()}) for i, o in enumerate(objs)])
    assert torch.allclose(fast, slow)


def test_out_of_range_channel_names_the_count(model):
    with pytest.raises(TargetError, match="has 8 channels"):
        Channel(0, 8).bind(model)
    with pytest.raises(TargetError, match="3 components"):
        Direction(0, [1, 2, 3]).bind(model)
