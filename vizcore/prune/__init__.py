"""Lossless pruning of ONNX models: remove dead channels (and merge exact duplicates), verified in onnxruntime.

    from vizcore.prune import prune
    report = prune("model.onnx", "smaller.onnx", from_check="check.json", data="images/")
    report.verified, report.counts(), report.cost
"""

from __future__ import annotations

from .api import prune
from .report import PruneReport

__all__ = ["PruneReport", "prune"]
