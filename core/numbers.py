"""Reading numbers out of JSON-like values (metrics.json, CSV cells) the same way everywhere."""

from __future__ import annotations

import math
import numbers
from typing import Any


def as_float(value: Any) -> float:
    """`value` as a float when it is a real number (NumPy scalars included), else NaN.

    Booleans, strings, None and containers are not numbers here: a metric read from a file is
    either a number or missing.

    Args:
        value: anything read from a JSON or CSV file.

    Returns:
        float(value), or NaN.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return math.nan
    return float(value)


def as_interval(value: Any) -> tuple[float, float]:
    """A `[low, high]` pair as two floats (NaN, NaN when it is not a pair of numbers)."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return as_float(value[0]), as_float(value[1])
    return math.nan, math.nan
