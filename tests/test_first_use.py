"""A new user's first run: shipped probe photos without scikit-image, output folders others can read."""

from __future__ import annotations

import os
import sys

import numpy as np

from vizcore import samples
from vizcore.outdir import write_folder


def test_shipped_photos_are_the_probes_without_scikit_image(monkeypatch):
    files = sorted(samples.SHIPPED_PHOTOS.glob("*.jpg"))
    assert 6 <= len(files) <= 10 and sum(f.stat().st_size for f in files) <= 400_000
    assert (samples.SHIPPED_PHOTOS / "LICENSE.txt").is_file()
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage.data -> ImportError
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    samples._photos.cache_clear()
    try:
        got, why = samples.photos((1, 3, 40, 40))
        probes = samples.probe_set((1, 3, 40, 40), noise_count=2, use_photos=True, images=None, seed=0)
    finally:
        samples._photos.cache_clear()
    assert why is None and got.shape == (len(files), 3, 40, 40)
    assert float(np.std(got)) > 0.05 and len({float(img.mean()) for img in got}) == len(files)
    assert probes.sources.get("skimage") == len(files)  # the real check, not noise only


def test_output_folders_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_folder(tmp_path / "out", False, lambda d: [d / "a.txt"] if (d / "a.txt").write_text("x") else [])
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_plugins_in_a_pipe_is_one_line_per_plugin_and_kind(capsys):
    from vizcore.cli import main

    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) < 60  # was one table cell of converters folded into ~100 lines
    conv = [ln for ln in lines if ln.startswith("  converters: ")]
    assert conv and "Conv@" in conv[0] and "│" not in "".join(lines)
