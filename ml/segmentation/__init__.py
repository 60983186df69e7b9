"""Nucleus and cell segmentation behind one interface.

`Segmenter(backend=...)` loads what its backend needs once; calling it on a `FieldImages` returns a
`Segmentation`. Backends: `classical` (no weights) and `unet` (HPA-compatible DPN-U-Net weights
from configured paths).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.io import FieldImages

BACKENDS: tuple[str, ...] = ("classical", "unet")


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


class Segmenter:
    """Segments fields with one backend; construct once per process and reuse."""

    def __init__(
        self,
        backend: str = "classical",
        *,
        nuclei_weights: str | Path | None = None,
        cell_weights: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"Unknown segmentation backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
        self.backend = backend
        if backend == "unet":
            from ml.segmentation.unet import UnetBackend

            self._impl = UnetBackend(nuclei_weights=nuclei_weights, cell_weights=cell_weights, device=device)
        else:
            from ml.segmentation.classical import ClassicalBackend

            self._impl = ClassicalBackend()

    def __call__(self, field: FieldImages) -> Segmentation:
        return self._impl.segment(field)

    def segment_batch(self, fields: list[FieldImages]) -> list[Segmentation]:
        batch = getattr(self._impl, "segment_batch", None)
        if batch is not None:
            return batch(fields)
        return [self._impl.segment(field) for field in fields]


def segment(field: FieldImages, *, backend: str = "classical", **backend_options) -> Segmentation:
    """Segment one field; for many fields build a `Segmenter` once instead."""
    return Segmenter(backend, **backend_options)(field)
