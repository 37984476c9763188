"""The report's options, checked the same way for a single run and a grid: --rank-by."""

from __future__ import annotations

from core.errors import BenchmarkError
from core.metrics import metric_names

# Computed but not a quality: counts and the chosen threshold itself.
_NOT_RANKABLE = ("n_images", "n_lesions", "mel_val_threshold_spec90")


class ReportError(BenchmarkError, ValueError):
    """A report option the run cannot honour (e.g. an unknown --rank-by metric)."""


def rankable_metrics() -> list[str]:
    """Metrics --rank-by accepts: every computed metric except counts, supports and thresholds."""
    return [m for m in metric_names()
            if m not in _NOT_RANKABLE and not m.startswith("support_")]


def check_rank_by(rank_by: str) -> None:
    """Raise ReportError naming the valid metrics when `rank_by` is not one of them."""
    valid = rankable_metrics()
    if rank_by not in valid:
        raise ReportError(
            f"--rank-by {rank_by!r} is not a metric of this report; choose one of: "
            f"{', '.join(valid)}"
        )
