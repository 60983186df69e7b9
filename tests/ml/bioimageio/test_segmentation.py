"""A nucleus and a cell package as the `bioimageio` segmentation backend."""

import numpy as np

from ml.segmentation import Segmenter
from tests.ml.bioimageio import support
from tests.ml.support import draw_field

bioimageio_packages = support.bioimageio_packages  # the session's packages (a fixture)

CENTRES = ((130, 130), (130, 380), (380, 250))


def test_the_package_pair_segments_each_drawn_cell_around_its_nucleus(bioimageio_packages):
    drawn = draw_field(size_px=512, centres=CENTRES, nucleus_radius_px=40, cell_radius_px=110)
    segmenter = Segmenter(
        "bioimageio", nuclei_model=bioimageio_packages.nuclei_zip, cell_model=bioimageio_packages.cell_zip
    )
    segmentation = segmenter(drawn.field)
    assert segmentation.backend == "bioimageio"
    assert segmentation.cell_count == 3
    for row, col in CENTRES:
        cell_id = segmentation.cell_labels[row, col]
        assert cell_id > 0 and segmentation.nuclei_labels[row, col] == cell_id
    for label in range(1, 4):
        overlap = np.count_nonzero((segmentation.cell_labels == label) & (drawn.cell_labels > 0))
        assert overlap / np.count_nonzero(segmentation.cell_labels == label) > 0.9
    assert [s.cell_count for s in segmenter.segment_batch([drawn.field, drawn.field])] == [3, 3]
