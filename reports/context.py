"""What the report says about the run itself, read tolerantly from run.json, dataset.json and
splits.csv (any of them may be missing: the report then says "not recorded").

run.json (written by `pipeline.provenance`): config {dataset, split, preset, seed, ...},
fingerprint, seeds, command, created, invocations [{command, date}], versions {package: version},
python, platform, git {sha, dirty}.
dataset.json (written by data preparation): split type under "split" (a string, or a mapping with
"type") and the leakage check under "leakage" (data_utils.splits.leakage_report's mapping). When
dataset.json has no leakage check, it is recomputed from splits.csv.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.atomic import read_json_object
from core.facts import REAL_DATASETS, SYNTHETIC
from core.numbers import as_float
from core.rundir import RunDir

log = logging.getLogger(__name__)

NOT_RECORDED = "not recorded"
# The preset whose runs only check the pipeline (training.presets: CPU-sized, weights=None).
SMOKE_PRESET = "smoke"


@dataclass
class RunContext:
    """Facts about a run for the report header.

    Attributes:
        run_json: parsed run.json ({} when absent or unreadable).
        dataset_json: parsed dataset.json ({} when absent or unreadable).
        leakage: the leakage check ({} when neither dataset.json nor splits.csv has one).
        leakage_source: "dataset.json", "splits.csv" or "".
    """

    run_json: dict[str, Any] = field(default_factory=dict)
    dataset_json: dict[str, Any] = field(default_factory=dict)
    leakage: dict[str, Any] = field(default_factory=dict)
    leakage_source: str = ""

    @property
    def config(self) -> dict[str, Any]:
        value = self.run_json.get("config")
        return value if isinstance(value, dict) else {}

    @property
    def dataset(self) -> str:
        return _text(self.config.get("dataset") or self.dataset_json.get("dataset"))

    @property
    def split_type(self) -> str:
        """"lesion", "image" or "not recorded"."""
        split = self.dataset_json.get("split")
        if isinstance(split, dict):
            split = split.get("type") or split.get("kind") or split.get("method")
        if not isinstance(split, str) or not split:
            split = self.dataset_json.get("split_type") or self.config.get("split")
        return _text(split)

    @property
    def preset(self) -> str:
        return _text(self.config.get("preset"))

    @property
    def untrained_backbones(self) -> bool:
        """True when run.json records that the backbones started without pretrained weights."""
        return "weights" in self.config and self.config["weights"] is None

    @property
    def is_pipeline_check(self) -> bool:
        """True for a run that checks the pipeline rather than the backbones: generated synthetic
        images, or the CPU-sized smoke preset (which starts from untrained backbones)."""
        return self.dataset == SYNTHETIC or self.preset == SMOKE_PRESET

    @property
    def is_real_data(self) -> bool:
        """True when run.json records one of the official datasets (ham10000, isic2018)."""
        return self.dataset in REAL_DATASETS

    @property
    def backend(self) -> str:
        """The Keras backend the models were trained on (run.json leaves TensorFlow implicit)."""
        if not self.config:
            return NOT_RECORDED
        return _text(self.config.get("backend") or "tensorflow")

    @property
    def fingerprint(self) -> str:
        return _text(self.run_json.get("fingerprint"))

    @property
    def command(self) -> str:
        return _text(self.run_json.get("command"))

    @property
    def date(self) -> str:
        """Creation date and, if later, the date of the last invocation."""
        created = self.run_json.get("created")
        invocations = self.run_json.get("invocations")
        last = None
        if isinstance(invocations, list) and invocations and isinstance(invocations[-1], dict):
            last = invocations[-1].get("date")
        if created and last and last != created:
            return f"{created} (last command {last})"
        return _text(created or last)

    @property
    def versions(self) -> str:
        parts = []
        if self.run_json.get("python"):
            parts.append(f"python {self.run_json['python']}")
        versions = self.run_json.get("versions")
        if isinstance(versions, dict):
            parts += [f"{k} {v}" for k, v in sorted(versions.items())]
        git = self.run_json.get("git")
        if isinstance(git, dict) and git.get("sha"):
            parts.append(f"git {str(git['sha'])[:12]}{' (dirty)' if git.get('dirty') else ''}")
        return ", ".join(parts) or NOT_RECORDED

    @property
    def seeds(self) -> str:
        seeds = self.run_json.get("seeds")
        if isinstance(seeds, dict) and seeds:
            return ", ".join(f"{k} {v}" for k, v in sorted(seeds.items()))
        if "seed" in self.config:
            return f"seed {self.config['seed']}"
        return NOT_RECORDED

    @property
    def leaked_test_images(self) -> int | None:
        """Test images with another image of the same lesion in training (None if unknown)."""
        value = as_float(self.leakage.get("test_images_sharing_lesion_with_train"))
        return None if math.isnan(value) else int(value)

    @property
    def leaked_share(self) -> float | None:
        value = as_float(self.leakage.get("test_images_sharing_lesion_with_train_share"))
        return None if math.isnan(value) else value

    @property
    def is_leaky(self) -> bool:
        """True for an image-level split or when the leakage check found shared test lesions."""
        return self.split_type == "image" or bool(self.leaked_test_images)

    def leakage_summary(self) -> str:
        """One line on the leakage check, for the header."""
        if not self.leakage:
            return NOT_RECORDED
        shared = as_float(self.leakage.get("shared_lesions_total"))
        leaked = self.leaked_test_images
        share = self.leaked_share
        parts = []
        if not math.isnan(shared):
            parts.append(f"{int(shared)} lesion(s) appear in more than one split")
        if leaked is not None:
            text = f"{leaked} test image(s) share a lesion with training"
            if share is not None:
                text += f" ({share:.1%} of the test set)"
            parts.append(text)
        verdict = "passed" if not self.is_leaky else "FAILED (lesion leakage)"
        return f"{verdict}: {'; '.join(parts) or 'no details'} (from {self.leakage_source})"


def read_context(run: RunDir) -> RunContext:
    """Read run.json, dataset.json and (if needed) splits.csv of a run directory.

    Args:
        run: the run directory.

    Returns:
        The RunContext (empty fields where files are missing or unreadable).
    """
    unreadable = "the report says 'not recorded'"
    context = RunContext(run_json=read_json_object(run.run_json, unreadable),
                         dataset_json=read_json_object(run.dataset_json, unreadable))
    leakage = context.dataset_json.get("leakage")
    if isinstance(leakage, dict) and leakage:
        context.leakage, context.leakage_source = leakage, "dataset.json"
    elif run.splits_csv.is_file():
        computed = _leakage_from_splits(run)
        if computed:
            context.leakage, context.leakage_source = computed, "splits.csv"
    return context


def _leakage_from_splits(run: RunDir) -> dict[str, Any]:
    from data_utils.splits import leakage_report

    try:
        table = pd.read_csv(run.splits_csv, dtype={"image_id": str, "lesion_id": str, "dx": str})
        if not {"lesion_id", "dx", "split"} <= set(table.columns):
            return {}
        return leakage_report(table)
    except (ValueError, KeyError, OSError) as exc:
        log.warning("could not compute the leakage check from %s: %s", run.splits_csv, exc)
        return {}


def _text(value: Any) -> str:
    if value is None or value == "":
        return NOT_RECORDED
    return str(value)
