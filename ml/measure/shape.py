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


def pixel_rows_cols(pixels: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of flat indices into an image `width` wide: `np.divmod(pixels, width)` (so
    `np.nonzero`'s of a mask from its `np.flatnonzero`), in a third of divmod's time."""
    rows = pixels // width
    return rows, pixels - rows * width


def shape_features(
    cell_mask: np.ndarray,
    nucleus_mask: np.ndarray,
    *,
    touches: tuple[bool, bool, bool, bool],
    pixel_rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[float]:
    """`SHAPE_NAMES` of one cell; masks (h, w) over the cell's box (`nucleus_mask`: its own nucleus,
    wherever it lies in the box). `touches`: whether the box meets the top, left, bottom, right edge;
    `pixel_rows`: `np.nonzero(cell_mask)` where the caller has it already."""
    rows, cols = pixel_rows or pixel_rows_cols(np.flatnonzero(cell_mask), cell_mask.shape[1])
    area_count = len(rows)
    area = float(area_count)
    # The ellipse with the same second moments (as scikit-image's regionprops): axes 4 sqrt(eigenvalue).
    # Central moments from integer sums, exactly: n^2 mu_pq / n = n sum(r^p c^q) - sum(r^p) sum(c^q).
    sum_r, sum_c = int(rows.sum()), int(cols.sum())
    cross = (area_count * int(np.dot(rows, cols)) - sum_r * sum_c) / area_count**2
    row_variance = (area_count * int(np.dot(rows, rows)) - sum_r * sum_r) / area_count**2
    col_variance = (area_count * int(np.dot(cols, cols)) - sum_c * sum_c) / area_count**2
    covariance = np.array([[row_variance, cross], [cross, col_variance]])
    minor_variance, major_variance = np.maximum(np.linalg.eigvalsh(covariance), 0.0)
    eccentricity = float(np.sqrt(1.0 - minor_variance / major_variance)) if major_variance > 0 else 0.0
    rim = cell_mask & ~erode(cell_mask)
    outline_px = _perimeter(rim)
    form_factor = 4.0 * np.pi * area / outline_px**2 if outline_px > 0 else 1.0
    cell_pieces = ndimage.label(cell_mask, structure=_EIGHT_CONNECTED)[1]
    # Holes from the Euler number (pieces minus holes); the costlier hole search only where there are some.
    holes = _hole_area(cell_mask) if cell_pieces - _euler_number(cell_mask) > 0 else 0.0
    nucleus_rows, nucleus_cols = np.flatnonzero(nucleus_mask.any(axis=1)), np.flatnonzero(nucleus_mask.any(axis=0))
    nucleus_area = int(np.count_nonzero(nucleus_mask))
    count = 0
    if nucleus_area:
        nucleus_box = nucleus_mask[nucleus_rows[0] : nucleus_rows[-1] + 1, nucleus_cols[0] : nucleus_cols[-1] + 1]
        pieces_labels, count = ndimage.label(nucleus_box, structure=_EIGHT_CONNECTED)
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
        min(1.0, area / _convex_area(cell_mask, area)),
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


def erode(mask: np.ndarray) -> np.ndarray:
    """`ndimage.binary_erosion(mask)` (4-connected cross, outside the box is background), by shifts."""
    eroded = mask.copy()
    eroded[0] = eroded[-1] = False
    eroded[:, 0] = eroded[:, -1] = False
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    return eroded


# scikit-image's `perimeter(neighborhood=4)`: each rim pixel weighs by its rim neighbours' pattern.
_PERIMETER_KERNEL = np.array([[10, 2, 10], [2, 1, 2], [10, 2, 10]])
_PERIMETER_WEIGHTS = np.zeros(50, dtype=np.float64)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2


def _perimeter(rim: np.ndarray) -> float:
    """scikit-image's `perimeter(mask, neighborhood=4)` from the mask's rim, its convolution taken at
    the rim pixels only (the others weigh 0), so the same histogram gives the same sum."""
    rows, cols = pixel_rows_cols(np.flatnonzero(rim), rim.shape[1])
    padded = np.pad(rim, 1).view(np.uint8)
    values = np.zeros(len(rows), dtype=np.int64)
    for dr in range(3):
        for dc in range(3):
            values += _PERIMETER_KERNEL[dr, dc] * padded[rows + dr, cols + dc]
    return float(np.bincount(values, minlength=50)[:50] @ _PERIMETER_WEIGHTS)


def _euler_number(mask: np.ndarray) -> int:
    """Pieces (8-connected) minus holes (4-connected), from the 2 x 2 patterns (Gray's bit quads)."""
    padded = np.pad(mask, 1).view(np.uint8)
    a, b, c, d = padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]
    quads = a + b + c + d
    ones, threes = np.count_nonzero(quads == 1), np.count_nonzero(quads == 3)
    diagonals = np.count_nonzero((quads == 2) & (a == d))
    return (ones - threes - 2 * diagonals) // 4


def _convex_area(mask: np.ndarray, area: float) -> float:
    """Area of the convex hull of the mask's pixel squares (a pixel is a unit square), in px: the hull
    of the outer corners of each row's first and last pixel (the left ones of the first, the right
    ones of the last), which hold all of its corners."""
    occupied = np.flatnonzero(mask.any(axis=1))
    first_rows = last_rows = occupied.astype(np.float64)
    first_cols = np.argmax(mask[occupied], axis=1) - 0.5
    last_cols = mask.shape[1] - np.argmax(mask[occupied, ::-1], axis=1) - 0.5
    corners = np.concatenate(
        [np.stack([first_rows + dr, first_cols], axis=1) for dr in (-0.5, 0.5)]
        + [np.stack([last_rows + dr, last_cols], axis=1) for dr in (-0.5, 0.5)]
    )
    try:
        return float(ConvexHull(corners).volume)  # a 2-D hull's "volume" is its area
    except QhullError:  # all corners on one line cannot happen for unit squares, but be safe
        return area


def _hole_area(mask: np.ndarray) -> float:
    """Pixels enclosed by the mask that are not part of it (4-connected background not reaching the box's edge)."""
    background, count = ndimage.label(np.pad(~mask, 1, constant_values=True))
    if count <= 1:
        return 0.0
    sizes = np.bincount(background.ravel())
    return float(sizes[1:].sum() - sizes[background[0, 0]])
