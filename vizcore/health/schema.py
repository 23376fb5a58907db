"""The JSON Schema of check reports (`schema.json`, shipped in the package) and validation against it: with the
`jsonschema` package when it is installed, else a small validator for the subset the schema uses (type, required,
properties, items, $ref, enum, const, minimum, maximum)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

from ..inputs import parse_json

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The report schema (a dict)."""
    return parse_json(resources.files("vizcore.health").joinpath("schema.json").read_text(encoding="utf-8"), "schema")


def _is(value: Any, typ: str) -> bool:
    if typ == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if typ == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[typ])


def _errors(value: Any, sch: dict[str, Any], root: dict[str, Any], path: str) -> list[str]:
    if "$ref" in sch:
        node: Any = root
        for part in sch["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return _errors(value, node, root, path)
    if "const" in sch and value != sch["const"]:
        return [f"{path}: {value!r} is not {sch['const']!r}"]
    if "enum" in sch and value not in sch["enum"]:
        return [f"{path}: {value!r} is not one of {sch['enum']}"]
    types = sch.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is(value, t) for t in types):
            return [f"{path}: {type(value).__name__} is not {'/'.join(types)}"]
    out = []
    if _is(value, "number"):
        if "minimum" in sch and value < sch["minimum"]:
            out.append(f"{path}: {value} < {sch['minimum']}")
        if "maximum" in sch and value > sch["maximum"]:
            out.append(f"{path}: {value} > {sch['maximum']}")
    if isinstance(value, dict):
        out += [f"{path}: missing {k!r}" for k in sch.get("required", []) if k not in value]
        for k, sub in sch.get("properties", {}).items():
            if k in value:
                out += _errors(value[k], sub, root, f"{path}.{k}")
    if isinstance(value, list) and "items" in sch:
        for i, v in enumerate(value):
            out += _errors(v, sch["items"], root, f"{path}[{i}]")
    return out


def validate(report: dict[str, Any]) -> list[str]:
    """Every way `report` (a parsed JSON report) breaks the schema; empty when it is valid."""
    try:
        import jsonschema
    except ImportError:
        return _errors(report, schema(), schema(), "$")
    v = jsonschema.Draft202012Validator(schema())
    return [f"${''.join(f'[{p}]' if isinstance(p, int) else f'.{p}' for p in e.absolute_path)}: {e.message}"
            for e in v.iter_errors(report)]


def own_validate(report: dict[str, Any]) -> list[str]:
    """The built-in validator alone (the fallback when `jsonschema` is missing)."""
    return _errors(report, schema(), schema(), "$")
