"""The flooding loop of every HPA post-processing watershed, and the arrays it floods.

The loop is `_flood.c` beside this file, compiled by `make venv` into `_flood.so` and loaded
with ctypes (`compiled_library`); it visits the pixels in exactly scikit-image's order from a
compact heap. Without a C compiler, scikit-image's own loop runs on the same arrays (same
labels, about 1.6 times slower). Both loops take arrays padded by one pixel outside the mask
(`padded`, `padded_mask_and_markers`), as scikit-image pads its own.
"""

import ctypes
import functools
from pathlib import Path

import numpy as np
from skimage import segmentation

from ml.native import load_library
from ml.segmentation.hpa.morphology import CROSS


def flood_padded(
    heights: np.ndarray | None,
    labels: np.ndarray,
    mask: np.ndarray,
    *,
    watershed_line: bool,
    seeds: np.ndarray | None = None,
) -> None:
    """Flood in place, as scikit-image's watershed does, on padded (H + 2, W + 2) arrays whose
    border is outside the int8 `mask`: uint8 `heights` (None: a flat landscape) and int32
    `labels` holding the markers. The queue starts with `seeds` (raveled, ascending; every
    marker by default).

    The loop is the compiled one in `_flood.c` (the same visiting order as scikit-image's, in
    about 0.6 of the time), else scikit-image's own loop run on these arrays, else, should a
    scikit-image version lack that loop, its public function.
    """
    if seeds is None:
        seeds = np.flatnonzero(labels)
    library = compiled_library()
    if library is not None and labels.size < 2**31:
        # Locals keep every array alive while the loop reads it.
        offsets = np.array([-labels.shape[1], -1, 1, labels.shape[1]], dtype=np.int64)
        queued = np.ascontiguousarray(seeds, dtype=np.int64)
        for array, dtype in ((heights, np.uint8), (labels, np.int32), (mask, np.int8)):
            if array is not None and (
                array.dtype != dtype or not array.flags.c_contiguous or array.shape != labels.shape
            ):
                raise ValueError(
                    "The flooding loop takes C-contiguous uint8 heights, int32 labels and int8 mask of one shape."
                )
        status = library.hpaweb_flood(
            None if heights is None else heights.ctypes.data,
            labels.ctypes.data,
            mask.ctypes.data,
            queued.ctypes.data,
            len(queued),
            offsets.ctypes.data,
            len(offsets),
            watershed_line,
        )
        if status != 0:
            raise MemoryError("Out of memory while flooding a label image.")
        return
    landscape = np.zeros(labels.shape) if heights is None else heights.astype(np.float64)
    try:
        from skimage.morphology._util import _offsets_to_raveled_neighbors
        from skimage.segmentation._watershed_cy import watershed_raveled

        watershed_raveled(
            landscape.ravel(),
            np.ascontiguousarray(seeds, dtype=np.intp),
            _offsets_to_raveled_neighbors(labels.shape, CROSS, center=(1, 1)),
            mask.ravel(),
            np.array([labels.shape[1], 1], dtype=np.intp),
            0.0,
            labels.ravel(),
            watershed_line,
        )
    except (ImportError, TypeError):  # pragma: no cover - a scikit-image without that loop
        labels[...] = segmentation.watershed(landscape, labels, mask=mask.view(bool), watershed_line=watershed_line)


def padded(image: np.ndarray) -> np.ndarray:
    """`image` with a one-pixel frame of zeros, the flooding loop's layout."""
    framed = np.zeros((image.shape[0] + 2, image.shape[1] + 2), dtype=image.dtype)
    framed[1:-1, 1:-1] = image
    return framed


def padded_mask_and_markers(mask: np.ndarray, markers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flooding loop's int8 mask and int32 labels (the markers inside the mask), padded."""
    padded_mask = padded(mask.view(np.int8))
    output = np.zeros(padded_mask.shape, dtype=np.int32)
    np.copyto(output[1:-1, 1:-1], markers, where=mask, casting="unsafe")
    return padded_mask, output


@functools.cache
def compiled_library() -> ctypes.CDLL | None:
    """The compiled flooding loop (`make venv` builds it next to this file); None if not built."""
    pointer = ctypes.c_void_p
    argtypes = [pointer, pointer, pointer, pointer, ctypes.c_int64, pointer, ctypes.c_int, ctypes.c_int]
    return load_library(Path(__file__).with_name("_flood.so"), "hpaweb_flood", argtypes)
