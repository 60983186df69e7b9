"""Facts of the HPA single-cell task and the library's defaults, each defined once."""

from pathlib import Path

CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
REQUIRED_CHANNELS: tuple[str, ...] = ("green", "blue")

CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Intermediate filaments",
    "Actin filaments",
    "Microtubules",
    "Mitotic spindle",
    "Centrosome",
    "Plasma membrane",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Vesicles and punctate cytosolic patterns",
    "Negative",
)
NUM_CLASSES = len(CLASS_NAMES)
NEGATIVE_CLASS = 18

# Largest accepted side of an uploaded field; guards worker memory.
MAX_SIDE_PX = 4096

# The classifier this package ships (trained on synthetic fields; see weights/MODEL_CARD.md).
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "weights" / "hpaweb-synth-v1.pt"

# The segmentation backend used where none is chosen: it needs no weights.
DEFAULT_SEGMENTATION_BACKEND = "classical"
