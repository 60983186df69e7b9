"""Which classes a synthetic field and each of its cells show.

A field's labels are sampled with HPA-like frequencies; each cell then shows each label with a
per-field probability, so some cells of an image do not show the image's labels (weak labels).
Dividing cells show the mitotic spindle and never a nuclear class or plain microtubules.
"""

import numpy as np

from ml.constants import CLASS_NAMES, NEGATIVE_CLASS, NUM_CLASSES
from ml.synth.layout import Cell

# Image-level label frequencies, imbalanced like HPA's train.csv (nucleoplasm and cytosol
# dominate) but with a floor so that every class appears in a few hundred training fields.
CLASS_FREQUENCIES: dict[str, float] = {
    "Nucleoplasm": 0.30,
    "Nuclear membrane": 0.06,
    "Nucleoli": 0.10,
    "Nucleoli fibrillar center": 0.05,
    "Nuclear speckles": 0.06,
    "Nuclear bodies": 0.08,
    "Endoplasmic reticulum": 0.05,
    "Golgi apparatus": 0.08,
    "Intermediate filaments": 0.05,
    "Actin filaments": 0.04,
    "Microtubules": 0.04,
    "Mitotic spindle": 0.04,
    "Centrosome": 0.06,
    "Plasma membrane": 0.10,
    "Mitochondria": 0.09,
    "Aggresome": 0.04,
    "Cytosol": 0.20,
    "Vesicles and punctate cytosolic patterns": 0.06,
    "Negative": 0.04,
}
LABELS_PER_IMAGE_PROBABILITIES = (0.55, 0.33, 0.12)  # 1, 2 or 3 labels per image
NUCLEAR_CLASSES = frozenset(
    CLASS_NAMES.index(name)
    for name in (
        "Nucleoplasm",
        "Nuclear membrane",
        "Nucleoli",
        "Nucleoli fibrillar center",
        "Nuclear speckles",
        "Nuclear bodies",
    )
)
MITOTIC_SPINDLE_CLASS = CLASS_NAMES.index("Mitotic spindle")
MICROTUBULES_CLASS = CLASS_NAMES.index("Microtubules")


def sample_image_labels(rng: np.random.Generator) -> tuple[int, ...]:
    """Negative alone, or 1-3 other classes (sorted), drawn with `CLASS_FREQUENCIES`."""
    frequencies = np.asarray([CLASS_FREQUENCIES[name] for name in CLASS_NAMES])
    if rng.random() < frequencies[NEGATIVE_CLASS] / frequencies.sum():
        return (NEGATIVE_CLASS,)
    frequencies[NEGATIVE_CLASS] = 0.0
    count = 1 + rng.choice(len(LABELS_PER_IMAGE_PROBABILITIES), p=LABELS_PER_IMAGE_PROBABILITIES)
    chosen = rng.choice(NUM_CLASSES, size=count, replace=False, p=frequencies / frequencies.sum())
    return tuple(sorted(int(c) for c in chosen))


def assign_classes(rng: np.random.Generator, cells: list[Cell], labels: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Each cell shows each image label with a per-field probability; cells showing none are negative.

    Every label that some cell can show is shown by at least one cell.
    """
    if labels == (NEGATIVE_CLASS,) or not cells:
        return [(NEGATIVE_CLASS,)] * len(cells)
    show_probability = rng.uniform(0.65, 0.95)
    shown = [
        {
            label
            for label in labels
            if can_show(cell, label) and (label == MITOTIC_SPINDLE_CLASS or rng.random() < show_probability)
        }
        for cell in cells
    ]
    for label in labels:
        candidates = [i for i, cell in enumerate(cells) if can_show(cell, label)]
        if candidates and not any(label in s for s in shown):
            shown[int(rng.choice(candidates))].add(label)
    return [tuple(sorted(s)) if s else (NEGATIVE_CLASS,) for s in shown]


def can_show(cell: Cell, label: int) -> bool:
    """Only dividing cells have a spindle; they have no nuclear envelope, and their microtubules form the spindle."""
    if label == MITOTIC_SPINDLE_CLASS:
        return cell.mitotic
    return not (cell.mitotic and (label in NUCLEAR_CLASSES or label == MICROTUBULES_CLASS))
