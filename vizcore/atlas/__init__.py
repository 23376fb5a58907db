"""The static, offline HTML atlas of a model (`vizcore report`): which units to show (`select`), a content-addressed
cache of rendered units (`cache`), rendering what is missing (`render`), the check's verdicts per unit (`health`),
the output folder (`output`), the pages (`pages`), and `build_report`, which runs them in order (`build`) with one
`ReportOptions` (`options`)."""

from __future__ import annotations

from .build import build_report, plan_report
from .cache import UnitCache, UnitRecord, UnitSpec
from .labels import load_labels, read_labels
from .options import ReportOptions
from .pages import trace_svg
from .render import Renderer
from .select import auto_layers, parse_classes

__all__ = ["Renderer", "ReportOptions", "UnitCache", "UnitRecord", "UnitSpec", "auto_layers", "build_report",
           "load_labels", "parse_classes", "plan_report", "read_labels", "trace_svg"]
