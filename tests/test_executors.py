"""Executors without Ray: the shared chunk plan, the local executor against the engine, splitting a failing chunk,
reporting a unit that cannot be rendered, and an atlas that resumes where an interrupted run stopped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny import TinyCNN, load_tiny

import vizcore
from vizcore.atlas import auto_layers
from vizcore.atlas.build import CACHE_DIR, build_report
from vizcore.engine import RenderOptions
from vizcore.errors import OptionError
from vizcore.executors import Chunk, ChunkResult, render, resolve_executor
from vizcore.executors.local import LocalExecutor
from vizcore.executors.progress import JobProgress
from vizcore.executors.worker import plan_chunks, resolve

FAST = {"steps": 6, "size": 32, "seed": 3}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> vizcore.Model:
    return load_tiny(TinyCNN(), tmp_path_factory.mktemp("tiny"))


def same(a: vizcore.Result, b: vizcore.Result) -> None:
    assert np.array_equal(a.images, b.images)
    assert np.array_equal(a.values, b.values)
    assert np.array_equal(a.best_values, b.best_values)
    assert a.traces == b.traces and a.trace_steps == b.trace_steps


class Flaky(LocalExecutor):
    """Fails every chunk that holds a unit `bad(tag)` says is bad; records what it was asked to run."""

    def __init__(self, bad, **kw) -> None:  # noqa: ANN001
        super().__init__(**kw)
        self.bad, self.asked = bad, []

    def wait(self) -> list[tuple[Chunk, ChunkResult | BaseException]]:
        chunk = self._queue[0]
        self.asked.append(list(chunk.tags))
        if any(self.bad(t) for t in chunk.tags):
            self._queue.popleft()
            return [(chunk, RuntimeError("boom on this unit"))]
        return super().wait()


class Interrupted(LocalExecutor):
    """Stops the driver (as Ctrl-C or a kill would) after `after` chunks finished and were stored."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.ran = after, 0

    def wait(self) -> list[tuple[Chunk, ChunkResult | BaseException]]:
        if self.ran == self.after:
            raise KeyboardInterrupt
        self.ran += 1
        return super().wait()


def test_plan_is_the_engines(model: vizcore.Model) -> None:
    targets = ["3:0-15", "1:0-4"]
    for extra in ({}, {"batch_size": 3}, {"batch_size": 7}, {"max_memory": 2**20}):
        size, budget = plan_chunks(model, resolve(model, targets), RenderOptions(**FAST, **extra))
        got = vizcore.render(model, targets, **{**FAST, "steps": 1}, **extra).settings
        assert (size, budget) == (got["chunk_units"], got["max_memory"])
    assert size < 21  # the small budget cut the job into several chunks


def test_local_executor_renders_what_the_engine_renders(model: vizcore.Model) -> None:
    targets = ["3:0-9", "1:2-5", "class:1"]
    ref = vizcore.render(model, targets, batch_size=4, **FAST)
    got = render(model, targets, batch_size=4, executor="local", **FAST)
    same(ref, got)
    assert [u.target for u in got.units] == [u.target for u in ref.units]
    assert got.settings["chunk_units"] == ref.settings["chunk_units"] == 4 and got.extras["failed"] == {}


def test_alpha_maps_come_back_from_the_chunks_at_the_renders_indices(model: vizcore.Model) -> None:
    targets = ["3:0-4", "class:1"]
    ref = vizcore.render(model, targets, batch_size=2, exporters=["alpha"], **FAST)
    got = render(model, targets, batch_size=2, executor="local", exporters=["alpha"], **FAST)
    assert got.settings["chunk_units"] == 2 and sorted(got.extras["alpha"]) == list(range(6))
    for i, m in ref.extras["alpha"].items():  # chunk 2's maps at 2 and 3, not at 0 and 1
        assert np.array_equal(got.extras["alpha"][i], m), i
    assert "alpha" not in render(model, targets, batch_size=2, executor="local", **FAST).extras


def test_a_failing_chunk_is_split_and_its_bad_unit_reported(model: vizcore.Model) -> None:
    states: list[JobProgress] = []
    ex = Flaky(lambda t: t == 5, progress=lambda p: states.append((p.done, p.running, p.failed, p.finished)))
    got = render(model, "3:0-7", batch_size=4, executor=ex, **FAST)
    assert set(got.extras["failed"]) == {5} and "RuntimeError: boom" in got.extras["failed"][5]
    assert np.isnan(got.values[5]) and not got.images[5].any()
    assert any("3:5 could not be rendered" in w for w in got.warnings)
    assert sorted(ex.asked) == sorted([[0, 1, 2, 3], [4, 5, 6, 7], [4, 5], [6, 7], [4], [5]])  # halves, as the engine
    same_chunk = vizcore.render(model, "3:0-3", batch_size=4, **FAST)
    assert np.array_equal(got.images[:4], same_chunk.images)  # untouched chunks: the engine's images
    alone = vizcore.render(model, "3:6-7", batch_size=2, **FAST)
    assert np.array_equal(got.images[6:8], alone.images) and np.isfinite(got.values[[0, 1, 2, 3, 4, 6, 7]]).all()
    assert states[-1] == (7, 0, 1, True) and max(s[1] for s in states) <= 4


def test_no_unit_rendered_is_an_error_not_a_blank_result(model: vizcore.Model) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        render(model, "3:0-15", batch_size=1, executor=Flaky(lambda t: True), **FAST)


def _pngs(out: Path) -> dict[str, bytes]:
    man = json.loads((out / "manifest.json").read_text())
    return {u["file"]: (out / u["file"]).read_bytes() for u in man["units"]}


def _entries(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / CACHE_DIR).glob("*.json")}


def test_an_interrupted_atlas_resumes_with_the_same_chunks(model: vizcore.Model, tmp_path: Path) -> None:
    opts = {"layers": [3, 1], "units_per_layer": 6, "health": False, "fidelity": False, "steps": 6, "size": 32,
            "render_options": {"batch_size": 4}}
    plain = build_report(model, tmp_path / "plain", **opts).parent  # the engine's own path, no executor
    out = tmp_path / "atlas"
    with pytest.raises(KeyboardInterrupt):
        build_report(model, out, executor=Interrupted(after=3), **opts)
    before = _entries(out)
    assert len(before) == 9  # chunks of 3 (6 units at batch 4: equal halves): layer 3's two, layer 1's first
    log: list[str] = []
    counting = Flaky(lambda t: False)
    build_report(model, out, executor=counting, log=log.append, **opts)
    assert [len(c) for c in counting.asked] == [3]  # only the chunk that had not finished
    assert any(line.startswith("3 units in 1 chunks") for line in log)
    after = _entries(out)
    assert {k: after[k] for k in before} == before and len(after) == 12  # nothing finished was written again
    assert _pngs(out) == _pngs(plain)  # bitwise the images of an uninterrupted run


def test_a_unit_that_cannot_be_rendered_is_shown_as_failed(model: vizcore.Model, tmp_path: Path) -> None:
    opts = {"layers": [3], "units_per_layer": 4, "health": False, "fidelity": False, "steps": 4, "size": 32}
    out = build_report(model, tmp_path / "a", executor=Flaky(lambda t: t[0].channel == 2), **opts).parent
    man = json.loads((out / "manifest.json").read_text())
    flags = {u["channel"]: u["flags"] for u in man["units"]}
    assert flags[2] == ["failed: RuntimeError: boom on this unit"] and not any("failed" in str(flags[c])
                                                                               for c in (0, 1, 3))
    assert "failed: RuntimeError" in (out / "layer-3.html").read_text(encoding="utf-8")
    assert (out / "img/layer-3/2.png").is_file() and len(_entries(out)) == 3  # not cached: a re-run tries again
    build_report(model, out, executor="local", **opts)
    man = json.loads((out / "manifest.json").read_text())
    assert all(not u["flags"] or "failed" not in u["flags"][0] for u in man["units"]) and len(_entries(out)) == 4


def test_all_units_from_the_cli_with_an_estimate(model: vizcore.Model, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from vizcore.cli import main

    out = tmp_path / "all"
    code = main(["report", str(model.path), "--out", str(out), "--all-units", "--steps", "2", "--size", "32",
                 "--no-health", "--no-fidelity"])
    assert code == 0
    man = json.loads((out / "manifest.json").read_text())
    layers = auto_layers(model, count=len(model.layers))  # what --all-units renders
    assert [ly.index for ly in layers] == [0, 3]  # each conv, before its ReLU (vizcore.atlas.select)
    assert len(man["units"]) == sum(ly.channels for ly in layers) == 24
    err = capsys.readouterr().err
    assert "estimate: 24 units x 2 steps" in err and "per unit-step" in err


def test_executor_names_and_a_missing_ray(monkeypatch: pytest.MonkeyPatch, model: vizcore.Model,
                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vizcore.cli import main

    assert isinstance(resolve_executor("local"), LocalExecutor) and isinstance(resolve_executor(None), LocalExecutor)
    with pytest.raises(OptionError, match="unknown executor"):
        resolve_executor("dask")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(OptionError, match=r"vizcore\[ray\]"):
        resolve_executor("ray://head:10001")
    assert main(["render", str(model.path), "3:0", "--out", str(tmp_path / "r"), "--executor", "ray"]) == 2
    assert 'pip install "vizcore[ray]"' in capsys.readouterr().err
    with pytest.raises(OptionError, match="on_step"):
        render(model, "3:0", executor="local", on_step=lambda r, s: None, **FAST)
