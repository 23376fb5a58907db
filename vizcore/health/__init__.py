"""The CI gate (`vizcore check` / `vizcore diff`): configuration, the checks, their results, the comparison, JUnit.

    from vizcore import check
    report = check("model.onnx")          # thresholds from a vizcore.toml / pyproject.toml next to the model
    report.passed, report.failures, report.to_json()
"""

from __future__ import annotations

from .config import CheckConfig, LayerLimits, load_config
from .diff import DiffReport, compare
from .results import CheckReport, Failure, LayerReport, jsonable, read_report
from .run import check

__all__ = ["CheckConfig", "CheckReport", "DiffReport", "Failure", "LayerLimits", "LayerReport", "check", "compare",
           "jsonable", "load_config", "read_report"]
