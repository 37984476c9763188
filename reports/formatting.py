"""Number and table formatting shared by the markdown reports (single run and grid)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from tabulate import tabulate

from core.numbers import as_float, as_interval


def fmt(value: Any, digits: int = 3) -> str:
    """A number with `digits` decimals, "n/a" for missing/NaN."""
    number = as_float(value)
    return "n/a" if math.isnan(number) else f"{number:.{digits}f}"


def fmt_ci(metrics: dict[str, Any], name: str, digits: int = 3) -> str:
    """'0.812 [0.790, 0.833]' when an interval exists, else the value alone."""
    text = fmt(metrics.get(name), digits)
    low, high = as_interval(metrics.get(f"{name}_ci"))
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def fmt_count(value: Any) -> str:
    """Large counts with thousands separators and an SI suffix ('55.9 M')."""
    number = as_float(value)
    if math.isnan(number):
        return "n/a"
    for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            return f"{number / size:.1f} {suffix}"
    return f"{number:g}"


def fmt_p(value: Any) -> str:
    """A p-value: 4 decimals, "< 0.0001", or "n/a" for NaN or a missing value."""
    number = as_float(value)
    if math.isnan(number):
        return "n/a"
    return "< 0.0001" if number < 1e-4 else f"{number:.4f}"


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table (cells kept as given, no number parsing)."""
    return tabulate(list(rows), headers=list(headers), tablefmt="github", disable_numparse=True)


def one_line(text: Any, limit: int = 200) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
