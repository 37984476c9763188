"""Which entry of a run predicts new images (`--predict`, `--export`), and whether it can.

An entry can predict new images when the run kept what it needs:

- a CNN entry (a backbone or paper_cnn): its best weights (`models/<entry>/best.weights.h5`) and
  its input size in run.json (training.trained);
- an ensemble: its fit.json, still matching its members' prediction files (else its saved
  combination is not the one its predictions came from), and every member a CNN entry that can
  predict;
- never the SVM baseline: training keeps its features and predictions but not the fitted SVM
  (training.svm_baseline), so there is nothing to apply to a new image;
- never a derived test-time-augmentation entry `<entry>+tta<N>`: predict with its base entry.

The default entry (`--predict` without `--entry`) is the one ranked first by balanced accuracy
on the validation split (predictions_val.csv), among the entries that can predict. The test split
never takes part in that choice. An ensemble fit on the validation split (weighted voting,
stacking) is left out of the ranking: its validation predictions are in-sample and would win it
for that reason alone. Ties go to a single model before an ensemble, then to the first name.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from core.atomic import read_json_object
from core.entry_metrics import FIT_FILE
from core.errors import RunDirError
from core.metrics import balanced_accuracy
from core.predictions import read_predictions
from core.provenance import ensemble_freshness
from core.rundir import RunDir, entry_folders
from ensembles import ENSEMBLE_NAMES
from ensembles.apply import saved_members
from training.entries import all_entries, is_svm_entry
from training.resume_state import BEST_WEIGHTS
from training.settings import RunConfig

logger = logging.getLogger(__name__)

MODEL, ENSEMBLE = "model", "ensemble"
_TTA = re.compile(r"^(?P<base>.+)\+tta(?P<views>\d+)$")


@dataclass(frozen=True)
class Target:
    """The entry that predicts, and how.

    Attributes:
        name: the entry or ensemble name.
        kind: "model" (one CNN entry) or "ensemble".
        members: the CNN entries whose networks run (the entry itself for a model), in the
            order of the ensemble's fit.
        fit_path: the ensemble's fit.json (None for a model).
        chosen_by: why this entry: "--entry", or its rank on validation.
    """

    name: str
    kind: str
    members: tuple[str, ...]
    fit_path: Path | None
    chosen_by: str


def model_problem(run: RunDir, config: RunConfig, name: str,
                  action: str = "predict new images") -> str | None:
    """Why the CNN entry `name` of the run cannot predict new images (None: it can).

    Args:
        run: the run directory.
        config: its typed config (run.json).
        name: an entry name (a models/ folder name).
        action: what is asked of it, for the message ("predict new images", "be exported").

    Returns:
        One sentence naming what is missing and what to do, or None.
    """
    if is_svm_entry(name):
        return (f"{name} cannot {action}: training keeps its features and predictions but not "
                "its fitted SVM (training.svm_baseline saves no model), so there is nothing to "
                "apply to a new image; choose a CNN entry")
    tta = _TTA.match(name)
    if tta and tta.group("base") in all_entries():
        return (f"{name} is a test-time-augmentation entry derived from {tta.group('base')} "
                f"and cannot {action} itself (it has no network of its own); use --entry "
                f"{tta.group('base')}")
    if name not in all_entries():
        return (f"{name!r} is not a CNN entry of this benchmark (models/{name} holds "
                f"predictions only), so it cannot {action}")
    if config.training.image_size.get(name) is None:
        return (f"{name} was not trained in this run ({run.run_json} has no input size for it); "
                f"train it with --all --models {name} --out {run.root}")
    weights = run.model_dir(name) / BEST_WEIGHTS
    if not weights.is_file():
        return (f"{weights} is missing: {name} has no trained weights in this run (train it "
                f"with --all --models {name} --out {run.root}; a run copied without its weights "
                "can only be reported)")
    return None


def ensemble_problem(run: RunDir, config: RunConfig, name: str) -> str | None:
    """Why the ensemble `name` of the run cannot predict new images (None: it can)."""
    folder = run.ensemble_dir(name)
    fit = folder / FIT_FILE
    if not fit.is_file():
        return (f"{fit} is missing: build the ensemble first (--ensemble {name} --out "
                f"{run.root})")
    freshness = ensemble_freshness(folder)
    if freshness.stale:
        return (f"{freshness.describe()}: its saved fit no longer matches its members; rebuild "
                f"it with --ensemble {name} --out {run.root}")
    for member in saved_members(fit):
        problem = model_problem(run, config, member)
        if problem:
            return f"ensemble {name} needs its member {member}: {problem}"
    return None


def _known(run: RunDir) -> str:
    names = [p.name for p in entry_folders(run.models_dir)]
    names += [p.name for p in entry_folders(run.ensembles_dir)]
    return ", ".join(names) if names else "none"


def is_ensemble(run: RunDir, name: str) -> bool:
    """Whether `name` is an ensemble of the run (its folder, or an ensemble name no model has)."""
    return run.ensemble_dir(name).is_dir() or (name in ENSEMBLE_NAMES
                                               and not run.model_dir(name).is_dir())


def resolve_target(run: RunDir, config: RunConfig, name: str,
                   chosen_by: str = "chosen with --entry",
                   action: str = "predict new images") -> Target:
    """The entry or ensemble `name`, checked to be able to predict new images.

    Args:
        run: the run directory.
        config: its typed config.
        name: --entry.
        chosen_by: recorded in the target.
        action: what is asked of it, for the messages.

    Returns:
        The target.

    Raises:
        RunDirError: an unknown name (the message lists the run's entries and ensembles), or
            an entry or ensemble that cannot predict (the message names what is missing).
    """
    if is_ensemble(run, name):
        problem = ensemble_problem(run, config, name)
        if problem:
            raise RunDirError(problem)
        fit = run.ensemble_dir(name) / FIT_FILE
        return Target(name, ENSEMBLE, tuple(saved_members(fit)), fit, chosen_by)
    if not run.model_dir(name).is_dir() and name not in all_entries() and not _TTA.match(name):
        raise RunDirError(f"unknown entry {name!r}: {run.root} has no models/{name} or "
                          f"ensembles/{name}; its entries and ensembles: {_known(run)}")
    problem = model_problem(run, config, name, action)
    if problem:
        raise RunDirError(problem)
    return Target(name, MODEL, (name,), None, chosen_by)


def _val_in_sample(folder: Path) -> bool:
    record = read_json_object(folder / FIT_FILE, "treated as out of sample")
    return bool(record.get("val_in_sample"))


def _val_score(path: Path) -> float:
    preds = read_predictions(path)
    return balanced_accuracy(preds.y_true, preds.y_pred)


def default_target(run: RunDir, config: RunConfig) -> Target:
    """The entry ranked first on validation balanced accuracy that can predict (module docstring).

    The entries left out that score higher on validation are named in `chosen_by` with the
    reason, so that a user sees why the best-looking entry does not predict.

    Raises:
        RunDirError: no entry of the run can predict new images (the message says why for each).
    """
    ranked: list[tuple[float, int, str, str]] = []
    skipped: list[tuple[float, str, str]] = []  # (score, name, why not)
    for kind, folders in ((MODEL, entry_folders(run.models_dir)),
                          (ENSEMBLE, entry_folders(run.ensembles_dir))):
        for folder in folders:
            val = RunDir.predictions_file(folder, "val")
            if not val.is_file():
                continue
            if kind == ENSEMBLE and _val_in_sample(folder):
                skipped.append((_val_score(val), folder.name, "fit on validation, in-sample"))
                continue
            problem = (model_problem(run, config, folder.name) if kind == MODEL
                       else ensemble_problem(run, config, folder.name))
            if problem:
                short = ("no fitted SVM saved" if is_svm_entry(folder.name)
                         else "cannot predict new images")
                skipped.append((_val_score(val), folder.name, short))
                logger.debug("not ranked for --predict: %s", problem)
                continue
            ranked.append((-_val_score(val), 0 if kind == MODEL else 1, folder.name, kind))
    if not ranked:
        why = "; ".join(f"{name} ({reason})" for _, name, reason in skipped) or \
            "none has predictions_val.csv"
        raise RunDirError(f"no entry of {run.root} can predict new images: {why}; train a CNN "
                          f"entry with --all --out {run.root}")
    ranked.sort()
    score, _, name, kind = ranked[0]
    above = [f"{other} {value:.3f} ({reason})" for value, other, reason in sorted(skipped)[::-1]
             if value > -score]
    chosen_by = (f"ranked first of {len(ranked)} that can predict by validation balanced "
                 f"accuracy ({-score:.3f})"
                 + (f"; not used though higher: {', '.join(above)}" if above else "")
                 + "; --entry NAME chooses another")
    if kind == ENSEMBLE:
        return resolve_target(run, config, name, chosen_by)
    return Target(name, MODEL, (name,), None, chosen_by)


def resolve_or_default(run: RunDir, config: RunConfig, name: str | None) -> Target:
    """`resolve_target` for --entry NAME, else `default_target`."""
    if name:
        return resolve_target(run, config, name)
    return default_target(run, config)
