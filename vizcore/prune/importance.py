"""How much each candidate matters, on the calibration data, as the first-order Taylor estimate (Molchanov et al.
2017) of the change its removal makes: per sample |sum over positions of (change of the tensor) x gradient|, the
mean over samples.

The gradient is that of the log-softmax of the first classifier output at the *original* model's top-1 class (the
distillation loss would have zero gradient at the start), else of every output's projection on a seeded random
direction (whose expected square is proportional to the squared output change). The change a removal makes: a
channel class loses its value less its mean (the mean is folded into the consumers' biases), at every
channel-mixing read; a residual branch loses its whole output; a shape-preserving run becomes its input; a near
copy becomes `scale` x its original.

Where the torch graph cannot be built, activation statistics stand in: a channel's standard deviation times the
norm of its consumers' weights (structural candidates then have no estimate and are ranked last).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import VizcoreError
from .budget import is_classifier
from .candidates import Candidate
from .evidence import Evidence
from .graph import Channels, Graph
from .plan import sink_reads
from .torchgraph import graph_inputs, load_proto


def _needed(cands: Sequence[Candidate], ch: Channels) -> list[str]:
    need: set[str] = set()
    reads = sink_reads(ch)
    for c in cands:
        if c.kind in ("channel", "merge"):
            need.update(s.tensor for s, _ in reads.get(c.roots[0], []))
        else:
            need.update((c.target, c.source))
    return sorted(need)


class _Sums:
    """Per-sample sums of activation x gradient, reduced as the batches come."""

    def __init__(self, merges: dict[str, list[tuple[int, int, float]]],
                 offsets: dict[tuple[str, str], np.ndarray]) -> None:
        self.offsets = offsets
        self.ag: dict[str, list[np.ndarray]] = defaultdict(list)  # tensor -> (n, C) sum_pos a*g
        self.g: dict[str, list[np.ndarray]] = defaultdict(list)  # tensor -> (n, C) sum_pos g
        self.pair: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)  # (target, source) -> (n,)
        self.merge: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)  # (tensor, k copy) -> (n,)
        self.merges = merges

    def add(self, acts: dict[str, torch.Tensor], grads: dict[str, torch.Tensor | None],
            pairs: set[tuple[str, str]]) -> None:
        for t, a in acts.items():
            g = grads.get(t)
            if g is None or a.dim() < 2:
                continue
            a2, g2 = a.detach().reshape(*a.shape[:2], -1), g.reshape(*g.shape[:2], -1)
            self.ag[t].append(torch.einsum("ncs,ncs->nc", a2, g2).double().numpy())
            self.g[t].append(g2.sum(2).double().numpy())
            for j, k, s in self.merges.get(t, []):
                self.merge[(t, k)].append(torch.einsum("ns,ns->n", s * a2[:, j] - a2[:, k], g2[:, k]).double().numpy())
        for tgt, src in pairs:
            a, b, g = acts.get(src), acts.get(tgt), grads.get(tgt)
            if a is not None and b is not None and g is not None and a.shape == b.shape:
                ga = torch.einsum("nk,nk->n", a.detach().reshape(len(a), -1), g.reshape(len(g), -1))
                gb = torch.einsum("nk,nk->n", b.detach().reshape(len(b), -1), g.reshape(len(g), -1))
                off = self.offsets.get((tgt, src))
                if off is not None:  # the mean folded back: + sum_c offset_c * sum_pos g_c
                    gs = g.reshape(*g.shape[:2], -1).sum(2)
                    ga = ga + gs @ torch.from_numpy(off.reshape(-1)).to(gs.dtype)
                self.pair[(tgt, src)].append((ga - gb).double().numpy())


def _objective(ys: Sequence[torch.Tensor], ref_top: np.ndarray | None, gen: torch.Generator) -> torch.Tensor:
    if ref_top is not None:
        y = ys[0]
        return torch.log_softmax(y, 1)[torch.arange(len(y)), torch.from_numpy(ref_top)].sum()
    return sum((y * torch.randn(y.shape, generator=gen)).sum() for y in ys)


def taylor(model, size: Sequence[int] | None, feed: dict[str, np.ndarray], ref: Sequence[np.ndarray],
           cands: Sequence[Candidate], ch: Channels, ev: Evidence, *, batch: int = 8, seed: int = 0,
           samples: int = 96, offsets: dict | None = None, margin: bool = False,
           say: Callable[[str], None] = lambda m: None) -> tuple[list[float | None], str]:
    """The estimate for each candidate (None where it cannot be computed) over the first `samples` calibration
    inputs, and a line saying how it was made. `margin` (top-1 budgets): each sample's change is divided by its
    margin, the original's top-1 minus second logit (the change that flips it), so that what moves the inputs
    closest to flipping counts most."""
    try:
        m = load_proto(model, size)
    except VizcoreError as exc:
        return fallback(cands, ch, ev, Graph(model)), f"activation statistics (no torch graph: {exc.message})"
    need = [t for t in _needed(cands, ch) if t in m.by_key]
    outs = [m.layer(o.name) for o in m.outputs]
    sub = m.cut_at([m.layer(t) for t in need] + outs)
    for p in sub.parameters():
        p.requires_grad_(False)
    merges: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
    rs = sink_reads(ch)
    for c in cands:
        if c.kind == "merge":
            for s, k in rs.get(c.roots[0], []):
                j = int(np.flatnonzero(ch.uf.roots(ch.atoms[s.tensor]) == c.into)[0])
                merges[s.tensor].append((j, k, c.scale))
    sums = _Sums(merges, {k: v for k, v in (offsets or {}).items()
                          if any(c.offset and (c.target, c.source) == k for c in cands)})
    pairs = {(c.target, c.source) for c in cands if c.structural}
    ref_top = np.asarray(ref[0]).argmax(1) if is_classifier(np.asarray(ref[0])) else None
    gen = torch.Generator().manual_seed(seed)
    n = min(len(next(iter(feed.values()))), samples)
    say(f"importance of {len(cands)} candidates on {n} calibration inputs (torch graph)")
    with torch.enable_grad():
        for lo in range(0, n, batch):
            part = slice(lo, min(lo + batch, n))
            xs = [x.requires_grad_(True) if x.is_floating_point() else x for x in graph_inputs(m, feed, part)]
            got = sub(*xs)
            acts = dict(zip(need, got[:len(need)]))
            obj = _objective(got[len(need):], None if ref_top is None else ref_top[part], gen)
            live = [t for t in need if acts[t].requires_grad]
            gs = torch.autograd.grad(obj, [acts[t] for t in live], allow_unused=True)
            sums.add(acts, dict(zip(live, gs)), pairs)
    weight = _margins(np.asarray(ref[0])[:n]) if margin and ref_top is not None else None
    how = "first-order Taylor |activation x gradient| (torch graph)" + (", per sample over its top-1 margin"
                                                                       if weight is not None else "")
    return _scores(cands, ch, ev, sums, weight), how


def _margins(y: np.ndarray) -> np.ndarray:
    """1 / (top-1 logit - second logit) per sample (at least 0.05 apart), scaled to mean 1."""
    top2 = np.sort(y.astype(np.float64), axis=1)[:, -2:]
    w = 1.0 / np.maximum(top2[:, 1] - top2[:, 0], 0.05)
    return w / w.mean()


def _cat(parts: list[np.ndarray]) -> np.ndarray | None:
    return np.concatenate(parts) if parts else None


def _scores(cands: Sequence[Candidate], ch: Channels, ev: Evidence, sums: _Sums, weight: np.ndarray | None = None
            ) -> list[float | None]:
    ag = {t: _cat(v) for t, v in sums.ag.items()}
    gs = {t: _cat(v) for t, v in sums.g.items()}
    rs = sink_reads(ch)
    out: list[float | None] = []
    for c in cands:
        if c.structural:
            v = _cat(sums.pair.get((c.target, c.source), []))
        elif c.kind == "merge":
            parts = [_cat(sums.merge.get((s.tensor, k), [])) for s, k in rs.get(c.roots[0], [])]
            v = None if any(p is None for p in parts) else np.sum(parts, axis=0)
        else:
            v = _channel(rs.get(c.roots[0], []), ag, gs, ev)
        out.append(None if v is None else float(np.mean(np.abs(v) * (1.0 if weight is None else weight))))
    return out


def _channel(reads, ag, gs, ev: Evidence) -> np.ndarray | None:
    total = None
    for s, k in reads:
        if ag.get(s.tensor) is None:
            return None
        st = ev.stats.get(s.tensor)
        mu = float(st.mean[k]) if st is not None and st.total is not None else 0.0
        part = ag[s.tensor][:, k] - mu * gs[s.tensor][:, k]
        total = part if total is None else total + part
    return total


def fallback(cands: Sequence[Candidate], ch: Channels, ev: Evidence, g: Graph) -> list[float | None]:
    """Activation statistics: per channel class, sum over its reads of std x |consumer weights| (L2)."""
    rs = sink_reads(ch)
    out: list[float | None] = []
    for c in cands:
        if c.structural or c.kind == "merge":
            out.append(None)
            continue
        total = 0.0
        for s, k in rs.get(c.roots[0], []):
            w = g.const(s.node.input[1])
            st = ev.stats.get(s.tensor)
            if w is None or st is None or st.total is None:
                continue
            col = np.take(w, k, axis=s.w_axis)
            total += float(st.std[k]) * float(np.linalg.norm(col))
        out.append(total)
    return out
