"""The CI gate (`vizcore check` / `vizcore diff`): configuration, the checks, their results, the comparison, JUnit.

    from vizcore import check
    report = check("model.onnx")          # thresholds from a vizcore.toml / pyproject.toml next to the model
    report.passed, report.failures, report.to_json()

Names are imported on first use (PEP 562): the CLI reads `health.config` for its flags without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "CheckConfig": "config", "LayerLimits": "config", "load_config": "config",
    "DiffReport": "diff", "compare": "diff",
    "CheckReport": "results", "Failure": "results", "LayerReport": "results", "jsonable": "results",
    "read_report": "results",
    "check": "run",
}

__all__ = ["CheckConfig", "CheckReport", "DiffReport", "Failure", "LayerLimits", "LayerReport", "check", "compare",
           "jsonable", "load_config", "read_report"]

if TYPE_CHECKING:
    from .config import CheckConfig, LayerLimits, load_config
    from .diff import DiffReport, compare
    from .results import CheckReport, Failure, LayerReport, jsonable, read_report
    from .run import check


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vizcore.health' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
