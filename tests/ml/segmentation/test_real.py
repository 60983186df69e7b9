"""The classical backend on real HPA fields (../shared/data/real), nucleus and protein channels only."""

from pathlib import Path

import numpy as np
import pytest

from ml.io import read_field, read_labels_png
from ml.segmentation import Segmentation
from ml.segmentation.classical import ClassicalBackend
from ml.segmentation.matching import match_labels
from tests.ml.segmentation.support import SHARED_DIR

REAL_DATA_DIR = SHARED_DIR / "data" / "real"
MIN_REFERENCE_AREA_PX = 1000  # the reference cell masks hold two specks (see the data README)

pytestmark = pytest.mark.skipif(
    not REAL_DATA_DIR.is_dir(), reason=f"real HPA fields not found at {REAL_DATA_DIR} (shared data folder absent)"
)


def segment_real_field(name: str) -> tuple[Segmentation, Path]:
    field_dir = REAL_DATA_DIR / name
    field = read_field({"blue": field_dir / "blue.png", "green": field_dir / "green.png"})
    return ClassicalBackend().segment(field), field_dir


@pytest.fixture(scope="module")
def field_b1() -> tuple[Segmentation, Path]:
    return segment_real_field("field-b1")


@pytest.fixture(scope="module")
def field_c1() -> Segmentation:
    return segment_real_field("field-c1")[0]


def test_field_b1_nuclei_match_the_reference(field_b1):
    segmentation, field_dir = field_b1
    reference = read_labels_png(field_dir / "nuclei_labels.png")
    match = match_labels(reference, segmentation.nuclei_labels, iou_threshold=0.5)
    assert match.f1 >= 0.95
    assert match.mean_matched_iou >= 0.85


def test_field_b1_cells_match_the_reference(field_b1):
    segmentation, field_dir = field_b1
    match = match_labels(
        read_labels_png(field_dir / "cell_labels.png"),
        segmentation.cell_labels,
        iou_threshold=0.5,
        min_true_area_px=MIN_REFERENCE_AREA_PX,
    )
    assert match.f1 >= 0.85


def test_field_b1_cells_are_grown_over_the_protein_channel(field_b1):
    segmentation, _ = field_b1
    assert segmentation.channels_used == ("blue", "green")


def test_field_c1_has_one_cell_per_visible_nucleus(field_c1):
    # About 15 nuclei are visible in this field, three of them cut by the border.
    nuclei_ids = np.unique(field_c1.nuclei_labels[field_c1.nuclei_labels > 0])
    cell_ids = np.unique(field_c1.cell_labels[field_c1.cell_labels > 0])
    assert 12 <= len(nuclei_ids) <= 18
    assert nuclei_ids.tolist() == cell_ids.tolist() == list(range(1, len(cell_ids) + 1))
    in_nuclei = field_c1.nuclei_labels > 0
    assert np.array_equal(field_c1.cell_labels[in_nuclei], field_c1.nuclei_labels[in_nuclei])


def test_field_c1_cells_cover_the_cytoplasm_without_flooding_the_field(field_c1):
    cell_areas = np.bincount(field_c1.cell_labels.ravel())[1:]
    field_area = field_c1.cell_labels.size
    assert 0.3 <= cell_areas.sum() / field_area <= 0.8
    assert cell_areas.max() <= 0.15 * field_area
