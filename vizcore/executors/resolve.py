"""`resolve_executor`: an Executor from a name (`local`, `ray`, `ray://HOST:PORT`) or as given."""

from __future__ import annotations

from typing import Any

from ..errors import OptionError
from .base import Executor


def resolve_executor(spec: str | Executor | None, **options: Any) -> Executor:
    """An Executor from `local`, `ray` (a running cluster via RAY_ADDRESS, else a new local one) or
    `ray://HOST:PORT` (Ray Client); an Executor object is returned as it is. `options` go to the executor."""
    if spec is None or spec == "local":
        from .local import LocalExecutor

        return LocalExecutor(**options)
    if isinstance(spec, Executor) and not isinstance(spec, str):
        return spec
    text = str(spec).strip()
    if text == "ray" or text.startswith("ray://"):
        from .ray import RayExecutor

        return RayExecutor(address=None if text == "ray" else text, **options)
    raise OptionError(f"unknown executor {text!r}", "use local, ray or ray://HOST:PORT")
