"""What a check found: per-layer results, failures, the report (JSON and JUnit), and reading it back."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OptionError
from ..inputs import read_json
from .config import CheckConfig, LayerLimits
from .junit import Case, Failures, Report


@dataclass
class Failure:
    """One exceeded threshold: which check, which layer (None: the whole model), and a one-line message."""

    check: str
    layer: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"check": self.check, "layer": self.layer, "message": self.message}


#: Version of the JSON report (`schema.json` in this package); reports without one are version 1.
SCHEMA_VERSION = 2


def duplicate_groups(pairs: list[list]) -> list[dict[str, Any]]:
    """Each filter with all of its copies: [{"filter": i, "copies": [{"filter": j, "transform", "similarity"}]}],
    `filter` the lowest index of its group (a copy of a copy is listed under the original)."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.get(i, i) != i:
            i = parent[i]
        return i

    for i, j, *_ in pairs:
        a, b = root(int(i)), root(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[dict[str, Any]]] = {}
    for i, j, t, sim in sorted(pairs, key=lambda p: (p[1], -p[3])):
        r = root(int(i))
        copies = groups.setdefault(r, [])
        if all(c["filter"] != j for c in copies):
            copies.append({"filter": int(j), "of": int(i), "transform": t, "similarity": float(sim)})
    return [{"filter": r, "copies": groups[r]} for r in sorted(groups)]


@dataclass
class LayerReport:
    """What the check found in one layer: the channel lists by finding, each unit's evidence, and the structure
    (producing nodes, weight initializer, op chain, gate). `dead` stays a plain list of channel indices."""

    name: str
    channels: int
    dead: list[int] = field(default_factory=list)
    constant: list[int] = field(default_factory=list)
    duplicates: list[list] = field(default_factory=list)  # [i, j, transform, similarity] with i < j
    index: int | None = None
    op: str = ""
    conv: str | None = None
    notes: list[str] = field(default_factory=list)
    limits: LayerLimits | None = None
    inconclusive: list[int] = field(default_factory=list)
    dead_on_data: list[int] = field(default_factory=list)
    zero_weights: list[int] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    weight: str | None = None
    gate: str | None = None
    probes: list[str] = field(default_factory=list)
    units: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None
    tensor: str | None = None  # the output tensor whose values were measured
    chosen: str | None = None  # the --layers key that named another layer (e.g. a Conv's row), if any
    rose_above: dict[str, Any] | None = None  # --ascent all: units the ascent drove above 0 (`result.rose_line`)

    @property
    def gated(self) -> bool:
        """Whether a ReLU-like gate follows the units (only gated units can be dead)."""
        return self.gate is not None

    @property
    def dead_fraction(self) -> float:
        """Dead channels / channels."""
        return len(self.dead) / self.channels if self.channels else 0.0

    @property
    def constant_fraction(self) -> float:
        """Constant channels / channels."""
        return len(self.constant) / self.channels if self.channels else 0.0

    def to_json(self) -> dict[str, Any]:
        """The layer entry of the report schema (version 2)."""
        return {"name": self.name, "index": self.index, "channels": self.channels, "op_chain": self.op,
                "nodes": list(self.nodes), "conv": self.conv, "weight": self.weight, "gated": self.gated,
                "gate": self.gate, "probes": list(self.probes), "skipped": self.skipped,
                "dead": list(self.dead), "inconclusive": list(self.inconclusive),
                "dead_on_data": list(self.dead_on_data), "zero_weights": list(self.zero_weights),
                "constant": list(self.constant), "duplicate_pairs": len(self.duplicates),
                "duplicates": [{"filter": int(i), "copy": int(j), "transform": t, "similarity": float(sim)}
                               for i, j, t, sim in self.duplicates],
                "duplicate_groups": duplicate_groups(self.duplicates), "units": list(self.units),
                "notes": list(self.notes), "tensor": self.tensor, "chosen": self.chosen,
                "rose_above": self.rose_above}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LayerReport:
        """A layer entry of a version 1 or 2 report (v1 duplicates are bare [i, j, transform, similarity])."""
        dups = [[p["filter"], p["copy"], p["transform"], p["similarity"]] if isinstance(p, dict) else list(p)
                for p in d.get("duplicates", [])]
        channels = int(d["channels"])
        if channels < 0:
            raise ValueError(f"layer {str(d['name'])[:80]!r} has {channels} channels")
        ints = {k: _channels(d.get(k), channels, k) for k in ("dead", "constant", "inconclusive", "dead_on_data",
                                                               "zero_weights")}
        return cls(name=str(d["name"]), channels=channels, duplicates=dups, index=d.get("index"),
                   op=str(d.get("op_chain") or ""), conv=d.get("conv"), notes=list(d.get("notes") or []),
                   nodes=list(d.get("nodes") or []), weight=d.get("weight"), gate=d.get("gate"),
                   probes=list(d.get("probes") or []), units=list(d.get("units") or []), skipped=d.get("skipped"),
                   tensor=d.get("tensor"), chosen=d.get("chosen"),
                   rose_above=d.get("rose_above") if isinstance(d.get("rose_above"), dict) else None, **ints)


def _channels(values: Any, channels: int, what: str) -> list[int]:
    """A report's channel list, each a whole number in 0..channels-1 (a hand-edited report can say anything)."""
    out = [int(x) for x in values or []]
    bad = [c for c in out if not 0 <= c < channels]
    if bad:
        raise ValueError(f"{what} lists channel {bad[0]} of a layer with {channels} channels")
    return out


@dataclass
class CheckReport(Report):
    """The result of `check`: model facts, per-layer findings, fidelity and the failures (empty: passed)."""

    model: dict[str, Any]
    layers: list[LayerReport]
    fidelity: dict[str, Any]
    failures: list[Failure]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    config: CheckConfig | None = None
    #: why no layer was checked (None when some were): a failure unless `allow_empty`
    nothing_checked: str | None = None

    @property
    def passed(self) -> bool:
        """True when no threshold was exceeded."""
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        """The report as `schema.json` describes it (version 2; JSON-safe floats)."""
        return jsonable({"schema_version": SCHEMA_VERSION, "model": self.model, "passed": self.passed,
                         "layers": [lay.to_json() for lay in self.layers], "fidelity": self.fidelity,
                         "failures": [f.to_json() for f in self.failures], "notes": list(self.notes),
                         "nothing_checked": self.nothing_checked})

    def junit_cases(self) -> list[Case]:
        """One JUnit test case per check per layer, plus the model-wide checks."""
        fails = Failures(self.failures)
        failure = fails.take
        fid = self.fidelity
        cases = [Case("model", "fidelity", failure("fidelity", None),
                      None if fid.get("available") else str(fid.get("reason", "not measured")),
                      f"max_abs_diff={fid.get('max_abs_diff')}" if fid.get("available") else "")]
        bad = self.model.get("nonfinite_weights") or []
        weights_fail = failure("nonfinite-weights", any_layer=True)
        details = "\n".join(f"{b['layer']}.{b['tensor']}: {b['nan']} NaN, {b['inf']} Inf" for b in bad)
        cases.append(Case("model", "nonfinite-weights", weights_fail or None, details=details))
        for lay in self.layers:
            cases.append(Case(lay.name, "dead", failure("dead", lay.name), lay.skipped,
                              details=f"dead={lay.dead} inconclusive={lay.inconclusive}"))
            cases.append(Case(lay.name, "constant", failure("constant", lay.name), details=f"constant={lay.constant}"))
            cases.append(Case(lay.name, "duplicates", failure("duplicates", lay.name),
                              details="\n".join(f"filter {j} = {t}(filter {i}), similarity {s:.4f}"
                                                for i, j, t, s in lay.duplicates)))
        return cases + fails.rest()

    def junit_suite(self) -> str:
        return "vizcore check " + str(self.model.get("path", ""))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckReport:
        """A report read back from `to_json()` output (for `vizcore diff` against a stored baseline)."""
        try:
            version = int(data.get("schema_version", 1))
            if version > SCHEMA_VERSION:
                raise OptionError(f"report schema version {version} is newer than this vizcore reads "
                                  f"({SCHEMA_VERSION})", "upgrade vizcore, or re-run the check")
            layers = [LayerReport.from_json(d) for d in data["layers"]]
            failures = [Failure(f.get("check", "?"), f.get("layer"), f.get("message", "")) if isinstance(f, dict)
                        else Failure("?", None, str(f)) for f in data.get("failures", [])]
            return cls(model=dict(data["model"]), layers=layers, fidelity=dict(data.get("fidelity") or {}),
                       failures=failures, notes=list(data.get("notes") or []),
                       nothing_checked=data.get("nothing_checked") if isinstance(data.get("nothing_checked"), str)
                       else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise OptionError(f"not a vizcore check report: missing or malformed {exc}",
                              "pass an .onnx model or a file written by `vizcore check --json`") from exc


def jsonable(x: Any) -> Any:
    """`x` with non-finite floats written as the strings "nan", "inf", "-inf" (strict JSON has no such numbers)."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return jsonable(x.item())
    return x



def read_report(path: str | os.PathLike[str]) -> CheckReport:
    """A `CheckReport` from a JSON file written by `vizcore check --json`."""
    p = Path(path)
    data = read_json(p, "report file")
    if not isinstance(data, dict):
        raise OptionError(f"{p} is not a vizcore check report")
    return CheckReport.from_json(data)
