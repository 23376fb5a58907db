"""Collects small uint8 frames of every image during a render, within a memory budget, for the gif exporter."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

KEY = "gif"  #: result.extras key: {"frames": [(T, h, w, C) uint8 per image], "steps": [[step per frame]]}


@dataclass
class Plan:
    """How one render is recorded: a frame every `every` steps at `size` (h, w)."""

    every: int
    size: tuple[int, int]


@dataclass
class Take:
    """What one render recorded so far (kept in the render's own `run.state`, so renders never share it)."""

    plan: Plan | None = None
    frames: dict[int, list[np.ndarray]] = field(default_factory=dict)
    steps: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class Recorder:
    """Records frames through the lifecycle hooks, only for renders that will be exported with `gif`.

    Limits: frames are downscaled to `max_side` pixels, at most `max_frames` per image (the final image
    included), and all frames of a render fit in `budget_bytes`: with many units, frames get fewer and smaller.
    The recorder holds only these limits; each render's frames live in its `run.state[KEY]`.
    """

    max_side: int = 128
    max_frames: int = 32
    budget_bytes: int = 256 << 20
    min_side: int = 32

    def wanted(self, run: Any) -> bool:
        """Whether this render will be exported as a GIF (the caller lists its exporters on the run)."""
        return "gif" in tuple(getattr(run, "exporters", ()) or ())

    def take(self, run: Any) -> Take:
        """This render's recording (created at its first chunk)."""
        return run.state.setdefault(KEY, Take())

    def start(self, run: Any) -> None:
        """Forget a chunk's frames when it starts again (the engine retries a chunk that ran out of memory as
        smaller ones)."""
        if not self.wanted(run):
            return
        take = self.take(run)
        for i in range(run.unit_offset, run.unit_offset + len(run.units)):
            take.frames.pop(i, None)
            take.steps.pop(i, None)

    def _plan(self, run: Any, shape: tuple[int, ...]) -> Plan | None:
        if len(shape) != 4:  # 1-D signals: no GIF
            return None
        c, h, w = shape[1:]
        side = self.max_side
        while True:
            scale = min(1.0, side / max(h, w))
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            per_frame = size[0] * size[1] * min(c, 3)
            frames = min(self.max_frames, self.budget_bytes // max(1, per_frame * max(1, run.total_units)))
            if frames >= min(8, self.max_frames) or side <= self.min_side:
                break
            side //= 2
        frames = max(2, frames)
        return Plan(every=max(1, math.ceil(run.steps / (frames - 1))), size=size)

    def step(self, run: Any, state: Any) -> None:
        """Keep a frame of every image at step 1 and every `plan.every` steps (not the last: `end` adds it)."""
        if not self.wanted(run):
            return
        take = self.take(run)
        if state.step != 1 and (state.step % (take.plan.every if take.plan else 1) or state.step >= run.steps):
            return
        with torch.no_grad():
            images = state.images()
            if take.plan is None:
                take.plan = self._plan(run, tuple(images.shape))
            if take.plan is None:
                return
            small = self._small(images.float(), take.plan)
        for j, frame in enumerate(small):
            take.frames.setdefault(run.unit_offset + j, []).append(frame)
            take.steps.setdefault(run.unit_offset + j, []).append(state.step)

    def _small(self, images: torch.Tensor, plan: Plan) -> np.ndarray:
        """(k, C, H, W) 0..1 -> (k, h, w, C<=3) uint8 on the CPU."""
        if tuple(images.shape[-2:]) != plan.size:
            images = F.interpolate(images, size=plan.size, mode="bilinear", antialias=True, align_corners=False)
        images = images[:, :3] if images.shape[1] >= 3 else images[:, :1]
        return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def end(self, run: Any, result: Any) -> None:
        """Add the final images as last frames and hand everything to `result.extras["gif"]`."""
        take = run.state.pop(KEY, None) if run is not None and self.wanted(run) else None
        if take is None or take.plan is None or not take.frames:
            return
        final = torch.from_numpy(np.asarray(result.images)).permute(0, 3, 1, 2).float() / 255.0
        last = self._small(final, take.plan)
        frames, steps = [], []
        for i in range(len(result.images)):
            frames.append(np.stack([*take.frames.get(i, []), last[i]]))
            steps.append([*take.steps.get(i, []), int(result.settings.get("steps", run.steps))])
        result.extras[KEY] = {"frames": frames, "steps": steps}
