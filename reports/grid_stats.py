"""A grid run's comparisons: the reference entry against every other entry over paired jobs.

A job is one entry trained and tested in one replicate (fold, seed); two entries are paired on
the jobs both finished (same fold and seed). Jobs are not independent: all seeds of a fold are
tested on the same images and the folds' training sets overlap, so a plain paired t-test or
Wilcoxon test over jobs calls equal entries "significantly different" far too often (17-26 % at
a nominal 5 % with 5 folds x 3 seeds, see the tests). Two procedures are used instead; each
gives the interval and the p-value from the same t statistic, so they never disagree:

1. **Corrected repeated k-fold t-test** (Nadeau & Bengio 2003, in the form of Bouckaert & Frank
   2004), when the paired jobs lie on folds with different test images. With the J = k x r
   per-job differences d_j (reference - other) and their sample variance s^2,
   t = mean(d) / sqrt((1/J + n_test/n_train) s^2), df = J - 1, interval
   mean(d) +- t_{df, 0.975} sqrt((1/J + n_test/n_train) s^2). n_test/n_train is a fold's test
   images over the rest of the data (its train + validation images, which is what the fold's
   models learn from), read from each fold's splits.csv and averaged over the folds (fallbacks:
   the jobs' test image counts against dataset.json's total, else 1/(K-1)).
2. **Seed-and-lesion t-test on a shared test set**, when every paired job is tested on the same
   images (a grid without folds: one split, several seeds; also folds that all test on the
   official test set, or pairs within one fold). The fold correction does not apply;
   the uncertainty has two sources, the test set (shared by all jobs) and the training seed.
   With D = mean over the r jobs of d_s:
   se^2 = Var*(D) + s^2 / r, where Var*(D) is the lesion-bootstrap variance of D (lesions of the
   shared test set drawn with replacement, the same draws for every job and both entries) and
   s^2 the sample variance of the d_s; t = D / se with Welch-Satterthwaite degrees of freedom
   df = (A + B)^2 / (B^2 / (r - 1)), where B = s^2 / r and A = the mean bootstrap covariance of
   two different jobs' differences (the test-set part the jobs share, known from hundreds of
   lesions, so its df is taken as infinite). Var*(D) also contains each job's own test noise,
   which s^2 holds as well: se is conservative by that much, and the df count only the shared
   part. In simulation (3 or 5 seeds, test-set or seed noise dominating) the rate of p < 0.05
   under the null stays at 5 % or below (3-5.5 %), where the plain t-test over seeds reaches
   26 % when the shared test set dominates. A two-stage bootstrap that also resamples the seeds
   was not used: with 3 seeds its p-value cannot be calibrated (about 25 % at a nominal 5 % when
   seed noise dominates, see the tests).

Holm's correction runs per metric over the comparisons of the reference with the others (NaN
p-values left out of the family); a comparison is significant when its Holm p is below 0.05.
The rows have the columns of the single run's comparisons.csv (`COLUMNS` first), n_images and
n_lesions being totals over the paired jobs and value_* means over them.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from core.bootstrap import LesionBootstrap, weighted_auc
from core.classes import CLASSES, NUM_CLASSES
from core.defaults import ALPHA, BOOTSTRAP, SEED
from core.metrics import compute_metrics
from core.predictions import Predictions
from core.rundir import RunDir
from reports.aggregate import better, entry_kinds, ok_values, shared_jobs
from reports.comparisons import COLUMNS
from reports.stats import holm

log = logging.getLogger(__name__)

EXTRA_COLUMNS = ("kind", "n_jobs", "n_folds", "n_seeds", "wins", "ties", "losses", "statistic",
                 "df", "se", "note")
COMPARED_METRICS = ("balanced_accuracy", "accuracy", "macro_auc")
LEVEL = 1.0 - ALPHA
# A metric without a vectorised bootstrap (`metric_replicates`) is recomputed per resample with
# core.metrics.compute_metrics, on at most this many resamples (the bootstrap only estimates
# a variance here, not tail quantiles).
GENERIC_RESAMPLES = 100
CORRECTED_TEST = "corrected repeated k-fold t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004)"
SHARED_TEST = "seed-and-lesion t-test on a shared test set (lesion bootstrap + between-seed variance)"
ZERO = 1e-15


@dataclass(frozen=True)
class TestResult:
    """One difference tested: estimate, interval and p-value from the same t statistic.

    Attributes:
        difference: mean over the paired jobs of reference - other.
        ci_low, ci_high: 95 % interval, difference +- t_{df,0.975} se.
        p_value: two-sided, 2 P(T_df > |t|).
        statistic: t = difference / se.
        df: degrees of freedom.
        se: the standard error used.
        note: why the test is undefined (NaN p) or degenerate; "" otherwise.
    """

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    statistic: float = math.nan
    df: float = math.nan
    se: float = math.nan
    note: str = ""


def corrected_t_test(differences: Sequence[float], test_train_ratio: float,
                     level: float = LEVEL) -> TestResult:
    """The corrected repeated k-fold t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004).

    Args:
        differences: d_j = reference - other on each of the J = k x r paired jobs.
        test_train_ratio: n_test / n_train of a fold (test images over the rest).
        level: coverage of the interval.

    Returns:
        t = mean(d) / sqrt((1/J + ratio) s^2), df = J - 1, p two-sided, interval
        mean(d) +- t_{df,(1+level)/2} se. Fewer than 2 jobs, or a ratio that is not a positive
        number: NaN with a note. Every difference zero: p = 1, interval [0, 0]. Every difference
        equal but not zero: NaN p (no spread to test), with a note.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return _undefined(d, "fewer than 2 paired jobs")
    if not (math.isfinite(test_train_ratio) and test_train_ratio > 0):
        return _undefined(d, "the folds' n_test/n_train is unknown")
    variance = (1.0 / d.size + test_train_ratio) * float(np.var(d, ddof=1))
    return _t_result(d, math.sqrt(max(variance, 0.0)), d.size - 1.0, level)


def shared_test_t_test(job_differences: Sequence[float], bootstrap_differences: np.ndarray,
                       level: float = LEVEL) -> TestResult:
    """The seed-and-lesion t-test for jobs that share one test set (module docstring, 2).

    Args:
        job_differences: (r,) d_s = reference - other of each paired job, on its whole test set.
        bootstrap_differences: (r, B) the same differences in B lesion resamples of the shared
            test set (the same draws in every row; NaN where a resample leaves it undefined).
        level: coverage of the interval.

    Returns:
        t = D / sqrt(Var*(D) + s^2/r) with Welch-Satterthwaite df, two-sided p and the interval
        D +- t_{df,(1+level)/2} se. Fewer than 2 jobs or fewer than 2 defined resamples: NaN
        with a note. Every difference zero and no bootstrap spread: p = 1, interval [0, 0].
    """
    d = np.asarray(job_differences, dtype=np.float64)
    boot = np.asarray(bootstrap_differences, dtype=np.float64).reshape(d.size, -1)
    if d.size < 2:
        return _undefined(d, "fewer than 2 paired jobs")
    boot = boot[:, ~np.isnan(boot).any(axis=0)]
    if boot.shape[1] < 2:
        return _undefined(d, "fewer than 2 lesion resamples where the metric is defined")
    between = float(np.var(d, ddof=1)) / d.size
    shared_variance = float(np.var(boot.mean(axis=0), ddof=1))
    covariance = np.cov(boot)
    off_diagonal = (covariance.sum() - np.trace(covariance)) / (d.size * (d.size - 1))
    shared_part = max(float(off_diagonal), 0.0)
    if between > ZERO:
        df = (shared_part + between) ** 2 / (between ** 2 / (d.size - 1))
    else:
        df = math.inf
    return _t_result(d, math.sqrt(shared_variance + between), df, level)


def _t_result(d: np.ndarray, se: float, df: float, level: float) -> TestResult:
    mean = float(d.mean())
    if se <= ZERO:
        if np.all(np.abs(d) <= ZERO):
            return TestResult(0.0, 0.0, 0.0, 1.0, 0.0, df, 0.0, "identical on every paired job")
        return _undefined(d, "every paired difference is equal (no spread to test)")
    t = mean / se
    p = float(2.0 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.5 + level / 2.0, df)) * se
    return TestResult(mean, mean - half, mean + half, p, t, df, se)


def _undefined(d: np.ndarray, note: str) -> TestResult:
    mean = float(d.mean()) if d.size else math.nan
    return TestResult(mean, math.nan, math.nan, math.nan, note=note)


# ---------------------------------------------------------------------------------------------
# the grid's folds


@dataclass(frozen=True)
class GridDesign:
    """What the tests need to know about the grid's folds.

    Attributes:
        test_sets: fold -> a key of its test images; folds with the same key share their test
            images. A fold without a key is taken to have its own test images.
        ratios: fold -> n_test / n_train (test images over the rest of the data).
        ratio_source: where the ratios come from, for the report.
    """

    test_sets: Mapping[int, str] = field(default_factory=dict)
    ratios: Mapping[int, float] = field(default_factory=dict)
    ratio_source: str = ""

    def shares_test_set(self, folds: Sequence[int]) -> bool:
        """Whether the given folds' jobs are all tested on the same images."""
        keys = {self.test_sets.get(f, f"fold {f}") for f in folds}
        return len(keys) <= 1

    def ratio(self, folds: Sequence[int]) -> float:
        """Mean n_test / n_train over the given folds (NaN when none is known)."""
        known = [self.ratios[f] for f in set(folds) if f in self.ratios]
        return float(np.mean(known)) if known else math.nan


def read_design(found: Sequence[tuple[int, int, RunDir]], n_folds: int | None,
                jobs: pd.DataFrame | None = None,
                dataset_card: Mapping[str, Any] | None = None) -> GridDesign:
    """The test sets and n_test / n_train of every fold, from the replicates' splits.csv.

    Args:
        found: (fold, seed, replicate) of the replicate folders.
        n_folds: the grid's K (None without folds).
        jobs: the job table (fallback: a fold's test n_images).
        dataset_card: the grid's dataset.json (fallback: images.total).

    Returns:
        The design. A fold's ratio is its splits.csv's test rows over its train + val rows; a
        fold without a readable splits.csv gets its jobs' test n_images over dataset.json's total
        minus them, else 1/(K-1).
    """
    first = {}
    for fold, _seed, replicate in found:
        first.setdefault(fold, replicate)
    test_sets, ratios, sources = {}, {}, set()
    for fold, replicate in sorted(first.items()):
        counts = _split_counts(replicate)
        if counts is not None:
            test_sets[fold], ratios[fold] = counts
            sources.add("each fold's splits.csv, test images over train + val images")
            continue
        fallback = _fallback_ratio(fold, jobs, dataset_card, n_folds)
        if fallback is not None:
            ratios[fold], source = fallback
            sources.add(source)
    return GridDesign(test_sets, ratios, "; ".join(sorted(sources)))


def _split_counts(replicate: RunDir) -> tuple[str, float] | None:
    try:
        table = pd.read_csv(replicate.splits_csv, dtype=str, usecols=["image_id", "split"])
    except (OSError, ValueError, KeyError):
        return None
    test = np.sort(table.loc[table["split"] == "test", "image_id"].to_numpy(dtype=str))
    rest = int(table["split"].isin(["train", "val"]).sum())
    if not test.size or not rest:
        return None
    key = hashlib.sha256("\n".join(test.tolist()).encode()).hexdigest()
    return key, test.size / rest


def _fallback_ratio(fold: int, jobs: pd.DataFrame | None, card: Mapping[str, Any] | None,
                    n_folds: int | None) -> tuple[float, str] | None:
    images = (card or {}).get("images")
    total = images.get("total") if isinstance(images, Mapping) else None
    if jobs is not None and isinstance(total, (int, float)) and "n_images" in jobs.columns:
        rows = jobs[(jobs["fold"] == fold) & (jobs["split"] == "test")]
        n_test = pd.to_numeric(rows["n_images"], errors="coerce").dropna()
        if len(n_test) and 0 < n_test.max() < total:
            return float(n_test.max() / (total - n_test.max())), \
                "the jobs' test images / the rest of dataset.json's images"
    if n_folds and n_folds > 1:
        return 1.0 / (n_folds - 1), f"1/(K-1) with K = {n_folds} folds, no splits.csv found"
    return None


# ---------------------------------------------------------------------------------------------
# the shared test set's bootstrap


Loader = Callable[[str, int, int], Predictions | None]


class SharedTestBootstrap:
    """Lesion-bootstrap replicates of jobs' metrics on a shared test set, cached per job.

    Every comparison draws the same lesion resamples when it runs on the same images (the
    normal case: every entry of a replicate predicts its whole test split), so an entry's
    replicates are computed once per job and metric.
    """

    def __init__(self, load: Loader, n_resamples: int = BOOTSTRAP, seed: int = SEED) -> None:
        """Args:
            load: (entry, fold, seed) -> the job's test predictions, or None.
            n_resamples: lesion resamples.
            seed: seed of the draws.
        """
        self.load = load
        self.n_resamples = n_resamples
        self.seed = seed
        self._boots: dict[str, LesionBootstrap] = {}
        self._samples: dict[tuple, np.ndarray] = {}

    def differences(self, reference: str, other: str, pairs: Sequence[tuple[int, int]],
                    metric: str) -> np.ndarray | None:
        """(len(pairs), B) replicates of reference - other per job, or None without predictions.

        Args:
            reference, other: the entries.
            pairs: the paired jobs (fold, seed), all on one test set.
            metric: the metric.

        Returns:
            The replicates on the images every job of both entries predicted; None when a job
            has no prediction file or they share no image.
        """
        jobs = {(name, pair): self.load(name, *pair) for name in (reference, other)
                for pair in pairs}
        if any(p is None for p in jobs.values()):
            return None
        common = None
        for preds in jobs.values():
            ids = set(preds.image_id.tolist())
            common = ids if common is None else common & ids
        if not common:
            return None
        ids = np.array(sorted(common))
        key = hashlib.sha256("\n".join(ids.tolist()).encode()).hexdigest()
        rows = []
        for pair in pairs:
            a = self._replicates(reference, pair, jobs[(reference, pair)], ids, key, metric)
            b = self._replicates(other, pair, jobs[(other, pair)], ids, key, metric)
            rows.append(a - b)
        return np.stack(rows)

    def _replicates(self, name: str, pair: tuple[int, int], preds: Predictions,
                    ids: np.ndarray, key: str, metric: str) -> np.ndarray:
        cached = self._samples.get((name, pair, key, metric))
        if cached is not None:
            return cached
        subset = _subset(preds, ids)
        boot = self._boots.get(key)
        if boot is None:
            boot = self._boots[key] = LesionBootstrap(subset.lesion_id, self.n_resamples,
                                                      self.seed)
        samples = metric_replicates(boot, subset, metric)
        self._samples[(name, pair, key, metric)] = samples
        return samples


def metric_replicates(boot: LesionBootstrap, preds: Predictions, metric: str) -> np.ndarray:
    """A metric in the bootstrap's resamples of `preds` (its lesion ids must be the boot's).

    Args:
        boot: the lesion resamples.
        preds: the predictions, in the row order the bootstrap was drawn for.
        metric: any metric of core.metrics.

    Returns:
        (B,) values for macro AUC, the per-class AUCs and every metric of the confusion matrix
        (accuracy, balanced accuracy, macro / weighted precision, recall and F1, per-class
        precision, recall, F1 and specificity; averages over the classes drawn in each
        resample); for any other metric (min(B, GENERIC_RESAMPLES),) values recomputed with
        compute_metrics on each resample (images repeated by their weight).
    """
    y_true, y_pred = preds.y_true, preds.y_pred
    if metric == "macro_auc":
        return boot.macro_auc(y_true, preds.proba)
    if metric.startswith("auc_") and metric[4:] in CLASSES:
        k = CLASSES.index(metric[4:])
        positive = y_true == k
        if not positive.any() or positive.all():
            return np.full(boot.counts.shape[0], math.nan)
        return weighted_auc(positive, preds.proba[:, k], boot.image_weights())
    cells = np.eye(NUM_CLASSES * NUM_CLASSES)[y_true * NUM_CLASSES + y_pred]
    confusion = (boot.counts @ boot.per_lesion(cells)).reshape(-1, NUM_CLASSES, NUM_CLASSES)
    values = confusion_metric(confusion, metric)
    if values is not None:
        return values
    weights = boot.image_weights()[:GENERIC_RESAMPLES].astype(np.int64)
    rows = np.arange(len(preds))
    samples = [compute_metrics(_take(preds, np.repeat(rows, w))).get(metric, math.nan)
               for w in weights]
    return np.asarray(samples, dtype=np.float64)


def confusion_metric(confusion: np.ndarray, metric: str) -> np.ndarray | None:
    """A label metric from confusion matrices, with core.metrics' conventions.

    Args:
        confusion: (B, 7, 7) counts, true class by predicted class.
        metric: the metric name.

    Returns:
        (B,) values, or None when `metric` is not a confusion-matrix metric. Averages run over
        the classes present (support > 0); a present class never predicted has precision 0;
        per-class precision of an absent, never predicted class, and its recall and F1, are NaN.
    """
    hits = np.diagonal(confusion, axis1=1, axis2=2)
    support = confusion.sum(axis=2)
    predicted = confusion.sum(axis=1)
    total = support.sum(axis=1, keepdims=True)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(present, hits / support, math.nan)
        f1 = np.where(present, 2.0 * hits / (predicted + support), math.nan)
        specificity = np.where(total > support, (total - support - predicted + hits)
                               / (total - support), math.nan)
        per_class = {"precision": np.where(present | (predicted > 0), precision, math.nan),
                     "recall": recall, "f1": f1, "specificity": specificity}
        averages = {"precision": np.where(present, precision, math.nan), "recall": recall,
                    "f1": f1}
        if metric == "accuracy":
            return hits.sum(axis=1) / total[:, 0]
        if metric == "balanced_accuracy":
            metric = "macro_recall"
        kind, _, name = metric.partition("_")
        if kind in ("macro", "weighted") and name in averages:
            values = np.where(present, averages[name], 0.0)
            weights = present if kind == "macro" else support
            return (values * weights).sum(axis=1) / weights.sum(axis=1)
        if kind in per_class and name in CLASSES:
            return per_class[kind][:, CLASSES.index(name)]
    return None


def _subset(preds: Predictions, ids: np.ndarray) -> Predictions:
    position = {image: i for i, image in enumerate(preds.image_id.tolist())}
    return _take(preds, np.array([position[i] for i in ids.tolist()], dtype=np.int64))


def _take(preds: Predictions, index: np.ndarray) -> Predictions:
    return Predictions(
        image_id=preds.image_id[index], lesion_id=preds.lesion_id[index],
        label=preds.label[index], proba=preds.proba[index],
        prediction=None if preds.prediction is None else preds.prediction[index],
        source=preds.source,
    )


# ---------------------------------------------------------------------------------------------
# the comparisons


def compared_metrics(rank_by: str) -> list[str]:
    """The ranking metric, then balanced accuracy, accuracy and macro AUC (no duplicates)."""
    return list(dict.fromkeys([rank_by, *COMPARED_METRICS]))


def grid_comparisons(
    jobs: pd.DataFrame, reference: str, metrics: Sequence[str], design: GridDesign,
    bootstrap: SharedTestBootstrap | None = None,
) -> pd.DataFrame:
    """The reference against every other entry, per metric, over the paired test jobs.

    Args:
        jobs: the job table (reports.aggregate).
        reference: the reference entry.
        metrics: the compared metrics (see `compared_metrics`).
        design: the grid's folds (`read_design`).
        bootstrap: replicates for jobs sharing a test set (None: those comparisons are NaN).

    Returns:
        One row per (other entry, metric) with `COLUMNS` then `EXTRA_COLUMNS`; entries in the
        order of first appearance in `jobs`, metrics in the given order; empty (with the
        columns) when the reference has no job.
    """
    others = [e for e in dict.fromkeys(jobs["entry"]) if e != reference]
    if reference not in set(jobs["entry"]):
        return pd.DataFrame(columns=[*COLUMNS, *EXTRA_COLUMNS])
    kinds = entry_kinds(jobs)
    rows = []
    for metric in metrics:
        family = [_compare(jobs, reference, other, metric, design, bootstrap, kinds[other])
                  for other in others]
        adjusted = holm([row["p_value"] for row in family])
        n_tested = sum(not math.isnan(p) for p in adjusted)
        for row, p_holm in zip(family, adjusted, strict=True):
            row["p_holm"] = p_holm
            row["significant"] = bool(p_holm < ALPHA)
            if not math.isnan(row["p_value"]):
                row["test"] += f"; Holm over {n_tested} comparisons"
            rows.append(row)
    return pd.DataFrame(rows, columns=[*COLUMNS, *EXTRA_COLUMNS])


def _compare(jobs: pd.DataFrame, reference: str, other: str, metric: str, design: GridDesign,
             bootstrap: SharedTestBootstrap | None, kind: str) -> dict[str, Any]:
    pairs = shared_jobs(jobs, other, metric, reference)
    ref = ok_values(jobs, reference, metric, "test")
    oth = ok_values(jobs, other, metric, "test")
    a = np.array([ref[p] for p in pairs], dtype=np.float64)
    b = np.array([oth[p] for p in pairs], dtype=np.float64)
    d = a - b
    folds = sorted({f for f, _ in pairs})
    seeds = sorted({s for _, s in pairs})
    outcomes = [better(x, metric) for x in d]
    # With fewer than 2 jobs nothing is tested; the row still names the grid's procedure.
    if not design.shares_test_set(folds if len(pairs) >= 2 else list(design.test_sets)):
        ratio = design.ratio(folds or list(design.ratios))
        result = corrected_t_test(d, ratio)
        test = f"{CORRECTED_TEST}, {_design_text(pairs, folds, seeds)}, n_test/n_train {ratio:.3g}"
    else:
        replicates = (bootstrap.differences(reference, other, pairs, metric)
                      if bootstrap is not None and len(pairs) >= 2 else None)
        if replicates is None:
            result = (_undefined(d, "no test predictions to resample") if len(pairs) >= 2
                      else _undefined(d, "fewer than 2 paired jobs"))
            test = SHARED_TEST
        else:
            result = shared_test_t_test(d, replicates)
            test = (f"{SHARED_TEST}, {len(pairs)} jobs, {replicates.shape[1]} lesion resamples, "
                    "Welch-Satterthwaite df")
    counts = {name: _totals(jobs, reference, other, name, pairs)
              for name in ("n_images", "n_lesions")}
    return {
        "reference": reference, "other": other, "metric": metric, **counts,
        "value_reference": float(a.mean()) if a.size else math.nan,
        "value_other": float(b.mean()) if b.size else math.nan,
        "difference": result.difference, "ci_low": result.ci_low, "ci_high": result.ci_high,
        "p_value": result.p_value, "p_holm": math.nan, "significant": False, "test": test,
        "kind": kind, "n_jobs": len(pairs), "n_folds": len(folds), "n_seeds": len(seeds),
        "wins": outcomes.count(1), "ties": outcomes.count(0), "losses": outcomes.count(-1),
        "statistic": result.statistic, "df": result.df, "se": result.se, "note": result.note,
    }


def _design_text(pairs: Sequence[tuple[int, int]], folds: list[int], seeds: list[int]) -> str:
    if len(pairs) == len(folds) * len(seeds):
        return f"{len(folds)} folds x {len(seeds)} seeds"
    return f"{len(pairs)} paired jobs over {len(folds)} folds and {len(seeds)} seeds"


def _totals(jobs: pd.DataFrame, reference: str, other: str, column: str,
            pairs: Sequence[tuple[int, int]]) -> int:
    """Sum over the paired jobs of the smaller of the two entries' test counts."""
    ref = ok_values(jobs, reference, column, "test")
    oth = ok_values(jobs, other, column, "test")
    return int(sum(min(ref.get(p, 0.0), oth.get(p, 0.0)) for p in pairs))
