"""The finish (`RenderOptions.finish`): the last fraction of the steps ascends the picture itself, without the
transforms, so the image the user gets is the one the unit was last ascended on (bench/quality.py, issue 27)."""

import torch
from tiny import TinyCNN, load_tiny

import vizcore
from vizcore.hookspecs import hookimpl
from vizcore.plugins import builtins_only
from vizcore.transforms import standard

FAST = dict(steps=32, size=32, seed=0, lr=0.1)


class _Counted(torch.nn.Module):
    def __init__(self, seen: list[int]) -> None:
        super().__init__()
        self.seen = seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        return x


class _Counting:
    """A plugin transform ("counted") that is the standard chain plus a call counter."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    @hookimpl
    def vizcore_add_transforms(self):  # noqa: ANN201
        def counted(size: int, generator: torch.Generator | None = None, **_: object) -> list[torch.nn.Module]:
            return [*standard(size, generator=generator), _Counted(self.seen)]
        return {"counted": counted}


def test_the_finish_steps_run_without_the_transforms(tmp_path):
    model = load_tiny(TinyCNN(), tmp_path)
    pm, plugin = builtins_only(), _Counting()
    pm.register(plugin, name="counting")
    vizcore.render(model, ["class:0", "class:3"], plugins=pm, transforms="counted", finish=0.25, **FAST)
    assert len(plugin.seen) == 24  # 32 steps, the last 8 on the picture itself
    plugin.seen.clear()
    vizcore.render(model, ["class:0"], plugins=pm, transforms="counted", finish=0.0, **FAST)
    assert len(plugin.seen) == 32


def test_the_finish_raises_the_pictures_own_activation(tmp_path):
    model = load_tiny(TinyCNN(seed=3), tmp_path)
    targets = [f"class:{c}" for c in range(5)] + ["3:0", "3:5", "3:9"]
    plain = vizcore.render(model, targets, finish=0.0, **FAST)
    finished = vizcore.render(model, targets, finish=0.25, **FAST)
    gained = finished.values > plain.values
    assert gained.sum() >= 7, (plain.values, finished.values)
    assert finished.values.mean() > plain.values.mean()
