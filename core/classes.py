"""The seven HAM10000 diagnostic classes in canonical (alphabetical) order, and their aliases."""

CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
NUM_CLASSES = len(CLASSES)
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

CLASS_DESCRIPTIONS: dict[str, str] = {
    "akiec": "actinic keratoses / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesions",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevi",
    "vasc": "vascular lesions",
}

# The ISIC 2018 Task 3 ground-truth / scorer column order.
ISIC_COLUMNS: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ISIC_TO_CLASS: dict[str, str] = {col: col.lower() for col in ISIC_COLUMNS}
