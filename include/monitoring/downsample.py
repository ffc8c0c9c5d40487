"""Downsampling of long curves for drawing: Largest-Triangle-Three-Buckets keeps peaks and dips visible.

Neither a browser nor matplotlib is handed 100,000 mini-batches: every series is cut to a few thousand points here."""

from __future__ import annotations

import numpy as np


def lttb_indices(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    """Indices of the points Largest-Triangle-Three-Buckets keeps to draw ``(x, y)`` with ``n_out`` points.

    The first and last points are always kept; each bucket in between keeps the point that makes the largest
    triangle with the previous kept point and the next bucket's mean, which keeps peaks and dips visible.

    Args:
        x: sorted x values.
        y: y values (finite).
        n_out: how many points to keep (at least 3 to downsample at all).

    Returns:
        Sorted indices into ``x``; all of them when ``len(x) <= n_out``.
    """
    n = len(x)
    if n <= n_out or n <= 2:
        return np.arange(n)
    if n_out < 3:
        return np.array([0, n - 1])[:max(n_out, 0)]
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    edges = (np.floor(np.arange(n_out - 1) * (n - 2) / (n_out - 2)) + 1).astype(np.int64)
    edges[-1] = n - 1
    # Bucket i is [edges[i], edges[i + 1]); the last "bucket" is the last point alone.
    bounds = np.append(edges, n)
    sizes = np.diff(bounds)
    mean_x = np.add.reduceat(x, edges) / sizes
    mean_y = np.add.reduceat(y, edges) / sizes
    out = np.empty(n_out, dtype=np.int64)
    out[0], out[-1] = 0, n - 1
    a = 0
    for i in range(n_out - 2):
        lo, hi = edges[i], edges[i + 1]
        avg_x, avg_y = mean_x[i + 1], mean_y[i + 1]
        area = np.abs((x[a] - avg_x) * (y[lo:hi] - y[a]) - (x[a] - x[lo:hi]) * (avg_y - y[a]))
        a = lo + int(np.argmax(area))
        out[i + 1] = a
    return out


def downsample(x: np.ndarray, y: np.ndarray, max_points: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Indices to draw at most ``max_points`` points: LTTB, plus the indices in ``keep`` where they fit.

    ``keep`` (e.g. the first and last point of every run) is honoured only while it takes at most half of
    the budget, so the result never exceeds ``max_points``.
    """
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    keep = np.unique(keep) if keep is not None and len(keep) <= max_points // 2 else np.empty(0, dtype=np.int64)
    # The union has at most (max_points - len(keep)) + len(keep) points.
    return np.union1d(lttb_indices(x, y, max_points - len(keep)), keep)
