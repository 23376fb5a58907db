"""Make arbitrary ONNX files convertible: pre-passes on the ModelProto and extra onnx2torch converters.

Both are contributed through the plugin hooks `vizcore_add_prepasses` and `vizcore_add_onnx_converters`;
vizcore's own live in `prepasses.py` and `converters/` and register themselves there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnx


@dataclass(frozen=True)
class Converter:
    """An onnx2torch converter for one (domain, op type, since-version)."""

    op_type: str
    version: int
    fn: Callable[..., Any]
    domain: str = ""
    override: bool = False

    @property
    def key(self) -> str:
        """The registry name: `domain::Op@version`."""
        return f"{self.domain or 'ai.onnx'}::{self.op_type}@{self.version}"


@dataclass(frozen=True)
class Prepass:
    """A ModelProto rewrite, applied in `order` before conversion; `fn(model) -> number of changes`."""

    name: str
    order: int
    fn: Callable[[onnx.ModelProto], int]
    override: bool = False

    @property
    def key(self) -> str:
        """The registry name."""
        return self.name


def converter(op_type: str, *versions: int, domain: str = "", override: bool = False) -> Callable[..., Any]:
    """Decorator: collect a converter function for several since-versions into its module's CONVERTERS list.

    A plugin returns that list from `vizcore_add_onnx_converters`; `override=True` replaces onnx2torch's own.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        lst = fn.__globals__.setdefault("CONVERTERS", [])  # the defining module's namespace
        for v in versions:
            lst.append(Converter(op_type, v, fn, domain, override))
        return fn

    return deco
