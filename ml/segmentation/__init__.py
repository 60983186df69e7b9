"""Nucleus and cell segmentation behind one interface.

`Segmenter(backend=...)` loads what its backend needs once; calling it on a `FieldImages` returns a
`Segmentation`. Where things are:

- `base`: the `Segmentation` result and the `SegmentationBackend` protocol;
- `segmenter`: `Segmenter` and `BACKENDS`, the names it accepts;
- `classical`: the `classical` backend (image processing, no weights);
- `hpa/`: the `unet` backend, HPA-compatible DPN-U-Nets and the HPA post-processing;
- `matching`: object-level agreement of two label images (F1 at an IoU threshold).
"""

from ml.segmentation.base import Segmentation
from ml.segmentation.segmenter import BACKENDS, Segmenter

__all__ = ["BACKENDS", "Segmentation", "Segmenter"]
