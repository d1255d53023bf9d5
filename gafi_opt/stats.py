"""Mean and spread of repeated scores (seeds): the one place the export's "mean ± sd" is computed."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); ValueError when empty."""
    values = list(values)
    if not values:
        raise ValueError("no values to summarise")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
