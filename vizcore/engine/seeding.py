"""Randomness of a render: one seeded CPU `torch.Generator`, so the caller's global RNG is never touched.

Built-in parameterizations and transforms take `generator=` and draw only from it. A plugin factory without a
`generator` parameter (written for the older contract, which seeded torch's global RNG) still works: its chunk
runs inside `torch.random.fork_rng` with the global RNG seeded, and the caller's state comes back afterwards.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch


def declares(factory: Callable[..., Any], name: str) -> bool:
    """Whether `factory` declares a parameter `name` (a bare **kwargs does not count: it may drop it)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    p = params.get(name)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def accepts_generator(factory: Callable[..., Any]) -> bool:
    """Whether `factory` declares a `generator` parameter (`declares`)."""
    return declares(factory, "generator")


def options_of(factory: Callable[..., Any]) -> dict[str, Any] | None:
    """The keyword options a factory takes besides its first argument, `units`, `generator` and `init`, in order, each
    with its default (`inspect.Parameter.empty` where it has none); None: it takes any (**kwargs), or its signature
    cannot be read."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name: p.default for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in ("units", "generator", "init")}


def inspect_params(factory: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """A factory's parameters by name; None when it takes any keyword (**kwargs) or cannot be read."""
    try:
        params = dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return None
    return None if any(p.kind is p.VAR_KEYWORD for p in params.values()) else params


def call_factory(factory: Callable[..., Any], *args: Any, generator: torch.Generator, **kwargs: Any) -> Any:
    """`factory(*args, generator=..., **kwargs)`, or without `generator` for a factory that does not take it."""
    if accepts_generator(factory):
        return factory(*args, generator=generator, **kwargs)
    return factory(*args, **kwargs)


@contextlib.contextmanager
def global_rng(seed: int, device: torch.device, needed: bool) -> Iterator[None]:
    """When `needed` (a legacy plugin factory draws from torch's global RNG): fork it, seed it with `seed`, and
    restore the caller's state when the block ends; else nothing."""
    if not needed:
        yield
        return
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
