"""`vizcore report --data`: unit pages show exemplar crops with heat maps and the trust verdict with its numbers,
layer pages sort by verdict, the front page counts verdicts per layer, and the health card says which layers it
covers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image
from tiny import FoolingNet, export, save_images, smooth_images

import vizcore
from vizcore.atlas import build_report
from vizcore.errors import OptionError


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("atlas-trust")
    data = save_images(smooth_images(120), tmp / "data")
    model = vizcore.load(export(FoolingNet(), tmp / "fool.onnx", (1, 3, 32, 32), metadata={"vizcore.range": "0,1"}),
                         size=32)
    index = build_report(model, tmp / "out", layers=["/conv2/Conv"], units_per_layer=3, steps=64, size=32,
                         fidelity=False, data=data, health=True)
    return model, index.parent


def test_unit_pages_show_verdicts_numbers_and_exemplar_heat_maps(report):
    model, out = report
    page = (out / f"layer-{model.layer('/conv2/Conv').index}.html").read_text()
    units = json.loads((out / "manifest.json").read_text())["units"]
    assert [u["trust"]["verdict"] for u in units][0] == "misleading"  # the planted fooling channel
    assert all(u["trust"]["verdict"] != "misleading" for u in units[1:])
    assert 'class="verdict v-misleading"' in page and "path similarity" in page and "÷ data p99 / max" in page
    strip = out / units[0]["exemplars"]
    assert strip.is_file() and f'src="{units[0]["exemplars"]}"' in page
    a = np.asarray(Image.open(strip))
    assert a.shape[:2] == (3 * 96 + 4, 3 * 96 + 4)  # 9 crops of 96 px, 3 by 3
    r, g, b = (a[..., i].astype(int) for i in range(3))
    assert (r >= g - 2).all() and (g >= b - 2).all()  # grey input under a dark-red-to-white heat map: no other hue
    assert (r - b).max() > 40  # (the smooth photos themselves have green and blue blobs)
    assert re.search(r'data-verdict="0" data-activation="[0-9.]+"', page)  # what "sort by verdict" reads
    assert 'data-sort="verdict"' in page


def test_front_page_counts_verdicts_and_labels_the_health_card(report):
    model, out = report
    index = (out / "index.html").read_text()
    assert "1 misleading" in index
    assert "health check · 1 of 2 layers" in index  # the check covered the shown layer, not the whole model
    assert "the shown layers only" in index


def test_without_data_trust_is_not_measured_and_a_bad_folder_fails_first(report, tmp_path):
    model, _ = report
    index = build_report(model, tmp_path / "plain", layers=["/conv2/Conv"], units_per_layer=1, steps=8, size=32,
                         fidelity=False, health=False)
    units = json.loads((index.parent / "manifest.json").read_text())["units"]
    assert units[0]["trust"]["verdict"] is None and "--data" in units[0]["trust"]["reasons"][0]
    with pytest.raises(OptionError, match="nothing"):
        build_report(model, tmp_path / "bad", layers=["/conv2/Conv"], units_per_layer=1, steps=8, size=32,
                     fidelity=False, health=False, data=tmp_path / "nothing")
    assert not (tmp_path / "bad").exists()
