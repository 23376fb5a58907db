"""What a check found: per-layer results, failures, the report (JSON and JUnit), and reading it back."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OptionError
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


@dataclass
class LayerReport:
    """What the check found in one layer (JSON: name, channels, dead, constant, duplicates)."""

    name: str
    channels: int
    dead: list[int] = field(default_factory=list)
    constant: list[int] = field(default_factory=list)
    duplicates: list[list] = field(default_factory=list)
    index: int | None = None
    op: str = ""
    conv: str | None = None
    notes: list[str] = field(default_factory=list)
    limits: LayerLimits | None = None

    @property
    def dead_fraction(self) -> float:
        """Dead channels / channels."""
        return len(self.dead) / self.channels if self.channels else 0.0

    @property
    def constant_fraction(self) -> float:
        """Constant channels / channels."""
        return len(self.constant) / self.channels if self.channels else 0.0

    def to_json(self) -> dict[str, Any]:
        """Exactly the layer entry of the report schema."""
        return {"name": self.name, "channels": self.channels, "dead": list(self.dead), "constant": list(self.constant),
                "duplicates": [list(p) for p in self.duplicates]}


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

    @property
    def passed(self) -> bool:
        """True when no threshold was exceeded."""
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        """{"model", "passed", "layers", "fidelity", "failures"} as the issue's schema says (JSON-safe floats)."""
        return jsonable({"model": self.model, "passed": self.passed, "layers": [lay.to_json() for lay in self.layers],
                         "fidelity": self.fidelity, "failures": [f.to_json() for f in self.failures]})

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
            cases.append(Case(lay.name, "dead", failure("dead", lay.name), details=f"dead={lay.dead}"))
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
            layers = [LayerReport(name=str(d["name"]), channels=int(d["channels"]), dead=list(d["dead"]),
                                  constant=list(d["constant"]), duplicates=[list(p) for p in d["duplicates"]])
                      for d in data["layers"]]
            failures = [Failure(f.get("check", "?"), f.get("layer"), f.get("message", "")) if isinstance(f, dict)
                        else Failure("?", None, str(f)) for f in data.get("failures", [])]
            return cls(model=dict(data["model"]), layers=layers, fidelity=dict(data.get("fidelity") or {}),
                       failures=failures)
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
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise OptionError(f"report not found: {p}", "check the path") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OptionError(f"cannot read {p} as a JSON report: {exc}") from exc
    if not isinstance(data, dict):
        raise OptionError(f"{p} is not a vizcore check report")
    return CheckReport.from_json(data)
