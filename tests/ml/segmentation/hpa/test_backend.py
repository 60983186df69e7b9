import numpy as np
import pytest
import torch
from torch import nn

from ml.checkpoints import CheckpointError, save_unet_checkpoint
from ml.segmentation import Segmenter
from ml.segmentation.hpa.backend import UnetBackend, number_cells_with_nuclei
from ml.segmentation.hpa.config import unet_config
from tests.ml.segmentation.support import random_field, random_network
from tests.ml.support import BACKGROUND, FOREGROUND, TINY_ENCODER, constant_network


@pytest.fixture
def foreground_backend(tmp_path) -> UnetBackend:
    return UnetBackend(
        nuclei_weights=constant_network(tmp_path / "nuclei.pt", kind="nuclei", logits=FOREGROUND),
        cell_weights=constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND),
    )


def test_foreground_everywhere_gives_one_cell_holding_one_nucleus(foreground_backend):
    segmentation = foreground_backend.segment(random_field())
    assert segmentation.backend == "unet"
    assert segmentation.channels_used == ("blue", "red", "yellow")
    assert segmentation.nuclei_labels.dtype == segmentation.cell_labels.dtype == np.uint16
    assert np.array_equal(segmentation.cell_labels, np.ones((256, 256), np.uint16))
    assert np.array_equal(segmentation.nuclei_labels, np.ones((256, 256), np.uint16))


def test_background_everywhere_gives_no_cells(tmp_path):
    backend = UnetBackend(
        nuclei_weights=constant_network(tmp_path / "nuclei.pt", kind="nuclei", logits=BACKGROUND),
        cell_weights=constant_network(tmp_path / "cell.pt", kind="cell", logits=BACKGROUND),
    )
    segmentation = backend.segment(random_field())
    assert segmentation.cell_count == 0
    assert not segmentation.nuclei_labels.any()


def test_segment_batch_keeps_order_and_size_of_mixed_fields(foreground_backend):
    fields = [random_field(256), random_field(128, yellow=False), random_field(256, red=False, yellow=False)]
    segmentations = foreground_backend.segment_batch(fields)
    assert [s.cell_labels.shape for s in segmentations] == [(256, 256), (128, 128), (256, 256)]
    assert [s.channels_used for s in segmentations] == [("blue", "red", "yellow"), ("blue", "red"), ("blue", "green")]
    assert [s.cell_count for s in segmentations] == [1, 1, 1]


def test_random_weights_give_consistent_labels(tmp_path):
    backend = UnetBackend(
        nuclei_weights=random_network(tmp_path / "nuclei.pt", kind="nuclei"),
        cell_weights=random_network(tmp_path / "cell.pt", kind="cell"),
    )
    segmentation = backend.segment(random_field(192))
    cells, nuclei = segmentation.cell_labels, segmentation.nuclei_labels
    assert np.array_equal(np.unique(cells), np.arange(cells.max() + 1))
    assert np.array_equal(np.unique(nuclei), np.unique(cells))
    assert np.array_equal(nuclei[nuclei > 0], cells[nuclei > 0])


def test_segmenter_builds_the_unet_backend(tmp_path):
    segmenter = Segmenter(
        "unet",
        nuclei_weights=constant_network(tmp_path / "nuclei.pt", kind="nuclei", logits=FOREGROUND),
        cell_weights=constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND),
        device="cpu",
    )
    assert segmenter(random_field(128)).cell_count == 1


def test_number_cells_with_nuclei_drops_cells_without_one():
    cells = np.array([[1, 1, 2, 2, 3, 3, 4]])
    nuclei = np.array([[0, 1, 0, 0, 3, 0, 4]])
    nuclei_labels, cell_labels = number_cells_with_nuclei(nuclei, cells)
    assert cell_labels.tolist() == [[1, 1, 0, 0, 2, 2, 3]]
    assert nuclei_labels.tolist() == [[0, 1, 0, 0, 2, 0, 3]]
    assert cell_labels.dtype == nuclei_labels.dtype == np.uint16


def test_missing_weights_are_a_sentence(tmp_path):
    cell = constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND)
    with pytest.raises(
        CheckpointError, match=r"There is no nuclei network weight file at .*absent\.pt; convert the official"
    ):
        UnetBackend(nuclei_weights=tmp_path / "absent.pt", cell_weights=cell)
    with pytest.raises(CheckpointError, match="The unet segmentation backend needs nuclei network weights"):
        UnetBackend(nuclei_weights=None, cell_weights=cell)


def test_swapped_weights_are_a_sentence(tmp_path):
    nuclei = constant_network(tmp_path / "nuclei.pt", kind="nuclei", logits=FOREGROUND)
    cell = constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND)
    with pytest.raises(CheckpointError, match="holds the cell network but was given as the nuclei network; swap"):
        UnetBackend(nuclei_weights=cell, cell_weights=nuclei)


def test_an_unconverted_official_file_is_a_sentence(tmp_path):
    official = tmp_path / "dpn_unet_nuclei_v1.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 3, 1)), official)  # a whole pickled module, as published
    cell = constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND)
    with pytest.raises(CheckpointError, match="an official HPA .pth file must be converted first"):
        UnetBackend(nuclei_weights=official, cell_weights=cell)


def test_a_classifier_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    cell = constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND)
    with pytest.raises(
        CheckpointError, match="holds a 'cell-classifier' model, not a 'dpn92-unet' segmentation network"
    ):
        UnetBackend(nuclei_weights=tiny_checkpoint, cell_weights=cell)


def test_weights_that_do_not_fit_their_config_are_a_sentence(tmp_path):
    config = unet_config("nuclei", encoder=TINY_ENCODER)
    save_unet_checkpoint(tmp_path / "nuclei.pt", state_dict={"final.0.bias": torch.zeros(3)}, config=config)
    cell = constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND)
    with pytest.raises(CheckpointError, match="do not fit the network its config describes"):
        UnetBackend(nuclei_weights=tmp_path / "nuclei.pt", cell_weights=cell)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_batch_matches_the_cpu(tmp_path):
    weights = {
        "nuclei_weights": random_network(tmp_path / "nuclei.pt", kind="nuclei"),
        "cell_weights": random_network(tmp_path / "cell.pt", kind="cell"),
    }
    fields = [random_field(256), random_field(256, yellow=False)]
    on_gpu = UnetBackend(**weights, device="cuda", batch_size=2).segment_batch(fields)
    on_cpu = UnetBackend(**weights, device="cpu").segment_batch(fields)
    for gpu, cpu in zip(on_gpu, on_cpu, strict=True):
        assert gpu.cell_count == cpu.cell_count
        assert np.mean(gpu.cell_labels == cpu.cell_labels) > 0.99


@pytest.mark.slow
def test_full_network_with_random_weights_segments_a_field(tmp_path):
    backend = UnetBackend(
        nuclei_weights=random_network(tmp_path / "nuclei.pt", kind="nuclei", encoder=None),
        cell_weights=random_network(tmp_path / "cell.pt", kind="cell", encoder=None),
    )
    segmentation = backend.segment(random_field(256))
    assert segmentation.cell_labels.shape == (256, 256)
    assert np.array_equal(np.unique(segmentation.nuclei_labels), np.unique(segmentation.cell_labels))
