"""The entries of a run: every backbone of the zoo registry, plus the SVM baseline.

The zoo registry is the one list of backbones, so registering a backbone there (in the package or
from outside it, see `zoo`) is all it takes to train it. The entries, in training order:

1. the registered backbones of kind "backbone" (fine-tuned): the study's five first, in its order
   (InceptionV3, ResNeXt101, InceptionResNetV2, Xception, NASNetLarge), then any others in
   registration order;
2. the registered backbones of kind "baseline" (paper_cnn, trained from scratch), in that order;
3. the SVM baseline `inception_resnet_v2+svm`: an RBF SVM on frozen InceptionResNetV2 features
   (`training.svm_baseline`), defined here and only here.

An entry's kind ("backbone" or "baseline") comes from its zoo config (the SVM entry is a
baseline); the trainer records it in the entry's metrics.json, where the ensembles and the report
read it. Importing this module does not import the zoo (it is imported on first use).
"""

from __future__ import annotations

from training.errors import ConfigError

SVM_SUFFIX = "+svm"
SVM_ENTRY = "inception_resnet_v2" + SVM_SUFFIX


def backbone_of(entry: str) -> str:
    """The zoo backbone an entry uses ("inception_resnet_v2+svm" -> "inception_resnet_v2")."""
    return entry.split("+", 1)[0]


def is_svm_entry(entry: str) -> bool:
    """Whether `entry` is an SVM on a backbone's frozen features (`training.svm_baseline`)."""
    return entry.endswith(SVM_SUFFIX)


def backbone_entries() -> list[str]:
    """The registered backbones of kind "backbone": the study's five first, then the others."""
    import zoo

    return _study_first(zoo.list_backbones(kind="backbone"))


def baseline_entries() -> list[str]:
    """The registered backbones of kind "baseline", then the SVM baseline (when its backbone is
    registered)."""
    import zoo

    names = _study_first(zoo.list_backbones(kind="baseline"))
    if backbone_of(SVM_ENTRY) in zoo.list_backbones():
        names.append(SVM_ENTRY)
    return names


def all_entries() -> list[str]:
    """Every entry of a full run, in training order (backbones, then baselines)."""
    return backbone_entries() + baseline_entries()


def entry_kind(entry: str) -> str:
    """"backbone" or "baseline": the zoo config's kind; an SVM entry is a baseline.

    Raises:
        ZooValueError: `entry` uses a backbone that is not registered.
    """
    if is_svm_entry(entry):
        return "baseline"
    import zoo

    return zoo.get_config(entry).kind


SVM_DESCRIPTION = ("SVM (RBF kernel, class-balanced, calibrated probabilities) on frozen "
                   "InceptionResNetV2 features")


def entry_description(entry: str) -> str:
    """One line saying what the entry is, recorded in its metrics.json for the report.

    Raises:
        ZooValueError: `entry` uses a backbone that is not registered.
    """
    if is_svm_entry(entry):
        return SVM_DESCRIPTION
    import zoo

    config = zoo.get_config(entry)
    if config.kind == "baseline":
        return f"{config.display_name}: trained from scratch" if not config.pretrained else (
            config.display_name)
    return f"{config.display_name}, fine-tuned under the protocol"


def check_entry(entry: str) -> str:
    """Return `entry` if it is an entry of a run (`all_entries`).

    Raises:
        ConfigError: naming the unknown entry and listing the valid ones.
    """
    valid = all_entries()
    if entry not in valid:
        raise ConfigError(f"unknown entry {entry!r}; choose from {', '.join(valid)}")
    return entry


def _study_first(names: list[str]) -> list[str]:
    """`names` with the study's backbones first, in the study's order; the rest keep theirs."""
    from zoo.catalog import STUDY_ORDER

    return sorted(names, key=lambda n: STUDY_ORDER.index(n) if n in STUDY_ORDER
                  else len(STUDY_ORDER))
