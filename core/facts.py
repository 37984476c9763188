"""Facts about the datasets, stated once: their names, the licence, the citations, the disclaimer.

`--download` prints them (data_utils.download_cli) and every report closes with them
(reports.sections); both read them here, so the wording cannot drift apart.
"""

from __future__ import annotations

# Every --dataset: the generated stand-in (data_utils.synthetic) and the two official releases.
SYNTHETIC = "synthetic"
HAM10000 = "ham10000"
ISIC2018 = "isic2018"
DATASETS: tuple[str, ...] = (SYNTHETIC, HAM10000, ISIC2018)
# The official releases: real images, fetched by `--download`.
REAL_DATASETS: tuple[str, ...] = (HAM10000, ISIC2018)

# The released HAM10000 (= ISIC 2018 Task 3 training set): images and lesions.
HAM10000_IMAGES = 10_015
HAM10000_LESIONS = 7_470

HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
HAM10000_URL = "https://doi.org/10.7910/DVN/DBW86T"

LICENCE = (
    "HAM10000 (Tschandl, Rosendahl and Kittler) is distributed under the Creative Commons "
    "Attribution-NonCommercial 4.0 International licence (CC BY-NC 4.0): non-commercial use, with "
    "attribution. Some mirrors state CC BY-NC-SA 4.0, so follow the stricter terms "
    "(non-commercial, attribution, share-alike)."
)

DISCLAIMER = "For research; not for clinical diagnosis."

HAM10000_CITATION = (
    "Tschandl P., Rosendahl C. & Kittler H. The HAM10000 dataset, a large collection of "
    "multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 "
    "(2018). doi:10.1038/sdata.2018.161"
)
ISIC2018_CITATION = (
    "Codella N. et al. Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by "
    "the International Skin Imaging Collaboration (ISIC). arXiv:1902.03368 (2019)"
)
# What to cite per dataset (the ISIC 2018 Task 3 training set is HAM10000).
CITATIONS: dict[str, tuple[str, ...]] = {
    HAM10000: (HAM10000_CITATION,),
    ISIC2018: (HAM10000_CITATION, ISIC2018_CITATION),
}

# What every report states about the data, whichever dataset the run used.
DATASET_FACTS: tuple[str, ...] = (
    "HAM10000 has 10,015 images of 7,470 lesions; 1,956 lesions have two or more images.",
    "Under a random 80/10/10 image split, about 38.5 % of test images have another image of the "
    "same lesion in training (about 68 % for melanoma). Accuracy measured that way is inflated; "
    "one reproduction of an InceptionResNetV2 study fell from 78.9 % to 72.1 % when split by "
    "lesion.",
    "For a single-label test set, weighted-average recall equals accuracy. The source paper's "
    "93.20 % accuracy with 87 % weighted recall cannot both describe one set of predictions; this "
    "report computes both from one confusion matrix.",
    "The ISIC 2018 Task 3 training set is HAM10000; its official validation (193) and test (1,511 "
    "in the public release) sets are separate images with released ground truth.",
)


def citations(dataset: str | None = None) -> tuple[str, ...]:
    """What to cite for `dataset`; every citation (HAM10000, then ISIC 2018) for None or any other
    name (a report cites both, whichever release the run read).

    Args:
        dataset: "ham10000", "isic2018", or None.

    Returns:
        The citations, in order.
    """
    if dataset in CITATIONS:
        return CITATIONS[dataset]
    return tuple(dict.fromkeys(c for group in CITATIONS.values() for c in group))
