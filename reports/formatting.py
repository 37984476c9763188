"""Number and table formatting shared by the markdown reports (single run and grid)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from tabulate import tabulate


def fmt(value: Any, digits: int = 3) -> str:
    """A number with `digits` decimals, "n/a" for missing/NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_ci(metrics: dict[str, Any], name: str, digits: int = 3) -> str:
    """'0.812 [0.790, 0.833]' when an interval exists, else the value alone."""
    text = fmt(metrics.get(name), digits)
    ci = metrics.get(f"{name}_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(
        isinstance(v, (int, float)) and not math.isnan(v) for v in ci
    ):
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def fmt_count(value: Any) -> str:
    """Large counts with thousands separators and an SI suffix ('55.9 M')."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f} {suffix}"
    return f"{value:g}"


def fmt_p(value: float) -> str:
    """A p-value: 4 decimals, "< 0.0001", or "n/a" for NaN or a missing value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table (cells kept as given, no number parsing)."""
    return tabulate(list(rows), headers=list(headers), tablefmt="github", disable_numparse=True)


def one_line(text: Any, limit: int = 200) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
