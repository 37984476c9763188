"""Baseline "inception_resnet_v2+svm": the study's feature-extraction path.

Pooled features of the frozen InceptionResNetV2 (ImageNet weights normally; the config's
`weights`, so None in the smoke preset) are extracted once for every image of the cache and kept
on disk as .npy, keyed by (image cache key, backbone, weights, size, preprocessing), so refitting
the SVM takes seconds. Then standardised features feed an RBF `sklearn.svm.SVC` whose
probabilities are calibrated (sigmoid/Platt, cross-validated on the training split,
`CalibratedClassifierCV(ensemble=False)`); C is chosen on the validation split by balanced
accuracy, the test split is predicted once at the end.

The probabilities follow the benchmark's one prior convention, the CNNs' class-balanced loss: with
`class_weight: balanced` (every preset) each training image is weighted n / (n_classes * n_class)
(scikit-learn's "balanced") in the SVC's hinge loss and in the Platt fit, so the probabilities
target a uniform class prior, not the training frequencies. The calibration folds are grouped by
lesion (`StratifiedGroupKFold`), so no lesion has images on both sides of a fold: out-of-fold
decision values of a lesion's other images would otherwise make the calibration over-confident.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from core.atomic import atomic_open, atomic_write_json, read_json
from core.classes import NUM_CLASSES
from training.settings import RunConfig, SvmSettings

logger = logging.getLogger(__name__)

FEATURES_DIR = "features"
FEATURES_FORMAT = 1
MAX_CALIBRATION_FOLDS = 5
CLASS_WEIGHTS = ("balanced", None)


class SvmFit(NamedTuple):
    """What `fit_svm` returns.

    Attributes:
        model: the fitted pipeline of the chosen C (standardise -> calibrated SVC).
        C: the chosen C.
        scores: {C: validation balanced accuracy}.
        calibration: JSON-ready record of the calibration (method, folds, scheme, grouping,
            class weighting, the prior the probabilities target, classes left out).
    """

    model: Any
    C: float
    scores: dict[float, float]
    calibration: dict[str, Any]


def _weights_id(weights: Any, seed: int) -> str:
    """A stable name for the initial weights (random init depends on the seed)."""
    if weights is None:
        return f"random-seed{seed}"
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return f"file-{digest.hexdigest()}"


def feature_cache_path(cache_key: str, backbone: str, weights: Any, size: int,
                       preprocessing: str | None, seed: int,
                       root: str | os.PathLike | None = None) -> Path:
    """Where the features of one image cache under one feature extractor are stored.

    Args:
        cache_key: the image cache's content key (`ImageCache.key`).
        backbone: zoo backbone name.
        weights: None, "imagenet" or a weights file path.
        size: input size.
        preprocessing: preprocessing override (None: the backbone's own).
        seed: the seed (matters for random-init weights only).
        root: cache root (None: `default_cache_root()`).

    Returns:
        root/features/<backbone>-<size>px-<hash>.npy
    """
    from data_utils.cache import default_cache_root

    spec = {"format": FEATURES_FORMAT, "cache": cache_key, "backbone": backbone,
            "weights": _weights_id(weights, seed), "size": int(size),
            "preprocessing": preprocessing}
    key = hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=12).hexdigest()
    base = Path(root) if root is not None else default_cache_root()
    return base / FEATURES_DIR / f"{backbone}-{int(size)}px-{key}.npy"


def extract_features(cache: Any, backbone: str, config: RunConfig, batch_size: int,
                     cache_root: str | os.PathLike | None = None,
                     devices: int | None = None) -> tuple[np.ndarray, dict]:
    """Pooled features of every image in `cache` (rows in cache order), from disk when present.

    Args:
        cache: the `ImageCache` at the entry's size.
        backbone: zoo backbone name (its "pool" layer's output is the feature vector).
        config: the typed config (weights, weights_dir, seed, training.preprocessing, ...).
        batch_size: images per forward pass (all devices together).
        cache_root: where the features folder lives (None: `default_cache_root()`).
        devices: extract data-parallel on this many devices (`training.distribution`; None or
            1: one device). The features do not depend on it.

    Returns:
        (features (n, d) float32, meta: {"images_per_s": extraction speed measured when they
        were computed, "params": parameter count of the feature extractor, ...}).

    Raises:
        DevicesError: more devices than visible, or a batch size they do not divide.
    """
    from training.backend import setup_backend
    from training.distribution import check_batch_size, data_parallel

    training = config.training
    weights = config.weights
    seed = int(config.seed)
    path = feature_cache_path(cache.key, backbone, weights, cache.size, training.preprocessing,
                              seed, cache_root)
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        features = np.load(path)
        meta = read_json(meta_path)
        if features.shape[0] == len(cache):
            logger.info("feature cache hit: %s", path)
            return features, meta
    check_batch_size(batch_size, devices, "feature-extraction batch size")
    setup_backend(seed, bool(config.deterministic), training.mixed_precision)
    with data_parallel(devices):
        features, rate, meta = _compute_features(cache, backbone, config, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        np.save(handle, features)
    meta = {"format": FEATURES_FORMAT, "shape": list(features.shape), "images_per_s": rate,
            **meta, "backbone": backbone, "size": cache.size,
            "weights": _weights_id(weights, seed)}
    atomic_write_json(meta_path, meta)
    logger.info("extracted %s features of %d images (%.1f images/s) -> %s",
                features.shape[1], len(cache), rate, path)
    return features, meta


def _compute_features(cache: Any, backbone: str, config: RunConfig,
                      batch_size: int) -> tuple[np.ndarray, float, dict[str, int]]:
    """Build the extractor and run it over the cache: (features, images/s, params and FLOPs)."""
    import keras

    import zoo
    from training.entry_data import predict_rows
    from zoo.flops import count_model_flops

    net = zoo.create_backbone(backbone, NUM_CLASSES, input_shape=(cache.size, cache.size, 3),
                              weights=config.weights,
                              preprocessing=config.training.preprocessing,
                              weights_dir=config.weights_dir)
    extractor = keras.Model(net.input, net.get_layer("pool").output, name=f"{backbone}_features")
    started = time.perf_counter()
    features = predict_rows(extractor, cache.images, np.arange(len(cache)), batch_size)
    rate = len(cache) / max(time.perf_counter() - started, 1e-9)
    return (np.asarray(features, dtype=np.float32), rate,
            {"params": int(extractor.count_params()),
             "flops_per_image": int(count_model_flops(net))})


def calibration_folds(y: np.ndarray, groups: np.ndarray, seed: int,
                      max_folds: int = MAX_CALIBRATION_FOLDS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Lesion-grouped, class-stratified folds for the probability calibration.

    Each class must have at least two lesions. The fold count is `max_folds`, or fewer when a
    class has fewer lesions; when a fold's training part would miss a class (the SVC's decision
    values need every class in every fold), one fold fewer is tried, down to two.

    Args:
        y: (n,) class indices.
        groups: (n,) lesion ids; a lesion never has images on both sides of a fold.
        seed: random state of the shuffle among lesions of the same class mix.
        max_folds: the most folds.

    Returns:
        The (train, test) row-index pairs.

    Raises:
        ValueError: a class with fewer than two lesions, or no fold count whose training parts
            all hold every class.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    classes = np.unique(y)
    lesions = np.array([len(np.unique(groups[y == c])) for c in classes])
    if lesions.min() < 2:
        raise ValueError(f"calibration folds need two lesions of every class; class "
                         f"{int(classes[lesions.argmin()])} has {int(lesions.min())}")
    for k in range(int(min(max_folds, lesions.min())), 1, -1):
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = list(splitter.split(np.zeros((len(y), 1)), y, groups))
        if all(len(np.unique(y[train])) == len(classes) and len(test) for train, test in folds):
            return folds
    raise ValueError("no lesion-grouped calibration folds keep every class in every training "
                     "part; the training split has too few lesions of some class")


def class_balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-image weights n / (n_classes_present * n_class): scikit-learn's "balanced"."""
    from sklearn.utils.class_weight import compute_sample_weight

    return compute_sample_weight("balanced", y)


def _svm(C: float, svm: SvmSettings, seed: int, folds: list):
    """Standardise -> SVC, wrapped in sigmoid (Platt) calibration over the given folds.

    The SVC takes no class_weight of its own: class balance comes as sample weights, which
    CalibratedClassifierCV hands to the SVC and to the Platt fit alike (a class_weight on top
    would weight the SVC twice).
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    svc = SVC(C=float(C), kernel=svm.kernel, random_state=seed)
    return make_pipeline(
        StandardScaler(),
        CalibratedClassifierCV(svc, method="sigmoid", ensemble=False, cv=folds),
    )


def svm_proba(model, x: np.ndarray) -> np.ndarray:
    """(n, 7) probabilities in canonical class order (classes absent from training get 0)."""
    proba = np.zeros((len(x), NUM_CLASSES), dtype=np.float64)
    proba[:, np.asarray(model.classes_).astype(int)] = model.predict_proba(x)
    return proba


def fit_svm(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
            svm: SvmSettings, seed: int = 0, *,
            train_groups: np.ndarray | None = None) -> SvmFit:
    """Fit one SVM per C of `svm.C_grid` on train, keep the best by val balanced accuracy.

    Probabilities are calibrated by cross-validation on the training split (up to 5 folds,
    grouped by lesion, fewer when a class has fewer lesions); a class with a single training
    lesion cannot be calibrated and is left out (it gets probability 0, logged). With
    `svm.class_weight == "balanced"` (the default) the SVC and its calibration weight every
    image by its class's inverse frequency, so the probabilities target a uniform prior like the
    class-balanced CNNs'; with None they target the training frequencies.

    Args:
        train_x, train_y: training features and class indices.
        val_x, val_y: validation features and class indices.
        svm: the SVM settings (C_grid, kernel, class_weight).
        seed: random state of the SVC and of the calibration folds.
        train_groups: (n_train,) lesion ids of the training images (None: every image its own
            lesion).

    Returns:
        An `SvmFit`: the fitted pipeline of the best C, that C, {C: val balanced accuracy} and
        the calibration record. Ties go to the smaller C.

    Raises:
        ValueError: fewer than two classes with two or more lesions in the training split, an
            empty C grid, an unknown class_weight, or train_groups of the wrong length.
    """
    from sklearn.metrics import balanced_accuracy_score

    class_weight = svm.class_weight
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"svm.class_weight must be 'balanced' or null, got {class_weight!r}")
    groups = (np.arange(len(train_y)).astype(str) if train_groups is None
              else np.asarray(train_groups).astype(str))
    if groups.shape != (len(train_y),):
        raise ValueError(f"train_groups must hold one lesion id per training image "
                         f"({len(train_y)}), got shape {groups.shape}")
    lesions = np.zeros(NUM_CLASSES, dtype=int)
    for c in np.unique(train_y):
        lesions[c] = len(np.unique(groups[train_y == c]))
    single = np.flatnonzero(lesions == 1)
    if single.size:
        logger.warning("SVM: classes %s have a single training lesion and are left out",
                       single.tolist())
        keep = ~np.isin(train_y, single)
        train_x, train_y, groups = train_x[keep], train_y[keep], groups[keep]
    if np.count_nonzero(lesions >= 2) < 2:
        raise ValueError("the SVM baseline needs at least two classes with two or more lesions "
                         "each in the training split")
    grid = sorted(float(c) for c in svm.C_grid)
    if not grid:
        raise ValueError("svm.C_grid is empty; give at least one C")
    folds = calibration_folds(train_y, groups, seed)
    weights = class_balanced_weights(train_y) if class_weight == "balanced" else None
    best, best_c, scores = None, None, {}
    for C in grid:
        model = _svm(C, svm, seed, folds).fit(
            train_x, train_y, calibratedclassifiercv__sample_weight=weights)
        pred = svm_proba(model, val_x).argmax(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores[C] = float(balanced_accuracy_score(val_y, pred))
        if best is None or scores[C] > scores[best_c]:
            best, best_c = model, C
    logger.info("SVM: val balanced accuracy per C %s -> C=%g", scores, best_c)
    calibration = {
        "method": "sigmoid",
        "scheme": "StratifiedGroupKFold",
        "groups": "lesion" if train_groups is not None else "image",
        "folds": len(folds),
        "class_weight": class_weight,
        "prior": "uniform" if class_weight == "balanced" else "training frequencies",
        "left_out_classes": single.tolist(),
    }
    return SvmFit(best, best_c, scores, calibration)


def run_svm_entry(entry: str, config: RunConfig, cache: Any, data: Any,
                  entry_dir: str | os.PathLike, *, fingerprint: str | None = None,
                  batch_size: int | None = None,
                  cache_root: str | os.PathLike | None = None,
                  devices: int | None = None,
                  progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Extract (or load) features, choose C on val, predict val and test, write metrics.json.

    Args:
        entry: "inception_resnet_v2+svm".
        config: the typed config.
        cache: the `ImageCache` at the entry's size.
        data: `training.entry_data.EntryData` of the same cache.
        entry_dir: models/<entry>.
        fingerprint: the run's protocol fingerprint.
        batch_size: feature-extraction batch size (default svm.batch_size or training.batch_size).
        cache_root: root of the feature cache.
        devices: feature extraction data-parallel on this many devices (None or 1: one).
        progress: called as progress(kind, **fields) with a few events for the runner's
            console: "status" (what it is doing now) and "note" (what a finished step gave);
            None: none.

    Returns:
        The metrics.json object.
    """
    from core.entry_metrics import write_entry_metrics
    from training.entries import (
        backbone_of,
        entry_description,
        entry_family,
        entry_group,
        entry_kind,
    )
    from training.entry_data import write_prediction_file

    entry_dir = Path(entry_dir)
    entry_dir.mkdir(parents=True, exist_ok=True)
    svm = config.svm
    backbone = backbone_of(entry)
    seed = int(config.seed)
    batch_size = int(batch_size or svm.batch_size or config.training.batch_size)
    def report(kind: str, text: str) -> None:
        if progress is not None:
            progress(kind, entry=entry, text=text)

    started = time.perf_counter()
    report("status", f"{backbone} features of {len(cache)} images")
    features, meta = extract_features(cache, backbone, config, batch_size, cache_root,
                                      devices=devices)
    extract_rate = float(meta.get("images_per_s") or 0.0)
    report("note", f"{features.shape[1]} features per image for {len(cache)} images "
                   f"({time.perf_counter() - started:.1f} s)")
    fit_started = time.perf_counter()
    report("status", f"SVM for {len(svm.C_grid)} value(s) of C, calibrated")
    model, C, scores, calibration = fit_svm(
        features[data.train.rows], data.train.labels, features[data.val.rows], data.val.labels,
        svm, seed, train_groups=data.train.lesion_id)
    fit_seconds = time.perf_counter() - fit_started
    report("note", f"SVM: C={C:g} chosen, val balanced accuracy {scores[C]:.3f} "
                   f"({fit_seconds:.1f} s)")
    svm_seconds, n = 0.0, 0
    for split, part in (("val", data.val), ("test", data.test)):
        t0 = time.perf_counter()
        proba = svm_proba(model, features[part.rows])
        svm_seconds += time.perf_counter() - t0
        n += len(part)
        write_prediction_file(entry_dir, split, part, proba, source=f"{entry} {split}")
    per_image = (1.0 / extract_rate if extract_rate > 0 else 0.0) + svm_seconds / max(n, 1)
    extra = {
        "entry": entry,
        "kind": entry_kind(entry),
        "description": entry_description(entry),
        "family": entry_family(entry),
        "group": entry_group(entry),
        "backbone": backbone,
        "status": "ok",
        "error": None,
        "fingerprint": fingerprint,
        "batch_size": batch_size,
        "devices": devices or 1,
        "image_size": int(cache.size),
        "weights": config.weights,
        "train_seconds": round(time.perf_counter() - started, 3),
        "svm_fit_seconds": round(fit_seconds, 3),
        "svm_C": C,
        "svm_val_balanced_accuracy_per_C": {str(k): v for k, v in scores.items()},
        "svm_calibration": calibration,
        "feature_dim": int(features.shape[1]),
        "params": meta.get("params"),
        "trainable_params_phase1": 0,
        "trainable_params_phase2": None,
        "flops_per_image": meta.get("flops_per_image"),
        "inference_images_per_s": round(1.0 / per_image, 3) if per_image > 0 else None,
        "best_val_balanced_accuracy": scores[C],
    }
    return write_entry_metrics(entry_dir, extra=extra)
