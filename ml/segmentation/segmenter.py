"""`Segmenter`: the segmentation backend chosen by name, loaded once.

The backends are imported only when chosen, so choosing `classical` never loads PyTorch.
"""

from collections.abc import Sequence
from pathlib import Path

from ml.constants import DEFAULT_SEGMENTATION_BACKEND
from ml.io import FieldImages
from ml.segmentation.base import Segmentation, SegmentationBackend

BACKENDS: tuple[str, ...] = ("classical", "unet")
# A nucleus and a cell bioimage.io package (`ml.bioimageio.segmentation`); chosen by path, so it is
# offered where paths are given (the command line, a library caller), not among the named BACKENDS.
PACKAGE_BACKEND = "bioimageio"
SEGMENTER_BACKENDS: tuple[str, ...] = (*BACKENDS, PACKAGE_BACKEND)


class Segmenter:
    """Segments fields with one backend; construct once per process and reuse.

    `classical` needs no weights; `unet` needs the HPA-compatible nuclei and cell networks
    (`nuclei_weights`, `cell_weights`) and runs on `device`; `bioimageio` needs a nucleus and a
    cell bioimage.io package (`nuclei_model`, `cell_model`), checked against their own tests.
    """

    def __init__(
        self,
        backend: str = DEFAULT_SEGMENTATION_BACKEND,
        *,
        nuclei_weights: str | Path | None = None,
        cell_weights: str | Path | None = None,
        nuclei_model: str | Path | None = None,
        cell_model: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        if backend not in SEGMENTER_BACKENDS:
            raise ValueError(
                f"Unknown segmentation backend {backend!r}; choose one of {', '.join(SEGMENTER_BACKENDS)}."
            )
        self.backend = backend
        self._backend: SegmentationBackend
        if backend == "unet":
            from ml.segmentation.hpa.backend import UnetBackend

            self._backend = UnetBackend(nuclei_weights=nuclei_weights, cell_weights=cell_weights, device=device)
        elif backend == PACKAGE_BACKEND:
            from ml.bioimageio.segmentation import BioimageioBackend

            self._backend = BioimageioBackend(nuclei_model=nuclei_model, cell_model=cell_model, device=device)
        else:
            from ml.segmentation.classical import ClassicalBackend

            self._backend = ClassicalBackend()

    def __call__(self, field: FieldImages) -> Segmentation:
        return self._backend.segment(field)

    def segment_batch(self, fields: Sequence[FieldImages]) -> list[Segmentation]:
        return self._backend.segment_batch(fields)
