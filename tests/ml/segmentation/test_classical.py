from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage as ndi

from ml.io import FieldImages
from ml.segmentation import Segmentation, Segmenter
from ml.segmentation.classical import FALLBACK_EXPANSION_RADII, ClassicalBackend
from ml.segmentation.matching import match_labels

NUCLEUS_RADIUS_PX = 14
CELL_RADIUS_PX = 40
# Spread out on a 320 px field; the two cells on the right touch.
CENTRES = ((60, 60), (60, 200), (180, 80), (250, 230), (250, 290))


@dataclass(frozen=True)
class Drawn:
    nuclei_labels: np.ndarray
    cell_labels: np.ndarray
    nuclei: np.ndarray  # float32 (H, W): 1 in nuclei
    cytoplasm: np.ndarray  # float32 (H, W): 1 in cells


def draw(
    centres=CENTRES,
    *,
    shape=(320, 320),
    nucleus_radius_px: float = NUCLEUS_RADIUS_PX,
    cell_radius_px: float = CELL_RADIUS_PX,
) -> Drawn:
    """Disk nuclei; cells are disks around them, split between neighbours by the nearest centre."""
    rows, cols = np.indices(shape)
    distances = np.stack([np.hypot(rows - row, cols - col) for row, col in centres])
    nearest = distances.argmin(axis=0)
    nearest_distance = distances.min(axis=0)
    ids = (nearest + 1).astype(np.uint16)
    cell_labels = np.where(nearest_distance <= cell_radius_px, ids, 0).astype(np.uint16)
    nuclei_labels = np.where(nearest_distance <= nucleus_radius_px, ids, 0).astype(np.uint16)
    nuclei, cytoplasm = (nuclei_labels > 0).astype(np.float32), (cell_labels > 0).astype(np.float32)
    return Drawn(nuclei_labels, cell_labels, nuclei, cytoplasm)


def image(signal: np.ndarray, *, seed: int) -> np.ndarray:
    """Blurred like an optical image, with a little camera noise, in [0, 1]."""
    noise = np.random.default_rng(seed).normal(0.0, 0.01, signal.shape)
    return np.clip(ndi.gaussian_filter(signal, 1.5) + noise, 0.0, 1.0).astype(np.float32)


def four_channel_field(drawn: Drawn, *, green: np.ndarray | None = None) -> FieldImages:
    return FieldImages(
        red=image(0.3 * drawn.cytoplasm, seed=1),
        green=image(0.5 * drawn.cytoplasm if green is None else green, seed=2),
        blue=image(0.7 * drawn.nuclei, seed=3),
        yellow=image(0.4 * drawn.cytoplasm, seed=4),
    )


def assert_cells_contain_their_nuclei(segmentation: Segmentation) -> None:
    cells, nuclei = segmentation.cell_labels, segmentation.nuclei_labels
    ids = np.unique(cells[cells > 0])
    assert ids.tolist() == list(range(1, len(ids) + 1))
    assert np.unique(nuclei[nuclei > 0]).tolist() == ids.tolist()
    assert np.array_equal(cells[nuclei > 0], nuclei[nuclei > 0])


@pytest.fixture(scope="module")
def backend() -> ClassicalBackend:
    return ClassicalBackend()


def test_segment_finds_each_nucleus_and_cell_of_a_four_channel_field(backend):
    drawn = draw()
    segmentation = backend.segment(four_channel_field(drawn))
    nuclei = match_labels(drawn.nuclei_labels, segmentation.nuclei_labels, iou_threshold=0.8)
    cells = match_labels(drawn.cell_labels, segmentation.cell_labels, iou_threshold=0.8)
    assert (nuclei.predicted_count, nuclei.matched_count) == (5, 5)
    assert (cells.predicted_count, cells.matched_count) == (5, 5)
    assert segmentation.backend == "classical"
    assert segmentation.channels_used == ("blue", "red", "yellow")


def test_segment_returns_uint16_labels_where_cell_i_contains_nucleus_i(backend):
    segmentation = backend.segment(four_channel_field(draw()))
    assert segmentation.cell_labels.dtype == np.uint16
    assert segmentation.nuclei_labels.dtype == np.uint16
    assert segmentation.cell_labels.shape == segmentation.nuclei_labels.shape == (320, 320)
    assert_cells_contain_their_nuclei(segmentation)


def test_touching_nuclei_are_split(backend):
    # Centres one diameter apart: after blurring the two nuclei form one blob with a waist.
    touching = ((150, 140), (150, 140 + 2 * NUCLEUS_RADIUS_PX))
    drawn = draw(((60, 60), (60, 250), (250, 60), (250, 250), *touching))
    assert ndi.label(drawn.nuclei_labels > 0)[1] == 5
    segmentation = backend.segment(four_channel_field(drawn))
    nuclei = match_labels(drawn.nuclei_labels, segmentation.nuclei_labels, iou_threshold=0.75)
    assert (nuclei.predicted_count, nuclei.matched_count) == (6, 6)
    assert_cells_contain_their_nuclei(segmentation)


def test_nucleus_with_a_shallow_notch_stays_whole(backend):
    # Centres 1.2 radii apart: one elongated nucleus with a waist, not two nuclei.
    lobes = ((150, 150), (150, 150 + round(1.2 * NUCLEUS_RADIUS_PX)))
    drawn = draw(((60, 60), (60, 250), (250, 60), (250, 250), *lobes))
    nuclei_labels = np.where(drawn.nuclei_labels == 6, 5, drawn.nuclei_labels)
    segmentation = backend.segment(four_channel_field(drawn))
    nuclei = match_labels(nuclei_labels, segmentation.nuclei_labels, iou_threshold=0.75)
    assert (nuclei.predicted_count, nuclei.matched_count) == (5, 5)


def test_field_without_red_and_yellow_grows_cells_over_green(backend):
    drawn = draw()
    field = FieldImages(green=image(0.4 * drawn.cytoplasm, seed=2), blue=image(0.7 * drawn.nuclei, seed=3))
    segmentation = backend.segment(field)
    cells = match_labels(drawn.cell_labels, segmentation.cell_labels, iou_threshold=0.8)
    assert segmentation.channels_used == ("blue", "green")
    assert (cells.predicted_count, cells.matched_count) == (5, 5)
    assert_cells_contain_their_nuclei(segmentation)


def test_blank_red_and_yellow_fall_back_to_green(backend):
    drawn = draw()
    blank = np.zeros((320, 320), dtype=np.float32)
    green, blue = image(0.4 * drawn.cytoplasm, seed=2), image(0.7 * drawn.nuclei, seed=3)
    segmentation = backend.segment(FieldImages(red=blank, green=green, blue=blue, yellow=blank))
    cells = match_labels(drawn.cell_labels, segmentation.cell_labels, iou_threshold=0.8)
    assert segmentation.channels_used == ("blue", "green")
    assert (cells.predicted_count, cells.matched_count) == (5, 5)


def test_only_the_reference_channels_with_signal_are_reported(backend):
    drawn = draw()
    field = four_channel_field(drawn)
    field = FieldImages(
        red=field.red, green=field.green, blue=field.blue, yellow=np.zeros((320, 320), dtype=np.float32)
    )
    assert backend.segment(field).channels_used == ("blue", "red")


def test_dim_cell_is_outlined_as_fully_as_bright_ones(backend):
    drawn = draw()
    brightness = np.array([0.0, 0.5, 0.015, 0.5, 0.5, 0.5], dtype=np.float32)  # by cell id; cell 2 is dim
    field = FieldImages(green=image(brightness[drawn.cell_labels], seed=2), blue=image(0.7 * drawn.nuclei, seed=3))
    segmentation = backend.segment(field)
    cells = match_labels(drawn.cell_labels, segmentation.cell_labels, iou_threshold=0.8)
    assert (cells.predicted_count, cells.matched_count) == (5, 5)


def test_field_with_blank_cytoplasm_channels_grows_each_nucleus_by_its_radius(backend):
    drawn = draw()
    field = FieldImages(green=np.zeros((320, 320), dtype=np.float32), blue=image(0.7 * drawn.nuclei, seed=3))
    segmentation = backend.segment(field)
    grown = draw(cell_radius_px=NUCLEUS_RADIUS_PX * (1 + FALLBACK_EXPANSION_RADII)).cell_labels
    cells = match_labels(grown, segmentation.cell_labels, iou_threshold=0.85)
    assert segmentation.channels_used == ("blue",)
    assert (cells.predicted_count, cells.matched_count) == (5, 5)
    assert_cells_contain_their_nuclei(segmentation)


def test_protein_confined_to_nuclei_is_not_used_to_outline_cells(backend):
    drawn = draw()
    field = FieldImages(green=image(0.5 * drawn.nuclei, seed=2), blue=image(0.7 * drawn.nuclei, seed=3))
    segmentation = backend.segment(field)
    assert segmentation.channels_used == ("blue",)
    assert segmentation.cell_count == 5


def test_red_and_yellow_outline_cells_whatever_the_protein_shows(backend):
    drawn = draw()
    segmentation = backend.segment(four_channel_field(drawn, green=0.5 * drawn.nuclei))
    cells = match_labels(drawn.cell_labels, segmentation.cell_labels, iou_threshold=0.8)
    assert segmentation.channels_used == ("blue", "red", "yellow")
    assert (cells.predicted_count, cells.matched_count) == (5, 5)


def test_specks_much_smaller_than_nuclei_are_not_nuclei(backend):
    drawn = draw()
    specks = draw(((150, 150), (300, 150), (150, 300)), nucleus_radius_px=2).nuclei  # 13 px each
    field = four_channel_field(drawn)
    blue = image(0.7 * (drawn.nuclei + specks), seed=3)
    segmentation = backend.segment(FieldImages(red=field.red, green=field.green, blue=blue, yellow=field.yellow))
    assert segmentation.cell_count == 5
    assert np.unique(segmentation.nuclei_labels).tolist() == [0, 1, 2, 3, 4, 5]


def test_empty_field_gives_no_cells(backend):
    blank = np.zeros((256, 256), dtype=np.float32)
    segmentation = backend.segment(FieldImages(green=blank, blue=blank, red=blank, yellow=blank))
    assert segmentation.cell_count == 0
    assert segmentation.cell_labels.dtype == np.uint16
    assert not segmentation.nuclei_labels.any()
    assert segmentation.channels_used == ("blue",)


def test_reduced_working_scale_returns_labels_of_the_full_uneven_size():
    # 300 x 430 at a working side of 128: blocks of 3 px that do not tile the field.
    centres = ((70, 80), (70, 330), (220, 200))
    drawn = draw(centres, shape=(300, 430), nucleus_radius_px=22, cell_radius_px=60)
    segmentation = ClassicalBackend(working_side_px=128).segment(four_channel_field(drawn))
    cells = match_labels(drawn.cell_labels, segmentation.cell_labels, iou_threshold=0.8)
    assert segmentation.cell_labels.shape == segmentation.nuclei_labels.shape == (300, 430)
    assert (cells.predicted_count, cells.matched_count) == (3, 3)
    assert_cells_contain_their_nuclei(segmentation)


def test_segmenter_uses_the_classical_backend_by_default():
    drawn = draw()
    segmentation = Segmenter()(four_channel_field(drawn))
    assert segmentation.backend == "classical"
    assert segmentation.cell_count == 5


def test_classical_backend_rejects_a_working_side_too_small_for_cells():
    with pytest.raises(ValueError, match="working_side_px=32 is too small to resolve cells; use 64 or more"):
        ClassicalBackend(working_side_px=32)


def test_segment_batch_segments_each_field_in_order(backend):
    fields = [four_channel_field(draw()), four_channel_field(draw(CENTRES[:2]))]
    assert [segmentation.cell_count for segmentation in backend.segment_batch(fields)] == [5, 2]
