"""vizcore: feature visualization for any ONNX model.

    import vizcore
    model = vizcore.load("models/mobilenet_v2.onnx")
    result = vizcore.render(model, ["40:0-7", "class:1"])
    result.save("out/")

The names below are imported on first use (PEP 562), so `import vizcore.errors` or `vizcore --help` do not pay for
torch and onnx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

#: public name -> the module that defines it
_EXPORTS = {
    "load": "vizcore.api", "render": "vizcore.api", "save": "vizcore.api",
    "check": "vizcore.health", "CheckReport": "vizcore.health",
    "VizcoreError": "vizcore.errors", "hookimpl": "vizcore.hookspecs",
    "Layer": "vizcore.model", "Model": "vizcore.model",
    "Result": "vizcore.result", "Unit": "vizcore.result",
    "Manager": "vizcore.plugins",
    "exemplars": "vizcore.evidence", "explain": "vizcore.evidence", "trust": "vizcore.evidence",
    "TrustThresholds": "vizcore.evidence",
}
_SUBMODULES = {"objectives"}

__all__ = [
    "CheckReport", "Layer", "Manager", "Model", "Result", "TrustThresholds", "Unit", "VizcoreError", "__version__",
    "check", "exemplars", "explain", "hookimpl", "load", "objectives", "render", "save", "trust",
]

if TYPE_CHECKING:
    from . import objectives
    from .api import load, render, save
    from .errors import VizcoreError
    from .evidence import TrustThresholds, exemplars, explain, trust
    from .health import CheckReport, check
    from .hookspecs import hookimpl
    from .model import Layer, Model
    from .plugins import Manager
    from .result import Result, Unit


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"vizcore.{name}")
    else:
        raise AttributeError(f"module 'vizcore' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
