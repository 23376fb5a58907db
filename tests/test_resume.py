"""A render stopped mid-way (SIGTERM, SIGKILL) keeps the chunks it finished; `--resume` continues from them and
writes the same images as a render that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import IMAGE_META, PlantedVGG, export

from vizcore.chunkcache import partial_folder
from vizcore.cli import main

ROOT = Path(__file__).resolve().parents[1]
# 12 units in chunks of 4 (the memory budget), 48 steps each: three chunks, the first lands on disk early
ARGS = ["6:all", "--steps", "48", "--size", "16", "--max-memory", "200K", "--quiet", "--trust", "off"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export(PlantedVGG(), tmp_path_factory.mktemp("m") / "planted.onnx", (1, 3, 16, 16), metadata=IMAGE_META)


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert main(["render", str(model), *ARGS, "--out", str(out)]) == 0
    assert not partial_folder(out).exists()  # a finished render leaves no chunks behind
    return {p.name: p.read_bytes() for p in out.glob("*.png")}


def _stop_after_first_chunk(model: Path, out: Path, sig: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "vizcore.cli", "render", str(model), *ARGS, "--out", str(out)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not list(partial_folder(out).glob("*.npz")):
            assert proc.poll() is None and time.monotonic() < deadline, "the render ended before its first chunk"
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopped_render_resumes_with_the_same_images(model, reference, tmp_path, capsys, sig):
    out = tmp_path / "out"
    _stop_after_first_chunk(model, out, sig)
    assert not out.exists()  # nothing half-written in the output folder
    kept = len(list(partial_folder(out).glob("*.npz")))
    assert 1 <= kept < 3
    capsys.readouterr()
    assert main(["render", str(model), *ARGS, "--out", str(out), "--resume"]) == 0
    assert f"resumed {kept} finished chunks" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == reference
    assert not partial_folder(out).exists()


def test_without_resume_a_render_starts_afresh(model, reference, tmp_path, capsys):
    out = tmp_path / "out"
    _stop_after_first_chunk(model, out, signal.SIGKILL)
    capsys.readouterr()
    assert main(["render", str(model), *ARGS, "--out", str(out)]) == 0
    assert "resumed" not in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == reference
