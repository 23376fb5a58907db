"""`vizcore.check` and `vizcore check`: planted faults found exactly, a healthy model passes, JSON schema, JUnit,
exit codes, thresholds from options and config files."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from test_check_models import PLANTED, Planted, export, found

import vizcore
from vizcore.cli import main
from vizcore.errors import OptionError
from vizcore.health import CheckReport, check
from vizcore.health.schema import own_validate, validate

FAST = ["--size", "32"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("check")
    (d / "planted").mkdir()
    (d / "healthy").mkdir()
    return {"planted": export(Planted(), d / "planted" / "planted.onnx"),
            "healthy": export(Planted(plant=False), d / "healthy" / "healthy.onnx")}


@pytest.fixture(scope="module")
def planted_report(models: dict[str, Path]) -> CheckReport:
    return check(models["planted"], size=32)


def test_finds_exactly_the_planted_faults(planted_report: CheckReport) -> None:
    assert found(planted_report) == PLANTED
    sims = [s for lay in planted_report.layers for *_, s in lay.duplicates]
    assert sims and all(s > 0.999 for s in sims)
    assert planted_report.passed  # 1 of 12 dead is under the default max-dead-fraction; duplicates only reported
    assert planted_report.fidelity["available"] and planted_report.fidelity["max_abs_diff"] < 1e-4


def test_healthy_model_passes(models: dict[str, Path]) -> None:
    rep = check(models["healthy"], size=32)
    assert rep.passed and not rep.failures
    assert all(not lay.dead and not lay.constant and not lay.duplicates for lay in rep.layers)
    assert [lay.channels for lay in rep.layers] == [12, 16, 8]


def test_json_follows_the_shipped_schema(planted_report: CheckReport) -> None:
    data = json.loads(json.dumps(planted_report.to_json(), allow_nan=False))
    assert data["schema_version"] == 2 and validate(data) == [] and own_validate(data) == []
    assert data["passed"] is True and data["failures"] == []
    assert data["model"]["sha256"] and data["model"]["nonfinite_weights"] == []
    relu = data["layers"][0]
    assert (relu["name"], relu["op_chain"], relu["nodes"], relu["conv"], relu["gated"], relu["gate"]) == \
        ("/Relu", "Conv+Relu", ["/conv1/Conv", "/Relu"], "/conv1/Conv", True, "relu")
    assert relu["weight"] == "conv1.weight" and relu["dead"] == [2] and relu["zero_weights"] == [2, 5]
    assert [u["verdict"] for u in relu["units"]].count("dead") == 1 and relu["units"][2]["apoz"] == 1.0
    assert data["layers"][2]["gated"] is False and data["layers"][2]["dead"] == []
    for lay in data["layers"]:
        assert lay["duplicate_pairs"] == len(lay["duplicates"])
        for d in lay["duplicates"]:
            assert d["filter"] < d["copy"] and 0.95 <= d["similarity"] <= 1.0 + 1e-6
    back = CheckReport.from_json(data).to_json()
    assert back == {**data, "passed": True}
    broken = {**data, "layers": [{**relu, "dead": ["2"]}]}
    assert validate(broken) and own_validate(broken)  # both validators see a string channel index


def test_version_1_reports_are_read(planted_report: CheckReport) -> None:
    old = {"model": planted_report.model, "passed": True, "fidelity": {"available": False}, "failures": [],
           "layers": [{"name": "/Relu", "channels": 12, "dead": [2], "constant": [5], "duplicates": [[0, 8, "flip_h",
                                                                                                       0.99]]}]}
    rep = CheckReport.from_json(json.loads(json.dumps(old)))
    assert rep.layers[0].dead == [2] and rep.layers[0].duplicates == [[0, 8, "flip_h", 0.99]]
    assert validate(json.loads(rep.dumps())) == []  # upgraded to version 2 on the way out
    with pytest.raises(OptionError):
        CheckReport.from_json({**old, "schema_version": 99})


def test_thresholds_from_options_fail_the_right_layers(models: dict[str, Path]) -> None:
    m = vizcore.load(models["planted"], size=32)
    rep = check(m, size=32, max_dead_fraction=0.05, fail_on_duplicates=True, fidelity=False)
    got = {(f.check, f.layer) for f in rep.failures}
    assert got == {("dead", "/Relu"), ("dead", "/Relu_1"), ("duplicates", "/Relu"), ("duplicates", "/Relu_1")}
    assert not rep.passed


def test_layers_option_and_per_layer_override(models: dict[str, Path], tmp_path: Path) -> None:
    rep = check(models["planted"], size=32, layers=["/Relu_1"], fidelity=False, duplicates=False)
    assert [lay.name for lay in rep.layers] == ["/Relu_1"] and rep.layers[0].dead == [3]
    rep = check(models["planted"], size=32, layers=["1"], fidelity=False, duplicates=False, dead=False)
    assert [lay.name for lay in rep.layers] == ["/Relu"]


def test_nan_weights_fail(tmp_path: Path) -> None:
    net = Planted(plant=False)
    with torch.no_grad():
        net.conv3.weight[0, 0] = float("nan")
    rep = check(export(net, tmp_path / "nan.onnx"), size=32, duplicates=False)
    checks = {f.check for f in rep.failures}
    assert "nonfinite-weights" in checks and not rep.passed
    assert rep.model["nonfinite_weights"][0]["nan"] == 1
    json.dumps(rep.to_json(), allow_nan=False)  # NaN never leaks into the JSON


def test_cli_exit_codes_json_and_junit(models: dict[str, Path], tmp_path: Path) -> None:
    js, xml = tmp_path / "r.json", tmp_path / "r.xml"
    assert main(["check", str(models["planted"]), *FAST, "--json", str(js), "--junit", str(xml)]) == 0
    data = json.loads(js.read_text())
    assert data["passed"] is True and len(data["layers"]) == 3
    root = ET.parse(xml).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 2 + 3 * 3  # fidelity, weights; dead/constant/duplicates per layer
    assert root.find("testsuite").get("failures") == "0"

    assert main(["check", str(models["planted"]), *FAST, "--max-dead-fraction", "0.05", "--junit", str(xml),
                 "--no-duplicates", "--ascent", "none"]) == 1
    failed = {(c.get("classname"), c.get("name")) for c in ET.parse(xml).getroot().iter("testcase")
              if c.find("failure") is not None}
    assert failed == {("/Relu", "dead"), ("/Relu_1", "dead")}
    assert main(["check", str(tmp_path / "missing.onnx")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["check", str(models["planted"]), "--max-dead-fraction", "lots"])
    assert exc.value.code == 2
    assert main(["check", str(models["planted"]), "--max-dead-fraction", "1.5"]) == 2


def test_json_to_stdout(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(models["healthy"]), *FAST, "--json", "-", "--no-dead"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is True and math.isfinite(data["fidelity"]["max_abs_diff"])


def test_config_files_next_to_the_model(models: dict[str, Path]) -> None:
    folder = models["planted"].parent
    args = ["check", str(models["planted"]), *FAST, "--no-fidelity", "--ascent", "none"]
    try:
        (folder / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.vizcore.check]\n'
                                               "fail-on-duplicates = true\n")
        assert main(args) == 1
        assert main([*args, "--no-fail-on-duplicates"]) == 0  # the command line wins over the file
        (folder / "vizcore.toml").write_text('[check]\nmax-dead-fraction = 0.05\n\n[check.overrides."/Relu*"]\n'
                                             "max-dead-fraction = 0.5\n")
        assert main([*args, "--no-duplicates"]) == 0  # vizcore.toml wins; the override lifts both Relu layers
        (folder / "vizcore.toml").write_text('[check]\nmax-dead-fraction = 0.05\n\n[check.overrides."/Relu"]\n'
                                             "max-dead-fraction = 0.5\n")
        assert main([*args, "--no-duplicates"]) == 1  # /Relu_1 is still held to 5 %
        (folder / "vizcore.toml").write_text("[check]\nmax-dead-fraktion = 0.05\n")
        assert main(args) == 2  # an unknown key is a usage error
    finally:
        for name in ("pyproject.toml", "vizcore.toml"):
            (folder / name).unlink(missing_ok=True)


@pytest.mark.parametrize("width", [80, 160])
def test_table_keeps_every_layer_name_whole(models: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    """A CI log is 80 columns: names leave the table for a numbered list rather than being cut or squeezed out."""
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["check", str(models["planted"]), *FAST, "--no-fidelity"]) in (0, 1)
    out = capsys.readouterr().out
    report = check(models["planted"], ascent="none", fidelity=False)
    lines = out.splitlines()
    for lay in report.layers:
        assert any(lay.name in line for line in lines), f"{lay.name} is not printed whole"
    assert "…" not in "".join(line.split("┃")[1] for line in lines if line.startswith("┃"))  # the # column
