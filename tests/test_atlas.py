"""`vizcore report`: layer choice, content-addressed cache, escaping of untrusted names, pages and manifest.

The tiny model and the fake renderer here are shared with test_atlas_browser.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import types
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

import vizcore
from vizcore.atlas import UnitCache, UnitSpec, auto_layers, build_report, load_labels, trace_svg
from vizcore.atlas.health import check_keys
from vizcore.atlas.select import unit_specs
from vizcore.errors import LayerNotFoundError, OptionError, OutputError
from vizcore.health import CheckReport, Failure, LayerReport

HOSTILE = "<img src=x onerror=alert(1)>"
TRAVERSAL = "../../etc"


def tiny_cnn(path: Path, *, labels: str | None = "cat,dog,<b>bird</b>,fish,frog") -> Path:
    """A 3-conv CNN (5 logits) exported to ONNX, with nodes named HOSTILE and TRAVERSAL (both ReLUs)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(6, 10, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(10, 12, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(12, 5)).eval()
    torch.onnx.export(net, torch.rand(1, 3, 32, 32), str(path), input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}, "logits": {0: "batch"}}, dynamo=False)
    m = onnx.load(str(path))
    relus = [n for n in m.graph.node if n.op_type == "Relu"]
    relus[0].name = HOSTILE
    relus[1].name = TRAVERSAL
    props = {"vizcore.mean": "0.5,0.5,0.5", "vizcore.std": "0.5,0.5,0.5", "vizcore.range": "0,1"}
    if labels:
        props["vizcore.labels"] = labels
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return path


class FakeRenderer:
    """Stands in for `vizcore.render`: deterministic coloured images, values 0.5*i (unit 2: 0), counts calls."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def __call__(self, model: Any, targets: list[Any], *, steps: int, size: int | None = None, seed: int = 0,
                 **kw: Any) -> Any:
        self.calls.append(list(targets))
        n, s = len(targets), size or 32
        yy, xx = np.mgrid[0:s, 0:s] / s
        images = []
        for t in targets:
            k = t.channel + 1
            rgb = np.stack([np.sin(xx * k * 3) / 2 + 0.5, np.cos(yy * k * 2) / 2 + 0.5, xx * yy], -1)
            images.append((rgb * 255).astype(np.uint8))
        values = np.array([0.0 if t.channel == 2 else 0.5 * t.channel + 0.25 for t in targets], np.float32)
        traces = [list(np.linspace(-0.2, float(v), max(steps // 8, 2))) for v in values]
        return types.SimpleNamespace(images=np.stack(images), values=values, traces=traces,
                                     trace_steps=list(range(8, 8 * len(traces[0]) + 1, 8)),
                                     settings={"steps": steps, "size": s, "seed": seed, "param": "fake",
                                               "targets": ["x"] * n, **kw})

    @property
    def units(self) -> int:
        return sum(len(c) for c in self.calls)


# -- tests -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> vizcore.Model:
    return vizcore.load(tiny_cnn(tmp_path_factory.mktemp("m") / "tiny.onnx"))


class Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> Tags:
    t = Tags()
    t.feed(path.read_text(encoding="utf-8"))
    return t


def test_auto_layers_are_convolutions_before_their_activation(model: vizcore.Model) -> None:
    picked = auto_layers(model, count=2)
    convs = [ly for ly in model.layers if ly.op_type == "Conv"]
    assert [ly.name for ly in picked] == [convs[0].name, convs[-1].name]  # first and last, before the ReLU
    assert len(auto_layers(model, count=6)) == 3  # no more than there are
    # the check is asked about the activations after them, as its default layers are
    relus = [ly for ly in model.layers if ly.op_type == "Relu"]
    assert check_keys(model, picked) == [relus[0].name, relus[-1].name]
    assert check_keys(model, [relus[1]]) == [relus[1].name]
    # first-layer filters (a conv of the input, up to its ReLU) are rendered as neurons at the centre, deeper units
    # as whole channels: a linear filter's channel mean only sees the image's mean colour
    specs = unit_specs(model, [convs[0], relus[0], convs[1]], 2, [])
    assert [s.kind for s in specs] == ["neuron"] * 4 + ["channel"] * 2
    assert [type(s.objective()).__name__ for s in specs] == ["Neuron"] * 4 + ["Channel"] * 2


def test_report_pages_units_and_hostile_names(model: vizcore.Model, tmp_path: Path) -> None:
    fake = FakeRenderer()
    index = build_report(model, tmp_path / "r", layers=[HOSTILE, TRAVERSAL], units_per_layer=4, classes="0,2",
                         steps=16, size=32, renderer=fake, fidelity=False)
    out = index.parent
    assert index == out / "index.html"
    hostile, trav = model.layer(HOSTILE), model.layer(TRAVERSAL)
    # one page per layer, named by index only; images named by numbers only; nothing outside out/
    assert sorted(p.name for p in out.glob("*.html")) == sorted(
        ["index.html", "classes.html", f"layer-{hostile.index}.html", f"layer-{trav.index}.html"])
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts}
    assert all(re.fullmatch(r"[a-z0-9_./-]+", f) for f in files), files
    assert not (tmp_path / "etc").exists()
    assert len(list((out / "img").rglob("*.png"))) == 10

    page = out / f"layer-{hostile.index}.html"
    raw = page.read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(1)&gt;" in raw
    assert "<img src=x" not in raw and "onerror=" not in raw.replace("onerror=alert(1)&gt;", "")
    tags = parse(page)
    assert HOSTILE in "".join(tags.text)  # shown as text
    imgs = [a for t, a in tags.tags if t == "img"]
    assert not any("onerror" in a for a in imgs)
    thumbs = [a for a in imgs if "unit-thumb" in (a.get("class") or "")]
    assert [a["src"] for a in thumbs] == [f"img/layer-{hostile.index}/{c}.png" for c in range(4)]
    assert all((out / a["src"]).is_file() for a in imgs)
    # the class page names classes from the model's metadata, escaped
    classes = (out / "classes.html").read_text(encoding="utf-8")
    assert "cat" in classes and "&lt;b&gt;bird&lt;/b&gt;" in classes and "<b>bird" not in classes

    man = json.loads((out / "manifest.json").read_text())
    assert man["model"]["sha256"] == model.sha256
    assert [(u["layer"], u["channel"]) for u in man["units"][:4]] == [(HOSTILE, c) for c in range(4)]
    assert man["units"][2]["flags"] == ["not driven"]  # value 0
    assert [u["label"] for u in man["units"] if u["kind"] == "class"] == ["cat", "<b>bird</b>"]
    assert 'href="manifest.json"' in raw


def test_cache_grows_report_without_recomputation(model: vizcore.Model, tmp_path: Path) -> None:
    out = tmp_path / "r"
    fake = FakeRenderer()
    build_report(model, out, layers=[HOSTILE], units_per_layer=3, steps=8, size=32, renderer=fake, fidelity=False)
    assert fake.units == 3
    first = (out / f"img/layer-{model.layer(HOSTILE).index}/0.png").read_bytes()
    # more layers and more units: only the new ones render; no --force needed to grow an earlier report
    build_report(model, out, layers=[HOSTILE, TRAVERSAL], units_per_layer=4, steps=8, size=32, renderer=fake,
                 fidelity=False)
    assert fake.units == 3 + 1 + 4
    assert [t.channel for t in fake.calls[1]] == [3] and [t.channel for t in fake.calls[2]] == [0, 1, 2, 3]
    assert (out / f"img/layer-{model.layer(HOSTILE).index}/0.png").read_bytes() == first
    # same again: nothing renders
    build_report(model, out, layers=[HOSTILE, TRAVERSAL], units_per_layer=4, steps=8, size=32, renderer=fake,
                 fidelity=False)
    assert fake.units == 8
    # other settings are other content: everything renders again
    build_report(model, out, layers=[TRAVERSAL], units_per_layer=2, steps=12, size=32, renderer=fake, fidelity=False)
    assert fake.units == 10
    # the smaller report dropped the pages and images it no longer shows
    assert not (out / f"layer-{model.layer(HOSTILE).index}.html").exists()
    assert not (out / f"img/layer-{model.layer(HOSTILE).index}").exists()
    assert len(list((out / ".cache").glob("*.png"))) == 10  # the cache keeps everything


def test_growing_a_report_keeps_its_settings(model: vizcore.Model, tmp_path: Path) -> None:
    out, fake = tmp_path / "r", FakeRenderer()
    build_report(model, out, layers=[HOSTILE], units_per_layer=3, steps=8, size=40, seed=3, renderer=fake,
                 fidelity=False)
    build_report(model, out, layers=[HOSTILE, TRAVERSAL], renderer=fake, fidelity=False)  # no settings given
    assert fake.units == 3 + 3  # only the new layer, with the earlier run's settings
    man = json.loads((out / "manifest.json").read_text())
    assert man["settings"] == {"steps": 8, "size": 40, "seed": 3} and man["units_per_layer"] == 3


def test_cache_key_depends_on_model_settings_and_unit(model: vizcore.Model) -> None:
    a = UnitSpec("channel", model.layer(HOSTILE), 1)
    k = UnitCache.key(model.sha256, {"steps": 8}, a)
    assert re.fullmatch(r"[0-9a-f]{64}", k)
    assert k == UnitCache.key(model.sha256, {"steps": 8}, UnitSpec("channel", model.layer(HOSTILE), 1))
    assert k != UnitCache.key(model.sha256, {"steps": 9}, a)
    assert k != UnitCache.key("0" * 64, {"steps": 8}, a)
    assert k != UnitCache.key(model.sha256, {"steps": 8}, UnitSpec("channel", model.layer(HOSTILE), 2))


def test_damaged_cache_entry_is_rendered_again(model: vizcore.Model, tmp_path: Path) -> None:
    out, fake = tmp_path / "r", FakeRenderer()
    build_report(model, out, layers=[HOSTILE], units_per_layer=2, steps=8, renderer=fake, fidelity=False)
    victim = sorted((out / ".cache").glob("*.json"))[0]
    victim.write_text("{not json")
    build_report(model, out, layers=[HOSTILE], units_per_layer=2, steps=8, renderer=fake, fidelity=False)
    assert fake.units == 3
    # a record whose value is a dict (hand-edited), and an image cut short: both rendered again, never copied
    rec = json.loads(victim.read_text())
    victim.write_text(json.dumps({**rec, "value": {"a": 1}}))
    png = sorted((out / ".cache").glob("*.png"))[1]
    png.write_bytes(png.read_bytes()[:-20])
    build_report(model, out, layers=[HOSTILE], units_per_layer=2, steps=8, renderer=fake, fidelity=False)
    assert fake.units == 5
    assert all(p.read_bytes().endswith(b"IEND\xaeB`\x82") for p in (out / ".cache").glob("*.png"))


def test_refuses_foreign_nonempty_folder(model: vizcore.Model, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not empty"):
        build_report(model, tmp_path, layers=[HOSTILE], units_per_layer=1, renderer=FakeRenderer(), fidelity=False)
    build_report(model, tmp_path, layers=[HOSTILE], units_per_layer=1, renderer=FakeRenderer(), fidelity=False,
                 force=True)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_health_marks_dead_and_duplicate_units(model: vizcore.Model, tmp_path: Path) -> None:
    health = {"model": {"sha256": model.sha256}, "passed": False, "fidelity": {},
              "failures": [{"check": "dead", "layer": HOSTILE, "message": "too many dead units"}],
              "layers": [{"name": HOSTILE, "channels": 6, "dead": [1, 5], "constant": [],
                          "duplicates": [[0, 3, "rot90", 0.98]]}]}
    path = tmp_path / "check.json"
    path.write_text(json.dumps(health))
    index = build_report(model, tmp_path / "r", layers=[HOSTILE], units_per_layer=4, renderer=FakeRenderer(),
                         fidelity=False, health=path)
    man = json.loads((index.parent / "manifest.json").read_text())
    flags = {u["channel"]: u["flags"] for u in man["units"]}
    assert flags[1] == ["dead"] and flags[0] == ["≈ ch 3 (rot90, 0.98)"] and flags[3] == ["≈ ch 0 (rot90, 0.98)"]
    assert flags[2] == []  # its render stayed at 0, but the check covers the layer and found it alive: one verdict
    front = index.read_text(encoding="utf-8")
    assert "failed" in front and "too many dead units" in front and "2 dead" in front
    assert "do not record which probes" in front  # a stored check.json without notes says so
    page = (index.parent / f"layer-{model.layer(HOSTILE).index}.html").read_text(encoding="utf-8")
    assert page.count('class="unit is-dead"') == 1 and page.count("is-dup") == 2
    # results of another model are refused before anything renders
    path.write_text(json.dumps({**health, "model": {"sha256": "0" * 64}}))
    with pytest.raises(OptionError, match="another model"):
        build_report(model, tmp_path / "r2", layers=[HOSTILE], renderer=FakeRenderer(), health=path)
    assert not (tmp_path / "r2").exists()


def _report(model: vizcore.Model, layer: str, dead: list[int], notes: list[str]) -> CheckReport:
    lay = model.layer(layer)
    rep = LayerReport(name=lay.name, channels=int(lay.channels or 0), dead=dead, index=lay.index)
    fails = [Failure("dead", lay.name, f"{len(dead)} dead")] if dead else []
    return CheckReport(model={"sha256": model.sha256}, layers=[rep], fidelity={}, failures=fails, notes=notes)


def test_one_verdict_per_unit_attached_through_the_activation(model: vizcore.Model, tmp_path: Path) -> None:
    """The check measured the ReLU; the atlas shows the Conv before it: the verdicts are the Conv's channels', the
    panel counts exactly the units marked, and the page says which probes the verdicts rest on."""
    conv = next(ly for ly in model.layers if ly.op_type == "Conv")
    notes = ["probes: 12 noise at 32x32", "scikit-image is not installed: probes use noise (and --images) only",
             "thresholds from /home/someone/secret/pyproject.toml"]
    check = _report(model, HOSTILE, [0, 2], notes)
    index = build_report(model, tmp_path / "r", layers=[conv.index], units_per_layer=6, renderer=FakeRenderer(),
                         fidelity=False, health=check)
    man = json.loads((index.parent / "manifest.json").read_text())
    marked = sorted(u["channel"] for u in man["units"] if "dead" in u["flags"])
    assert marked == [0, 2]
    assert not any("not driven" in u["flags"] for u in man["units"])  # the check is the judge, not the render
    front = index.read_text(encoding="utf-8")
    assert "<strong>2</strong> dead" in front
    assert "noise only" in front and "probes: 12 noise at 32x32" in front
    assert "secret" not in front and "thresholds from pyproject.toml" in front
    page = (index.parent / f"layer-{conv.index}.html").read_text(encoding="utf-8")
    assert "verdicts measured after the activation" in page and "&lt;img src=x" in page
    # without a check the render's own value speaks (channel 2 of the fake stays at 0)
    index = build_report(model, tmp_path / "r2", layers=[conv.index], units_per_layer=3, renderer=FakeRenderer(),
                         fidelity=False, health=None)
    man = json.loads((index.parent / "manifest.json").read_text())
    assert [u["flags"] for u in man["units"]] == [[], [], ["not driven"]]


def test_no_network_references(model: vizcore.Model, tmp_path: Path) -> None:
    index = build_report(model, tmp_path / "r", layers=[HOSTILE], units_per_layer=2, classes=[1],
                         renderer=FakeRenderer(), fidelity=False)
    out = index.parent
    for page in out.glob("*.html"):
        for tag, attrs in parse(page).tags:
            for name in ("src", "href", "action", "data", "poster", "srcset"):
                v = attrs.get(name)
                if v is not None:
                    assert not re.match(r"^\s*([a-z][a-z0-9+.-]*:|//)", v, re.I), (page.name, tag, v)
        assert "http://" not in page.read_text() and "https://" not in page.read_text()
    for asset in (out / "assets").iterdir():
        text = asset.read_text()
        assert "url(" not in text and "http" not in text and "fetch(" not in text and "XMLHttpRequest" not in text


def test_labels_file_and_errors(model: vizcore.Model, tmp_path: Path) -> None:
    (tmp_path / "names.txt").write_text("zero\none\n")
    assert load_labels(model, tmp_path / "names.txt") == {0: "zero", 1: "one"}
    (tmp_path / "names.json").write_text('{"3": "three"}')
    assert load_labels(model, tmp_path / "names.json") == {3: "three"}
    assert load_labels(model)[2] == "<b>bird</b>"
    with pytest.raises(OptionError):
        load_labels(model, tmp_path / "missing.txt")
    with pytest.raises(OptionError, match="out of range"):
        build_report(model, tmp_path / "r", classes="7", renderer=FakeRenderer(), fidelity=False)
    with pytest.raises(OptionError, match="nothing to show"):
        build_report(model, tmp_path / "r2", renderer=FakeRenderer(), fidelity=False)
    with pytest.raises(LayerNotFoundError):
        build_report(model, tmp_path / "r3", layers=["nope"], renderer=FakeRenderer(), fidelity=False)


def test_trace_svg_scales_into_the_plot() -> None:
    t = trace_svg([0.0, 1.0, 2.0], width=100, height=50)
    pts = [tuple(map(float, p.split(","))) for p in t["points"].split()]
    assert len(pts) == 3 and pts[0][0] == t["x0"] and pts[-1][0] == t["x1"]
    assert pts[0][1] == t["y1"] and pts[-1][1] == t["y0"]  # low value at the bottom, high at the top
    assert trace_svg([])["empty"] and not trace_svg([float("nan"), 1.0])["empty"]


def test_cli_report_with_the_real_engine(tmp_path: Path) -> None:
    from vizcore.cli import main

    path = tiny_cnn(tmp_path / "tiny.onnx")
    out = tmp_path / "atlas"
    args = ["report", str(path), "--out", str(out), "--layers", f"{HOSTILE}", "--units-per-layer", "3", "--steps", "4",
            "--size", "32", "--classes", "1", "--no-fidelity"]
    assert main(args) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["units"]) == 4
    # the health check ran on the rendered layer (default), and its findings reached the front page
    assert [ly["name"] for ly in man["health"]["layers"]] == [HOSTILE]
    assert "health check" in (out / "index.html").read_text(encoding="utf-8")
    assert all(len(u["trace"]) >= 1 and u["settings"]["steps"] == 4 for u in man["units"])
    from PIL import Image

    img = Image.open(out / man["units"][0]["file"])
    assert img.size == (32, 32)
    assert main(["report", str(path), "--out", str(out)]) == 2  # nothing asked for


# -- hardening -------------------------------------------------------------------------------------------------------
def test_never_writes_through_a_link_out_of_the_report(model: vizcore.Model, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "r", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "0.png").write_bytes(b"precious")
    build_report(model, out, layers=[HOSTILE, TRAVERSAL], units_per_layer=2, steps=8, renderer=FakeRenderer(),
                 fidelity=False)
    layer_dir = out / f"img/layer-{model.layer(HOSTILE).index}"
    for p in layer_dir.iterdir():
        p.unlink()
    layer_dir.rmdir()
    layer_dir.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match="link") as err:
        build_report(model, out, layers=[HOSTILE, TRAVERSAL], units_per_layer=2, steps=8, renderer=FakeRenderer(),
                     fidelity=False)
    assert "\n" not in str(err.value)
    assert (elsewhere / "0.png").read_bytes() == b"precious" and sorted(os.listdir(elsewhere)) == ["0.png"]
    # a smaller report cleans up what it no longer shows, but never through the link
    build_report(model, out, layers=[TRAVERSAL], units_per_layer=2, steps=8, renderer=FakeRenderer(), fidelity=False)
    assert (elsewhere / "0.png").read_bytes() == b"precious"
    # the cache and the pages are guarded too
    cache = out / ".cache"
    shutil.move(cache, tmp_path / "moved-cache")
    cache.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match="link"):
        build_report(model, out, layers=[TRAVERSAL], units_per_layer=2, steps=8, renderer=FakeRenderer(),
                     fidelity=False, force=True)
    assert sorted(os.listdir(elsewhere)) == ["0.png"]
    cache.unlink()
    shutil.move(tmp_path / "moved-cache", cache)
    (out / "index.html").unlink()
    (out / "index.html").symlink_to(elsewhere / "0.png")
    with pytest.raises(OutputError, match="link"):
        build_report(model, out, layers=[TRAVERSAL], units_per_layer=2, steps=8, renderer=FakeRenderer(),
                     fidelity=False)
    assert (elsewhere / "0.png").read_bytes() == b"precious"


def test_bad_labels_fail_before_any_work(model: vizcore.Model, tmp_path: Path) -> None:
    fake = FakeRenderer()
    with pytest.raises(OptionError, match="larger than|character device"):
        build_report(model, tmp_path / "r", classes="1", labels="/dev/zero", renderer=fake, fidelity=False)
    (tmp_path / "bin.txt").write_bytes(b"cat\x00\xff\xfe")
    with pytest.raises(OptionError, match="not UTF-8|not text"):
        build_report(model, tmp_path / "r", classes="1", labels=tmp_path / "bin.txt", renderer=fake, fidelity=False)
    assert fake.units == 0 and not (tmp_path / "r").exists()
    from vizcore.cli import main

    assert main(["report", str(model.path), "--out", str(tmp_path / "r"), "--classes", "1",
                 "--labels", "/dev/zero"]) == 2
    assert not (tmp_path / "r").exists()


class Interrupting(FakeRenderer):
    """A FakeRenderer that raises KeyboardInterrupt (Ctrl-C) once it has rendered `after` units."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def __call__(self, model: Any, targets: list[Any], **kw: Any) -> Any:
        if self.units >= self.after:
            raise KeyboardInterrupt
        return super().__call__(model, targets, **kw)


def test_ctrl_c_keeps_what_was_rendered_and_the_next_run_resumes(model: vizcore.Model, tmp_path: Path) -> None:
    out, args = tmp_path / "r", {"layers": [HOSTILE, TRAVERSAL], "units_per_layer": 3, "steps": 8, "size": 32,
                                 "classes": "0,1", "fidelity": False}
    stub = Interrupting(after=3)
    with pytest.raises(KeyboardInterrupt):
        build_report(model, out, renderer=stub, **args)
    assert stub.units == 3
    assert len(list((out / ".cache").glob("*.png"))) == 3 == len(list((out / ".cache").glob("*.json")))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    fake = FakeRenderer()
    build_report(model, out, renderer=fake, **args)
    assert fake.units == 3 + 2  # the second layer and the classes only
    assert [t.channel for t in fake.calls[0]] == [0, 1, 2] and len(fake.calls) == 2
    man = json.loads((out / "manifest.json").read_text())
    assert len(man["units"]) == 8 and all((out / u["file"]).is_file() for u in man["units"])


def test_every_file_is_written_through_the_files_helpers(model: vizcore.Model, tmp_path: Path) -> None:
    """Pages, manifest, assets, cache and the images copied from the cache all have the mode files.py gives."""
    from vizcore.files import atomic_write_bytes

    mode = stat.S_IMODE(atomic_write_bytes(tmp_path / "probe", b"x").stat().st_mode)
    index = build_report(model, tmp_path / "r", layers=[HOSTILE], units_per_layer=2, classes="1",
                         renderer=FakeRenderer(), fidelity=False)
    files = [p for p in index.parent.rglob("*") if p.is_file()]
    assert len(files) > 8
    assert {p.relative_to(index.parent).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {
        p.relative_to(index.parent).as_posix(): oct(mode) for p in files}
