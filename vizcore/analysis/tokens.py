"""What an optimized embedding reads as: the nearest rows of the model's embedding table (token or byte ids)
at every position of a render, by cosine similarity."""

from __future__ import annotations

from typing import Any

import numpy as np


def nearest_tokens(table: np.ndarray, values: np.ndarray, k: int = 3) -> list[list[tuple[int, float]]]:
    """For each position of `values` (L, D), the `k` table rows (V, D) most similar to it: [(id, cosine), ...]."""
    t = np.asarray(table, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.ndim != 2 or v.ndim != 2 or t.shape[1] != v.shape[1]:
        raise ValueError(f"table {t.shape} and values {v.shape} do not share a feature axis")
    tn = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    vn = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sim = vn @ tn.T  # (L, V)
    k = min(k, t.shape[0])
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return [[(int(j), round(float(sim[p, j]), 4)) for j in top[p]] for p in range(v.shape[0])]


def result_tokens(result: Any, table: np.ndarray, k: int = 3) -> list[list[list[tuple[int, float]]]]:
    """`nearest_tokens` for every unit of a render of an embedding input (a `vizcore.Result` of 1-D images)."""
    return [nearest_tokens(table, result.graph_values(i), k) for i in range(len(result))]
