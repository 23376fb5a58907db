"""The render engine: gradient ascent on the input for many units at once (`run`), and what it is made of.

    device.py  where it runs and the process settings it switches     budget.py  memory budget, chunks, OOM retries
    net.py     resize + normalize + the graph cut at the targets      relu.py    Lucid's ReLU gradient override
    fusion.py  conv + clamp in one oneDNN kernel (CPU)                run.py     the loop
"""

from __future__ import annotations

from .budget import parse_memory
from .device import resolve_device
from .run import Factories, VizcoreWarning, run

__all__ = ["Factories", "VizcoreWarning", "parse_memory", "resolve_device", "run"]
