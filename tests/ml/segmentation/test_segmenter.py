import subprocess
import sys

import numpy as np
import pytest

from ml.checkpoints import CheckpointError
from ml.segmentation import BACKENDS, Segmenter
from tests.ml.segmentation.support import REPO_ROOT
from tests.ml.support import draw_field


def test_backends_are_the_classical_and_the_unet_backend():
    assert BACKENDS == ("classical", "unet")


def test_segmenter_refuses_an_unknown_backend_with_a_sentence():
    with pytest.raises(
        ValueError, match=r"^Unknown segmentation backend 'cellpose'; choose one of classical, unet, bioimageio\.$"
    ):
        Segmenter("cellpose")


def test_unet_backend_without_weights_is_a_sentence():
    with pytest.raises(CheckpointError, match="^The unet segmentation backend needs nuclei network weights; convert"):
        Segmenter("unet")


def test_segment_batch_returns_what_segmenting_each_field_returns():
    segmenter = Segmenter("classical")
    fields = [draw_field().field, draw_field(size_px=192, centres=((60, 60), (130, 130))).field]
    batch = segmenter.segment_batch(fields)
    assert [segmentation.cell_count for segmentation in batch] == [3, 2]
    for segmentation, field in zip(batch, fields, strict=True):
        single = segmenter(field)
        assert np.array_equal(segmentation.cell_labels, single.cell_labels)
        assert np.array_equal(segmentation.nuclei_labels, single.nuclei_labels)


def test_the_classical_backend_does_not_load_pytorch():
    script = "import sys; from ml.segmentation import Segmenter; Segmenter('classical'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
