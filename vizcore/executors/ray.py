"""The Ray executor: one actor per worker loads the model once and renders chunks; results stream back with ray.wait.

Retries are Ray's: an actor that dies is restarted (`max_restarts`) and its chunk re-run (`max_task_retries`); a
chunk that raises is re-run too (`retry_exceptions`). What still fails comes back to the driver, which splits the
chunk or reports the unit. GPU clusters get `num_gpus = 1 / actors_per_gpu` per actor, CPU clusters one actor per
`threads` CPUs. Ray is imported only here, and only when this executor starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError, OptionError
from .base import INSTALL_HINT, Chunk, ChunkResult

if TYPE_CHECKING:
    from ..engine.options import RenderOptions
    from ..model import Model
    from ..objectives import Objective


def import_ray() -> Any:
    """The `ray` module, or an OptionError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise OptionError("--executor ray needs Ray, which is not installed", INSTALL_HINT) from exc
    return ray


class ModelWorker:
    """The actor's body: the model loaded once (from the path, or from the bytes sent when the path is not there)."""

    def __init__(self, path: str, data: bytes | None, sha256: str, size: int | None, threads: int | None,
                 device: str) -> None:
        import torch

        from ..api import load
        from ..engine.device import cpu_heap, resolve_device

        if threads:
            torch.set_num_threads(int(threads))
        src = Path(path)
        if not src.is_file() or _sha256(src) != sha256:
            if data is None:
                raise ModelLoadError(f"the worker cannot read {path} (or it is another model)",
                                     "put the model at the same path on every node")
            fd, tmp = tempfile.mkstemp(suffix=".onnx")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            src = Path(tmp)
        self.model = load(src, size=size)
        self.name = f"{os.uname().nodename}:{os.getpid()}"
        self._heap = cpu_heap() if resolve_device(device).type == "cpu" else None
        if self._heap is not None:
            self._heap.__enter__()  # the actor process is ours: keep the render heap for its whole life

    def plan(self, objectives: list[Objective], options: RenderOptions) -> tuple[int, int]:
        from .worker import plan_chunks

        return plan_chunks(self.model, objectives, options)

    def render(self, chunk: Chunk) -> ChunkResult:
        from .worker import render_chunk

        return render_chunk(self.model, chunk, worker=self.name)

    def pid(self) -> int:
        return os.getpid()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RayExecutor:
    """Chunks as Ray actor tasks. `address`: None (RAY_ADDRESS or a new local instance) or `ray://HOST:PORT`."""

    name = "ray"

    def __init__(self, address: str | None = None, *, workers: int | None = None, threads: int = 1,
                 actors_per_gpu: int = 1, max_retries: int = 2, max_restarts: int = 2, depth: int = 2,
                 progress: Any = None, keep_workers: bool = False) -> None:
        import_ray()  # fail now, with the install hint, rather than when the job starts
        self.progress = progress  # called with a JobProgress as units finish
        self.keep_workers = keep_workers  # True: `close` keeps the actors for the next job on the same model
        self.address, self.n_workers, self.threads = address, workers, max(1, int(threads))
        self.actors_per_gpu = max(1, int(actors_per_gpu))
        self.max_retries, self.max_restarts = max_retries, max_restarts
        self.depth = max(1, int(depth))  # chunks queued per actor: the next one is there when one finishes
        self.actors: list[Any] = []
        self._load: dict[int, int] = {}
        self._refs: dict[Any, tuple[Chunk, int]] = {}
        self._owns = False
        self._args: tuple[Any, ...] = ()
        self._options: dict[str, Any] = {}
        self._key: tuple[Any, ...] = ()

    @property
    def workers(self) -> int:
        return max(1, len(self.actors))

    @property
    def capacity(self) -> int:
        """Chunks in flight: `depth` per actor, so the next chunk is there when one finishes."""
        return self.workers * self.depth

    def start(self, model: Model, size: int | None = None, device: str = "auto", plugins: Any = None) -> None:
        """Connect to (or start) Ray and create the actors; each loads `model` once, with the plugins installed
        on its node (a plugin manager cannot travel: `plugins` is not used)."""
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, **_local_env(self.address))
            self._owns = True
        gpus = 0 if str(device) == "cpu" else int(ray.cluster_resources().get("GPU", 0))
        if gpus:
            count, self._options = gpus * self.actors_per_gpu, {"num_gpus": 1.0 / self.actors_per_gpu, "num_cpus": 1}
        else:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            count, self._options = max(1, cpus // self.threads), {"num_cpus": self.threads}
        count = min(count, self.n_workers) if self.n_workers else count
        key = (model.sha256, size, device, count, tuple(sorted(self._options.items())))
        if self.actors and key == self._key:
            return  # the same model on the same workers: already loaded
        self._kill()
        self._key = key
        data = ray.put(model.path.read_bytes()) if self.address else None  # a remote cluster may not see the file
        self._args = (str(model.path.resolve()), data, model.sha256, size, self.threads, device)
        self.actors = [self._new_actor() for _ in range(count)]
        self._load = {i: 0 for i in range(len(self.actors))}

    def _new_actor(self) -> Any:
        ray = import_ray()
        cls = ray.remote(ModelWorker).options(max_restarts=self.max_restarts, max_task_retries=self.max_retries,
                                              **self._options)
        return cls.remote(*self._args)

    def plan(self, objectives: list[Objective], options: RenderOptions) -> tuple[int, int]:
        """The engine's plan, computed by a worker (its device and memory decide the chunk size)."""
        ray = import_ray()
        try:
            return ray.get(self.actors[0].plan.remote(objectives, options))
        except ray.exceptions.RayTaskError as exc:
            raise _cause(exc) from None

    def submit(self, chunk: Chunk) -> None:
        i = min(self._load, key=lambda j: self._load[j])
        ref = self.actors[i].render.options(max_task_retries=self.max_retries, retry_exceptions=True).remote(chunk)
        self._refs[ref] = (chunk, i)
        self._load[i] += 1

    def pending(self) -> int:
        return len(self._refs)

    def running(self) -> int:
        """Units in chunks handed to a worker and not yet back."""
        return sum(len(c) for c, _ in self._refs.values())

    def wait(self) -> list[tuple[Chunk, ChunkResult | BaseException]]:
        ray = import_ray()
        ready, _ = ray.wait(list(self._refs), num_returns=1)
        out: list[tuple[Chunk, ChunkResult | BaseException]] = []
        for ref in ready:
            chunk, i = self._refs.pop(ref)
            self._load[i] -= 1
            try:
                out.append((chunk, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:
                out.append((chunk, _cause(exc)))
            except ray.exceptions.RayActorError as exc:  # restarts used up: a fresh actor takes its place
                self.actors[i] = self._new_actor()
                out.append((chunk, exc))
        return out

    def close(self) -> None:
        """End the job: chunks still in flight are dropped; the actors go unless `keep_workers`."""
        for ref in list(self._refs):  # after an error: what is queued on the actors is not wanted any more
            with contextlib.suppress(Exception):
                import_ray().cancel(ref)
        self._refs = {}
        self._load = {i: 0 for i in range(len(self.actors))}
        if not self.keep_workers:
            self.shutdown()

    def shutdown(self) -> None:
        """Kill the actors, and the Ray instance if this executor started it."""
        self._kill()
        if self._owns:
            import_ray().shutdown()
            self._owns = False

    def _kill(self) -> None:
        for a in self.actors:
            import_ray().kill(a)
        self.actors, self._key = [], ()


def _cause(exc: BaseException) -> BaseException:
    """The exception a task raised, unwrapped from Ray's RayTaskError."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _local_env(address: str | None) -> dict[str, Any]:
    """Workers on this machine import this vizcore (a checkout need not be installed); not for a Ray Client URL."""
    if address and address.startswith("ray://"):
        return {}
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"runtime_env": {"env_vars": {"PYTHONPATH": path}}}
