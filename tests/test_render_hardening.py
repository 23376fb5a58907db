"""`vizcore render` hardening (issue 17): bad options refused before work, broken plugins named in one line, the
output folder taken whole (exporters add to png + manifest, --force replaces only vizcore's files, two renders
at once, interrupted saves), NaN objectives warned about."""

import json
import os
import re
import threading

import numpy as np
import pytest
import torch
from tiny import IMAGE_META, TinyCNN, export

import vizcore
from vizcore import cli, hookimpl, plugins
from vizcore.errors import OutputError, PluginError
from vizcore.objectives import Objective
from vizcore.plugins import Manager, Settings

FAST = ["--steps", "4", "--size", "32", "--quiet"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return export(TinyCNN(), tmp_path_factory.mktemp("m") / "tiny.onnx", (1, 3, 32, 32), metadata=IMAGE_META)


@pytest.fixture(scope="module")
def model(model_path):
    return vizcore.load(model_path, size=32)


def _cli(capsys, *argv):
    rc = cli.main(["render", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_error(err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err and lines and lines[0].startswith("error:"), err
    assert len(lines) <= 2 and sum(line.startswith("error:") for line in lines) == 1, err  # the message (+ hint)
    return lines[0]


# -- bad options: exit 2, one line, no traceback, nothing written ---------------------------------------------------
@pytest.mark.parametrize("args, text", [
    (["0:1", "--lr", "nan"], "finite"),
    (["0:1", "--lr", "inf"], "finite"),
    (["0:1", "--lr", "-0.1"], "positive"),
    (["0:1", "--lr", "fast"], "number"),
    (["0:1", "--l1", "nan"], "--l1"),
    (["0:1", "--tv", "inf"], "--tv"),
    (["0:1", "--range", "nan,1"], "finite"),
    (["0:1", "--max-memory", "inf"], "finite"),
    (["0:1", "--max-memory", "nan"], "memory"),
    (["0:1", "--max-memory=-2G"], "positive"),
    (["0:1", "--seed", "1e23"], "out of range"),
    (["0:1", "--seed", "x"], "seed"),
    (["0:1", "--steps", "2.5"], "integer"),
    (["0:1", "--steps", "1e12"], "hours"),
    (["0:1", "--size", "100000"], "needs at least"),
    (["0:1", "--relu-override", "nan"], "finite"),
    (["0:1", "--images-per-unit", "0"], "images_per_unit"),
    ([":3"], "malformed target"),
    (["0:"], "malformed target"),
    (["0:0-10000000"], "8 channels"),
    (["0:1", "--export", "gif"], "pip install plugins/vizcore-gif"),
    (["0:1", "--export", "zzz"], "unknown exporter"),
])
def test_bad_render_options_exit_2_in_one_line_and_leave_nothing(model_path, tmp_path, capsys, args, text):
    out = tmp_path / "o"
    rc, _, err = _cli(capsys, model_path, *FAST, *args, "--out", out)  # the last --steps/--size wins
    assert rc == 2, err
    assert text in err, err
    _one_error(err)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_huge_channel_range_is_refused_before_building_targets(model):
    from vizcore.targets import parse

    with pytest.raises(vizcore.errors.TargetError, match="8 channels"):
        parse(model, "0:0-10000000000000")


# -- plugins that break ---------------------------------------------------------------------------------------------
class _Const(Objective):
    """A plugin objective: `mode` decides how it misbehaves."""

    kind = "custom"

    def __init__(self, layer, mode=0):
        super().__init__()
        self.keys, self.mode = (layer,), int(mode)

    def value(self, acts):
        a = next(iter(acts.values()))
        if self.mode == 1:
            return a.mean(dim=(1, 2, 3)) * float("nan")
        if self.mode == 2:
            raise RuntimeError("boom in the middle")
        if self.mode == 3:
            return a.mean()  # a scalar, not one value per image
        return a.mean(dim=(1, 2, 3))


class _Broken:
    @hookimpl
    def vizcore_add_objectives(self):
        return {"const": _Const}

    @hookimpl
    def vizcore_add_params(self):
        def exploding(shape, units=1, generator=None, **options):
            raise ValueError("no spectrum here")
        return {"exploding": exploding}


@pytest.fixture
def broken_cli(monkeypatch):
    """Every Manager the CLI builds also holds the `broken-plugin` plugin."""
    init = plugins.Manager.__init__

    def with_plugin(self, settings=None):
        init(self, settings)
        self.register(_Broken(), "broken-plugin")

    monkeypatch.setattr(plugins.Manager, "__init__", with_plugin)


@pytest.mark.parametrize("args, text", [
    (["const:0:2"], "raised RuntimeError: boom in the middle"),
    (["const:0:3"], "returned shape ()"),
    (["0:1", "--param", "exploding"], "no spectrum here"),
])
def test_a_broken_plugin_is_one_plugin_error_naming_it(broken_cli, model_path, tmp_path, capsys, args, text):
    out = tmp_path / "o"
    rc, _, err = _cli(capsys, model_path, *args, "--out", out, *FAST)
    line = _one_error(err)
    assert rc == 2 and "broken-plugin" in line and text in line, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_nan_objective_warns_naming_the_units(model):
    m = Manager(Settings(autoload=False))
    m.register(_Broken(), "broken-plugin")
    msgs = []
    r = vizcore.render(model, ["const:0:1", "0:1"], plugins=m, steps=4, size=32, on_warning=msgs.append)
    assert np.isnan(r.values[0]) and np.isfinite(r.values[1])
    nan_msgs = [w for w in msgs if "NaN" in w]
    assert len(nan_msgs) == 1 and "const:0:1" in nan_msgs[0] and "0:1," not in nan_msgs[0]


def test_a_plugin_objective_that_raises_in_python_is_a_plugin_error(model):
    m = Manager(Settings(autoload=False))
    m.register(_Broken(), "broken-plugin")
    with pytest.raises(PluginError, match="broken-plugin"):
        vizcore.render(model, "const:0:2", plugins=m, steps=3, size=32)


# -- exporters add to the defaults; what is printed is what was written -----------------------------------------------
def test_an_extra_exporter_adds_to_png_and_manifest_and_the_manifest_lists_every_file(model_path, tmp_path,
                                                                                       capsys, monkeypatch):
    written_by_extra = []

    class Extra:
        @hookimpl
        def vizcore_add_exporters(self):
            def txt(result, out_dir, **_):
                p = out_dir / "notes.txt"
                p.write_text("x")
                written_by_extra.append(p)
                return [p]
            return {"txt": txt}

    init = plugins.Manager.__init__

    def with_extra(self, settings=None):
        init(self, settings)
        self.register(Extra(), "x")

    monkeypatch.setattr(plugins.Manager, "__init__", with_extra)
    out = tmp_path / "o"
    rc, stdout, err = _cli(capsys, model_path, "0:1", "class:1", "--export", "txt", "--out", out, *FAST)
    assert rc == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["0000_0_1.png", "0001_class_1.png", "grid.png", "manifest.json", "notes.txt"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["files"] == ["0000_0_1.png", "0001_class_1.png", "grid.png", "notes.txt"] and man["complete"]
    assert "-> 0000_0_1.png" in stdout and "wrote 5 files" in stdout


def test_printed_files_are_the_written_files(model, tmp_path, capsys):
    from rich.console import Console

    from vizcore.commands.render import _report

    r = vizcore.render(model, ["0:1", "0:2"], steps=2, size=32)
    console = Console(file=None, force_terminal=False, width=200)
    with console.capture() as cap:
        _report(console, r, [tmp_path / r.filename(0)], tmp_path)
    text = cap.get()
    assert f"-> {r.filename(0)}" in text and r.filename(1) not in text and "wrote 1 files" in text


# -- --force replaces what vizcore wrote, never other files -----------------------------------------------------------
def test_force_replaces_the_old_units_and_keeps_the_users_files(model_path, tmp_path, capsys):
    out = tmp_path / "o"
    assert _cli(capsys, model_path, "0:0-3", "--out", out, *FAST)[0] == 0
    (out / "mine.txt").write_text("precious")
    assert _cli(capsys, model_path, "class:1", "--out", out, "--force", *FAST)[0] == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["0000_class_1.png", "grid.png", "manifest.json", "mine.txt"]
    assert (out / "mine.txt").read_text() == "precious"
    man = json.loads((out / "manifest.json").read_text())
    assert [u["file"] for u in man["units"]] == ["0000_class_1.png"]


def test_force_over_an_old_style_manifest_without_files_list(model, tmp_path):
    out = tmp_path / "o"
    first = vizcore.render(model, ["0:0-2"], steps=2, size=32)
    first.save(out)
    man = json.loads((out / "manifest.json").read_text())
    del man["files"]
    (out / "manifest.json").write_text(json.dumps(man))
    vizcore.render(model, "0:5", steps=2, size=32).save(out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["0000_0_5.png", "grid.png", "manifest.json"]


# -- the folder is taken atomically ---------------------------------------------------------------------------------
def test_two_saves_into_one_new_folder_at_once_one_fails(model, tmp_path):
    r = vizcore.render(model, ["0:0", "0:1"], steps=2, size=32)
    out = tmp_path / "o"
    barrier = threading.Barrier(2)
    png = r.exporter_table["png"]

    def slow_png(result, folder, **kw):
        barrier.wait(timeout=30)  # both have passed the emptiness check and are writing
        return png(result, folder, **kw)

    r.exporter_table = dict(r.exporter_table, png=slow_png)
    outcomes = []

    def save():
        try:
            r.save(out)
            outcomes.append("ok")
        except OutputError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=save) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 2 and outcomes.count("ok") == 1, outcomes
    assert "\n" not in [o for o in outcomes if o != "ok"][0]
    assert sorted(p.name for p in out.iterdir()) == ["0000_0_0.png", "0001_0_1.png", "grid.png", "manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no temporary folder left


def test_a_second_forced_save_while_one_holds_the_lock_fails(model, tmp_path):
    out = tmp_path / "o"
    r = vizcore.render(model, "0:0", steps=2, size=32)
    r.save(out)
    (out / ".vizcore.lock").write_text("123")
    with pytest.raises(OutputError, match="another vizcore"):
        r.save(out, force=True)
    (out / ".vizcore.lock").unlink()
    r.save(out, force=True)
    assert not (out / ".vizcore.lock").exists()


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_save_that_fails_midway_leaves_all_or_nothing(model, tmp_path, force, exc):
    out = tmp_path / "o"
    old = vizcore.render(model, ["0:0", "0:1"], steps=2, size=32)
    if force:
        old.save(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()} if force else None
    r = vizcore.render(model, ["0:2", "0:3", "0:4"], steps=2, size=32)
    png = r.exporter_table["png"]
    calls = []

    def failing_png(result, folder, **kw):
        from vizcore.files import atomic_write_bytes

        atomic_write_bytes(folder / result.filename(0), b"half")
        calls.append(1)
        raise exc

    r.exporter_table = dict(r.exporter_table, png=failing_png)
    with pytest.raises((OSError, KeyboardInterrupt, OutputError)):
        r.save(out, force=force)
    assert calls and png is not None
    if force:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old render, untouched
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["o"] if force else [])


def test_ctrl_c_during_render_exits_130_and_writes_nothing(model_path, tmp_path, capsys, monkeypatch):
    from vizcore.engine import loop

    real = loop._observe

    def interrupt(r, run, p, step, *rest):
        if step == 2:
            raise KeyboardInterrupt
        return real(r, run, p, step, *rest)

    monkeypatch.setattr(loop, "_observe", interrupt)
    out = tmp_path / "o"
    rc, _, err = cli.main(["render", str(model_path), "0:1", "--out", str(out), "--steps", "4", "--size", "32"]), \
        None, capsys.readouterr().err
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_progress_bar_shows_the_elapsed_time_when_done(model_path, tmp_path, capsys):
    rc = cli.main(["render", str(model_path), "0:1", "--out", str(tmp_path / "o"), "--steps", "8", "--size", "32"])
    err = capsys.readouterr().err
    assert rc == 0
    last = [line for line in err.splitlines() if "steps" in line][-1]
    # a terminal gets the rich bar (elapsed as H:MM:SS), a log the plain line (elapsed in seconds)
    assert "8/8" in last and "-:--:--" not in last and re.search(r"\d:\d\d:\d\d|, \d+ s$", last)


def test_a_bar_stopped_early_is_complete_and_its_time_column_shows_the_elapsed_time():
    import io
    import types

    from rich.console import Console
    from rich.progress import Progress, TimeRemainingColumn

    from vizcore.commands.render import _Progress

    column = TimeRemainingColumn(elapsed_when_finished=True)
    progress = Progress(column, console=Console(file=io.StringIO()))
    bar = _Progress(progress)
    run = types.SimpleNamespace(steps=8, n_chunks=1, chunk=0, unit_offset=0, units=[0], total_units=1)
    for step in range(1, 6):  # stopped early at step 5 of 8
        bar(run, types.SimpleNamespace(step=step, values=torch.zeros(1)))
    bar.stop(done=True)
    task = progress.tasks[0]
    assert task.finished and task.completed == 8
    task.finished_time = 75.0
    assert column.render(task).plain == "0:01:15"  # the elapsed time, where an ETA would say 0:00:00


def test_save_lists_its_files_and_the_manifest_says_complete(model, tmp_path):
    r = vizcore.render(model, ["0:0"], steps=2, size=32)
    paths = r.save(tmp_path / "o")
    assert sorted(p.name for p in paths) == ["0000_0_0.png", "grid.png", "manifest.json"]
    assert all(p.is_file() and p.parent == tmp_path / "o" for p in paths)
    assert os.listdir(tmp_path) == ["o"]
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["complete"] is True


@pytest.mark.parametrize("param", ["fft", "pixel"])
def test_a_volume_model_is_refused_in_one_line(tmp_path, capsys, param):
    """A Conv3d model (5-D input) loads, but rendering volumes is not built: one line, exit 2, no folder left."""
    class Volume(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(x))

    path = export(Volume(), tmp_path / "volume.onnx", (1, 1, 8, 8, 8), dynamic=False)
    out = tmp_path / "out"
    rc, _, err = _cli(capsys, path, "0:0", "--steps", "2", "--param", param, "--out", out, "-q", "--range", "0,1",
                      "--preprocess", "none")
    assert rc == 2 and "(N, C, H, W)" in _one_error(err)
    assert not out.exists()
