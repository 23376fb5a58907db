"""Trust verdicts: a planted Geirhos-style fooling unit (a red-blob unit on smooth data whose picture is texture,
reached through a branch the data never uses) is `misleading`; the units of a trained-ish tiny model are not;
without data the data scores are reported as not measured; seed stability, transfer and the thresholds work."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from tiny import FoolingNet, export, save_images, smooth_images, trained_cnn

import vizcore
from vizcore.analysis.trust import TrustThresholds
from vizcore.cli import main
from vizcore.errors import OptionError

RANGE = {"vizcore.range": "0,1"}
FOOL, ORDINARY = "3:0", "3:1"  # conv2 of FoolingNet (after conv1's replicate Pad, Conv, Relu)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    images = smooth_images(160)
    return tmp, images, save_images(images, tmp / "data")


@pytest.fixture(scope="module")
def fooling(data):
    tmp, _, folder = data
    model = vizcore.load(export(FoolingNet(), tmp / "fool.onnx", (1, 3, 32, 32), metadata=RANGE), size=32)
    result = vizcore.render(model, [FOOL, ORDINARY], steps=64, size=32, seed=0)
    found = vizcore.trust(result, model, folder, size=32, cache_dir=False)
    return model, result, found


def test_planted_fooling_unit_is_misleading(fooling):
    model, _, (fool, ordinary) = fooling
    t = TrustThresholds()
    assert fool.verdict == "misleading", fool.reasons
    ratio, path = fool.scores["activation_ratio"], fool.scores["path_similarity"]
    assert ratio["max"] > t.ratio_misleading  # far above anything the data gives the unit
    assert path["score"] < t.path_misleading
    (point,) = path["curve"]  # one layer on the way: conv1 after its ReLU
    assert point["index"] == model.layer("/Relu").index and point["picture"] < point["random"]
    assert "route the data does not take" in fool.reasons[0]
    assert ordinary.verdict != "misleading"  # the same model's ordinary unit
    assert ordinary.scores["activation_ratio"]["max"] < t.ratio_misleading
    assert ordinary.scores["path_similarity"]["score"] > t.path_misleading


def test_units_of_a_trained_model_are_not_misleading(data):
    tmp, images, folder = data
    model = vizcore.load(export(trained_cnn(images), tmp / "trained.onnx", (1, 3, 32, 32), metadata=RANGE), size=32)
    result = vizcore.render(model, ["3:0-5", "class:0", "class:1", "class:2"], steps=48, size=32)
    found = vizcore.trust(result, model, folder, size=32, cache_dir=False)
    verdicts = [t.verdict for t in found]
    assert "misleading" not in verdicts, [(u.target, t.reasons) for u, t in zip(result.units, found)]
    assert len(set(verdicts)) == 2  # some trusted, some doubtful (pictures short of the data's p99)
    for t in found:
        assert t.scores["path_similarity"] is not None and t.scores["transform_robustness"] is not None


def test_without_data_the_data_scores_are_not_measured(fooling, tmp_path):
    model, result, _ = fooling
    found = vizcore.trust(result, model)
    for t in found:
        assert t.verdict == "doubtful"  # never trusted without the data scores
        assert t.scores["activation_ratio"] is None and t.scores["path_similarity"] is None
        assert "--data" in t.not_measured["activation_ratio"] and "--data" in t.not_measured["path_similarity"]
        assert 0 < t.scores["transform_robustness"] < 2  # measured: it needs no data
        assert t.scores["seed_stability"] is None and "--trust full" in t.not_measured["seed_stability"]
    result.save(tmp_path / "out")
    units = json.loads((tmp_path / "out" / "manifest.json").read_text())["units"]
    entry = units[0]["trust"]
    assert entry["verdict"] == "doubtful" and entry["activation_ratio"] is None
    assert entry["not_measured"]["path_similarity"].startswith("needs --data")


def test_seed_stability_from_two_pictures_per_unit_and_from_full(fooling):
    model, _, _ = fooling
    twice = vizcore.render(model, [FOOL, ORDINARY], steps=32, size=32, images_per_unit=2)
    found = vizcore.trust(twice, model)
    assert all(-1 <= t.scores["seed_stability"] <= 1 for t in found)
    assert found[0].scores["seed_stability"] == pytest.approx(found[1].scores["seed_stability"])  # one pair
    once = vizcore.render(model, [FOOL], steps=32, size=32)
    (full,) = vizcore.trust(once, model, mode="full")
    assert full.scores["seed_stability"] is not None and "seed_stability" not in full.not_measured
    assert vizcore.trust(once, model, mode="off") == []


def test_transfer_gives_the_other_models_class_probability(data):
    tmp, images, _ = data
    path = export(trained_cnn(images, steps=60), tmp / "other.onnx", (1, 3, 32, 32), metadata=RANGE)
    model = vizcore.load(path, size=32)
    result = vizcore.render(model, ["class:0", "3:0"], steps=32, size=32)
    cls, unit = vizcore.trust(result, model, transfer=path)
    x = result.images[0].astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    import onnxruntime as ort

    logits = ort.InferenceSession(str(path)).run(None, {"x": x})[0][0]
    p = np.exp(logits - logits.max())
    assert cls.scores["transfer"]["probability"] == pytest.approx(float(p[0] / p.sum()), rel=1e-3)
    assert cls.scores["transfer"]["rank"] == int((logits > logits[0]).sum()) + 1
    assert unit.scores["transfer"] is None and unit.not_measured["transfer"] == "only for class units"


def test_thresholds_are_checked_and_change_the_verdict(fooling, data):
    model, result, _ = fooling
    with pytest.raises(OptionError, match="ratio_low"):
        TrustThresholds(ratio_low=math.nan)
    lenient = TrustThresholds(ratio_misleading=1e9, path_low=-2.0)
    (fool, _) = vizcore.trust(result, model, data[2], size=32, cache_dir=False, thresholds=lenient)
    assert fool.verdict != "misleading"
    assert result.extras["trust_settings"]["thresholds"]["ratio_misleading"] == 1e9


def test_cli_render_reports_the_verdict(data, capsys):
    tmp, _, folder = data
    path = tmp / "fool.onnx"
    out = tmp / "cli"
    assert main(["render", str(path), FOOL, "--size", "32", "--steps", "48", "--data", str(folder), "--out",
                 str(out), "-q"]) == 0
    assert "misleading" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["units"][0]["trust"]["verdict"] == "misleading" and m["trust"]["data"] is True
    assert main(["render", str(path), FOOL, "--size", "32", "--steps", "8", "--trust", "off", "--out",
                 str(tmp / "off"), "-q"]) == 0
    m = json.loads((tmp / "off" / "manifest.json").read_text())
    assert "trust" not in m["units"][0] and "trust" not in m
    with pytest.raises(SystemExit) as exc:  # argparse: a usage error
        main(["render", str(path), FOOL, "--trust", "sometimes", "--out", str(tmp / "x")])
    assert exc.value.code == 2
