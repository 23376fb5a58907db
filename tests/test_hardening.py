"""Hardening, round two: the surfaces added since the first campaign (prune, data folders, reports, configs, feeds,
the Python API) keep the promise: one line and exit 2 for a user's mistake, nothing of the user's overwritten, no
silent wrong result. Each case failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_check_models import Planted, export

import vizcore
from vizcore.cli import main
from vizcore.errors import OptionError, TargetError


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    return export(Planted(), tmp_path / "m.onnx")


def _one_line(capsys: pytest.CaptureFixture[str], text: str) -> None:
    err = capsys.readouterr().err
    progress = ("check:", "diff:", "render:", "prune:")  # plain progress lines when stderr is not a terminal
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(progress)]
    assert lines and lines[0].startswith("error:") and len(lines) <= 2 and text in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["check", "MODEL", "--json", "MODEL"], ["check", "MODEL", "--junit", "MODEL"],
                                  ["prune", "MODEL", "--dry-run", "--json", "MODEL"],
                                  ["diff", "MODEL", "MODEL", "--json", "MODEL"]])
def test_a_report_never_replaces_the_model(argv, planted, capsys):
    before = planted.read_bytes()
    assert main([a.replace("MODEL", str(planted)) for a in argv]) == 2
    _one_line(capsys, "an input of this command")
    assert planted.read_bytes() == before


def test_prune_out_keeps_an_unrelated_data_file_and_needs_a_folder(planted, tmp_path, capsys):
    ext = tmp_path / "ext" / "m.onnx"
    ext.parent.mkdir()
    onnx.save_model(onnx.load(str(planted)), str(ext), save_as_external_data=True, location="m.onnx.data",
                    size_threshold=0)
    out = tmp_path / "x.onnx"
    (tmp_path / "x.onnx.data").write_text("someone else's weights")
    assert main(["prune", str(ext), "--out", str(out), "--probes", "4", "--latency-reps", "0"]) == 2
    _one_line(capsys, "x.onnx.data exists")
    assert (tmp_path / "x.onnx.data").read_text() == "someone else's weights" and not out.exists()
    (tmp_path / "afile").write_text("")
    for where in (tmp_path / "afile" / "p.onnx", Path("/proc/vizcore-nope/p.onnx")):
        assert main(["prune", str(planted), "--out", str(where), "--probes", "4", "--latency-reps", "0"]) == 2
        _one_line(capsys, "cannot")


def test_prune_says_in_one_line_that_onnxruntime_refuses_the_model(planted, tmp_path, capsys):
    m = onnx.load(str(planted))
    for n in m.graph.node:
        n.name = "same"  # onnx's checker accepts duplicate node names; onnxruntime does not
    onnx.checker.check_model(m)
    bad = tmp_path / "dup.onnx"
    onnx.save(m, str(bad))
    assert main(["prune", str(bad), "--dry-run", "--probes", "4"]) == 2
    _one_line(capsys, "onnxruntime cannot run the model")


def test_prune_verification_sees_nan():
    from vizcore.prune.verify import compare

    class Fake:
        def __init__(self, y: np.ndarray) -> None:
            self.y = y

        def get_outputs(self) -> list:
            return [type("O", (), {"name": "y"})()]

        def run(self, outs: list, feed: dict) -> list:
            return [self.y[: len(feed["x"])]]

    x = {"x": np.zeros((2, 1), np.float32)}
    good = np.array([[1.0, 2.0], [3.0, 4.0]])
    c = compare(Fake(good), Fake(np.array([[1.0, np.nan], [3.0, 4.0]])), "t", x, 2)
    assert c.worst == float("inf")  # was: max |diff| 0, top-1 100 %
    assert compare(Fake(good), Fake(good.copy()), "t", x, 2).worst == 0.0


def test_param_options_are_checked_against_their_kind(planted, tmp_path, capsys):
    for opt, text in (("dc=off", "not true or false"), ("rms=abc", "not a number")):
        assert main(["render", str(planted), "0:0", "--param", "signal", "--param-option", opt, "--steps", "2",
                     "--out", str(tmp_path / "o"), "--size", "16", "-q"]) == 2
        _one_line(capsys, text)


def test_memory_products_are_refused_before_any_work(planted, tmp_path, capsys):
    assert main(["render", str(planted), "0:0", "--images-per-unit", "100000000", "--out", str(tmp_path / "o"),
                 "-q"]) == 2
    _one_line(capsys, "would hold")
    assert main(["check", str(planted), "--size", "1024", "--noise-probes", "1024", "--batch", "1024",
                 "--no-fidelity"]) == 2
    _one_line(capsys, "would hold")
    assert main(["prune", str(planted), "--dry-run", "--probes", "4000", "--size", "4096"]) == 2
    _one_line(capsys, "GiB")


def test_the_python_api_names_wrong_types(planted):
    model = vizcore.load(planted, size=16)
    for call, error in ((lambda: vizcore.check(model, config=5), OptionError),
                        (lambda: vizcore.check(model, max_dead_fraction="x"), OptionError),
                        (lambda: vizcore.check(model, ascent_lr=float("nan")), OptionError),
                        (lambda: vizcore.render(model, None), TargetError),
                        (lambda: vizcore.render(model, "0:0", param_options=5), OptionError),
                        (lambda: vizcore.render(model, "0:0", steps=2, preprocess="mean=nan"), OptionError)):
        with pytest.raises(error):
            call()


def test_a_nan_objective_is_null_in_a_strict_manifest(planted, tmp_path):
    from vizcore.objectives import Objective

    class Nan(Objective):
        def layers(self) -> list[int]:
            return [1]

        def value(self, acts):  # noqa: ANN001, ANN201
            return acts[1].mean(dim=(1, 2, 3)) * float("nan")

    model = vizcore.load(planted, size=16)
    r = vizcore.render(model, [Nan(), "1:0"], steps=2, size=16, on_warning=lambda m: None)
    r.save(tmp_path / "o")
    text = (tmp_path / "o" / "manifest.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_prune_refuses_the_check_report_of_another_model(planted, tmp_path, capsys):
    other = export(Planted(seed=1), tmp_path / "other.onnx")
    report = tmp_path / "other.json"
    assert main(["check", str(other), "--size", "16", "--no-fidelity", "--no-duplicates", "--ascent", "none",
                 "--json", str(report), "-q"]) == 0
    assert main(["prune", str(planted), "--dry-run", "--probes", "4", "--from-check", str(report)]) == 2
    _one_line(capsys, "the report is about another model")
