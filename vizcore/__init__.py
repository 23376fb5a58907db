"""vizcore: feature visualization for any ONNX model.

    import vizcore
    model = vizcore.load("models/mobilenet_v2.onnx")
    result = vizcore.render(model, ["n40:0-7", "class:1"])
    result.save("out/")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import VizcoreError
from .hookspecs import hookimpl
from .engine import render
from .model import Layer, Model, load
from .result import Result, Unit
from . import objectives

__all__ = ["Layer", "Model", "Result", "Unit", "VizcoreError", "__version__", "hookimpl", "load", "objectives",
           "render"]
