"""One chunk's step loop: build the parameterization, ascend for `steps` steps, read off images and values.

Every chunk draws from the render's generator re-seeded with the seed, so a chunk of several units follows the
same random path as one unit alone (batched == one at a time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..errors import PluginError, VizcoreError, oneline
from ..lifecycle import RenderRun, StepState
from ..objectives import Objective, batch_values
from . import accent
from .adam import OPTIMIZERS, Adam
from .budget import is_oom
from .seeding import call_factory, global_rng

if TYPE_CHECKING:
    from .setup import Render


@dataclass
class ChunkResult:
    """What one chunk gives back: uint8 images (N, C, ...), final and best values, traces, the steps recorded."""

    images: np.ndarray
    values: np.ndarray
    best: np.ndarray
    traces: list[list[float]]
    steps: list[int]
    run: RenderRun
    init_distances: dict[str, list[float]] | None = None  # accentuation: each image's distance to the picture


#: `run.state` key of the summed |gradient| on the images of each chunk, when `run.image_grads` was set
IMAGE_GRAD_SUM = "image_grad_sum"


@dataclass
class _Ascent:
    """The running state of one chunk's ascent."""

    trace: list[torch.Tensor] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    best: torch.Tensor | None = None  # each image's best value during the ascent (on its transformed input)
    scale: torch.Tensor | None = None  # each image's largest |objective| so far, capped at 1
    grad_sum: torch.Tensor | None = None  # `run.image_grads`: |gradient| on each image, summed over channels, steps

    def record(self, step: int, vals: torch.Tensor) -> None:
        if not self.steps or self.steps[-1] != step:
            self.trace.append(vals)
            self.steps.append(step)


def chunk_run(r: Render, ci: int, a: int, b: int, n_chunks: int) -> RenderRun:
    """The `RenderRun` of units a..b-1 (chunk `ci` of `n_chunks`) as plugins see it."""
    k = r.options.images_per_unit
    return RenderRun(model=r.model, units=r.units[a * k:b * k], settings=r.settings, device=r.dev,
                     steps=r.options.steps, chunk=ci, n_chunks=n_chunks, unit_offset=a * k,
                     total_units=len(r.objectives) * k, exporters=r.exporters, state=r.shared)


def run_chunk(r: Render, ci: int, a: int, b: int, n_chunks: int) -> ChunkResult:
    """Units a..b-1 of the render `r` in one batch (chunk `ci` of `n_chunks`)."""
    k = r.options.images_per_unit
    run = chunk_run(r, ci, a, b, n_chunks)
    objs = r.objectives[a:b]
    r.generator.manual_seed(r.options.seed)
    with global_rng(r.options.seed, r.dev, r.legacy_rng):
        p = _param(r, (b - a) * k, b - a)
        opt = OPTIMIZERS[r.options.optimizer](p.parameters(), lr=r.options.lr)
        r.hooks.call("vizcore_render_start", run=run)
        state = _ascend(r, run, p, opt, objs, a, [*r.regularizers, *accent.chunk_penalties(r, objs)])
    if state.grad_sum is not None:  # a retried chunk replaces its map
        run.state.setdefault(IMAGE_GRAD_SUM, {})[run.unit_offset] = state.grad_sum
    r.switch.on = False
    with torch.no_grad():
        img = p()
        final = values(r, objs, r.net(img), a)
    best = torch.fmax(state.best, final) if state.best is not None else final
    return ChunkResult(images=(img.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy(),
                       values=final.float().cpu().numpy(), best=best.float().cpu().numpy(),
                       traces=torch.stack(state.trace, 1).float().cpu().numpy().tolist(), steps=state.steps, run=run,
                       init_distances=accent.distances(r, objs, img))


def _param(r: Render, n_img: int, units: int) -> nn.Module:
    """The chunk's parameterization on the render's device (a plugin's that raises: a one-line PluginError)."""
    shape = (n_img, *r.shape[1:])
    start = {} if r.accent is None else {"init": r.accent.init.cpu()}
    try:
        p = call_factory(r.factories.param, shape, units=units, generator=r.generator, **r.options.param_options,
                         **start)
    except (VizcoreError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001  a broken factory; the built-ins' errors propagate as they are
        plugin = r.providers.get("param")
        if plugin is None or is_oom(exc):
            raise
        raise PluginError(f"parameterization {r.options.param!r} of plugin {plugin!r} failed: {oneline(exc)}",
                          "fix or uninstall the plugin, or choose another --param") from exc
    return p.to(r.dev)


def _ascend(r: Render, run: RenderRun, p: nn.Module, opt: Adam, objs: Sequence[Objective],
            offset: int, regs: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> _Ascent:
    """The step loop: transforms (none in the last `finish` of the steps), forward, objective minus penalties,
    backward, Adam; hooks after each step. When a start hook set `run.image_grads`, the step hooks get the
    gradient on the image and the loop sums its |value| over channels and steps into `run.state[IMAGE_GRAD_SUM]`
    ({unit offset: (N, H, W)}: the `alpha` exporter's map)."""
    steps, every = r.options.steps, r.options.record_every
    override_steps = int(round(r.options.relu_override * steps))
    transform_steps = steps - int(round(r.options.finish * steps))  # the rest: the picture itself (the finish)
    cap = 1.0 if r.accent is None else math.inf  # accentuation: every objective scaled to 1 against its penalties
    state = _Ascent()
    for step in range(1, steps + 1):
        r.switch.on = step <= override_steps
        img = p()
        if run.image_grads:
            img.retain_grad()
        x = img
        for t in r.transforms if step <= transform_steps else ():
            x = t(x)
        with torch.autocast(r.dev.type, dtype=torch.bfloat16, enabled=r.amp):
            acts = r.net(x)
        vals = values(r, objs, acts, offset, x.shape[0] // img.shape[0])  # the crops transform's copies
        if regs:  # a small objective scaled up to 1 against the penalties
            state.scale = _scale(vals.detach(), state.scale, cap)
        gain = vals if state.scale is None else vals / state.scale
        for reg in regs:
            gain = gain - reg(img)
        opt.zero_grad(set_to_none=True)
        (-gain.sum()).backward()
        opt.step()
        if run.image_grads and img.grad is not None and img.grad.dim() == 4:
            m = img.grad.detach().abs().sum(1).float()
            state.grad_sum = m if state.grad_sum is None else state.grad_sum + m
        vals = vals.detach()
        state.best = vals if state.best is None else torch.fmax(state.best, vals)  # NaN-skipping, no sync
        if step % every == 0 or step == steps:
            state.record(step, vals)
        if r.want_steps and _observe(r, run, p, step, vals, img.grad if run.image_grads else None):
            state.record(step, vals)
            break
    return state


def _scale(vals: torch.Tensor, before: torch.Tensor | None, cap: float = 1.0) -> torch.Tensor:
    """Each image's largest |value| so far, capped at `cap` (at least 1e-12): an objective smaller than 1 is divided
    by it, so a unit whose values are 1e-5 meets its penalties as one at 1 does, and one above 1 is left as it was
    (issue 25). Per image, so a batch follows the same path as one image at a time. An accentuation (a start
    picture) has no cap: its penalty weights are in units of the objective's own size, for logits and channels
    alike."""
    mag = torch.nan_to_num(vals.abs(), nan=0.0, posinf=1.0).clamp(1e-12, cap)
    return mag if before is None else torch.maximum(before, mag)


def _observe(r: Render, run: RenderRun, p: nn.Module, step: int, vals: torch.Tensor,
             grad: torch.Tensor | None) -> bool:
    """Call the step hooks and the render's `on_step`; whether one of them asked to stop."""
    state = StepState(step=step, values=vals, _images=lambda: _no_grad_call(p), _grad=grad)
    r.hooks.call("vizcore_render_step", run=run, state=state)
    if r.on_step is not None:
        r.on_step(run, state)
    return bool(state.stop)


def _no_grad_call(p: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return p()


def values(r: Render, objs: Sequence[Objective], acts: dict[int, torch.Tensor], offset: int = 0,
           copies: int = 1) -> torch.Tensor:
    """One value per image of units offset.. (`objs`); a plugin objective that raises or returns the wrong shape is
    a one-line PluginError. `copies`: the activations hold that many transformed copies of each image (the crops
    transform, rows i*copies..): an image's value is the mean over its copies."""
    if copies > 1:
        return _values(r, objs, acts, offset, r.options.images_per_unit * copies).view(-1, copies).mean(1)
    return _values(r, objs, acts, offset, r.options.images_per_unit)


def _values(r: Render, objs: Sequence[Objective], acts: dict[int, torch.Tensor], offset: int, k: int) -> torch.Tensor:
    acts = {i: v.float() for i, v in acts.items()}
    try:
        vals = batch_values(objs, acts, k)
    except (VizcoreError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001  find the objective that broke; re-raised as is if it is no plugin's
        if is_oom(exc):
            raise
        blamed = _blame(r, objs, acts, k, offset)
        if blamed is None:
            raise
        raise blamed from exc
    if tuple(vals.shape) != (len(objs) * k,):
        raise _blame(r, objs, acts, k, offset) or PluginError(
            f"the objectives gave values of shape {tuple(vals.shape)}, not ({len(objs) * k},)")
    return vals


def _blame(r: Render, objs: Sequence[Objective], acts: dict[int, torch.Tensor], k: int,
           offset: int) -> PluginError | None:
    """The PluginError for the first plugin objective of `objs` that raises or returns a shape other than (k,)."""
    for i, o in enumerate(objs):
        plugin = getattr(o, "provider", None)
        if plugin is None:
            continue
        target = r.names[offset + i]
        try:
            v = o.value({key: a[i * k:(i + 1) * k] for key, a in acts.items()})
            problem = None if tuple(getattr(v, "shape", ())) == (k,) else \
                f"returned shape {tuple(getattr(v, 'shape', ()))} for {k} image(s), not ({k},)"
        except Exception as exc:  # noqa: BLE001
            problem = f"raised {oneline(exc)}"
        if problem:
            return PluginError(f"objective {target!r} of plugin {plugin!r} {problem}",
                               "fix or uninstall the plugin, or render other targets")
    return None


def nan_units(r: Render, vals: np.ndarray) -> list[str]:
    """Targets whose final value is NaN (their images are blank), each once."""
    k = r.options.images_per_unit
    bad = [r.names[i // k] for i, v in enumerate(vals.tolist()) if isinstance(v, float) and math.isnan(v)]
    return list(dict.fromkeys(bad))


