"""The render engine: gradient ascent on the input for many units at once (`run`), and what it is made of.

    options.py  RenderOptions: every option, validated once     run.py     the facade: prepare, chunks, result
    setup.py    what a render needs before its first step       loop.py    one chunk's step loop
    budget.py   memory budget, estimates, chunks, OOM retries   seeding.py the seeded generator, legacy factories
    device.py   where it runs and the process settings it switches
    net.py      resize + normalize + the graph cut at the targets      relu.py    Lucid's ReLU gradient override
    fusion.py   conv + clamp in one oneDNN kernel (CPU)
"""

from __future__ import annotations

from .budget import parse_memory
from .device import device_settings, resolve_device
from .options import RenderOptions
from .run import ChunkStore, run
from .setup import Factories, VizcoreWarning

__all__ = ["ChunkStore", "Factories", "RenderOptions", "VizcoreWarning", "device_settings", "parse_memory",
           "resolve_device", "run"]
