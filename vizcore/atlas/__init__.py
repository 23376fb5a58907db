"""The static, offline HTML atlas of a model (`vizcore report`): which units to show, a content-addressed cache of
rendered units, the pages."""

from __future__ import annotations

from .build import UnitCache, UnitRecord, UnitSpec, auto_layers, build_report, load_labels, parse_classes, trace_svg

__all__ = ["UnitCache", "UnitRecord", "UnitSpec", "auto_layers", "build_report", "load_labels", "parse_classes",
           "trace_svg"]
