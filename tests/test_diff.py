"""`vizcore diff`: per-layer changes, layers added/removed, regression thresholds, JSON/JUnit, exit codes, and
stored `check --json` reports as baselines."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_check_models import Planted, Wider, export

from vizcore.cli import main
from vizcore.health import CheckReport, check
from vizcore.health.config import CheckConfig
from vizcore.health.diff import compare

FAST = ["--size", "32", "--ascent", "none", "--no-fidelity"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("diff")
    return {"healthy": export(Planted(plant=False), d / "healthy.onnx"),
            "planted": export(Planted(), d / "planted.onnx"),
            "wider": export(Wider(plant=False), d / "wider.onnx")}


@pytest.fixture(scope="module")
def reports(paths: dict[str, Path]) -> dict[str, CheckReport]:
    return {k: check(p, size=32, ascent="none") for k, p in paths.items()}


def test_regressions_are_found_per_layer(reports: dict[str, CheckReport]) -> None:
    d = compare(reports["healthy"], reports["planted"])
    assert [x.name for x in d.layers] == ["/Relu", "/Relu_1", "/conv3/Conv"] and not d.added and not d.removed
    got = {(f.check, f.layer) for f in d.failures}
    assert got == {("dead", "/Relu"), ("dead", "/Relu_1"), ("constant", "/Relu"), ("constant", "/Relu_1")}
    relu = d.to_json()["layers"][0]
    assert relu["dead"] == {"old": 0, "new": 1, "fraction_change": pytest.approx(1 / 12), "added": [2], "removed": []}
    assert {tuple(p[:3]) for p in relu["duplicates"]["added"]} == {(0, 8, "flip_h"), (1, 7, "rot90")}
    assert compare(reports["planted"], reports["healthy"]).passed  # fixing faults is no regression
    assert compare(reports["planted"], reports["planted"]).passed


def test_thresholds(reports: dict[str, CheckReport]) -> None:
    lax = CheckConfig(max_dead_increase=0.1, max_constant_increase=0.1)
    assert compare(reports["healthy"], reports["planted"], lax).passed
    strict_dups = CheckConfig(max_dead_increase=0.1, max_constant_increase=0.1, fail_on_new_duplicates=True)
    got = {(f.check, f.layer) for f in compare(reports["healthy"], reports["planted"], strict_dups).failures}
    assert got == {("duplicates", "/Relu"), ("duplicates", "/Relu_1")}


def test_layers_added_and_removed(reports: dict[str, CheckReport]) -> None:
    d = compare(reports["healthy"], reports["wider"])
    assert d.added and not d.removed and d.passed
    assert compare(reports["wider"], reports["healthy"]).removed == d.added


def test_cli_with_models_and_stored_reports(paths: dict[str, Path], tmp_path: Path) -> None:
    js, xml = tmp_path / "d.json", tmp_path / "d.xml"
    assert main(["diff", str(paths["healthy"]), str(paths["planted"]), *FAST, "--json", str(js),
                 "--junit", str(xml)]) == 1
    data = json.loads(js.read_text())
    assert set(data) == {"old", "new", "passed", "layers", "added", "removed", "fidelity", "failures"}
    assert data["passed"] is False and len(data["failures"]) == 4
    root = ET.parse(xml).getroot()
    assert root.find("testsuite").get("failures") == "4"
    assert main(["diff", str(paths["healthy"]), str(paths["planted"]), *FAST, "--max-dead-increase", "0.1",
                 "--max-constant-increase", "0.1"]) == 0
    # a stored baseline from `vizcore check --json`
    base = tmp_path / "base.json"
    assert main(["check", str(paths["healthy"]), *FAST, "--json", str(base)]) == 0
    assert main(["diff", str(base), str(paths["planted"]), *FAST]) == 1
    assert main(["diff", str(base), str(base)]) == 0
    (tmp_path / "bad.json").write_text('{"layers": 3}')
    assert main(["diff", str(tmp_path / "bad.json"), str(base)]) == 2
    assert main(["diff", str(tmp_path / "missing.onnx"), str(base)]) == 2


def test_unrelated_models_have_nothing_to_compare(paths: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from check_zoo import export_kind

    other = export_kind("crnn", tmp_path)
    capsys.readouterr()
    assert main(["diff", str(paths["healthy"]), str(other), *FAST]) == 2
    assert "nothing to compare" in capsys.readouterr().err + capsys.readouterr().out
