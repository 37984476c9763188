"""The entries of a run: every backbone of the zoo registry, plus the SVM baseline.

The zoo registry is the one list of backbones, so registering a backbone there (in the package or
from outside it, see `zoo`) is all it takes to train it. The entries, in training order:

1. the registered backbones of kind "backbone" (fine-tuned): the study's five first, in its order
   (InceptionV3, ResNeXt101, InceptionResNetV2, Xception, NASNetLarge), then any others in
   registration order;
2. the registered backbones of kind "baseline" (paper_cnn, trained from scratch), in that order;
3. the SVM baseline `inception_resnet_v2+svm`: an RBF SVM on frozen InceptionResNetV2 features
   (`training.svm_baseline`), defined here and only here.

An entry's kind ("backbone" or "baseline"), family and group come from its zoo config (the SVM
entry is a baseline of the paper group, family "SVM"); the trainer records the kind in the
entry's metrics.json, where the ensembles and the report read it.

`--models` takes entry names and group names (`expand_models`): "paper" (the source study's five
backbones and its two baselines: the default of `--all`, `default_entries`), "modern" (the seven
later keras.applications backbones), any group a registered backbone names, and "all" (every
entry). Importing this module does not import the zoo (it is imported on first use).

Derived entries: `--tta N` adds `<entry>+tta<N>` beside each finished CNN entry (its best weights
predicting N dihedral views, `training.tta`); they are never trained, so `--models` does not take
them, but `check_entry` accepts them (`tta_entry_name`, `is_tta_entry`, `tta_source`,
`tta_views`). Their kind is "tta" (`TTA_KIND`): not "backbone", so they are no default ensemble
member.
"""

from __future__ import annotations

import re

from training.errors import ConfigError

SVM_SUFFIX = "+svm"
SVM_ENTRY = "inception_resnet_v2" + SVM_SUFFIX
SVM_FAMILY = "SVM"
PAPER_GROUP = "paper"  # zoo.registry.PAPER_GROUP (not imported: the zoo loads lazily)
ALL_GROUP = "all"
TTA_SUFFIX = "+tta"
TTA_VIEWS: tuple[int, ...] = (1, 2, 4, 8)  # the dihedral view counts `--tta` takes
TTA_KIND = "tta"  # the kind recorded in a derived entry's metrics.json
_TTA_NAME = re.compile(r"^(?P<source>.+)\+tta(?P<views>[0-9]+)$")


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
    """"backbone" or "baseline": the zoo config's kind; an SVM entry is a baseline, a
    test-time-augmentation entry "tta" (`TTA_KIND`).

    Raises:
        ZooValueError: `entry` uses a backbone that is not registered.
    """
    if is_tta_entry(entry):
        return TTA_KIND
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
    if is_tta_entry(entry):
        views = tta_views(entry)
        return (f"{tta_source(entry)} with test-time augmentation: softmax averaged over {views} "
                f"dihedral view{'s' if views != 1 else ''} of each image (same weights)")
    if is_svm_entry(entry):
        return SVM_DESCRIPTION
    import zoo

    config = zoo.get_config(entry)
    if config.kind == "baseline":
        return f"{config.display_name}: trained from scratch" if not config.pretrained else (
            config.display_name)
    return f"{config.display_name}, fine-tuned under the protocol"


def entry_family(entry: str) -> str:
    """The architecture family for grouping in tables ("Inception", "ConvNeXt", ...; "SVM").

    Raises:
        ZooValueError: `entry` uses a backbone that is not registered.
    """
    if is_tta_entry(entry):
        return entry_family(tta_source(entry))
    if is_svm_entry(entry):
        return SVM_FAMILY
    import zoo

    return zoo.get_config(entry).family


def entry_group(entry: str) -> str:
    """The `--models` group of an entry: its zoo config's group; an SVM entry takes its
    backbone's ("paper" for the study's SVM baseline).

    Raises:
        ZooValueError: `entry` uses a backbone that is not registered.
    """
    import zoo

    return zoo.get_config(backbone_of(entry)).group


def model_groups() -> list[str]:
    """The group names `--models` accepts: the registered backbones' groups ("paper" first),
    then "all"."""
    import zoo

    return [*zoo.list_groups(), ALL_GROUP]


def group_entries(group: str) -> list[str]:
    """The entries of a group, in training order ("all": every entry).

    Raises:
        ConfigError: an unknown group (the message lists the groups).
    """
    if group == ALL_GROUP:
        return all_entries()
    if group not in model_groups():
        raise ConfigError(f"unknown model group {group!r}; choose from "
                          f"{', '.join(model_groups())}")
    return [entry for entry in all_entries() if entry_group(entry) == group]


def default_entries() -> list[str]:
    """The entries `--all` trains without `--models`: the paper group (the study's five
    backbones, its CNN and its SVM baseline)."""
    return group_entries(PAPER_GROUP)


def expand_models(names: list[str] | tuple[str, ...] | None) -> list[str]:
    """The entries named by `--models`: entry names and group names, expanded in the given order
    and deduplicated (first occurrence wins); None or empty: `default_entries()`.

    An entry name wins over a group of the same name (the registry refuses "all" as a group).

    Args:
        names: the `--models` values.

    Returns:
        The entries, in the order named (a group's entries in training order).

    Raises:
        ConfigError: an unknown name (the message lists the entries and the groups).
    """
    if not names:
        return default_entries()
    valid = all_entries()
    groups = model_groups()
    unknown = [name for name in names if name not in valid and name not in groups]
    if unknown:
        raise ConfigError(
            f"unknown model(s) {', '.join(repr(name) for name in unknown)} in --models; choose "
            f"entries from {', '.join(valid)}, or groups from {', '.join(groups)} (a backbone "
            "becomes an entry by registering it in the zoo)"
        )
    expanded: list[str] = []
    for name in names:
        expanded += [name] if name in valid else group_entries(name)
    return list(dict.fromkeys(expanded))


def check_entry(entry: str, *, derived: bool = True) -> str:
    """Return `entry` if it is an entry of a run (`all_entries`), or (with `derived`) the
    test-time-augmentation entry of one of its CNN entries (`xception+tta8`).

    Args:
        entry: the name.
        derived: also accept `<entry>+tta<N>` names (False: only entries that are trained).

    Raises:
        ConfigError: naming the unknown entry and listing the valid ones.
    """
    valid = all_entries()
    if entry in valid:
        return entry
    if derived and is_tta_entry(entry):
        source = tta_source(entry)
        if source in valid and not is_svm_entry(source) and tta_views(entry) in TTA_VIEWS:
            return entry
    suffix = (f"; or <entry>{TTA_SUFFIX}<N> (N in {', '.join(map(str, TTA_VIEWS))}) for a CNN "
              "entry's test-time augmentation" if derived else "")
    raise ConfigError(f"unknown entry {entry!r}; choose from {', '.join(valid)}{suffix}")


def tta_entry_name(entry: str, views: int) -> str:
    """The derived entry of `entry` predicted over `views` dihedral views: `<entry>+tta<N>`.

    Args:
        entry: a CNN entry of the run (not the SVM baseline, not a derived entry).
        views: 1, 2, 4 or 8 (`TTA_VIEWS`).

    Returns:
        The name, e.g. "xception+tta8".

    Raises:
        ConfigError: an SVM or derived entry, or a view count outside `TTA_VIEWS`.
    """
    if isinstance(views, bool) or int(views) != views or int(views) not in TTA_VIEWS:
        raise ConfigError(f"test-time augmentation takes {', '.join(map(str, TTA_VIEWS))} views, "
                          f"not {views!r}")
    if is_svm_entry(entry) or is_tta_entry(entry):
        raise ConfigError(f"{entry} has no Keras model of its own to predict augmented views "
                          "with; test-time augmentation applies to the CNN entries")
    return f"{entry}{TTA_SUFFIX}{int(views)}"


def is_tta_entry(name: str) -> bool:
    """Whether `name` has the form of a test-time-augmentation entry, `<entry>+tta<N>`."""
    return isinstance(name, str) and _TTA_NAME.match(name) is not None


def tta_source(name: str) -> str:
    """The entry a test-time-augmentation entry derives from ("xception+tta8" -> "xception").

    Raises:
        ConfigError: `name` is not of the form `<entry>+tta<N>`.
    """
    return _tta_parts(name)[0]


def tta_views(name: str) -> int:
    """The number of views of a test-time-augmentation entry ("xception+tta8" -> 8).

    Raises:
        ConfigError: `name` is not of the form `<entry>+tta<N>`.
    """
    return _tta_parts(name)[1]


def _tta_parts(name: str) -> tuple[str, int]:
    match = _TTA_NAME.match(name) if isinstance(name, str) else None
    if match is None:
        raise ConfigError(f"{name!r} is not a test-time-augmentation entry "
                          f"(<entry>{TTA_SUFFIX}<N>)")
    return match.group("source"), int(match.group("views"))


def _study_first(names: list[str]) -> list[str]:
    """`names` with the study's backbones first, in the study's order; the rest keep theirs."""
    from zoo.catalog import STUDY_ORDER

    return sorted(names, key=lambda n: STUDY_ORDER.index(n) if n in STUDY_ORDER
                  else len(STUDY_ORDER))
