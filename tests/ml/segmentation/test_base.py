import dataclasses

import numpy as np
import pytest

from ml.segmentation.base import Segmentation, SegmentationBackend
from ml.segmentation.classical import ClassicalBackend
from ml.segmentation.hpa.backend import UnetBackend
from tests.ml.support import FOREGROUND, constant_network


def test_cell_count_counts_the_cells_but_not_the_background():
    cells = np.array([[0, 1, 1], [0, 4, 2]], dtype=np.uint16)
    segmentation = Segmentation(np.zeros_like(cells), cells, backend="classical", channels_used=("blue",))
    assert segmentation.cell_count == 3


def test_a_segmentation_cannot_be_changed():
    empty = np.zeros((2, 2), dtype=np.uint16)
    segmentation = Segmentation(empty, empty, backend="classical", channels_used=("blue",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        segmentation.backend = "unet"


def test_both_backends_satisfy_the_backend_protocol(tmp_path):
    unet = UnetBackend(
        nuclei_weights=constant_network(tmp_path / "nuclei.pt", kind="nuclei", logits=FOREGROUND),
        cell_weights=constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND),
    )
    assert isinstance(ClassicalBackend(), SegmentationBackend)
    assert isinstance(unet, SegmentationBackend)


def test_an_object_without_segment_batch_is_not_a_backend():
    class SegmentOnly:
        def segment(self, field):
            raise NotImplementedError

    assert not isinstance(SegmentOnly(), SegmentationBackend)
