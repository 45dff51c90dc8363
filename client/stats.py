"""Statistics the client's tools share (``bench``, ``ab``): percentiles of measured values."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (linear interpolation, as numpy's default) of sorted values.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile {pct} is not within [0, 100]")
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = (len(sorted_values) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def percentiles(values: Sequence[float], *pcts: float) -> list[float]:
    """Several percentiles of unsorted values (sorted once)."""
    ordered = sorted(values)
    return [percentile(ordered, p) for p in pcts]
