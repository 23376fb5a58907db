"""Model-supplied text made safe to print: no terminal escapes, no control characters, bytes made readable.

A node name like "\\x1b]0;pwned\\x07" would retitle the terminal, "\\x1b[2J" would clear it: every string that
comes from a model file goes through `printable` before a console sees it (tables, errors, warnings).
"""

from __future__ import annotations

import re
from typing import Any

#: C0 controls (tab and newline included: a name is one line), DEL, C1 controls, and the Unicode line/paragraph
#: separators and bidi overrides that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(s: Any) -> str:
    """`s` as one printable line: control characters as `\\xNN`/`\\uNNNN`, invalid UTF-8 bytes as `\\xNN`."""
    if isinstance(s, (bytes, bytearray, memoryview)):
        s = bytes(s).decode("utf-8", "backslashreplace")
    elif not isinstance(s, str):
        s = str(s)
    return _CONTROL.sub(_escape, s)


def as_text(value: Any) -> str:
    """A proto string field as str: protobuf (upb) hands back `bytes` for invalid UTF-8; those become `\\xNN`."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return value


def finite_json(value: Any) -> Any:
    """`value` with every NaN/Inf float replaced by None, so that `json.dumps(..., allow_nan=False)` succeeds:
    `NaN` and `Infinity` are not JSON and break strict parsers (jq, JavaScript, Go)."""
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():  # a numpy scalar
        value = value.item()
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = None) -> str:
    """Strict JSON text: non-finite floats as null, anything else unknown as its str."""
    import json

    return json.dumps(finite_json(value), indent=indent, default=str, allow_nan=False)
