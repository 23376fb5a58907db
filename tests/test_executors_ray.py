"""The Ray executor on one local Ray instance (2 CPUs) per test session: the same images as a local render, a worker
that raises on one chunk (retried, split, reported), and an atlas that resumes after its driver is killed (-9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import TinyCNN, load_tiny

import vizcore
from vizcore.atlas.build import CACHE_DIR, build_report
from vizcore.executors import render
from vizcore.objectives import Channel

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
FAST = {"steps": 6, "size": 32, "seed": 3}


@pytest.fixture(scope="session")
def cluster() -> str:
    """One local Ray instance for the session; its workers import this checkout's vizcore. Shut down at the end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ex(cluster: str):  # noqa: ANN201
    from vizcore.executors.ray import RayExecutor

    executor = RayExecutor(keep_workers=True, max_retries=2)  # actors stay loaded between the tests
    yield executor
    executor.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> vizcore.Model:
    return load_tiny(TinyCNN(), tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def one_thread():  # noqa: ANN201
    """Local renders with one thread, as each CPU actor has: the float sums then run in the same order."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (out / CACHE_DIR).glob("*.json")]


def _pngs(out: Path) -> dict[str, bytes]:
    man = json.loads((out / "manifest.json").read_text())
    return {u["file"]: (out / u["file"]).read_bytes() for u in man["units"]}


def test_ray_renders_bitwise_what_the_local_engine_renders(ex, model, one_thread, tmp_path: Path) -> None:  # noqa: ANN001
    targets = ["3:0-9", "1:0-5"]
    ref = vizcore.render(model, targets, batch_size=4, **FAST)
    got = render(model, targets, batch_size=4, executor=ex, **FAST)
    assert got.settings["executor"] == "ray" and got.settings["chunk_units"] == ref.settings["chunk_units"] == 4
    assert np.array_equal(got.images, ref.images) and np.array_equal(got.values, ref.values)
    assert np.array_equal(got.best_values, ref.best_values) and got.traces == ref.traces

    opts = {"layers": [3], "units_per_layer": 8, "health": False, "fidelity": False, "steps": 6, "size": 32,
            "render_options": {"batch_size": 2}}
    plain = build_report(model, tmp_path / "plain", **opts).parent
    atlas = build_report(model, tmp_path / "ray", executor=ex, **opts).parent
    assert _pngs(atlas) == _pngs(plain)
    pids = {int(r["worker"].rsplit(":", 1)[1]) for r in _records(atlas)}
    assert len(pids) == 2 and os.getpid() not in pids  # two actors shared the chunks


def test_a_worker_that_raises_is_retried_then_its_unit_reported(ex, model, one_thread, tmp_path: Path) -> None:  # noqa: ANN001
    attempts = tmp_path / "attempts"

    class Exploding(Channel):  # defined here: Ray sends it by value
        def value(self, acts):  # noqa: ANN001, ANN202
            if self.channel == 5:
                with open(attempts, "a") as f:
                    f.write("5\n")
                raise RuntimeError("this unit always fails")
            return super().value(acts)

    objs = [Exploding(model.layer(3), c) for c in range(8)]
    got = render(model, objs, batch_size=4, executor=ex, **FAST)
    assert set(got.extras["failed"]) == {5} and "always fails" in got.extras["failed"][5]
    # chunk [4, 8), then its halves [4, 6), then [5]: each tried 1 + max_retries times by Ray before it counts
    assert attempts.read_text().count("5") == 3 * 3
    ref = vizcore.render(model, [Channel(model.layer(3), c) for c in range(4)], batch_size=4, **FAST)
    assert np.array_equal(got.images[:4], ref.images) and np.isfinite(np.delete(got.values, 5)).all()


_DRIVER = """
import sys
from vizcore.atlas.build import build_report
build_report(sys.argv[1], sys.argv[2], layers=[3], units_per_layer=16, steps=40, size=32, health=False,
             fidelity=False, render_options={"batch_size": 2}, executor="ray")
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_an_atlas_resumes_after_its_driver_is_killed(ex, model, cluster, one_thread, tmp_path: Path) -> None:  # noqa: ANN001
    ex.shutdown()  # the session's actors hold both CPUs: the driver below needs them (they restart afterwards)
    out = tmp_path / "atlas"
    env = {**os.environ, "RAY_ADDRESS": cluster, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "driver.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", _DRIVER, str(model.path), str(out)], env=env,
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while len(_records(out) if (out / CACHE_DIR).is_dir() else []) < 4:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {p.name: p.stat().st_mtime_ns for p in (out / CACHE_DIR).glob("*.json")}
    assert 4 <= len(before) < 16  # killed mid-run
    workers = {int(r["worker"].rsplit(":", 1)[1]) for r in _records(out)}
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)  # Ray ended the dead driver's actors

    plan = json.loads(next((out / CACHE_DIR / "plans").glob("*.json")).read_text())
    left = [c for c in plan["chunks"] if any(f"{u[0]}.json" not in before for u in c)]
    log: list[str] = []
    opts = {"layers": [3], "units_per_layer": 16, "health": False, "fidelity": False, "steps": 40, "size": 32,
            "render_options": {"batch_size": 2}}
    build_report(model, out, executor=ex, log=log.append, **opts)
    assert any(line.startswith(f"{16 - len(before)} units in {len(left)} chunks on ray") for line in log), log
    after = {p.name: p.stat().st_mtime_ns for p in (out / CACHE_DIR).glob("*.json")}
    assert {k: after[k] for k in before} == before and len(after) == 16  # nothing finished rendered twice
    plain = build_report(model, tmp_path / "plain", **opts).parent
    assert _pngs(out) == _pngs(plain)  # the same images as one uninterrupted local run
