"""Baseline "inception_resnet_v2+svm": the study's feature-extraction path.

Pooled features of the frozen InceptionResNetV2 (ImageNet weights normally; the config's
`weights`, so None in the smoke preset) are extracted once for every image of the cache and kept
on disk as .npy, keyed by (image cache key, backbone, weights, size, preprocessing), so refitting
the SVM takes seconds. Then standardised features feed an RBF `sklearn.svm.SVC` whose
probabilities are calibrated (sigmoid/Platt, cross-validated on the training split,
`CalibratedClassifierCV(ensemble=False)`); C is chosen on the validation split by balanced
accuracy, the test split is predicted once at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from data_utils.atomic import atomic_open, atomic_write_json, read_json
from data_utils.classes import NUM_CLASSES

logger = logging.getLogger(__name__)

FEATURES_DIR = "features"
FEATURES_FORMAT = 1


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


def extract_features(cache: Any, backbone: str, config: dict[str, Any], batch_size: int,
                     cache_root: str | os.PathLike | None = None,
                     devices: int | None = None) -> tuple[np.ndarray, dict]:
    """Pooled features of every image in `cache` (rows in cache order), from disk when present.

    Args:
        cache: the `ImageCache` at the entry's size.
        backbone: zoo backbone name (its "pool" layer's output is the feature vector).
        config: the resolved config (weights, weights_dir, seed, training.preprocessing, ...).
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
    from training.distribution import check_batch_size, data_parallel
    from training.protocol import setup_backend

    training = config["training"]
    weights = config.get("weights")
    seed = int(config.get("seed", 0))
    path = feature_cache_path(cache.key, backbone, weights, cache.size,
                              training.get("preprocessing"), seed, cache_root)
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        features = np.load(path)
        meta = read_json(meta_path)
        if features.shape[0] == len(cache):
            logger.info("feature cache hit: %s", path)
            return features, meta
    check_batch_size(batch_size, devices, "feature-extraction batch size")
    setup_backend(seed, bool(config.get("deterministic", False)),
                  training.get("mixed_precision", "auto"))
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


def _compute_features(cache: Any, backbone: str, config: dict[str, Any],
                      batch_size: int) -> tuple[np.ndarray, float, dict[str, int]]:
    """Build the extractor and run it over the cache: (features, images/s, params and FLOPs)."""
    import keras

    import zoo
    from training.protocol import predict_rows
    from zoo.flops import count_model_flops

    training = config["training"]
    net = zoo.create_backbone(backbone, NUM_CLASSES, input_shape=(cache.size, cache.size, 3),
                              weights=config.get("weights"),
                              preprocessing=training.get("preprocessing"),
                              weights_dir=config.get("weights_dir"))
    extractor = keras.Model(net.input, net.get_layer("pool").output, name=f"{backbone}_features")
    started = time.perf_counter()
    features = predict_rows(extractor, cache.images, np.arange(len(cache)), batch_size)
    rate = len(cache) / max(time.perf_counter() - started, 1e-9)
    return (np.asarray(features, dtype=np.float32), rate,
            {"params": int(extractor.count_params()),
             "flops_per_image": int(count_model_flops(net))})


def _svm(C: float, svm: dict[str, Any], seed: int, folds: int):
    """Standardise -> SVC, wrapped in sigmoid (Platt) calibration by `folds`-fold CV."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    svc = SVC(C=float(C), kernel=svm.get("kernel", "rbf"),
              class_weight=svm.get("class_weight", "balanced"), random_state=seed)
    return make_pipeline(
        StandardScaler(),
        CalibratedClassifierCV(svc, method="sigmoid", ensemble=False,
                               cv=StratifiedKFold(folds, shuffle=True, random_state=seed)),
    )


def svm_proba(model, x: np.ndarray) -> np.ndarray:
    """(n, 7) probabilities in canonical class order (classes absent from training get 0)."""
    proba = np.zeros((len(x), NUM_CLASSES), dtype=np.float64)
    proba[:, np.asarray(model.classes_).astype(int)] = model.predict_proba(x)
    return proba


def fit_svm(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
            svm: dict[str, Any], seed: int = 0) -> tuple[Any, float, dict[float, float]]:
    """Fit one SVM per C of `svm["C_grid"]` on train, keep the best by val balanced accuracy.

    Probabilities are calibrated by cross-validation on the training split (up to 5 folds,
    fewer when a class has fewer images); a class with a single training image cannot be
    calibrated and is left out (it gets probability 0, logged).

    Args:
        train_x, train_y: training features and class indices.
        val_x, val_y: validation features and class indices.
        svm: the config's "svm" mapping (C_grid, kernel, class_weight).
        seed: random state of the probability calibration.

    Returns:
        (fitted pipeline of the best C, that C, {C: val balanced accuracy}). Ties go to the
        smaller C.

    Raises:
        ValueError: fewer than two classes in the training split, or an empty C grid.
    """
    from sklearn.metrics import balanced_accuracy_score

    counts = np.bincount(train_y, minlength=NUM_CLASSES)
    single = np.flatnonzero(counts == 1)
    if single.size:
        logger.warning("SVM: classes %s have a single training image and are left out",
                       single.tolist())
        keep = ~np.isin(train_y, single)
        train_x, train_y = train_x[keep], train_y[keep]
        counts[single] = 0
    if np.count_nonzero(counts) < 2:
        raise ValueError("the SVM baseline needs at least two classes with two or more images "
                         "each in the training split")
    folds = int(min(5, counts[counts > 0].min()))
    grid = sorted(float(c) for c in svm.get("C_grid", []))
    if not grid:
        raise ValueError("svm.C_grid is empty; give at least one C")
    best, best_c, scores = None, None, {}
    for C in grid:
        model = _svm(C, svm, seed, folds).fit(train_x, train_y)
        pred = svm_proba(model, val_x).argmax(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores[C] = float(balanced_accuracy_score(val_y, pred))
        if best is None or scores[C] > scores[best_c]:
            best, best_c = model, C
    logger.info("SVM: val balanced accuracy per C %s -> C=%g", scores, best_c)
    return best, best_c, scores


def run_svm_entry(entry: str, config: dict[str, Any], cache: Any, data: Any,
                  entry_dir: str | os.PathLike, *, fingerprint: str | None = None,
                  batch_size: int | None = None,
                  cache_root: str | os.PathLike | None = None,
                  devices: int | None = None) -> dict[str, Any]:
    """Extract (or load) features, choose C on val, predict val and test, write metrics.json.

    Args:
        entry: "inception_resnet_v2+svm".
        config: the resolved config.
        cache: the `ImageCache` at the entry's size.
        data: `training.protocol.EntryData` of the same cache.
        entry_dir: models/<entry>.
        fingerprint: the run's protocol fingerprint.
        batch_size: feature-extraction batch size (default svm.batch_size or training.batch_size).
        cache_root: root of the feature cache.
        devices: feature extraction data-parallel on this many devices (None or 1: one).

    Returns:
        The metrics.json object.
    """
    from reports.entry import write_entry_metrics
    from training.presets import backbone_of, entry_kind
    from training.protocol import write_prediction_file

    entry_dir = Path(entry_dir)
    entry_dir.mkdir(parents=True, exist_ok=True)
    svm = config.get("svm", {})
    backbone = backbone_of(entry)
    seed = int(config.get("seed", 0))
    batch_size = int(batch_size or svm.get("batch_size") or config["training"]["batch_size"])
    started = time.perf_counter()
    features, meta = extract_features(cache, backbone, config, batch_size, cache_root,
                                      devices=devices)
    extract_rate = float(meta.get("images_per_s") or 0.0)
    fit_started = time.perf_counter()
    model, C, scores = fit_svm(features[data.train.rows], data.train.labels,
                               features[data.val.rows], data.val.labels, svm, seed)
    fit_seconds = time.perf_counter() - fit_started
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
        "backbone": backbone,
        "status": "ok",
        "error": None,
        "fingerprint": fingerprint,
        "batch_size": batch_size,
        "devices": devices or 1,
        "image_size": int(cache.size),
        "weights": config.get("weights"),
        "train_seconds": round(time.perf_counter() - started, 3),
        "svm_fit_seconds": round(fit_seconds, 3),
        "svm_C": C,
        "svm_val_balanced_accuracy_per_C": {str(k): v for k, v in scores.items()},
        "feature_dim": int(features.shape[1]),
        "params": meta.get("params"),
        "trainable_params_phase1": 0,
        "trainable_params_phase2": None,
        "flops_per_image": meta.get("flops_per_image"),
        "inference_images_per_s": round(1.0 / per_image, 3) if per_image > 0 else None,
        "best_val_balanced_accuracy": scores[C],
    }
    return write_entry_metrics(entry_dir, extra=extra)
