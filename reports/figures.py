"""The report's figures (matplotlib Agg + seaborn), written as PNG files.

Every function draws one figure, saves it atomically and closes it. Legends sit outside the axes
so they never cover curves; axes are labelled and classes named.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from core.atomic import atomic_write_bytes  # noqa: E402
from core.classes import CLASS_DESCRIPTIONS, CLASSES, NUM_CLASSES  # noqa: E402
from core.metrics import LOWER_IS_BETTER, one_vs_rest_auc, reliability_bins  # noqa: E402
from core.predictions import Predictions  # noqa: E402
from core.rundir import entry_file_stem  # noqa: E402
from reports.entry_groups import KIND_ORDER, kind_title  # noqa: E402

DPI = 110
FPR_GRID = np.linspace(0.0, 1.0, 201)
KIND_STYLE = {"backbone": "-", "baseline": ":", "ensemble": "--"}
KIND_COLORS = {"backbone": "#4c72b0", "baseline": "#8c8c8c", "ensemble": "#55a868"}
SPARE_COLORS = ("#c44e52", "#8172b3", "#ccb974", "#64b5cd", "#937860", "#da8bc3")
# history.csv phase names written by the training protocol.
PHASE_LABELS = {"frozen": "phase 1: frozen base", "finetune": "phase 2: fine-tuning",
                "scratch": "from scratch"}
_STYLE = {"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False}


def figure_name(kind: str, entry: str) -> str:
    """The figure file name for `kind` of `entry`: `<kind>_<stem>.png`, the stem of
    `core.rundir.entry_file_stem` (distinct entries never share a file: `my model` gives
    roc_my~20model.png, `my_model` roc_my_model.png)."""
    return f"{kind}_{entry_file_stem(entry)}.png"


def class_label(name: str) -> str:
    """'mel (melanoma)' style label for legends and axes."""
    return f"{name} ({CLASS_DESCRIPTIONS[name]})"


def _save(fig: plt.Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def roc_per_class(preds: Predictions, title: str, path: Path) -> Path:
    """One-vs-rest ROC curve of each class for one entry.

    Args:
        preds: the entry's predictions on one split.
        title: figure title (entry and split).
        path: destination PNG.

    Returns:
        `path`.
    """
    y_true = preds.y_true
    aucs = one_vs_rest_auc(y_true, preds.proba)
    colors = sns.color_palette("tab10", NUM_CLASSES)
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.2, 4.6))
        for k, name in enumerate(CLASSES):
            positive = y_true == k
            if math.isnan(aucs[k]):
                ax.plot([], [], color=colors[k], label=f"{class_label(name)}: not in split")
                continue
            fpr, tpr, _ = roc_curve(positive, preds.proba[:, k])
            ax.plot(fpr, tpr, color=colors[k], lw=1.6,
                    label=f"{class_label(name)}: AUC {aucs[k]:.3f} (n={int(positive.sum())})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="chance")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), title=title,
               xlabel="False-positive rate (1 - specificity)",
               ylabel="True-positive rate (sensitivity)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
                  title="one vs rest")
        return _save(fig, path)


def macro_roc(preds: Predictions) -> np.ndarray:
    """Macro-average ROC curve: per-class TPR interpolated on FPR_GRID, averaged over classes."""
    y_true = preds.y_true
    curves = []
    for k in range(NUM_CLASSES):
        positive = y_true == k
        if positive.any() and not positive.all():
            fpr, tpr, _ = roc_curve(positive, preds.proba[:, k])
            curves.append(np.interp(FPR_GRID, fpr, tpr))
    return np.mean(curves, axis=0) if curves else np.full_like(FPR_GRID, np.nan)


def macro_roc_comparison(
    entries: Sequence[tuple[str, str, Predictions, float]], path: Path, title: str,
    highlight: str | None = None,
) -> Path:
    """Macro-average one-vs-rest ROC curves of the given entries in one chart.

    Args:
        entries: (name, kind, test predictions, macro AUC) per entry, best first.
        path: destination PNG.
        title: figure title.
        highlight: an entry drawn as a thick black line (the reference).

    Returns:
        `path`.
    """
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(6.8, 5.0))
        _roc_curves(ax, entries, highlight)
        ax.set(title=title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
        return _save(fig, path)


def macro_roc_panels(
    entries: Sequence[tuple[str, str, Predictions, float]], path: Path, title: str,
    highlight: str | None = None,
) -> Path:
    """Macro-average ROC curves of every entry, one panel per kind (backbones, baselines,
    ensembles, then any other kind), so that 20+ curves stay legible; the `highlight` entry
    (the reference) is drawn in every panel for comparison.

    Args:
        entries: (name, kind, test predictions, macro AUC) per entry, best first.
        path: destination PNG.
        title: figure title.
        highlight: an entry drawn as a thick black line in every panel.

    Returns:
        `path`.
    """
    kinds: dict[str, list[tuple[str, str, Predictions, float]]] = {}
    for item in entries:
        kinds.setdefault(item[1], []).append(item)
    order = [k for k in KIND_ORDER if k in kinds] + [k for k in kinds if k not in KIND_ORDER]
    reference = next((item for item in entries if item[0] == highlight), None)
    ncols = min(2, max(len(order), 1))
    nrows = max(1, math.ceil(len(order) / ncols))
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(9.0 * ncols, 5.0 * nrows),
                                 squeeze=False)
        for ax, kind in zip(axes.ravel(), order, strict=False):
            panel = kinds[kind]
            if reference is not None and reference not in panel:
                panel = [*panel, reference]
            _roc_curves(ax, panel, highlight)
            ax.set(title=f"{kind_title(kind).replace('`', '')} ({len(kinds[kind])})")
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
        for ax in axes.ravel()[len(order):]:
            ax.axis("off")
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        return _save(fig, path)


def _roc_curves(ax: plt.Axes, entries: Sequence[tuple[str, str, Predictions, float]],
                highlight: str | None) -> None:
    """Draw the entries' macro ROC curves and the chance line on `ax` (the legend is the
    caller's)."""
    others = [item for item in entries if item[0] != highlight]
    colors = sns.color_palette("tab20" if len(others) > 10 else "tab10", max(len(others), 1))
    shade = iter(colors * (len(others) // len(colors) + 1))
    for name, kind, preds, auc in entries:
        label = f"{name} ({kind}): macro AUC {auc:.3f}"
        if name == highlight:
            ax.plot(FPR_GRID, macro_roc(preds), color="black", lw=2.6, zorder=5,
                    label=f"{label}, reference")
        else:
            ax.plot(FPR_GRID, macro_roc(preds), color=next(shade), lw=1.4,
                    ls=KIND_STYLE.get(kind, "-."), label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False-positive rate (1 - specificity)",
           ylabel="True-positive rate, macro average over classes")


def confusion_matrices(preds: Predictions, title: str, path: Path) -> Path:
    """Confusion matrix of one entry: counts, and row-normalised (recall on the diagonal).

    Args:
        preds: the entry's predictions on one split.
        title: figure title.
        path: destination PNG.

    Returns:
        `path`.
    """
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(preds.y_true, preds.y_pred, labels=list(range(NUM_CLASSES)))
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = counts / counts.sum(axis=1, keepdims=True)
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 5.0))
    for ax, data, fmt, sub, cmap in (
        (axes[0], counts, "d", "counts", "Blues"),
        (axes[1], normalised, ".2f", "row-normalised (each row sums to 1)", "Greens"),
    ):
        sns.heatmap(data, annot=True, fmt=fmt, cmap=cmap, cbar=False, square=True, ax=ax,
                    xticklabels=CLASSES, yticklabels=CLASSES, annot_kws={"fontsize": 8},
                    vmin=0, vmax=None if fmt == "d" else 1.0)
        ax.set(xlabel="Predicted class", ylabel="True class", title=sub)
        ax.tick_params(axis="y", rotation=0)
    fig.suptitle(title)
    return _save(fig, path)


def training_curves(history: pd.DataFrame, title: str, path: Path) -> Path:
    """Train vs validation accuracy and loss per epoch, with the training phases marked.

    Args:
        history: history.csv (epoch, phase, loss, accuracy, val_loss, val_accuracy,
            val_balanced_accuracy, lr, seconds); missing columns are skipped.
        title: figure title (the backbone).
        path: destination PNG.

    Returns:
        `path`.
    """
    history = history.reset_index(drop=True)
    epoch = pd.to_numeric(history.get("epoch"), errors="coerce") if "epoch" in history else None
    if epoch is not None and epoch.notna().all() and epoch.is_monotonic_increasing:
        x = epoch.to_numpy(dtype=float)
    else:  # epochs restart per phase (or are missing): number them through the whole run
        x = np.arange(1, len(history) + 1, dtype=float)
    phases = history["phase"].astype(str).to_numpy() if "phase" in history else None
    panels = (
        ("Accuracy", (("accuracy", "train accuracy", "-"), ("val_accuracy", "validation accuracy", "-"),
                      ("val_balanced_accuracy", "validation balanced accuracy", "--"))),
        ("Loss", (("loss", "train loss", "-"), ("val_loss", "validation loss", "-"))),
    )
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2))
        for ax, (ylabel, series) in zip(axes, panels, strict=True):
            _shade_phases(ax, x, phases)
            for column, label, style in series:
                if column in history:
                    values = pd.to_numeric(history[column], errors="coerce")
                    ax.plot(x, values, style, marker="o", ms=3, lw=1.4, label=label)
            ax.set(xlabel="Epoch", ylabel=ylabel)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8,
                      frameon=False)
        fig.suptitle(title)
        return _save(fig, path)


def _shade_phases(ax: plt.Axes, x: np.ndarray, phases: np.ndarray | None) -> None:
    if phases is None or len(x) == 0:
        return
    shades = ("#f2f2f2", "#e3ecf7", "#f7eee3")
    starts = [0] + [i for i in range(1, len(phases)) if phases[i] != phases[i - 1]]
    bounds = starts + [len(phases)]
    for n, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        left = x[a] - 0.5
        right = x[b - 1] + 0.5
        ax.axvspan(left, right, color=shades[n % len(shades)], zorder=0, lw=0)
        if a > 0:
            ax.axvline(left, color="black", lw=1.0, ls="--")
        ax.text((left + right) / 2, 1.0, PHASE_LABELS.get(phases[a], f"phase {phases[a]}"),
                transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)


def reliability_grid(
    entries: Sequence[tuple[str, Predictions, float]], path: Path, title: str
) -> Path:
    """Reliability diagrams (15 confidence bins) of all entries, one panel each.

    Args:
        entries: (name, test predictions, ECE) per entry.
        path: destination PNG.
        title: figure title.

    Returns:
        `path`.
    """
    ncols = min(4, max(len(entries), 1))
    nrows = max(1, math.ceil(len(entries) / ncols))
    with plt.rc_context(_STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.1 * nrows), squeeze=False)
        width = 1.0 / 15
        for ax, (name, preds, ece) in zip(axes.ravel(), entries, strict=False):
            conf, acc, count = reliability_bins(preds.y_true, preds.y_pred, preds.proba)
            centres = (np.arange(15) + 0.5) * width
            used = count > 0
            ax.bar(centres[used], acc[used], width=width * 0.95, color="#4c72b0",
                   edgecolor="white", label="accuracy in bin")
            ax.plot(centres[used], conf[used], "_", color="#c44e52", ms=9, mew=2,
                    label="mean confidence in bin")
            ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfect calibration")
            ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{name}\nECE {ece:.3f}",
                   xlabel="Confidence", ylabel="Accuracy")
            ax.title.set_fontsize(9)
        for ax in axes.ravel()[len(entries):]:
            ax.axis("off")
        handles, labels = axes.ravel()[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False,
                   bbox_to_anchor=(0.5, -0.02))
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0.04, 1, 0.97))
        return _save(fig, path)


def kind_palette(kinds: Sequence[str]) -> dict[str, str]:
    """A colour per kind: fixed ones for backbones, baselines and ensembles, then distinct ones
    for any other kind, in the order given."""
    palette = dict(KIND_COLORS)
    spare = iter(SPARE_COLORS * (len(kinds) // len(SPARE_COLORS) + 1))
    for kind in kinds:
        if kind not in palette:
            palette[kind] = next(spare)
    return {kind: palette[kind] for kind in dict.fromkeys(kinds)}


def ranking_chart(
    rows: Sequence[Mapping[str, object]], metric: str, path: Path, highlight: str | None = None,
    title: str | None = None,
) -> Path:
    """Horizontal ranking of the given entries by `metric`, with interval error bars where known.

    Args:
        rows: dicts with "entry", "kind", "value", "low", "high" (NaN bounds: no bar), best first.
        metric: the metric's name (x label).
        path: destination PNG.
        highlight: an entry to draw in bold (the reference backbone).
        title: the figure title (default "Ranking by <metric>").

    Returns:
        `path`.
    """
    rows = list(rows)[::-1]  # best at the top
    palette = kind_palette([k for k in KIND_ORDER if any(str(r["kind"]) == k for r in rows)]
                           + [str(r["kind"]) for r in rows[::-1]])
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(7.0, 0.42 * len(rows) + 1.4))
        for i, row in enumerate(rows):
            value, low, high = (float(row[k]) for k in ("value", "low", "high"))
            color = palette[str(row["kind"])]
            ax.barh(i, value, color=color, alpha=0.85, height=0.6)
            if not (math.isnan(low) or math.isnan(high)):
                ax.errorbar(value, i, xerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]], fmt="none",
                            ecolor="black", capsize=3, lw=1)
        ax.set_yticks(range(len(rows)), [str(r["entry"]) for r in rows])
        for label in ax.get_yticklabels():
            if label.get_text() == highlight:
                label.set_fontweight("bold")
        has_bars = any(not math.isnan(float(r["low"])) for r in rows)
        ax.set(xlabel=f"{metric} (test{'; bars: 95 % lesion-bootstrap interval' if has_bars else ''})",
               title=title or f"Ranking by {metric}")
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in palette.values()]
        ax.legend(handles, list(palette), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  frameon=False, title="kind")
        return _save(fig, path)


def jobs_chart(jobs: pd.DataFrame, order: Sequence[str], metric: str, path: Path,
               highlight: str | None = None) -> Path:
    """A grid's per-job values of `metric`, one row per entry: a box over jobs, a point per job.

    Args:
        jobs: the finished test jobs to draw: columns "entry", "fold" and `metric` (points
            coloured by fold; NaN values left out).
        order: the entries top to bottom (best first).
        metric: the metric.
        path: destination PNG.
        highlight: an entry whose label is drawn in bold.

    Returns:
        `path`.
    """
    rows = jobs[jobs["entry"].isin(order)]
    data = pd.DataFrame({"entry": rows["entry"], "value": rows[metric].astype(float),
                         "fold": "fold " + rows["fold"].astype(str)}).dropna(subset=["value"])
    with plt.rc_context(_STYLE), warnings.catch_warnings():
        # seaborn 0.13 passes matplotlib's deprecated `vert` to boxplot
        warnings.filterwarnings("ignore", message=".*vert: bool was deprecated")
        fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(order) + 1.5))
        sns.boxplot(data=data, x="value", y="entry", order=list(order), color="#dddddd",
                    showfliers=False, width=0.55, ax=ax)
        sns.stripplot(data=data, x="value", y="entry", order=list(order), hue="fold",
                      palette="tab10", jitter=0.15, size=5, ax=ax)
        for label in ax.get_yticklabels():
            if label.get_text() == highlight:
                label.set_fontweight("bold")
        direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        ax.set(xlabel=f"{metric} (test, one point per job; {direction})", ylabel="",
               title=f"{metric} per job (fold x seed)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, title="fold")
        return _save(fig, path)
