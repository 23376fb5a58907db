"""Duplicate filters: every transformation found with its name, positive scale only, groups respected, no false
alarms on random kernels, and the vectorized search stays fast on a 512-filter layer."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from vizcore.analysis.duplicates import INVERSE, _shift, find_duplicates, transforms


def _random(n: int, c: int = 8, k: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, k, k, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("name", "fn"), [
    ("rot90", lambda w: torch.rot90(w, 1, (1, 2))),
    ("rot180", lambda w: torch.rot90(w, 2, (1, 2))),
    ("rot270", lambda w: torch.rot90(w, 3, (1, 2))),
    ("flip_h", lambda w: torch.flip(w, (2,))),
    ("flip_v", lambda w: torch.flip(w, (1,))),
    ("shift", lambda w: w),
])
def test_each_transformation_is_named(name: str, fn) -> None:  # noqa: ANN001
    w = _random(10)
    w[6] = fn(w[3]) * 2.5
    assert find_duplicates(w) == [[3, 6, name, pytest.approx(1.0, abs=1e-5)]]


def test_the_later_filter_is_the_transformed_one() -> None:
    w = _random(10)
    w[2] = torch.rot90(w[7], 1, (1, 2))  # filter 2 = rot90(7), so filter 7 = rot270(2)
    assert find_duplicates(w)[0][:3] == [2, 7, "rot270"]
    assert all(INVERSE[INVERSE[t]] == t for t in INVERSE)


@pytest.mark.parametrize("offset", [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, 1)])
def test_shifted_copies(offset: tuple[int, int]) -> None:
    w = _random(6, k=5)
    base = w[1:2].clone()
    keep = _shift(_shift(base, offset), tuple(-o for o in offset))  # the part that survives the shift
    w[1] = keep[0]
    w[4] = _shift(keep, offset)[0] * 0.3
    pairs = find_duplicates(w, max_shift=1)
    assert [p[:3] for p in pairs] == [[1, 4, "shift"]]
    assert find_duplicates(w, max_shift=0) == []  # shifts off: not found


def test_negative_scale_is_not_a_duplicate() -> None:
    w = _random(8)
    w[5] = -2.0 * w[1]
    assert find_duplicates(w) == []


def test_near_copies_and_threshold() -> None:
    w = _random(8, c=16)
    noise = torch.randn(w[0].shape, generator=torch.Generator().manual_seed(1))
    w[3] = w[0] + 0.1 * noise * w[0].norm() / noise.norm()  # cosine about 0.995
    sim = find_duplicates(w)[0][3]
    assert 0.99 < sim < 0.999
    assert find_duplicates(w, threshold=0.999) == []


def test_groups_and_zero_filters() -> None:
    w = _random(8, c=4)
    w[5] = w[1]  # different groups with groups=2 (0-3, 4-7): not redundant
    w[2] = 0.0
    w[3] = 0.0  # two zero filters are not "duplicates" (they are dead units)
    assert find_duplicates(w, groups=2) == []
    assert [p[:3] for p in find_duplicates(w, groups=1)] == [[1, 5, "shift"]]
    with pytest.raises(ValueError):
        find_duplicates(w, groups=3)


def test_pointwise_and_non_square_kernels() -> None:
    w = torch.randn(12, 16, 1, 1, generator=torch.Generator().manual_seed(2))
    w[9] = w[4] * 7
    assert [t.name for t in transforms((1, 1))] == ["shift"]
    assert [p[:3] for p in find_duplicates(w)] == [[4, 9, "shift"]]
    r = torch.randn(6, 3, 1, 5, generator=torch.Generator().manual_seed(3))
    r[4] = torch.flip(r[2], (2,))
    assert "rot90" not in {t.name for t in transforms((1, 5))}
    assert [p[:3] for p in find_duplicates(r)] == [[2, 4, "flip_h"]]
    s = torch.randn(6, 3, 7, generator=torch.Generator().manual_seed(4))  # Conv1d
    s[5] = torch.flip(s[0], (1,))
    assert [p[:3] for p in find_duplicates(s)] == [[0, 5, "flip_h"]]


def test_no_false_alarms_on_random_kernels() -> None:
    for seed, (n, c, k) in enumerate([(64, 3, 3), (128, 16, 3), (96, 32, 1), (40, 8, 5)]):
        assert find_duplicates(_random(n, c, k, seed)) == []


def test_vectorized_search_scales() -> None:
    """A 512-filter 3x3 layer with 64 inputs: 130k pairs x 9 transformations, in seconds, not minutes."""
    w = _random(512, c=64)
    w[300] = torch.rot90(w[17], 1, (1, 2))
    t0 = time.perf_counter()
    pairs = find_duplicates(w)
    elapsed = time.perf_counter() - t0
    assert [p[:3] for p in pairs] == [[17, 300, "rot90"]]
    assert elapsed < 20


def test_accepts_numpy() -> None:
    w = _random(5).numpy()
    w[4] = np.flip(w[0], 1)
    assert find_duplicates(w)[0][:3] == [0, 4, "flip_v"]
