"""First-party plugins and the docs' example plugin, pip-installed into a throwaway folder and used as a user would.

The packages are built and installed once per module (`pip install --no-deps --no-build-isolation --target`,
a few seconds) from copies, so the source tree gets no build/ or egg-info folders, and the venv is untouched.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import TinyCNN, export

import vizcore
from vizcore import cli, plugins
from vizcore.plugins import Manager, Settings

ROOT = Path(__file__).resolve().parents[1]


def docs_example(dest: Path) -> Path:
    """Write the files of the complete plugin in docs/plugins.md (`<!-- file: PATH -->` then a fenced block)."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    files = re.findall(r"<!-- file: (\S+) -->\s*```\w*\n(.*?)```", text, flags=re.S)
    assert files, "docs/plugins.md lost its example plugin"
    for rel, body in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(body)
    return dest / Path(files[0][0]).parts[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """vizcore-gif, vizcore-maco and the docs' vizcore-peak installed into a folder put first on sys.path."""
    tmp = tmp_path_factory.mktemp("plugins")
    sources = [shutil.copytree(ROOT / "plugins" / name, tmp / "src" / name,
                               ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"))
               for name in ("vizcore-gif", "vizcore-maco")]
    sources.append(docs_example(tmp / "src"))
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-compile", "--disable-pip-version-check", "--no-index", "--target", str(site),
                    *map(str, sources)], check=True, capture_output=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        for var in ("VIZCORE_DISABLE_PLUGIN_AUTOLOAD", "VIZCORE_DISABLE_PLUGINS", "VIZCORE_STRICT_PLUGINS"):
            mp.delenv(var, raising=False)
        plugins.reset()
        yield site
        plugins.reset()
        for name, mod in list(sys.modules.items()):
            if str(getattr(mod, "__file__", None) or "").startswith(str(site)):
                del sys.modules[name]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """tests/tiny.py's TinyCNN with its first node named `conv` (8 channels, 32 px)."""
    return export(TinyCNN(), tmp_path_factory.mktemp("model") / "tiny.onnx", (1, 3, 32, 32), names={0: "conv"})


def test_installed_plugins_are_listed_with_version_source_and_what_they_add(installed, capsys):
    assert cli.main(["plugins", "--json"]) == 0
    out = capsys.readouterr()
    assert out.err == ""
    found = {p["name"]: p for p in json.loads(out.out)["plugins"] if p["source"] == "entry point"}
    expected = {"vizcore-gif": {"exporters": ["gif"]}, "vizcore-maco": {"params": ["maco"]},
                "vizcore-peak": {"objectives": ["peak"]}}
    for name, adds in expected.items():
        assert found[name]["adds"] == adds and found[name]["version"] == "0.1.0"
        assert found[name]["package"] == name and found[name]["status"] == "ok"
    assert cli.main(["plugins"]) == 0
    table = capsys.readouterr().out
    assert "vizcore-peak" in table and "objectives: peak" in table


def test_plugins_work_through_the_python_api(installed, model_path, tmp_path):
    result = vizcore.render(model_path, ["peak:conv:1", "conv:2"], steps=24, size=32, param="maco", device="cpu",
                            record_every=4, preprocess="none", value_range="0,1", seed=0,
                            exporters=["png", "gif"])
    assert result.settings["param"] == "maco"
    assert [u.label for u in result.units][0] == "peak(conv:1)"
    for trace in result.traces:
        assert trace[-1] > trace[0]  # the objectives rose through the MACO phase
    frames = result.extras["gif"]["frames"]
    assert len(frames) == 2 and frames[0].shape[0] >= 3  # recorded by the gif plugin's step hook
    paths = result.save(tmp_path / "out", exporters=["png", "gif"])
    assert sorted(p.name for p in paths if p.suffix == ".gif") == ["0000_peak_conv_1.gif", "0001_conv_2.gif"]


def test_disabled_plugin_is_not_used(installed, model_path, capsys):
    assert cli.main(["--disable-plugin", "vizcore-maco", "plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert next(p for p in data["plugins"] if p["name"] == "vizcore-maco")["status"] == "disabled"
    without = Manager(Settings(disabled=frozenset({"vizcore-maco"})))
    with pytest.raises(vizcore.VizcoreError, match="unknown param 'maco'"):
        vizcore.render(model_path, "conv:0", steps=2, param="maco", device="cpu", plugins=without)
    with_maco = vizcore.render(model_path, "conv:0", steps=2, size=32, param="maco", device="cpu")
    assert with_maco.settings["param"] == "maco"


def test_gif_frames_are_recorded_only_for_renders_exporting_a_gif(installed, model_path):
    """vizcore-gif used to record frames on every render (check ascents and atlases included)."""
    fast = dict(steps=8, size=32, device="cpu", preprocess="none", value_range="0,1")
    plain = vizcore.render(model_path, ["conv:1"], **fast)
    gif = vizcore.render(model_path, ["conv:1"], exporters=["png", "gif"], **fast)
    assert "gif" not in plain.extras
    assert gif.extras["gif"]["frames"][0].shape[0] >= 2


def test_plugins_work_through_the_cli(installed, model_path, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["render", str(model_path), "peak:conv:1", "conv:2", "--param", "maco", "--export", "png",
                     "--export", "gif", "--export", "manifest", "--steps", "12", "--size", "32", "--device", "cpu",
                     "--quiet", "--preprocess", "none", "--range", "0,1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["param"] == "maco"
    assert [u["target"] for u in manifest["units"]] == ["peak:conv:1", "conv:2"]
    from PIL import Image

    for unit in manifest["units"]:
        with Image.open(out / unit["file"].replace(".png", ".gif")) as gif:
            assert gif.n_frames >= 3 and gif.size == (32, 32)
