"""What every segmentation backend returns, and what every backend offers.

`Segmentation` is the result of one field; `SegmentationBackend` is the protocol the backends
(`ml.segmentation.classical.ClassicalBackend`, `ml.segmentation.hpa.backend.UnetBackend`)
implement. Backends import this module, never the package `ml.segmentation`, which imports them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ml.io import FieldImages


@dataclass(frozen=True)
class Segmentation:
    """Label images of one field; cell i contains nucleus i, 0 is background."""

    nuclei_labels: np.ndarray  # uint16 (H, W)
    cell_labels: np.ndarray  # uint16 (H, W)
    backend: str
    channels_used: tuple[str, ...]

    @property
    def cell_count(self) -> int:
        return int(np.count_nonzero(np.unique(self.cell_labels)))


@runtime_checkable
class SegmentationBackend(Protocol):
    """Turns fields into label images; loaded once, then reused for every field."""

    def segment(self, field: FieldImages) -> Segmentation:
        """The segmentation of one field."""
        ...

    def segment_batch(self, fields: Sequence[FieldImages]) -> list[Segmentation]:
        """The segmentations of several fields, in their order (a backend may batch them)."""
        ...
