"""Duplicate filters: pairs of convolution kernels that are the same up to a rotation, flip or small shift and
a positive scale, found with one matrix product per transformation (no Python loop over pairs).

For a layer with n filters of d weights and T transformations the cost is T·n²·d multiply-adds and n² floats of
memory (the products run in row blocks); a 3x3 kernel needs T = 9 (identity, rot90, rot180, two flips, 4 shifts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

#: Inverse of each transformation name: if W_j = t(W_i) then W_i = INVERSE[t](W_j).
INVERSE = {"shift": "shift", "rot90": "rot270", "rot180": "rot180", "rot270": "rot90", "flip_h": "flip_h",
           "flip_v": "flip_v"}
_BLOCK = 1 << 22  # similarity entries per row block (16 MiB of float32)


@dataclass(frozen=True)
class Transform:
    """A kernel transformation: its report name, a function on (n, I, *kernel) tensors, and for shifts the
    opposite shift (used to measure the part of filter j that overlaps the shifted filter i)."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    back: Callable[[torch.Tensor], torch.Tensor] | None = None


def _shift(w: torch.Tensor, offsets: tuple[int, ...]) -> torch.Tensor:
    """Shift the kernel's spatial axes by `offsets` pixels, filling with zeros (no wrap-around)."""
    out = torch.zeros_like(w)
    src = [slice(None), slice(None)]
    dst = [slice(None), slice(None)]
    for k, o in zip(w.shape[2:], offsets):
        src.append(slice(max(0, -o), k - max(0, o)))
        dst.append(slice(max(0, o), k - max(0, -o)))
    out[tuple(dst)] = w[tuple(src)]
    return out


def _shift_t(offsets: tuple[int, ...]) -> Transform:
    back = tuple(-o for o in offsets)
    return Transform("shift", lambda w: _shift(w, offsets), lambda w: _shift(w, back))


def transforms(kernel: tuple[int, ...], max_shift: int = 1) -> list[Transform]:
    """The transformations to try for a kernel of this spatial shape: identity first, one of each inverse pair.

    Similarity is symmetric under swapping the two filters and inverting the transformation, so rot270 and the
    shifts of the opposite half-plane are covered by rot90 and these shifts read the other way round.
    2-D: rot90 and rot180 (square kernels; rot180 only otherwise), flips, shifts up to `max_shift`; 1-D: flip and
    shifts; other ranks: identity only. The identity is reported as "shift" (offset zero: a copy up to scale).
    """
    out = [Transform("shift", lambda w: w)]
    if len(kernel) == 2:
        kh, kw = kernel
        if kh == kw and kh > 1:
            out.append(Transform("rot90", lambda w: torch.rot90(w, 1, (2, 3))))
        if kh > 1 and kw > 1:  # on a 1-pixel-high (or wide) kernel rot180 is a flip
            out.append(Transform("rot180", lambda w: torch.rot90(w, 2, (2, 3))))
        if kw > 1:
            out.append(Transform("flip_h", lambda w: torch.flip(w, (3,))))
        if kh > 1:
            out.append(Transform("flip_v", lambda w: torch.flip(w, (2,))))
        sy, sx = min(max_shift, kh - 1), min(max_shift, kw - 1)
        out += [_shift_t((dy, dx)) for dy in range(0, sy + 1) for dx in range(-sx, sx + 1) if dy > 0 or dx > 0]
    elif len(kernel) == 1 and kernel[0] > 1:
        out.append(Transform("flip_h", lambda w: torch.flip(w, (2,))))
        out += [_shift_t((d,)) for d in range(1, min(max_shift, kernel[0] - 1) + 1)]
    return out


def _best_matches(w: torch.Tensor, max_shift: int, min_overlap: float) -> tuple[torch.Tensor, torch.Tensor,
                                                                                list[str]]:
    """For one group of n kernels: S[j, i] = max over transformations t of sim(W_j, t(W_i)), and the argmax.

    sim is the cosine over the part the two kernels share (all of it except for shifts), so a kernel and its
    shifted copy score 1; a shift must keep `min_overlap` of each kernel's energy to count.
    """
    n = w.shape[0]
    flat = w.reshape(n, -1)
    norm2 = (flat * flat).sum(1)
    alive = norm2 > norm2.max() * 1e-12 if n else norm2 > 0
    best = torch.full((n, n), -2.0, dtype=w.dtype)
    arg = torch.zeros((n, n), dtype=torch.int8)
    ts = transforms(tuple(w.shape[2:]), max_shift)
    for k, t in enumerate(ts):
        u = t.fn(w).reshape(n, -1)  # t(W_i)
        un2 = (u * u).sum(1)
        if t.back is None:  # norm-preserving: compare whole kernels
            vn2 = norm2
            keep_i = keep_j = alive
        else:  # W_j restricted to the window that t(W_i) covers
            v = t.back(w).reshape(n, -1)
            vn2 = (v * v).sum(1)
            keep_i = alive & (un2 >= min_overlap * norm2)
            keep_j = alive & (vn2 >= min_overlap * norm2)
        a = flat / vn2.clamp_min(1e-30).sqrt()[:, None]
        b = u / un2.clamp_min(1e-30).sqrt()[:, None]
        rows = max(1, _BLOCK // max(n, 1))
        for r in range(0, n, rows):
            s = a[r:r + rows] @ b.T  # s[j, i] = sim(W_j, t(W_i))
            s.masked_fill_(~(keep_j[r:r + rows, None] & keep_i[None, :]), -2.0)
            blk = best[r:r + rows]
            better = s > blk
            blk[better] = s[better]
            arg[r:r + rows][better] = k
    return best, arg, [t.name for t in ts]


def find_duplicates(weight: torch.Tensor | np.ndarray, groups: int = 1, threshold: float = 0.95,
                    max_shift: int = 1, min_overlap: float = 0.5) -> list[list]:
    """Pairs [i, j, transform, similarity] (i < j) where filter j ≈ scale·transform(filter i), scale > 0.

    `weight` is a Conv weight (out, in/groups, *kernel); only filters of the same group are compared (filters of
    different groups read different inputs, so equal kernels there are not redundant). Zero filters are skipped
    (they are dead or constant units, reported elsewhere). Sorted by similarity, highest first.
    """
    w = torch.as_tensor(np.asarray(weight) if not isinstance(weight, torch.Tensor) else weight).detach()
    w = w.to(torch.float32).cpu()
    w = torch.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)
    out_ch = w.shape[0]
    if groups < 1 or out_ch % groups:
        raise ValueError(f"{out_ch} filters cannot form {groups} groups")
    per = out_ch // groups
    pairs: list[list] = []
    if per < 2:
        return pairs
    for g in range(groups):
        best, arg, names = _best_matches(w[g * per:(g + 1) * per], max_shift, min_overlap)
        # best[j, i]: j ≈ t(i).  For i < j take the better of (j ≈ t(i)) and (i ≈ t'(j), i.e. j ≈ t'^-1(i)).
        low = best.tril(-1)  # j > i: entries [j, i]
        up = best.T.tril(-1)  # entries [i, j] transposed to [j, i]
        use_up = up > low
        sim = torch.where(use_up, up, low)
        jj, ii = torch.nonzero(torch.tril(sim >= threshold, -1), as_tuple=True)
        arg_low = arg
        arg_up = arg.T
        for j, i in zip(jj.tolist(), ii.tolist()):
            if use_up[j, i]:
                name = INVERSE[names[int(arg_up[j, i])]]
            else:
                name = names[int(arg_low[j, i])]
            pairs.append([g * per + i, g * per + j, name, round(float(sim[j, i]), 6)])
    pairs.sort(key=lambda p: (-p[3], p[0], p[1]))
    return pairs
