"""vizcore: feature visualization for any ONNX model.

    import vizcore
    model = vizcore.load("models/mobilenet_v2.onnx")
    result = vizcore.render(model, ["40:0-7", "class:1"])
    result.save("out/")
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import objectives
from .check import CheckReport, check
from .engine import render
from .errors import VizcoreError
from .hookspecs import hookimpl
from .model import Layer, Model, load
from .result import Result, Unit

__all__ = [
    "CheckReport", "Layer", "Model", "Result", "Unit", "VizcoreError", "__version__", "check", "hookimpl", "load",
    "objectives", "render",
]
