"""Figures derived from the additive roll-up numbers: averages, rates and percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence

from reports.models import LOBBY_WAIT_BUCKETS


def histogram_percentile(counts: Sequence[int], fraction: float, maximum: int | None = None) -> int | None:
    """The `fraction` percentile of values counted in LOBBY_WAIT_BUCKETS, interpolated within its bucket.

    The grouped-data formula: L + (rank - below) / n_bucket * width, with
    rank = fraction * total. Exact to within the bucket's width; the open last
    bucket ends at `maximum` (the longest wait seen).
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = fraction * total
    below = 0
    for count, (_, lower, upper) in zip(counts, LOBBY_WAIT_BUCKETS, strict=True):
        if count and below + count >= rank:
            end = upper if upper is not None else max(lower, maximum or lower)
            if maximum is not None and lower <= maximum < end:
                end = maximum
            # Half up, as the SQL twin in reports/rollups.py rounds.
            return math.floor(lower + (end - lower) * (rank - below) / count + 0.5)
        below += count
    return maximum


def ratio(part: float | None, whole: float | None) -> float | None:
    if not whole:
        return None
    return (part or 0) / whole


def average(total: float | None, count: float | None) -> float | None:
    return ratio(total, count)
