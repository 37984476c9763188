"""MODEL_CARD.md from a run's records (reports.model_card): hand-made run, no Keras."""

from __future__ import annotations

import re

import pytest

from core.atomic import atomic_write_json
from core.classes import CLASSES
from core.facts import HAM10000_CITATION, LICENCE
from reports.model_card import SECTIONS, ExportFacts, model_card_markdown

FACTS = ExportFacts(entry="xception", artifacts=(("keras", "model.keras"), ("onnx", "model.onnx")),
                    image_size=299, resize_mode="crop", preprocessing="tf")


@pytest.fixture
def run(tmp_path):
    root = tmp_path / "run"
    (root / "models" / "xception").mkdir(parents=True)
    atomic_write_json(root / "run.json", {
        "fingerprint": "f" * 64, "command": "benchmark.py --all", "created": "2026-12-01",
        "git": {"sha": "abc123"}, "versions": {"dermbench": "0.1.0"},
        "config": {"dataset": "ham10000", "preset": "native", "split": "lesion",
                   "weights": "imagenet",
                   "training": {"class_weighting": "balanced", "phase1_epochs": 5,
                                "phase2_epochs": 20, "augmentation": {"flip": "horizontal"}}},
    })
    atomic_write_json(root / "dataset.json", {
        "dataset": "ham10000", "split": "lesion", "ratios": [0.8, 0.1, 0.1], "seed": 0,
        "images": {"train": 8000, "val": 1000, "test": 1015, "total": 10015},
        "lesions": {"train": 5976, "val": 747, "test": 747, "total": 7470},
        "counts": {"test": {c: 10 + i for i, c in enumerate(CLASSES)}},
        "leakage": {"ok": True, "shared_lesions_total": 0,
                    "test_images_sharing_lesion_with_train": 0},
    })
    test = {"n_images": 1015, "n_lesions": 747, "accuracy": 0.81, "accuracy_ci": [0.79, 0.83],
            "balanced_accuracy": 0.72, "balanced_accuracy_ci": [0.68, 0.76], "macro_auc": 0.95,
            "macro_auc_ci": [0.94, 0.96], "log_loss": 0.55, "brier": 0.27, "ece": 0.04,
            "mel_sens_at_val_threshold_spec90": 0.61, "mel_spec_at_val_threshold_spec90": 0.9}
    test.update({f"recall_{c}": 0.5 + i / 20 for i, c in enumerate(CLASSES)})
    test.update({f"support_{c}": 10 + i for i, c in enumerate(CLASSES)})
    test["recall_vasc"] = None
    atomic_write_json(root / "models" / "xception" / "metrics.json", {
        "description": "Xception, fine-tuned under the protocol", "kind": "backbone",
        "params": 20_875_823, "best_epoch": 12, "best_val_balanced_accuracy": 0.74,
        "phases": ["frozen", "finetune"], "probabilities": True,
        "calibration_prior": {"prior": {c: 1 / 7 for c in CLASSES}}, "test": test,
    })
    return root


def test_every_section_in_order(run):
    card = model_card_markdown(str(run), FACTS)
    assert card.startswith("# Model card: xception\n")
    assert re.findall(r"^## (.+)$", card, re.MULTILINE) == list(SECTIONS)


def test_the_numbers_come_from_the_run(run):
    card = model_card_markdown(str(run), FACTS)
    for needle in ("0.720 [0.680, 0.760]", "0.810 [0.790, 0.830]", "0.950 [0.940, 0.960]",
                   "| mel     | 14            | 0.700", "| vasc    | 16            | n/a",
                   "| Log loss", "0.550", "0.040", "`" + "f" * 64 + "`", "12 (0.740)",
                   "20.9 M parameters", "299x299", "centre-cropped", "`tf` scaling",
                   "Melanoma sensitivity at the validation threshold for 90 % specificity: 0.610",
                   "passed: 0 lesion(s)", "1015", "flip horizontal"):
        assert needle in card, needle


def test_use_limits_and_licence(run):
    card = model_card_markdown(str(run), FACTS)
    assert "Research only" in card and "not for clinical diagnosis" in card
    assert "dermoscopic images of single pigmented skin lesions of the seven HAM10000" in card
    assert "skin type" in card and "Classes never seen" in card and "Acquisition" in card
    assert LICENCE in card and HAM10000_CITATION in card
    assert "Not trained on real images" not in card and "checks the pipeline" not in card
    assert "- `model.keras` (keras)" in card and "onnxruntime.InferenceSession" in card


def test_a_run_with_little_recorded_still_gets_a_card(tmp_path):
    (tmp_path / "models" / "x").mkdir(parents=True)
    card = model_card_markdown(str(tmp_path), ExportFacts("x", (), 64, "square", "unit"))
    assert re.findall(r"^## (.+)$", card, re.MULTILINE) == list(SECTIONS)
    assert "n/a" in card and "not recorded" in card
