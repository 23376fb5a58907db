"""Errors a user can cause. Each carries a one-line message that says what went wrong and what to do.

The CLI prints them without a traceback and exits with code 2; the Python API raises them as they are.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class VizcoreError(Exception):
    """Base of every error caused by user input (a file, a name, an option), never by a bug in vizcore."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ModelLoadError(VizcoreError):
    """The file is missing, unreadable, not ONNX, invalid, or its external data is unsafe or missing."""


class UnsupportedOpError(ModelLoadError):
    """An ONNX operator has no converter to torch."""


class LayerNotFoundError(VizcoreError):
    """A layer name or index that the model does not have."""


class TargetError(VizcoreError):
    """A malformed target string, or a channel / position out of range."""


class OtherInputError(TargetError):
    """A target layer that does not depend on the optimized input but on another float graph input (`input`)."""

    def __init__(self, message: str, hint: str | None = None, *, input: str, layer: str) -> None:
        super().__init__(message, hint)
        self.input, self.layer = input, layer


class OptionError(VizcoreError):
    """An option value that cannot work (unknown name, impossible size, steps <= 0, ...)."""


class InputTooSmallError(OptionError):
    """The converted graph cannot run at the asked input size (a kernel or pooling window larger than its input)."""


class OutputError(VizcoreError):
    """An output path that exists, cannot be written, or would leave its folder."""


class DeviceError(VizcoreError):
    """A device that is not available (CUDA asked for but absent), or a memory budget too small."""


class PluginError(VizcoreError):
    """A plugin that failed to load, raised in a hook, or clashes with another plugin's name."""


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The few candidates closest to `name`, for 'did you mean' hints."""
    cands = list(candidates)
    found = difflib.get_close_matches(name, cands, n=n, cutoff=0.4)
    if not found:
        low = name.lower()
        found = [c for c in cands if low and low in c.lower()][:n]
    return found


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> OptionError:
    """An OptionError for an unknown plugin-provided name, listing the valid ones."""
    valid = sorted(valid)
    return OptionError(f"unknown {kind} {name!r}", f"valid: {', '.join(valid)}")


def unknown_keyword(where: str, key: str, valid: Sequence[str]) -> OptionError:
    """An OptionError for a keyword argument that `where` does not take, naming the closest valid ones."""
    near = closest(key, valid)
    return OptionError(f"{where} has no option {key!r}",
                       f"did you mean {' or '.join(near)}?" if near else f"its options: {', '.join(valid)}")


def oneline(exc: BaseException, limit: int = 200, *, typed: bool = True) -> str:
    """An exception as one line for a message: `Type: first non-blank line` (cut to `limit` characters), or just the
    type when it has no text. The one helper for this: an error path must not raise itself (an empty message)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0][:limit] if lines else ""
    if not typed:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
