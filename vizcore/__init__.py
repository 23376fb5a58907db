"""vizcore: feature visualization for any ONNX model.

    import vizcore
    model = vizcore.load("models/mobilenet_v2.onnx")
    result = vizcore.render(model, ["40:0-7", "class:1"])
    result.save("out/")

The names below are imported on first use (PEP 562), so `import vizcore` and `vizcore --help` stay fast: torch
and onnx load when `load`, `render` or `check` is first touched.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_EXPORTS = {
    "CheckReport": "check", "check": "check", "render": "engine", "VizcoreError": "errors", "hookimpl": "hookspecs",
    "Layer": "model", "Model": "model", "load": "model", "Result": "result", "Unit": "result",
}

__all__ = [
    "CheckReport", "Layer", "Model", "Result", "Unit", "VizcoreError", "__version__", "check", "hookimpl", "load",
    "objectives", "render",
]


def __getattr__(name: str) -> Any:
    if name == "objectives":
        return importlib.import_module(".objectives", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # importing the submodule vizcore.check must not hide the function vizcore.check (as the eager import did)
        if name == "check" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
