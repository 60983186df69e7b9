"""Cell quality control: flags for cells whose measurements or predictions should not be trusted.

Each cell gets zero or more of `QC_FLAGS`, decided from its measurements (`ml.measure`) and,
where a flag is relative, from the other cells of its field:

| flag | when (defaults of `QcThresholds`) |
| --- | --- |
| `out_of_focus` | its focus score (Laplacian energy over variance, `ml.measure.intensity`) is below 0.15 of the field's median |
| `cut_by_border` | at least 1 of its pixels lies on the image border |
| `merged` | its nucleus has 2 or more separate pieces (each at least 10 % of it), or its area is over 3 times the field's median cell area |
| `failed_contour` | the cell in 2 or more separate pieces, solidity below 0.85 (unless the cell is flagged merged, which explains a concave outline), holes over 1 % of its area, over 10 % of its nucleus outside it, or no nucleus |
| `too_small` | area below 0.2 of the field's median cell area, or below `min_area_px` (0: no absolute limit) |

Field medians need at least `min_cells_for_field` cells (3); in a field with fewer, the relative
tests (focus, area) are not made. On synthetic cells the natural range is: focus at least 0.22 of
the field's median (blurred cells: 0.01 to 0.05), solidity at least 0.85, area 0.3 to 2.4 times the
median (`python -m bench.measure`). Thresholds are configurable (`QcThresholds`; the web app's
`ML_QC_*` settings, the command line's `--qc-*` options).
"""

from dataclasses import dataclass, fields

import numpy as np

from ml.measure import CellMeasurements

QC_FLAGS: tuple[str, ...] = ("out_of_focus", "cut_by_border", "merged", "failed_contour", "too_small")
QC_DESCRIPTIONS: dict[str, str] = {
    "out_of_focus": "Out of focus",
    "cut_by_border": "Cut by the image border",
    "merged": "Merged (several nuclei, or far larger than its neighbours)",
    "failed_contour": "Failed contour (irregular, holes, or nucleus outside)",
    "too_small": "Too small",
}


@dataclass(frozen=True)
class QcThresholds:
    out_of_focus_ratio: float = 0.15  # of the field's median focus score
    border_min_px: int = 1
    merged_min_nuclei: int = 2
    merged_area_ratio: float = 3.0  # of the field's median cell area
    min_solidity: float = 0.85
    max_hole_fraction: float = 0.01  # of the cell's area
    max_nucleus_outside_fraction: float = 0.1
    min_area_ratio: float = 0.2  # of the field's median cell area
    min_area_px: int = 0
    min_cells_for_field: int = 3

    @classmethod
    def from_mapping(cls, values: dict) -> "QcThresholds":
        """Thresholds from {name: value}; unknown names are refused with a sentence."""
        known = {item.name: item.type for item in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"Unknown quality-control threshold {unknown[0]!r}; use one of {', '.join(known)}.")
        return cls(
            **{name: (int(value) if known[name] in (int, "int") else float(value)) for name, value in values.items()}
        )


def qc_flags(measurements: CellMeasurements, thresholds: QcThresholds | None = None) -> list[tuple[str, ...]]:
    """The flags of each cell of one field, in `QC_FLAGS` order; row i is `measurements` row i."""
    limits = thresholds or QcThresholds()
    count = len(measurements)
    if count == 0:
        return []
    area = measurements.column("area_px")
    focus = measurements.column("focus")
    relative = count >= limits.min_cells_for_field
    median_area = float(np.median(area))
    finite_focus = focus[np.isfinite(focus)]
    median_focus = (
        float(np.median(finite_focus)) if relative and finite_focus.size >= limits.min_cells_for_field else np.nan
    )

    merged = (measurements.column("nucleus_pieces") >= limits.merged_min_nuclei) | (
        (area > limits.merged_area_ratio * median_area) if relative else False
    )
    tests = {
        "out_of_focus": np.isfinite(focus) & (focus < limits.out_of_focus_ratio * median_focus)
        if np.isfinite(median_focus)
        else np.zeros(count, bool),
        "cut_by_border": measurements.column("border_px") >= limits.border_min_px,
        "merged": merged,
        "failed_contour": (measurements.column("cell_pieces") > 1)
        | ((measurements.column("solidity") < limits.min_solidity) & ~merged)
        | (measurements.column("hole_area_px") > limits.max_hole_fraction * area)
        | (measurements.column("nucleus_outside_fraction") > limits.max_nucleus_outside_fraction)
        | (measurements.column("nucleus_area_px") == 0),
        "too_small": (area < limits.min_area_px)
        | ((area < limits.min_area_ratio * median_area) if relative else False),
    }
    flags = np.stack([np.broadcast_to(tests[name], (count,)) for name in QC_FLAGS], axis=1)
    return [tuple(name for name, on in zip(QC_FLAGS, row, strict=True) if on) for row in flags]
