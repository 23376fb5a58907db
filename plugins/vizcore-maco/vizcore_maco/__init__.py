"""vizcore-maco: the MACO parameterization (`--param maco`) as a vizcore plugin.

Fel et al., "Unlocking Feature Visualization for Deeper Networks with MAgnitude Constrained Optimization",
NeurIPS 2023: optimize only the Fourier phase; the magnitude is the mean spectrum of natural photos.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vizcore import hookimpl

from .param import MacoImage, magnitude

__version__ = "0.1.0"
__all__ = ["MacoImage", "magnitude", "vizcore_add_params"]


@hookimpl
def vizcore_add_params() -> dict[str, Callable[..., Any]]:
    """`maco`: factory(shape, units=1, phase_sd=None) -> MacoImage."""
    return {"maco": MacoImage}
