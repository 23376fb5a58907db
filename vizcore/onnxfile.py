"""The one reader of ONNX files (bounded, external data kept in the model's folder, names repaired, checked) and
the one place that opens an onnxruntime session. Torch-free: `loading.load` and `prune` both start here."""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from . import proto_check
from .errors import ModelLoadError, VizcoreError, oneline
from .inputs import contained, read_regular, require_readable
from .text import printable


@dataclass(frozen=True)
class ModelFile:
    """An ONNX file as read: its proto (external data inlined, text repaired, checked) and facts about the file.

    `proto` is the caller's to change: the loader pre-passes and converts it in place; `standalone` is taken first.
    """

    path: Path
    proto: onnx.ModelProto = field(repr=False)
    #: the file's own bytes (without its external data)
    data: bytes = field(repr=False)
    sha256: str
    #: whether some tensor's data lived in another file (prune writes its result the same way)
    external: bool
    metadata: dict[str, str]

    def standalone(self) -> bytes:
        """The model as one message onnxruntime can run without the file: the bytes read, or the proto with its
        external data inlined (read it before the proto is changed)."""
        return self.proto.SerializeToString() if self.external else self.data


def read(path: str | os.PathLike[str]) -> ModelFile:
    """Read and validate an ONNX file; raise `ModelLoadError` with a one-line cause if it cannot be used.

    Refuses what is not a readable regular file, files larger than protobuf can parse, external data outside the
    model's folder and models `onnx.checker` rejects; warns about a malformed `vizcore.size` metadata value.
    """
    p = Path(path)
    try:
        return _read(p)
    except VizcoreError:
        raise
    except (Exception, MemoryError, RecursionError) as exc:
        raise ModelLoadError(f"cannot load {printable(p.name[:200])}: {printable(oneline(exc))}",
                             "the file is malformed; run with --debug for the traceback") from exc


def _read(path: Path) -> ModelFile:
    proto, data = _parse(path)
    external = _load_external(proto, path)
    repaired = proto_check.list_initializers_as_inputs(proto)
    if repaired:
        warnings.warn(f"{printable(path.name[:200])}: {repaired}", UserWarning, stacklevel=4)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelLoadError(f"{path.name} is not a valid ONNX model: {oneline(exc, 300, typed=False)}",
                             "re-export it, or check it with onnx.checker") from exc
    if not proto.graph.output:
        raise ModelLoadError(f"{path.name} has no outputs", "re-export the model with its outputs")
    huge = proto_check.huge_constant_node(proto.graph)
    if huge is not None:
        name, op, count = huge
        raise ModelLoadError(f"{path.name}: node {printable(name)!r} ({op}) would make {count:,} values from constants "
                             f"(at most {proto_check.MAX_CONSTANT_VALUES:,})", "re-export the model without it")
    metadata = {p.key: p.value for p in proto.metadata_props}
    bad_size = proto_check.metadata_size(metadata.get("vizcore.size"))[1]
    if bad_size:  # a hint, not the model: the model stays usable at the default or --size
        warnings.warn(bad_size, UserWarning, stacklevel=4)
    return ModelFile(path=path, proto=proto, data=data, sha256=hashlib.sha256(data).hexdigest(), external=external,
                     metadata=metadata)


def _parse(path: Path) -> tuple[onnx.ModelProto, bytes]:
    require_readable(path, "model file")  # not a FIFO, a device or a folder: checked before any read
    data = read_regular(path)
    if not data:
        raise ModelLoadError(f"{path} is empty", "re-export the model")
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(data)
    except Exception as exc:
        raise ModelLoadError(f"{path} is not an ONNX model (it could not be parsed: {type(exc).__name__})",
                             "is the file truncated, or a different format?") from exc
    if not proto.graph.node and not proto.graph.input:
        raise ModelLoadError(f"{path} is not an ONNX model (no graph in it)", "is it a different format?")
    proto_check.repair_text(proto)  # invalid UTF-8 names come back as bytes: make them \xNN text
    return proto, data


def _load_external(proto: onnx.ModelProto, path: Path) -> bool:
    """Read every external-data reference (initializers, sparse tensors, attributes, subgraphs) after checking
    that it stays inside the model's folder; whether there was any."""
    from onnx.external_data_helper import load_external_data_for_tensor

    base = path.parent.resolve()
    found = False
    for owner, t in proto_check.external_tensors(proto):
        found = True
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        contained(base, loc, owner, path.name)
        try:
            load_external_data_for_tensor(t, str(base))
        except Exception as exc:
            raise ModelLoadError(f"{path.name}: cannot read external data {loc!r} for tensor {t.name!r}: {exc}",
                                 "is the .data file truncated?") from exc
        t.data_location = TensorProto.DEFAULT
        del t.external_data[:]
    return found


#: Longest one onnxruntime run may take before vizcore stops it (seconds): a Loop whose trip count is a huge
#: constant would otherwise run for days. `session(limit=None)` for timing runs, which must not pay the watchdog.
RUN_LIMIT_S = 120.0


class Session:
    """An onnxruntime session whose every `run` is stopped after `limit` seconds (through its RunOptions'
    terminate flag); a run that onnxruntime stops or refuses is a one-line ModelLoadError."""

    def __init__(self, sess: Any, limit: float) -> None:
        self._sess, self.limit = sess, limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sess, name)

    def run(self, outputs: Sequence[str] | None, feed: dict[str, Any], run_options: Any = None) -> Any:
        import onnxruntime as ort

        ro = run_options if run_options is not None else ort.RunOptions()
        timer = threading.Timer(self.limit, setattr, (ro, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            return self._sess.run(outputs, feed, ro)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types: one line for the user
            if ro.terminate:
                raise ModelLoadError(f"onnxruntime did not finish one run of the model in {self.limit:g} s: stopped",
                                     "a Loop with a huge constant trip count? re-export the model") from exc
            raise ModelLoadError(f"onnxruntime could not run the model: {oneline(exc, 240, typed=False)}",
                                 "does it run at this input shape and batch size?") from exc
        finally:
            timer.cancel()


def session(model: onnx.ModelProto | bytes, extra_outputs: Sequence[str] = (), threads: int = 0, *,
            log_level: int = 4, profile: str | None = None, limit: float | None = RUN_LIMIT_S) -> Any:
    """A CPU onnxruntime session of `model`, with the tensors `extra_outputs` added as graph outputs.

    `threads` caps onnxruntime's intra-op threads (0: its default); `log_level` 3 prints errors, 4 (default)
    nothing: vizcore turns onnxruntime's errors into its own one-line messages;
    `profile` (a file prefix) turns on onnxruntime's profiler at basic graph optimization, so nodes keep their names.
    `limit`: each run is stopped after that many seconds (`Session`); None for timing runs.
    Raises ImportError when onnxruntime is not installed, ModelLoadError (one line) when it refuses the graph.
    """
    import onnxruntime as ort

    if extra_outputs:
        m = onnx.ModelProto()
        if isinstance(model, bytes):
            m.ParseFromString(model)
        else:
            m.CopyFrom(model)
        have = {o.name for o in m.graph.output}
        for name in extra_outputs:
            if name not in have:
                m.graph.output.append(onnx.ValueInfoProto(name=name))
        model = m
    opts = ort.SessionOptions()
    opts.log_severity_level = log_level
    if threads:
        opts.intra_op_num_threads = threads
    if profile is not None:
        opts.enable_profiling = True
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.profile_file_prefix = profile
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own types: a graph onnx's checker passes, ort refuses
        raise ModelLoadError(f"onnxruntime cannot run the model: {oneline(exc, 240, typed=False)}",
                             "re-export it; `vizcore inspect` says what vizcore itself makes of it") from exc
    return Session(sess, limit) if limit is not None else sess


def runtime_version() -> str | None:
    """onnxruntime's version, or None when it is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return str(ort.__version__)


def session_feeds(sess: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feeds cast to the element types the onnxruntime session declares (an fp16 file that vizcore runs in
    float32 still wants float16 inputs)."""
    want = {i.name: i.type for i in sess.get_inputs()}
    return {k: v.astype(np.float16) if want.get(k) == "tensor(float16)" else v for k, v in arrays.items()}
