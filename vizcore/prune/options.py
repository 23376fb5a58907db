"""`PruneOptions`: every setting of one prune, validated once where it is built (CLI or Python) and handed down."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import OptionError, closest
from ..graph_inputs import parse_size
from ..inputspace import parse_norm, parse_range
from .budget import Budget, parse_budget


@dataclass(frozen=True)
class PruneOptions:
    """What `prune` removes, what it rests on and how it verifies; the input flags are the other commands'."""

    from_check: str | None = None  # a `vizcore check --json` report: only what it called dead goes
    data: str | None = None  # the user's inputs: evidence and verification
    verify_data: str | None = None  # held-out inputs: verification only, never evidence
    duplicates: str | None = None  # "merge": fold exact duplicate channels into one
    tolerance: float = 1e-5  # largest allowed |difference| per output, relative to its largest |value|
    margin: float = 2.0  # std below the gate's threshold a gated unit's input must stay (0: off)
    dry_run: bool = False
    force: bool = False
    probes: int = 16  # seeded noise probes (the sample photos come on top)
    seed: int = 0
    batch: int = 4
    latency_reps: int = 20
    # lossy pruning under a budget (None: the lossless mode)
    budget: Budget | str | None = None  # "top1=0.99", "rel=0.02", "cos=0.995", "kl=0.01" (",macs=0.75")
    recover: int = 0  # distillation steps after the search (0: none)
    max_steps: int = 60  # trials (measured candidate sets) the search may make
    max_time: float | None = None  # seconds the search may take
    recover_lr: float = 1e-5
    recover_augment: bool = False  # distil on freshly augmented calibration inputs (targets: the original's outputs)
    device: str = "auto"  # recovery: "auto" (CUDA when there is a GPU), "cpu", "cuda"
    reconstruct: str = "final"  # least-squares re-fit of the readers of pruned channels: "final", "trial", "off"
    ranking: str = "taylor"  # the search's order: global first-order "taylor", or measured per-group "sensitivity"
    channel_multiple: int = 8  # channels leave each group in units of this many (tensors keep multiples of it)
    sensitivity_cost: str = "kl"  # what --ranking sensitivity measures on classifiers: "kl" or "margin" (lost margin)
    # the input flags every command shares (see vizcore.commands._model_flags)
    size: int | tuple[int, ...] | None = None
    preprocess: str | None = None
    value_range: str | None = None
    layout: str | None = None
    feeds: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.duplicates not in (None, "keep", "merge"):
            raise OptionError(f"--duplicates {self.duplicates!r}: unknown", "use --duplicates merge (or leave it out)")
        for name in ("tolerance", "margin"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise OptionError(f"--{name} {v!r} must be a finite number >= 0")
        for name, low in (("probes", 1), ("seed", 0), ("batch", 1), ("latency_reps", 0), ("recover", 0),
                          ("max_steps", 1), ("channel_multiple", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise OptionError(f"--{name.replace('_', '-')} {v!r} must be a whole number >= {low}")
        if self.probes > 4096 or self.batch > 1024:
            raise OptionError("--probes is at most 4096 and the batch at most 1024")
        self._lossy()
        if self.size is not None:
            object.__setattr__(self, "size", parse_size(self.size, least=1))
        if self.value_range is not None:
            parse_range(self.value_range)
        if self.preprocess is not None:
            parse_norm(self.preprocess)

    def _lossy(self) -> None:
        if self.budget is not None:
            object.__setattr__(self, "budget", parse_budget(self.budget))
        elif self.recover:
            raise OptionError("--recover needs --budget", "recovery tunes a lossy prune; give --budget top1=0.99 …")
        for name in ("max_time", "recover_lr"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not
                                  (math.isfinite(v) and v > 0)):
                raise OptionError(f"--{name.replace('_', '-')} {v!r} must be a number > 0")
        if not isinstance(self.recover_augment, bool):
            raise OptionError(f"recover_augment {self.recover_augment!r} must be True or False")
        if self.sensitivity_cost not in ("kl", "margin"):
            raise OptionError(f"sensitivity_cost {self.sensitivity_cost!r}: unknown", "use kl or margin")
        if self.ranking not in ("sensitivity", "taylor"):
            raise OptionError(f"--ranking {self.ranking!r}: unknown", "use sensitivity or taylor")
        if self.reconstruct not in ("trial", "final", "off"):
            raise OptionError(f"--reconstruct {self.reconstruct!r}: unknown", "use trial, final or off")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise OptionError(f"--device {self.device!r}: unknown", "use auto, cpu or cuda")

    def replace(self, **changes: Any) -> PruneOptions:
        """A copy with `changes` (validated); unknown names get a one-line error with the closest ones."""
        known = [f.name for f in fields(self)]
        for k in changes:
            if k not in known:
                hint = closest(k, known)
                raise OptionError(f"unknown prune option {k!r}", f"did you mean {hint[0]!r}?" if hint else
                                  "valid: " + ", ".join(known))
        return replace(self, **changes) if changes else self
