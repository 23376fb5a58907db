"""The result of `prune`: what was removed and why the rest stayed, the verification, and what it bought."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from .verify import Comparison


def _safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {str(k): _safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_safe(v) for v in x]
    if hasattr(x, "item") and callable(x.item):
        return _safe(x.item())
    return x


@dataclass
class PruneReport:
    """Everything `vizcore prune` found, did and measured (`to_json()` for files and CI)."""

    model: str
    out: str | None
    evidence: dict[str, Any]
    removed: list[dict[str, Any]] = field(default_factory=list)   # {"unit", "action", "into"?}
    kept: list[dict[str, Any]] = field(default_factory=list)      # {"unit", "reason"}
    frozen_ops: dict[str, int] = field(default_factory=dict)
    inconclusive: int = 0
    verification: list[Comparison] = field(default_factory=list)
    tolerance: float = 1e-5
    culprit: dict[str, Any] | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    written: bool = False
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)
    # the lossy mode (`budget=`): the verdict, the accepted steps, the recovery, the graph's check and interface
    budget: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    recovery: dict[str, Any] | None = None
    reconstruction: dict[str, Any] | None = None  # the least-squares re-fit: mode, calls, seconds, settings
    checker: str | None = None
    interface: dict[str, Any] | None = None

    @property
    def verified(self) -> bool:
        """Lossless: every output of every input set stayed within the tolerance. With a budget: the budget holds
        on the calibration and held-out data (and the MACs target, if any), the interface is the original's."""
        if self.budget is not None:
            return bool(self.budget["met"])
        return bool(self.verification) and all(c.worst <= self.tolerance for c in self.verification)

    @property
    def max_relative_diff(self) -> float:
        return max((c.worst for c in self.verification), default=0.0)

    def counts(self) -> dict[str, int]:
        acts = [r["action"] for r in self.removed]
        return {"removed": acts.count("remove"), "folded": acts.count("fold"), "merged": acts.count("merge"),
                "blocks": acts.count("block") + acts.count("identity"), "kept": len(self.kept),
                "inconclusive": self.inconclusive}

    def to_json(self) -> dict[str, Any]:
        return _safe({"model": self.model, "out": self.out, "written": self.written, "dry_run": self.dry_run,
                      "verified": self.verified, "tolerance": self.tolerance,
                      "max_relative_diff": self.max_relative_diff, "counts": self.counts(),
                      "evidence": self.evidence, "removed": self.removed, "kept": self.kept,
                      "frozen_ops": self.frozen_ops, "verification": [c.to_json() for c in self.verification],
                      "culprit": self.culprit, "cost": self.cost, "layers": self.layers, "notes": self.notes,
                      "budget": self.budget, "steps": self.steps, "recovery": self.recovery,
                      "reconstruction": self.reconstruction, "checker": self.checker,
                      "interface": self.interface})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"
