"""Published reference numbers for the report's context section.

Kept as data in the package so a report can be built anywhere. Each reference names its source
and states its split, test set and metric, and which of this run's metrics it may be set beside.
The facts about the dataset, its licence and citations are in core.facts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """One published result.

    Attributes:
        source: who reported it (and where).
        split: split / test set it was measured on.
        metric: what was measured.
        value: the number as published.
        ours: this run's metric names to show beside it (comparable in kind, not necessarily in
            split or test set).
        comparability: why the numbers may or may not be compared.
    """

    source: str
    split: str
    metric: str
    value: str
    ours: tuple[str, ...]
    comparability: str


# The source paper's model: the report sets its published numbers beside this entry's.
SOURCE_PAPER_ENTRY = "inception_resnet_v2"

_LEAKY = "no: leaky image-level split (inflated)"
_OFFICIAL = "metric only: official ISIC 2018 test set (other images)"
_READERS = "no: other images, 30-image reader batches"

REFERENCES: tuple[Reference, ...] = (
    Reference("Source paper: InceptionResNetV2 fine-tuned, HAM10000",
              "random image-level 80/10/10 (leaky)", "categorical accuracy", "93.20 %",
              ("accuracy",), _LEAKY),
    Reference("Source paper: same model", "same", "weighted precision / recall / F1",
              "88 % / 87 % / 88 %", ("weighted_precision", "weighted_recall", "weighted_f1"),
              _LEAKY + "; its 87 % weighted recall contradicts its 93.20 % accuracy"),
    Reference("Chaturvedi et al. 2020 (MobileNet, HAM10000), arXiv:1907.03220",
              "random image-level", "accuracy; weighted P/R/F1", "83.1 %; 89/83/83 %",
              ("accuracy", "weighted_precision", "weighted_recall", "weighted_f1"), _LEAKY),
    Reference("ISIC 2018 Task 3 winner (MetaOptima, external data)",
              "official test set, 1,512 images", "balanced multiclass accuracy", "0.885",
              ("balanced_accuracy",), _OFFICIAL + "; trained with external data"),
    Reference("ISIC 2018 Task 3, best using only public data (DAISYLab)", "official test set",
              "balanced multiclass accuracy", "0.856", ("balanced_accuracy",), _OFFICIAL),
    Reference("ISIC 2018 Task 3, best with no external data (Sun Yat-sen)", "official test set",
              "balanced multiclass accuracy", "0.845", ("balanced_accuracy",), _OFFICIAL),
    Reference("MedMNIST v2, DermaMNIST, ResNet-18 @28 px", "image-level 7,007/1,003/2,005",
              "ACC / AUC", "0.735 / 0.917", ("accuracy", "macro_auc"),
              _LEAKY + "; 28 px images"),
    Reference("MedMNIST+ DermaMNIST @224 px, DenseNet-121", "same", "ACC / AUC", "0.847 / 0.963",
              ("accuracy", "macro_auc"), _LEAKY),
    Reference("Tschandl et al. 2019, Lancet Oncol.: 511 human readers",
              "30-image batches from ISIC 2018 test", "correct answers", "17.91 / 30 (59.7 %)",
              ("accuracy",), _READERS),
    Reference("same study: top-3 algorithms", "same batches", "correct answers",
              "25.43 / 30 (84.8 %)", ("accuracy",), _READERS),
    Reference("Majority class (always \"nv\")", "any split with HAM10000's mix",
              "accuracy; balanced accuracy", "66.95 %; 14.3 %", ("accuracy", "balanced_accuracy"),
              "yes: the floor any model must beat"),
)
