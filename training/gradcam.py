"""Grad-CAM (Selvaraju et al., ICCV 2017) for the CNN entries: where a trained model looked.

The map of class c for an image is ReLU(sum_k w_k A_k), where A is the feature map of the
target layer and w_k the spatial mean of d logit_c / d A_k (the class's score before the
softmax). It is upsampled bilinearly to the input size and scaled to [0, 1] per image.

The target layer is a block output of the nested "backbone" (zoo.factory): a layer every path
from the input to the output goes through (`block_outputs`), so that the rest of the network is
a function of it alone. It is the deepest block output whose grid is at least `MIN_GRID` cells a
side. At the native sizes that is every backbone's last block (8 x 8 for InceptionV3 and
InceptionResNetV2 at 299 px, 10 x 10 Xception, 7 x 7 ResNeXt101 at 224, 11 x 11 NASNetLarge at
331, 7 x 7 to 12 x 12 for the modern ones), and at the paper preset's 224 px too (5 x 5 for the
Inception pair, 7 x 7 for the others); for paper_cnn it is the last convolution, before its final
pooling (7 x 7 at 224). At the smoke preset's tiny sizes the last block is 1 x 1 (a map without
a "where"), so an earlier block output is used (the deepest with at least `MIN_GRID`, else 2,
cells a side); the layer is named on every overlay.

The gradient is backend-neutral: the net is split at the target into two Keras models
(`features`: image -> A, `head`: A -> logits) and the head is differentiated with
`tf.GradientTape` under TensorFlow and `jax.grad` of its `stateless_call` under JAX.

The SVM baseline and the ensembles have no Grad-CAM (`gradcam_unavailable_reason`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from core.atomic import atomic_write_bytes
from core.classes import CLASS_DESCRIPTIONS, CLASSES, NUM_CLASSES
from core.errors import BenchmarkError
from training.entries import backbone_of, is_svm_entry
from training.trained import TrainedEntry

logger = logging.getLogger(__name__)

MIN_GRID = 5
GRADCAM_BATCH = 16
HEAT_ALPHA = 0.45
HEAT_CMAP = "jet"
OVERLAY_DPI = 110
_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                 keras.layers.SeparableConv2D)
# Layers that only pad or crop their input (their grid is not the features'): never a target.
_RESHAPING = (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


class GradCamError(BenchmarkError, ValueError):
    """Grad-CAM asked of an entry that has none, or of images that do not fit the entry."""


def gradcam_unavailable_reason(entry_kind_or_name: str) -> str | None:
    """Why an entry has no Grad-CAM, or None when it has one.

    Args:
        entry_kind_or_name: an entry name ("xception", "inception_resnet_v2+svm",
            "soft_voting") or a kind ("backbone", "baseline", "svm", "ensemble").

    Returns:
        None for a CNN entry of the zoo (or the kinds "backbone"/"baseline"); else one
        sentence saying why there is no map.
    """
    name = str(entry_kind_or_name)
    if name in ("backbone", "baseline"):
        return None
    if name == "svm" or is_svm_entry(name):
        subject = name if is_svm_entry(name) else "the SVM baseline"
        return (f"{subject} is an SVM on frozen backbone features: its decision does not flow "
                "through a convolutional layer's gradients, so it has no Grad-CAM")
    if name == "ensemble":
        return ("an ensemble combines its members' probabilities and has no convolutional layer "
                "of its own; see the Grad-CAM of each CNN member")
    import zoo

    if name in zoo.list_backbones():
        return None
    if backbone_of(name) in zoo.list_backbones():
        return (f"{name} is derived from {backbone_of(name)} (e.g. its test-time augmentation) "
                f"and has no network of its own; see the Grad-CAM of {backbone_of(name)}")
    return (f"{name} is not a CNN entry of the zoo (an ensemble combines its members' "
            "probabilities and has no convolutional layer of its own; see the Grad-CAM of each "
            "CNN member)")


# --- the split at the target layer ---------------------------------------------------------------

@dataclass(frozen=True)
class CamModel:
    """The zoo net split at the target layer.

    Attributes:
        features: raw RGB float images (N, s, s, 3) -> the target feature map A (N, h, w, k).
        head: A -> the logits (N, 7), before the softmax.
        layer: the target layer's name inside the backbone.
        grid: A's (h, w).
    """

    features: keras.Model
    head: keras.Model
    layer: str
    grid: tuple[int, int]


_CAM_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def functional_graph(backbone: keras.Model) -> keras.Model:
    """The functional model behind a backbone: itself, or a Sequential's built graph.

    Raises:
        GradCamError: a backbone that is no functional graph (a subclassed model).
    """
    graph = getattr(backbone, "_functional", None) or backbone
    if not hasattr(graph, "_nodes_by_depth"):
        raise GradCamError(f"the backbone {backbone.name!r} is a subclassed Keras model, not a "
                           "functional graph, so Grad-CAM cannot find its blocks; build it with "
                           "the functional API")
    return graph


def block_outputs(backbone: keras.Model) -> list[tuple[str, Any]]:
    """The backbone's block outputs: (layer name, symbolic tensor) of every 4-D layer output that
    all paths from the input to the output go through, after the first convolution and other
    than a padding or cropping layer's, in depth order (shallowest first).

    A layer's output is such a cut when, in a topological order, it is the only tensor still
    needed once the layer has run (reference counting over the functional graph's nodes).
    """
    graph = functional_graph(backbone)
    by_depth = graph._nodes_by_depth  # the functional graph's nodes (keras.src.ops.function)
    nodes = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
    consumers: dict[int, int] = {}
    for node in nodes:
        for tensor in node.input_tensors:
            consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    for tensor in graph.outputs:
        consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    live: set[int] = set()
    seen_convolution = False
    found = []
    for node in nodes:
        for tensor in node.input_tensors:
            consumers[id(tensor)] -= 1
            if consumers[id(tensor)] == 0:
                live.discard(id(tensor))
        live.update(id(t) for t in node.outputs if consumers.get(id(t), 0) > 0)
        seen_convolution = seen_convolution or isinstance(node.operation, _CONVOLUTIONS)
        if (seen_convolution and len(node.outputs) == 1 and live == {id(node.outputs[0])}
                and len(node.outputs[0].shape) == 4
                and not isinstance(node.operation, _RESHAPING)):
            found.append((node.operation.name, node.outputs[0]))
    return found


def choose_target(blocks: Sequence[tuple[str, Any]]) -> tuple[str, Any]:
    """The target among `block_outputs`: the deepest with at least `MIN_GRID` cells a side, else
    the deepest with at least 2, else the deepest.

    Raises:
        GradCamError: no block output at all (a backbone without a 4-D feature map).
    """
    if not blocks:
        raise GradCamError("the backbone has no convolutional feature map that the whole "
                           "network depends on, so Grad-CAM has no layer to look at")
    for smallest in (MIN_GRID, 2):
        fitting = [block for block in blocks if min(block[1].shape[1:3]) >= smallest]
        if fitting:
            return fitting[-1]
    return blocks[-1]


def cam_model(trained: TrainedEntry) -> CamModel:
    """The entry's net split at its Grad-CAM target (built once per net, then reused).

    Raises:
        GradCamError: the net has no backbone block to split at.
    """
    net = trained.net
    cached = _CAM_MODELS.get(net)
    if cached is not None:
        return cached
    backbone = functional_graph(net.get_layer("backbone"))
    name, target = choose_target(block_outputs(backbone))
    front = keras.Model(backbone.inputs, target, name="gradcam_front")
    image = keras.Input(net.inputs[0].shape[1:], name="image")
    features = keras.Model(image, front(net.get_layer("preprocess")(image)),
                           name="gradcam_features")
    grid = tuple(int(v) for v in target.shape[1:3])
    cells = keras.Input(target.shape[1:], name="feature_map")
    x = cells
    if target is not backbone.outputs[0]:
        x = keras.Model(target, backbone.outputs[0], name="gradcam_rest")(x)
    for layer in ("pool", "dropout", "logits"):
        x = net.get_layer(layer)(x)
    head = keras.Model(cells, x, name="gradcam_head")
    model = CamModel(features=features, head=head, layer=name, grid=grid)
    _CAM_MODELS[net] = model
    logger.debug("Grad-CAM of %s on %s (%dx%d)", trained.entry, name, *grid)
    return model


# --- the maps ------------------------------------------------------------------------------------

def gradcam_maps(trained: TrainedEntry, images: np.ndarray,
                 class_index: np.ndarray | None = None,
                 batch_size: int = GRADCAM_BATCH) -> np.ndarray:
    """Grad-CAM maps of a trained CNN entry.

    Args:
        trained: the entry (training.trained.load_trained_entry).
        images: uint8 (or 0-255 float) RGB images (N, s, s, 3) at the entry's input size.
        class_index: (N,) the class of each map; None: each image's predicted class.
        batch_size: images per gradient step.

    Returns:
        (N, s, s) float32 maps in [0, 1] (1 at each map's maximum; all 0 where no cell speaks
        for the class).

    Raises:
        GradCamError: images of another shape than the entry's input, or class indices out of
            range or of another length.
    """
    images = np.asarray(images)
    size = trained.image_size
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise GradCamError(f"Grad-CAM of {trained.entry} needs RGB images of {size}x{size} "
                           f"(N, {size}, {size}, 3), got shape {images.shape}; resize them as "
                           "the entry was trained (training.trained.split_images)")
    n = len(images)
    if n == 0:
        return np.zeros((0, size, size), dtype=np.float32)
    if class_index is None:
        class_index = np.argmax(trained.predict(images, batch_size=batch_size), axis=1)
    class_index = np.asarray(class_index).reshape(-1)
    if len(class_index) != n or not np.isin(class_index, np.arange(NUM_CLASSES)).all():
        raise GradCamError(f"class_index must hold {n} class indices in 0..{NUM_CLASSES - 1} "
                           f"(one per image), got {class_index.tolist()[:10]}")
    model = cam_model(trained)
    batch_size = max(1, min(int(batch_size), n))
    pad = (-n) % batch_size
    x = images.astype("float32")
    classes = class_index.astype("int32")
    if pad:  # one batch shape: a compiled gradient is traced once
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        classes = np.concatenate([classes, np.repeat(classes[-1:], pad)])
    gradient = _gradient_function(model)
    cams = []
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        fmap = np.asarray(keras.ops.convert_to_numpy(
            model.features(x[start:stop], training=False)), dtype=np.float32)
        onehot = np.eye(NUM_CLASSES, dtype=np.float32)[classes[start:stop]]
        grads = gradient(fmap, onehot)
        weights = grads.mean(axis=(1, 2), keepdims=True)
        cams.append(np.maximum((weights * fmap).sum(axis=-1), 0.0))
    cam = np.concatenate(cams)[:n]
    return np.stack([_upsample(c, size) for c in cam]).astype(np.float32)


def _gradient_function(model: CamModel):
    """fmap (N, h, w, k), onehot (N, 7) -> d sum(logits * onehot) / d fmap, in numpy."""
    backend = keras.backend.backend()
    head = model.head
    if backend == "tensorflow":
        import tensorflow as tf

        def gradient(fmap: np.ndarray, onehot: np.ndarray) -> np.ndarray:
            cells = tf.convert_to_tensor(fmap)
            with tf.GradientTape() as tape:
                tape.watch(cells)
                logits = tf.cast(head(cells, training=False), tf.float32)
                score = tf.reduce_sum(logits * onehot)
            return tape.gradient(score, cells).numpy()

        return gradient
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in head.trainable_variables]
        frozen = [v.value for v in head.non_trainable_variables]

        def score(cells, onehot):
            logits, _ = head.stateless_call(trainable, frozen, cells, training=False)
            return jnp.sum(logits.astype("float32") * onehot)

        compiled = jax.jit(jax.grad(score))

        def gradient(fmap: np.ndarray, onehot: np.ndarray) -> np.ndarray:
            return np.asarray(compiled(jnp.asarray(fmap), jnp.asarray(onehot)))

        return gradient
    raise GradCamError(f"Grad-CAM supports the tensorflow and jax Keras backends, not {backend!r}; "
                       "set KERAS_BACKEND=tensorflow or jax")


def _upsample(cam: np.ndarray, size: int) -> np.ndarray:
    """A (h, w) map resized bilinearly to (size, size), then scaled to [0, 1] by its maximum."""
    from PIL import Image

    top = float(cam.max())
    if not np.isfinite(top) or top <= 0.0:
        return np.zeros((size, size), dtype=np.float32)
    cells = Image.fromarray((cam / top).astype(np.float32), mode="F")
    heat = np.maximum(np.asarray(cells.resize((size, size), Image.BILINEAR)), 0.0)
    return np.clip(heat / max(float(heat.max()), np.finfo(np.float32).tiny), 0.0, 1.0)


# --- overlays ------------------------------------------------------------------------------------

def draw_overlay(ax: Any, image: np.ndarray, heat: np.ndarray, title: str = "") -> None:
    """Draw an image with its Grad-CAM map over it (HEAT_CMAP, HEAT_ALPHA) on a matplotlib axes.

    Args:
        ax: the axes.
        image: uint8 RGB (s, s, 3).
        heat: (s, s) map in [0, 1].
        title: the axes title ("" for none).
    """
    ax.imshow(np.asarray(image, dtype=np.uint8))
    ax.imshow(heat, cmap=HEAT_CMAP, alpha=HEAT_ALPHA, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def overlay_names(paths: Sequence[str | Path]) -> list[str]:
    """One PNG file name per image path: `<stem>.png`, and `<stem>-<8 hex of the path>.png` for
    stems that several paths share (case-insensitively: image.jpg in two folders, or a.JPG and
    a.png), numbered on when the same path comes twice.

    Args:
        paths: the images' paths.

    Returns:
        Distinct file names, in the order of `paths`.
    """
    stems = [Path(p).stem for p in paths]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
    names, used = [], set()
    for path, stem in zip(paths, stems, strict=True):
        name = stem
        if counts[stem.lower()] > 1:
            name = f"{stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
        candidate, number = name, 2
        while candidate.lower() in used:
            candidate, number = f"{name}-{number}", number + 1
        used.add(candidate.lower())
        names.append(f"{candidate}.png")
    return names


def write_overlays(trained: TrainedEntry, images: np.ndarray, paths: Sequence[str | Path],
                   out_dir: str | Path, probabilities: np.ndarray) -> list[Path]:
    """Write one Grad-CAM overlay PNG per image: the image, the map of its top class over it,
    and the top class with its probability.

    Args:
        trained: the entry.
        images: uint8 RGB images (N, s, s, 3) at the entry's input size.
        paths: the images' paths (N): the PNGs are named after them (`overlay_names`).
        out_dir: the folder to write into (created).
        probabilities: (N, 7) the entry's probabilities of the images; the top class is the one
            mapped and named.

    Returns:
        The written PNG paths, in the order of `paths`.

    Raises:
        GradCamError: lengths or shapes that do not match.
    """
    images = np.asarray(images)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(paths) != len(images) or probabilities.shape != (len(images), NUM_CLASSES):
        raise GradCamError(f"write_overlays needs one path and one row of {NUM_CLASSES} "
                           f"probabilities per image: {len(images)} images, {len(paths)} "
                           f"paths, probabilities of shape {probabilities.shape}")
    top = np.argmax(probabilities, axis=1)
    maps = gradcam_maps(trained, images, top)
    layer = cam_model(trained).layer
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for image, heat, path, name, cls, row in zip(images, maps, paths, overlay_names(paths),
                                                  top, probabilities, strict=True):
        title = (f"{Path(path).name}: top class {CLASSES[cls]} "
                 f"({CLASS_DESCRIPTIONS[CLASSES[cls]]}), probability {row[cls]:.2f}\n"
                 f"{trained.entry}, Grad-CAM on {layer}")
        target = out / name
        atomic_write_bytes(target, _overlay_png(image, heat, title))
        written.append(target)
    logger.info("wrote %d Grad-CAM overlay(s) of %s to %s", len(written), trained.entry, out)
    return written


def _overlay_png(image: np.ndarray, heat: np.ndarray, title: str) -> bytes:
    """The overlay figure: the image beside the image with its map, under a title."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.imshow(np.asarray(image, dtype=np.uint8))
    left.set_xticks([])
    left.set_yticks([])
    left.set_title("image", fontsize=8)
    draw_overlay(right, image, heat, "Grad-CAM of the top class")
    fig.suptitle(title, fontsize=9)
    fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap=HEAT_CMAP), ax=right, fraction=0.046,
                 pad=0.04, label="share of the map's maximum")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=OVERLAY_DPI, bbox_inches="tight")
    return buffer.getvalue()
