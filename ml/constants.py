"""Facts of the HPA single-cell task shared by every module of the library."""

CHANNELS: tuple[str, ...] = ("red", "green", "blue", "yellow")
REQUIRED_CHANNELS: tuple[str, ...] = ("green", "blue")
OPTIONAL_CHANNELS: tuple[str, ...] = ("red", "yellow")

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
