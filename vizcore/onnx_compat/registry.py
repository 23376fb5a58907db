"""The one place that touches onnx2torch's converter registry, including its private dict for overrides.

onnx2torch's `add_converter` refuses to replace an existing (domain, op, version); overriding a built-in
converter therefore writes `_CONVERTER_REGISTRY` directly. `tests/test_onnx_compat.py` fails loudly if that
private API changes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from onnx import defs

from . import Converter
from .o2t_import import import_onnx2torch

import_onnx2torch()  # torchvision deferred (see o2t_import); then onnx2torch's registry
from onnx2torch.node_converters import registry as _o2t  # noqa: E402

#: onnx2torch's own converters, captured before vizcore or a plugin overrides any (overrides may delegate to them).
_BUILTIN: dict[tuple[str, str, int], Callable[..., Any]] = {tuple(k): v for k, v in _o2t._CONVERTER_REGISTRY.items()}
_lock = threading.RLock()  # one conversion at a time may own onnx2torch's process-wide table


def safe_domain(domain: str) -> str:
    """The domain as vizcore hands it to onnx2torch: without dots, which torch module names cannot contain
    (onnx2torch names each module `domain/node`). The loader renames node domains the same way."""
    return "" if domain in ("", "ai.onnx") else domain.replace(".", "_")


def _description(c: Converter) -> _o2t.OperationDescription:
    return _o2t.OperationDescription(domain=safe_domain(c.domain), operation_type=c.op_type, version=c.version)


@contextlib.contextmanager
def installed(converters: Iterable[Converter]) -> Iterator[None]:
    """onnx2torch's table with these converters added for the duration of the block, then restored exactly.

    A converter replaces one onnx2torch already has only with `override=True`. Conversions in other threads wait
    (the table is process-wide), so two managers never see each other's converters.
    """
    with _lock:
        table = _o2t._CONVERTER_REGISTRY
        saved = dict(table)
        try:
            for c in converters:
                desc = _description(c)
                if desc in saved and not c.override:
                    continue  # onnx2torch already has it and the plugin did not ask to replace it
                table[desc] = c.fn
            yield
        finally:
            table.clear()
            table.update(saved)


def builtin(op_type: str, version: int, domain: str = "") -> Callable[..., Any]:
    """onnx2torch's own converter for exactly this (domain, op type, since-version), even if overridden."""
    return _BUILTIN[(domain or defs.ONNX_DOMAIN, op_type, version)]


def builtin_keys() -> list[tuple[str, str, int]]:
    """Every (domain, op type, since-version) onnx2torch converts by itself."""
    return sorted(_BUILTIN)


def since_version(op_type: str, opset: int, domain: str = "") -> int | None:
    """The op's since-version at this opset (the version a converter must be registered for), or None if unknown."""
    try:
        return int(defs.get_schema(op_type, opset, domain or defs.ONNX_DOMAIN).since_version)
    except Exception:
        return None


def find(op_type: str, opset: int, domain: str = "") -> object | None:
    """The converter onnx2torch would use for this op at this opset, or None."""
    try:
        return _o2t.get_converter(domain=safe_domain(domain), operation_type=op_type, version=opset)
    except NotImplementedError:
        return None
