"""The file layout of each official release, as `--download` leaves it and the readers expect it.

HAM10000 (also the layout of the generated synthetic dataset): the metadata CSV and the two
image folders. ISIC 2018 Task 3: one input folder and one ground-truth folder (holding a CSV of
the same name) per split, named like their zips, plus the training set's lesion groupings.
"""

from __future__ import annotations

HAM_METADATA = "HAM10000_metadata.csv"
HAM_PARTS: tuple[str, ...] = ("HAM10000_images_part_1", "HAM10000_images_part_2")
# Image folders are matched case-insensitively by this prefix (mirrors rename them).
HAM_PART_PREFIX = "ham10000_images"

ISIC_TRAIN_INPUT = "ISIC2018_Task3_Training_Input"
ISIC_TRAIN_GT_DIR = "ISIC2018_Task3_Training_GroundTruth"
ISIC_TRAIN_GT = "ISIC2018_Task3_Training_GroundTruth.csv"
ISIC_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
ISIC_VAL_INPUT = "ISIC2018_Task3_Validation_Input"
ISIC_VAL_GT_DIR = "ISIC2018_Task3_Validation_GroundTruth"
ISIC_VAL_GT = "ISIC2018_Task3_Validation_GroundTruth.csv"
ISIC_TEST_INPUT = "ISIC2018_Task3_Test_Input"
ISIC_TEST_GT_DIR = "ISIC2018_Task3_Test_GroundTruth"
ISIC_TEST_GT = "ISIC2018_Task3_Test_GroundTruth.csv"
