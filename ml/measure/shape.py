"""Shape of one cell from its mask (and its nucleus's), in pixels of the field.

area (px), perimeter (px, scikit-image's 4-connected estimate), eccentricity, solidity (area over
convex hull area), form factor (4 pi area / perimeter^2: 1 for a disk), major and minor axis
lengths (of the ellipse with the same second moments), and what quality control reads: the area
of holes in the mask, how many separate (8-connected) pieces the cell and its nucleus have, the share of the nucleus outside
the cell, and the pixels of the cell on the image border.
"""

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import moments_central, perimeter

SHAPE_NAMES: tuple[str, ...] = (
    "area_px",
    "perimeter_px",
    "eccentricity",
    "solidity",
    "form_factor",
    "major_axis_px",
    "minor_axis_px",
    "nucleus_area_px",
    "hole_area_px",
    "cell_pieces",
    "nucleus_pieces",
    "nucleus_outside_fraction",
    "border_px",
)
# A nucleus piece smaller than this share of the nucleus is debris, not a second nucleus.
MIN_NUCLEUS_PIECE_FRACTION = 0.1
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def shape_features(
    cell_mask: np.ndarray, nucleus_mask: np.ndarray, *, touches: tuple[bool, bool, bool, bool]
) -> list[float]:
    """`SHAPE_NAMES` of one cell; masks (h, w) over the cell's box (`nucleus_mask`: its own nucleus,
    wherever it lies in the box). `touches`: whether the box meets the top, left, bottom, right edge."""
    moments = moments_central(cell_mask.astype(np.float64), order=2)
    area = float(moments[0, 0])
    # The ellipse with the same second moments (as scikit-image's regionprops): axes 4 sqrt(eigenvalue).
    covariance = np.array([[moments[2, 0], moments[1, 1]], [moments[1, 1], moments[0, 2]]]) / area
    minor_variance, major_variance = np.maximum(np.linalg.eigvalsh(covariance), 0.0)
    eccentricity = float(np.sqrt(1.0 - minor_variance / major_variance)) if major_variance > 0 else 0.0
    outline_px = float(perimeter(cell_mask, neighborhood=4))
    form_factor = 4.0 * np.pi * area / outline_px**2 if outline_px > 0 else 1.0
    holes = _hole_area(cell_mask)
    cell_pieces = ndimage.label(cell_mask, structure=_EIGHT_CONNECTED)[1]
    nucleus_area = int(np.count_nonzero(nucleus_mask))
    pieces_labels, count = ndimage.label(nucleus_mask, structure=_EIGHT_CONNECTED)
    if count > 1:
        sizes = np.bincount(pieces_labels.ravel())[1:]
        count = int(np.count_nonzero(sizes >= MIN_NUCLEUS_PIECE_FRACTION * nucleus_area))
    outside = float(np.count_nonzero(nucleus_mask & ~cell_mask) / nucleus_area) if nucleus_area else 1.0
    top, left, bottom, right = touches
    border = 0
    border += int(np.count_nonzero(cell_mask[0])) if top else 0
    border += int(np.count_nonzero(cell_mask[:, 0])) if left else 0
    border += int(np.count_nonzero(cell_mask[-1])) if bottom else 0
    border += int(np.count_nonzero(cell_mask[:, -1])) if right else 0
    return [
        area,
        outline_px,
        eccentricity,
        min(1.0, area / _convex_area(cell_mask)),
        float(min(form_factor, 1.0)),
        float(4.0 * np.sqrt(major_variance)),
        float(4.0 * np.sqrt(minor_variance)),
        float(nucleus_area),
        holes,
        float(cell_pieces),
        float(count),
        outside,
        float(border),
    ]


def _convex_area(mask: np.ndarray) -> float:
    """Area of the convex hull of the mask's pixel squares (a pixel is a unit square), in px."""
    rim = mask & ~ndimage.binary_erosion(mask)
    rows, cols = np.nonzero(rim)
    corners = np.concatenate(
        [np.stack([rows + dr, cols + dc], axis=1) for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)]
    ).astype(np.float64)
    try:
        return float(ConvexHull(corners).volume)  # a 2-D hull's "volume" is its area
    except QhullError:  # all corners on one line cannot happen for unit squares, but be safe
        return float(np.count_nonzero(mask))


def _hole_area(mask: np.ndarray) -> float:
    """Pixels enclosed by the mask that are not part of it (4-connected background not reaching the box's edge)."""
    background, count = ndimage.label(np.pad(~mask, 1, constant_values=True))
    if count <= 1:
        return 0.0
    sizes = np.bincount(background.ravel())
    return float(sizes[1:].sum() - sizes[background[0, 0]])
