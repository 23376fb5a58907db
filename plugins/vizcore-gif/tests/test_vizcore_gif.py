"""vizcore-gif: frames are recorded cheaply through the step hook and written as one looping GIF per unit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

vizcore_gif = pytest.importorskip("vizcore_gif")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from vizcore_gif import Recorder, export_gif  # noqa: E402

from vizcore.errors import OptionError  # noqa: E402
from vizcore.result import Result, Unit  # noqa: E402


def _render(rec: Recorder, n: int = 3, steps: int = 40, size: int = 64, chunk: int = 2, settings=None):
    """Drive the recorder as the engine does: chunks of units, a step hook per step, the end hook once."""
    settings = {"steps": steps} if settings is None else settings
    calls = {"images": 0}
    run = None
    final = np.zeros((n, size, size, 3), np.uint8)
    for ci, start in enumerate(range(0, n, chunk)):
        k = min(chunk, n - start)
        run = SimpleNamespace(settings=settings, chunk=ci, steps=steps, unit_offset=start, total_units=n,
                              units=[None] * k)
        rec.start(run)
        for step in range(1, steps + 1):
            def images(step=step, k=k, start=start):
                calls["images"] += 1
                value = torch.arange(start, start + k, dtype=torch.float32).view(k, 1, 1, 1) / 10 + step / 100
                return value.expand(k, 3, size, size)
            rec.step(run, SimpleNamespace(step=step, values=torch.zeros(k), images=images, stop=False))
        final[start:start + k] = 255
    result = Result(images=final, values=np.zeros(n, np.float32), traces=[[]] * n,
                    units=[Unit(target=f"conv:{i}", kind="channel") for i in range(n)], settings=settings, model={})
    rec.end(run, result)
    return result, calls


def test_frames_are_kept_every_few_steps_per_unit_across_chunks():
    rec = Recorder(max_frames=9, max_side=32)
    result, calls = _render(rec, n=3, steps=40)
    gif = result.extras["gif"]
    assert len(gif["frames"]) == 3
    assert gif["steps"][0] == [1, 5, 10, 15, 20, 25, 30, 35, 40]  # every 5 steps, the final image last
    for i, frames in enumerate(gif["frames"]):
        assert frames.shape == (9, 32, 32, 3) and frames.dtype == np.uint8
        assert abs(int(frames[0, 0, 0, 0]) - round((i / 10 + 0.01) * 255)) <= 1  # unit i's own images
        assert (frames[-1] == 255).all()  # the final frame is the result's image
    assert calls["images"] == 2 * 8  # images computed only on the kept steps (2 chunks x 8), not 40 times
    assert rec.frames == {}  # nothing is kept after the render


def test_a_chunk_started_again_after_out_of_memory_records_afresh():
    rec = Recorder(max_frames=9, max_side=32)
    settings = {"steps": 40}

    def chunk(ci, offset, k, value, steps):
        run = SimpleNamespace(settings=settings, chunk=ci, steps=40, unit_offset=offset, total_units=3,
                              units=[None] * k)
        rec.start(run)
        for step in steps:
            rec.step(run, SimpleNamespace(step=step, values=torch.zeros(k), stop=False,
                                          images=lambda k=k: torch.full((k, 3, 64, 64), value)))

    chunk(0, 0, 1, 0.5, (1, 5))  # unit 0 done
    chunk(1, 1, 2, 0.9, (1, 5))  # units 1-2 run out of memory after step 5 ...
    chunk(1, 1, 1, 0.1, (1,))  # ... and unit 1 starts again alone
    assert len(rec.frames[0]) == 2  # the finished chunk keeps its frames
    assert len(rec.frames[1]) == 1 and abs(int(rec.frames[1][0][0, 0, 0]) - 26) <= 1  # only the retry's frame


def test_many_units_stay_within_the_memory_budget():
    rec = Recorder(budget_bytes=2 << 20)
    run = SimpleNamespace(steps=256, total_units=2000)
    plan = rec._plan(run, (1, 3, 224, 224))
    frames = 256 // plan.every + 2
    assert frames * plan.size[0] * plan.size[1] * 3 * 2000 <= 2 << 20 or plan.size[0] == rec.min_side
    assert plan.size[0] < 128


def test_nothing_is_recorded_when_the_caller_exports_no_gif():
    rec = Recorder()
    result, calls = _render(rec, settings={"steps": 40, "exporters": ["png"]})
    assert "gif" not in result.extras and calls["images"] == 0


def test_exporter_writes_one_looping_gif_per_unit_named_like_the_pngs(tmp_path):
    result, _ = _render(Recorder(max_frames=5, max_side=16), n=2, steps=8)
    paths = export_gif(result, tmp_path)
    assert [p.name for p in paths] == [result.filename(i).replace(".png", ".gif") for i in range(2)]
    with Image.open(paths[1]) as im:
        assert im.n_frames == len(result.extras["gif"]["frames"][1])
        assert im.info.get("loop") == 0
        im.seek(im.n_frames - 1)
        assert np.asarray(im.convert("RGB")).min() >= 250  # ends on the final (white) image


def test_exporter_without_frames_says_how_to_get_them(tmp_path):
    result, _ = _render(Recorder(), settings={"steps": 40, "exporters": []})
    with pytest.raises(OptionError, match="no GIF frames"):
        export_gif(result, tmp_path)


def test_hooks_are_public_and_registered():
    from vizcore.plugins import Manager, Settings

    manager = Manager(Settings(autoload=False))
    manager.register(vizcore_gif, "vizcore-gif")
    assert manager.get("exporters", "gif") is export_gif
    assert manager.has_impls("vizcore_render_step")
