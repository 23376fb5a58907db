import json

import numpy as np
import pytest
from PIL import Image
from tiny import IMAGE_META, TinyCNN, export

from vizcore.cli import main

HOSTILE = "../../evil/<b>x</b>"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return export(TinyCNN(), tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 3, 32, 32), names={3: HOSTILE},
                  metadata=IMAGE_META)


def test_render_writes_pngs_grid_and_manifest(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["render", str(model_path), f"{HOSTILE}:0-2", "class:1", "--steps", "8", "--size", "32",
               "--out", str(out), "--quiet"])
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert "grid.png" in files and "manifest.json" in files
    man = json.loads((out / "manifest.json").read_text())
    assert man["model"]["sha256"] and man["settings"]["steps"] == 8
    assert [u["channel"] for u in man["units"]] == [0, 1, 2, 1]
    for u in man["units"]:
        f = out / u["file"]
        assert f.parent == out and f.is_file()  # the hostile node name never leaves DIR
        assert "/" not in u["file"] and ".." not in u["file"]
        img = np.asarray(Image.open(f))
        assert img.shape == (32, 32, 3) and img.std() > 0
        assert len(u["trace"]) >= 1 and isinstance(u["value"], float)
    assert not list(tmp_path.glob("evil*")) and not (tmp_path.parent / "evil").exists()


def test_existing_output_is_refused_and_kept(model_path, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "mine.txt"
    keep.write_text("precious")
    rc = main(["render", str(model_path), "0:1", "--steps", "2", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "not empty" in err and "Traceback" not in err
    assert keep.read_text() == "precious"
    assert main(["render", str(model_path), "0:1", "--steps", "2", "--size", "32", "--out", str(out), "--force",
                 "--quiet"]) == 0
    assert keep.read_text() == "precious"


@pytest.mark.parametrize("args, text", [
    (["nope:1"], "no layer named"),
    (["0:99"], "8 channels"),
    (["0:1", "--steps", "0"], "positive"),
    (["0:1", "--finish", "1.5"], "finish is a fraction"),
    (["0:1", "--param", "zzz"], "valid: fft, pixel"),
    (["0:1", "--transforms", "zzz"], "valid:"),
    (["0:1", "--size", "2"], "too small"),
    (["0:1", "--device", "cuda:7"], "CUDA"),
    (["0:1", "--export", "zzz"], "unknown exporter"),
    (["0:1@999,999"], "position"),
])
def test_bad_input_is_one_line_exit_2(model_path, tmp_path, capsys, args, text):
    rc = main(["render", str(model_path), *args, "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert text in err and "Traceback" not in err


def test_unwritable_output(model_path, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["render", str(model_path), "0:1", "--out", str(blocker / "sub"), "--quiet"])
    assert rc == 2 and "Traceback" not in capsys.readouterr().err


def test_a_bad_target_prints_only_the_error_not_an_empty_progress_bar(model_path, tmp_path, capsys):
    rc = main(["render", str(model_path), "nope:1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: no layer named"), repr(err[:80])
