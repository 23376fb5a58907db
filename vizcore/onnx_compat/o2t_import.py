"""Import onnx2torch without importing torchvision (2-3 s, and `torch._dynamo` with it).

onnx2torch imports every converter module when it is imported; two of them (NonMaxSuppression, RoiAlign) import
torchvision at module level although they only call it when a converted model runs. While onnx2torch is imported,
`torchvision` and `torchvision.ops` resolve to stand-ins whose attributes import the real package on first use;
the stand-ins are removed from `sys.modules` right after, so the process is left as a plain import would leave it
(onnx2torch fully registered, torchvision importable as usual), except that torchvision is not yet imported.
Nothing is deferred when onnx2torch or torchvision is already imported.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

_DEFERRED = ("torchvision", "torchvision.ops")
_lock = threading.Lock()


class _Deferred(types.ModuleType):
    """A stand-in for `torchvision.ops`: each attribute is a function that calls the real one, imported on first
    call (onnx2torch takes `roi_align`, `nms` and `box_convert` from it, all functions)."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _deferred_call(self.__name__, attr)


def _deferred_call(module: str, attr: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__name__ = attr
    return call


def import_onnx2torch() -> types.ModuleType:
    """onnx2torch, imported with torchvision deferred (see the module docstring)."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    with _lock:
        if any(name in sys.modules for name in _DEFERRED):
            return importlib.import_module("onnx2torch")
        stand_ins = {name: _Deferred(name) for name in _DEFERRED}
        stand_ins["torchvision"].ops = stand_ins["torchvision.ops"]
        stand_ins["torchvision"].__path__ = []  # a package, so that `torchvision.ops` resolves to the stand-in
        sys.modules.update(stand_ins)
        try:
            return importlib.import_module("onnx2torch")
        finally:
            for name, module in stand_ins.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]
