"""What an atlas shows and how it renders it, in one frozen value (`ReportOptions`), so that `build_report` takes
one options object (or its field names as keywords) instead of a dozen loose keywords."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..errors import unknown_keyword


@dataclass(frozen=True)
class ReportOptions:
    """The layers and classes an atlas shows and the render settings it uses. None means the default, or, when a
    report is grown, what its last run used (steps, size, seed, units_per_layer); `vizcore.atlas.select` has the
    defaults. `render_options` are more `vizcore.render` keywords (device, batch_size, ...); `fidelity` compares
    the converted graph with onnxruntime on the front page; `all_units` renders every channel of every convolution;
    `alpha` records and shows, per unit, where its picture matters (the `alpha` exporter's map).
    """

    layers: Sequence[str | int] | None = None
    auto: bool = False
    all_units: bool = False
    units_per_layer: int | None = None
    classes: str | Iterable[int] | None = None
    labels: str | Path | Mapping[int, str] | None = None
    steps: int | None = None
    size: int | None = None
    seed: int | None = None
    render_options: Mapping[str, Any] | None = None
    fidelity: bool = True
    data: str | Path | None = None
    alpha: bool = False

    @classmethod
    def field_names(cls) -> list[str]:
        """The option names, in order."""
        return [f.name for f in fields(cls)]


def report_options(options: ReportOptions | None, keywords: Mapping[str, Any]) -> ReportOptions:
    """`options` (None: the defaults) with `keywords` (field names) applied; an unknown keyword is a one-line
    OptionError naming the closest ones."""
    valid = ReportOptions.field_names()
    for key in keywords:
        if key not in valid:
            raise unknown_keyword("build_report", key, valid)
    return replace(options or ReportOptions(), **keywords)
