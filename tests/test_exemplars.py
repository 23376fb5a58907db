"""Exemplars from the user's data: the planted cross detector finds exactly the planted images, centred; the
streaming top-k and the distribution equal a brute-force pass; a killed pass resumes; unreadable files are named
and skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import BARS, CROSSES, cross_data, load_cross

from vizcore.analysis.exemplars import RESERVOIR, exemplars
from vizcore.analysis.receptive import receptive_fields
from vizcore.errors import OptionError
from vizcore.samples import open_data


@pytest.fixture(scope="module")
def cross(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cross")
    return load_cross(tmp), cross_data(tmp / "data")


@pytest.fixture(scope="module")
def found(cross):
    model, data = cross
    return exemplars(model, data, None, size=32, cache_dir=False)


def test_planted_cross_gives_exactly_its_images_centred(found):
    relu1, relu2 = found.layers  # the default layers: after each conv's ReLU
    u = found.unit(relu1, 0)
    assert {e.number for e in u.top[:5]} == set(CROSSES)
    assert {e.number for e in u.top[5:9]} == set(BARS)  # the weaker bars come next
    for e in u.top[:5]:
        assert e.position == CROSSES[e.number]  # the arg-max is the cross's centre
        (y0, y1), (x0, x1) = e.box
        assert (y0 + y1 - 1) / 2 == e.position[0] and (x0 + x1 - 1) / 2 == e.position[1]
        assert e.file == (f"{e.number:03d}.png" if e.number < 150 else "rest.npy")
        assert e.index == (None if e.number < 150 else e.number - 150)
    deep = found.unit(relu2, 0)  # after a max-pool: stride 2, a larger field, still centred on the cross
    assert {e.number for e in deep.top[:5]} == set(CROSSES)
    for e in deep.top[:5]:
        centre = [(lo + hi - 1) / 2 for lo, hi in e.box]
        assert np.abs(np.subtract(centre, CROSSES[e.number])).max() <= 1.0


def test_crops_are_centred_on_the_cross(found):
    crops = found.crops(found.layers[0], 0, size=32)
    assert len(crops) == 9 and crops[0].shape == (32, 32, 3)
    for c in crops[:5]:
        bright = np.argwhere(c[..., 0] > 200)
        assert np.abs(bright.mean(0) - 15.5).max() <= 2.5  # the cross's mass at the crop's centre


def test_streaming_top_k_and_stats_equal_brute_force(cross, found):
    model, data = cross
    ds = open_data(data, (1, 3, 32, 32))
    x = np.concatenate([b.x for b in ds.batches(256)])
    with torch.no_grad():
        acts = model.cut_at([found.layers[0]])(torch.from_numpy(x))[0]
    score = acts.flatten(2).max(2).values.numpy()  # (N, C)
    for ch in range(score.shape[1]):
        u = found.unit(found.layers[0], ch)
        want = np.lexsort((np.arange(len(score)), -score[:, ch]))[:9]
        assert [e.number for e in u.top] == want.tolist()
        assert np.allclose([e.activation for e in u.top], score[want, ch])
        st = u.stats
        assert st["count"] == 200 < RESERVOIR  # below the reservoir's size p99 is exact
        assert st["p99"] == pytest.approx(float(np.percentile(score[:, ch], 99)), rel=1e-5)
        assert st["mean"] == pytest.approx(float(score[:, ch].mean()), rel=1e-5, abs=1e-6)
        assert st["max"] == pytest.approx(float(score[:, ch].max()))
        assert st["fraction_positive"] == pytest.approx(float((score[:, ch] > 0).mean()))
    assert found.unit(found.layers[0], 0).stats["fraction_positive"] == (len(CROSSES) + len(BARS)) / 200


def test_receptive_fields_measured(cross):
    model, _ = cross
    f = receptive_fields(model, [model.layer(1), model.layer(4), model.layer(6)], (1, 3, 32, 32), None)
    assert (f[1].lo, f[1].hi, f[1].stride) == ((-1.0, -1.0), (2.0, 2.0), (1.0, 1.0))  # a 3x3 conv
    assert f[4].stride == (2.0, 2.0) and f[4].hi[0] - f[4].lo[0] == 8  # 3x3, pool 2, 3x3 at stride 2
    assert f[6] is None  # no positions: no box
    assert f[1].box((0, 31)) == ((0, 2), (30, 32))  # clipped at the border


class Killed(Exception):
    pass


def test_a_killed_pass_resumes_with_the_same_result(cross, found, tmp_path):
    model, data = cross
    calls = []

    def kill_at_5(done, total):
        calls.append(done)
        if len(calls) == 5:
            raise Killed

    with pytest.raises(Killed):
        exemplars(model, data, size=32, cache_dir=tmp_path, checkpoint_every=2, progress=kill_at_5)
    again: list[int] = []
    ex = exemplars(model, data, size=32, cache_dir=tmp_path, checkpoint_every=2,
                   progress=lambda d, t: again.append(d))
    full = 14  # 150 images and 50 arrays, 16 a batch: 10 + 4 batches
    assert ex.resumed == 64 and len(again) == full - 4  # resumed after the 4th batch (the last checkpoint)
    for lay in found.layers:
        for name in ("vals", "nums", "pos", "positive", "peak", "res"):
            np.testing.assert_array_equal(getattr(ex.tops[lay.index], name), getattr(found.tops[lay.index], name))
        np.testing.assert_allclose(ex.tops[lay.index].total, found.tops[lay.index].total, rtol=1e-12)
    third: list[int] = []
    done = exemplars(model, data, size=32, cache_dir=tmp_path, progress=lambda d, t: third.append(d))
    assert third == [] and done.resumed == 200  # finished: read back, not run again
    assert done.unit(found.layers[0], 0) == found.unit(found.layers[0], 0)


def test_changed_data_is_a_new_pass(cross, tmp_path):
    model, data = cross
    calls: list[int] = []
    exemplars(model, data / "rest.npy", size=32, cache_dir=tmp_path)
    np.save(data / "rest.npy", np.load(data / "rest.npy"))  # rewritten: new mtime, new fingerprint
    ex = exemplars(model, data / "rest.npy", size=32, cache_dir=tmp_path, progress=lambda d, t: calls.append(d))
    assert calls and ex.resumed == 0 and ex.count == 50


def test_unreadable_files_are_named_and_skipped(cross, tmp_path):
    model, data = cross
    folder = tmp_path / "mixed"
    folder.mkdir()
    for n in (7, 8):
        (folder / f"{n:03d}.png").write_bytes((data / f"{n:03d}.png").read_bytes())
    (folder / "broken.png").write_bytes(b"not a png at all")
    with pytest.warns(UserWarning, match="broken.png"):
        ex = exemplars(model, folder, size=32, cache_dir=False)
    assert ex.count == 2 and len(ex.skipped) == 1 and "broken.png" in ex.skipped[0]
    assert ex.unit(ex.layers[0], 0).top[0].file == "007.png"
    (folder / "007.png").unlink()
    (folder / "008.png").unlink()
    with pytest.warns(UserWarning), pytest.raises(OptionError, match="no input could be read"):
        exemplars(model, folder, size=32, cache_dir=False)


def test_streamed_data_is_not_capped_like_a_held_one(tmp_path):
    from PIL import Image

    for n in range(260):
        Image.new("RGB", (4, 4), (n % 256, 0, 0)).save(tmp_path / f"{n:03d}.png")
    assert open_data(tmp_path, (1, 3, 4, 4)).count == 256  # check's cap: it holds the images
    assert open_data(tmp_path, (1, 3, 4, 4), stream=True).count == 260


def test_layers_by_name_dense_layers_and_unknown_names(cross):
    from vizcore.errors import LayerNotFoundError

    model, data = cross
    ex = exemplars(model, data / "rest.npy", ["/fc/Gemm", 1], size=32, cache_dir=False)
    top = ex.unit("/fc/Gemm", 2).top
    assert len(top) == 9 and top[0].position is None and top[0].box is None  # no positions in a dense layer
    assert ex.unit(1, 0).top[0].index == 40  # the brightest cross, rest.npy[40]
    with pytest.raises(LayerNotFoundError, match="closest: /Relu"):
        exemplars(model, data, ["/Relux"], size=32, cache_dir=False)


def test_render_data_lists_exemplars_in_the_manifest_and_writes_strips(cross, tmp_path, monkeypatch, capsys):
    import json

    from PIL import Image

    from vizcore.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model, data = cross
    out = tmp_path / "out"
    argv = ["render", str(model.path), "/Relu:0", "class:1", "--size", "32", "--steps", "4", "--quiet",
            "--data", str(data), "--out", str(out)]
    assert main(argv) == 0
    m = json.loads((out / "manifest.json").read_text())
    found = m["units"][0]["exemplars"]
    assert {(e["file"], e["index"]) for e in found["top"][:5]} == {
        (f"{n:03d}.png", None) if n < 150 else ("rest.npy", n - 150) for n in CROSSES}
    assert found["top"][0]["box"] and found["stats"]["count"] == 200
    assert found["file"] in m["files"] and m["units"][1]["exemplars"]["top"][0]["box"] is None  # a logit: no box
    strip = Image.open(out / found["file"])
    assert strip.size == (9 * 64 + 8 * 2, 64)
    assert any((tmp_path / "cache" / "vizcore" / "exemplars").rglob("state.json"))  # the pass is cached
    capsys.readouterr()
    assert main(["render", str(model.path), "1:0", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o2"),
                 "--size", "32", "--steps", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nope: no such file" in err and not (tmp_path / "o2").exists()


def test_onnxruntime_and_torch_passes_agree(cross, found, monkeypatch):
    """The pass runs in onnxruntime on the CPU (the layers' maxima and arg-max inside the graph); the torch graph,
    its fallback, finds the same exemplars, positions and statistics."""
    from vizcore.analysis import exemplar_ort

    model, data = cross
    assert found.engine == "onnxruntime"
    dense = exemplars(model, data / "rest.npy", ["/fc/Gemm"], size=32, cache_dir=False)
    assert dense.engine == "onnxruntime" and dense.unit("/fc/Gemm", 2).top[0].position is None
    monkeypatch.setattr(exemplar_ort, "reducer", lambda *a: None)
    slow = exemplars(model, data, None, size=32, cache_dir=False)
    assert slow.engine == "torch"
    for lay in found.layers:
        for ch in range(lay.channels):
            a, b = found.unit(lay, ch), slow.unit(lay, ch)
            assert [(e.number, e.position) for e in a.top] == [(e.number, e.position) for e in b.top]
            assert np.allclose([e.activation for e in a.top], [e.activation for e in b.top], rtol=1e-5, atol=1e-6)
            assert a.stats["max"] == pytest.approx(b.stats["max"], rel=1e-5)
