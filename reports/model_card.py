"""MODEL_CARD.md beside an exported entry (`--export`), after the Model Cards convention.

The sections follow Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019): model details,
intended use, the data and its split, the training protocol, the test metrics with their
lesion-bootstrap intervals, per-class sensitivity, calibration, known limits and the data's
licence. Every number is read from the run directory (run.json, dataset.json, the entry's
metrics.json), never recomputed here; the licence, the citations and the disclaimer come from
core.facts, their one source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core import facts
from core.classes import CLASS_DESCRIPTIONS, CLASSES
from core.entry_metrics import read_entry_metrics
from core.numbers import as_float
from core.rundir import RunDir
from reports.context import RunContext, read_context
from reports.formatting import fmt, fmt_ci, fmt_count, table

MODEL_CARD = "MODEL_CARD.md"
# The card's sections, in order (tests check that each is present).
SECTIONS: tuple[str, ...] = (
    "Model details",
    "Intended use",
    "Data and split",
    "Training protocol",
    "Test metrics",
    "Per-class sensitivity",
    "Calibration",
    "Known limits",
    "Data licence and citation",
)
_HEADLINE = (("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy (mean recall)"),
             ("macro_auc", "Macro AUC (one-vs-rest)"))
_CALIBRATION = (("log_loss", "Log loss"), ("brier", "Brier score"),
                ("ece", "Expected calibration error (15 bins)"))
# What HAM10000 is and is not (Tschandl et al. 2018): the limits every card repeats.
POPULATION_LIMITS: tuple[str, ...] = (
    "**Population and skin type.** HAM10000 was collected at two sites, the Department of "
    "Dermatology of the Medical University of Vienna (Austria) and a skin-cancer practice in "
    "Queensland (Australia). It records age, sex and body site but not skin type; its patients "
    "are predominantly light-skinned, so performance on darker skin types is unknown and likely "
    "worse.",
    "**Classes never seen.** The model always answers with one of its seven classes; it "
    "has never seen any other diagnosis (e.g. invasive squamous cell carcinoma, Merkel cell "
    "carcinoma, non-lesional skin) nor non-dermoscopic images (clinical close-ups, "
    "histopathology), and will still assign them one of the seven with a probability that can "
    "look confident.",
    "**Acquisition.** The images come from the dermatoscopes, lighting, magnification and "
    "curation of those sites (lesion centred, stored at 600x450 pixels); other devices, "
    "clinics and protocols shift the images and, untested, the performance.",
    "**Labels and prevalence.** Somewhat more than half of the lesions are confirmed by "
    "histopathology, the rest by follow-up, expert consensus or confocal microscopy; the class "
    "mix (about two thirds melanocytic nevi) is that of these sites' referral practice, not of "
    "any screening population, so predictive values elsewhere differ from the numbers here.",
)


@dataclass(frozen=True)
class ExportFacts:
    """What the export adds to the run's own records.

    Attributes:
        entry: the exported entry.
        artifacts: (format, path relative to the card) of each export file present.
        image_size: the square input size.
        resize_mode: "square" or "crop".
        preprocessing: the scaling inside the model ("tf", "unit", "torch", "caffe", "internal").
        needs_dermbench: True when the .keras file keeps dermbench's preprocessing layer.
    """

    entry: str
    artifacts: tuple[tuple[str, str], ...]
    image_size: int
    resize_mode: str
    preprocessing: str
    needs_dermbench: bool = False


def _metric_rows(split: dict[str, Any], names: Sequence[tuple[str, str]]) -> list[list[str]]:
    return [[label, fmt_ci(split, key)] for key, label in names]


def _model_details(facts_: ExportFacts, metrics: dict[str, Any], context: RunContext) -> str:
    size = facts_.image_size
    resize = ("resized whole to a square (aspect ratio not kept)" if facts_.resize_mode == "square"
              else "centre-cropped to a square, then resized")
    files = "\n".join(f"- `{path}` ({fmt_name})" for fmt_name, path in facts_.artifacts)
    loading = {
        "keras": "`keras.saving.load_model(path)(images)`" + (
            " after `import zoo.preprocessing` (dermbench's preprocessing layer)"
            if facts_.needs_dermbench else ""),
        "savedmodel": "`model = tf.saved_model.load(path)`, then `model.serve(images)` (keep "
                      "`model` referenced while calling it), or "
                      "`keras.layers.TFSMLayer(path, call_endpoint=\"serve\")`",
        "onnx": "`onnxruntime.InferenceSession(path).run(None, {\"image\": images})[0]`",
    }
    how = "\n".join(f"- {name}: {loading[name]}" for name, _ in facts_.artifacts)
    classes = ", ".join(f"{c} ({CLASS_DESCRIPTIONS[c]})" for c in CLASSES)
    return "\n".join([
        f"- Entry: `{facts_.entry}`: {metrics.get('description') or 'not recorded'}; kind "
        f"{metrics.get('kind') or 'not recorded'}, {fmt_count(metrics.get('params'))} "
        "parameters.",
        f"- Input: RGB images of {size}x{size} pixels, values in [0, 255] (uint8, or float32 "
        f"holding those values), shape (n, {size}, {size}, 3). Decode and resize them as training "
        f"did: EXIF orientation applied, transparency composited on black, grayscale repeated "
        f"to RGB, {resize} with Pillow's antialiased bilinear filter "
        "(`data_utils.imaging.decode_image`). The model does not resize.",
        f"- Preprocessing: inside the model (`{facts_.preprocessing}` scaling of the backbone).",
        f"- Output: seven probabilities in this order: {classes}. Calibration says which "
        "class prior they target.",
        f"- Trained by dermbench {context.run_json.get('versions', {}).get('dermbench', '')} "
        f"({context.backend} backend) on {context.date}; git "
        f"{(context.run_json.get('git') or {}).get('sha', 'not recorded')}.",
        "",
        "Files:",
        "",
        files,
        "",
        "Loading:",
        "",
        how,
    ])


def _intended_use() -> str:
    return "\n".join([
        "- Research only: not for clinical diagnosis, without any regulatory clearance; never "
        "use it to decide about a patient's care.",
        "- In scope: dermoscopic images of single pigmented skin lesions of the seven HAM10000 "
        "classes, acquired like HAM10000's, for benchmarking, method development and teaching.",
        "- Out of scope: clinical (non-dermoscopic) photographs, other diagnoses, screening, "
        "triage, self-examination apps, populations unlike HAM10000's (see Known limits).",
    ])


def _data_and_split(context: RunContext) -> str:
    data = context.dataset_json
    images, lesions = data.get("images") or {}, data.get("lesions") or {}
    counts = data.get("counts") or {}
    rows = [[split, fmt(images.get(split), 0), fmt(lesions.get(split), 0),
             *(fmt((counts.get(split) or {}).get(c), 0) for c in CLASSES)]
            for split in ("train", "val", "test") if split in images or split in counts]
    lines = [
        f"- Dataset: {context.dataset} ({fmt(images.get('total'), 0)} images, "
        f"{fmt(lesions.get('total'), 0)} lesions).",
        f"- Split: {context.split_type}-level, ratios {data.get('ratios', 'not recorded')}, seed "
        f"{data.get('seed', 'not recorded')}; test set: {data.get('test_source') or 'not recorded'}.",
        f"- Leakage check: {context.leakage_summary()}.",
        "- Weights, early stopping and every other choice used the validation split only; the "
        "test split was predicted once, at the end.",
    ]
    if context.is_pipeline_check:
        lines.append("- **This run checks the pipeline** (generated images or the smoke preset "
                     "from untrained backbones): its numbers say nothing about skin lesions and "
                     "the model is not a classifier to use.")
    if rows:
        lines += ["", table(rows, ["split", "images", "lesions", *CLASSES])]
    return "\n".join(lines)


def _training_protocol(context: RunContext, metrics: dict[str, Any]) -> str:
    training = context.config.get("training") or {}
    phases = metrics.get("phases") or []
    rows = [
        ["preset", context.preset],
        ["initial weights", "none (trained from scratch)" if phases == ["scratch"] else
         str(context.config.get("weights")) + (
             " (untrained backbone)" if context.untrained_backbones else "")],
        ["phases", ", ".join(map(str, phases)) or "not recorded"],
        ["epochs (frozen / fine-tune / scratch)",
         f"{training.get('phase1_epochs')} / {training.get('phase2_epochs')} / "
         f"{training.get('scratch_epochs')}"],
        ["learning rates (frozen / fine-tune / scratch)",
         f"{training.get('phase1_lr')} / {training.get('phase2_lr')} / "
         f"{training.get('scratch_lr')}"],
        ["optimizer, schedule", f"{training.get('optimizer')}, {training.get('schedule')}"],
        ["class weighting", str(training.get("class_weighting"))],
        ["augmentation", _settings_text(training.get("augmentation"))],
        ["best epoch (validation balanced accuracy)",
         f"{metrics.get('best_epoch', 'n/a')} ({fmt(metrics.get('best_val_balanced_accuracy'))})"],
        ["protocol fingerprint", f"`{context.fingerprint}`"],
        ["command", f"`{context.command}`"],
    ]
    return table(rows, ["setting", "value"])


def _settings_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
    return str(value)


def _test_metrics(test: dict[str, Any]) -> str:
    return "\n".join([
        f"On the {fmt(test.get('n_images'), 0)} test images ({fmt(test.get('n_lesions'), 0)} "
        "lesions). Brackets: 95 % percentile intervals of the lesion bootstrap (lesions are "
        "resampled, not images, since images of one lesion are not independent).",
        "",
        table(_metric_rows(test, _HEADLINE), ["metric", "value [95 % interval]"]),
    ])


def _per_class(test: dict[str, Any]) -> str:
    rows = [[c, fmt(test.get(f"support_{c}"), 0), fmt(test.get(f"recall_{c}")),
             fmt(test.get(f"specificity_{c}")), fmt(test.get(f"auc_{c}"))] for c in CLASSES]
    mel = (f"Melanoma sensitivity at the validation threshold for 90 % specificity: "
           f"{fmt(test.get('mel_sens_at_val_threshold_spec90'))} (specificity there "
           f"{fmt(test.get('mel_spec_at_val_threshold_spec90'))}).")
    return "\n".join([
        "Sensitivity is the recall of each class on the test split; n/a where the test split has "
        "no image of the class.",
        "",
        table(rows, ["class", "test images", "sensitivity", "specificity", "AUC"]),
        "",
        mel,
    ])


def _calibration(test: dict[str, Any], metrics: dict[str, Any], context: RunContext) -> str:
    prior = (metrics.get("calibration_prior") or {}).get("prior") or {}
    prior_text = ", ".join(f"{c} {as_float(prior.get(c)):.3f}" for c in CLASSES
                           if not math.isnan(as_float(prior.get(c))))
    if metrics.get("probabilities") is False:
        return "The outputs are vote shares, not probabilities: calibration is undefined."
    weighting = (context.config.get("training") or {}).get("class_weighting")
    prior_note = ("The model was trained with a class-weighted loss, so its probabilities target "
                  "a uniform class prior." if weighting == "balanced" else
                  f"The model was trained with class weighting {weighting!r}.")
    return "\n".join([
        f"{prior_note} Calibration is measured after the prior-shift correction to the training "
        "frequencies (p'_k = p_k pi_k / sum_j p_j pi_j, Saerens et al. 2002); apply the same "
        "correction with your own prevalences before reading the outputs as risks.",
        "",
        table(_metric_rows(test, _CALIBRATION), ["metric (test, prior-shifted)", "value"]),
        "",
        f"Training prior pi: {prior_text or 'not recorded'}.",
    ])


def _known_limits(context: RunContext) -> str:
    lines = [f"- {text}" for text in POPULATION_LIMITS]
    if not context.is_real_data:
        lines.insert(0, f"- **Not trained on real images**: dataset {context.dataset}.")
    return "\n".join(lines)


def _licence(context: RunContext) -> str:
    cites = "\n".join(f"- {c}" for c in facts.citations(
        context.dataset if context.is_real_data else None))
    return "\n".join([
        "The weights were learned from the data below; its terms bind what you do with them.",
        "",
        facts.LICENCE,
        "",
        "Cite:",
        "",
        cites,
    ])


def model_card_markdown(run_dir: str, export: ExportFacts) -> str:
    """The model card of an exported entry (module docstring).

    Args:
        run_dir: the run directory the entry was trained in.
        export: what the export wrote (files, input, preprocessing).

    Returns:
        The markdown text, one section per `SECTIONS` ("n/a" for what the run did not record).
    """
    run = RunDir(run_dir)
    context = read_context(run)
    metrics = read_entry_metrics(run.model_dir(export.entry))
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    bodies = (
        _model_details(export, metrics, context),
        _intended_use(),
        _data_and_split(context),
        _training_protocol(context, metrics),
        _test_metrics(test),
        _per_class(test),
        _calibration(test, metrics, context),
        _known_limits(context),
        _licence(context),
    )
    parts = [f"# Model card: {export.entry}", "",
             f"A skin-lesion classifier exported from the dermbench run `{run.root.name}`. "
             f"{facts.DISCLAIMER}"]
    for title, body in zip(SECTIONS, bodies, strict=True):
        parts += ["", f"## {title}", "", body]
    return "\n".join(parts) + "\n"
