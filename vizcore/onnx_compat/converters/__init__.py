"""vizcore's extra onnx2torch converters, one module per op family; each module fills a CONVERTERS list.

Registered through `vizcore_add_onnx_converters`, the same hook third-party plugins use.
"""

from __future__ import annotations

import importlib
import pkgutil

from ...hookspecs import hookimpl
from .. import Converter
from ..o2t_import import import_onnx2torch

import_onnx2torch()  # before the converter modules' `from onnx2torch... import`: torchvision stays deferred


def _all() -> list[Converter]:
    found: list[Converter] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(mod, "CONVERTERS", []))
    return found


@hookimpl
def vizcore_add_onnx_converters() -> list[Converter]:
    return _all()
