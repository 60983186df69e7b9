from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ml.checkpoints import CheckpointError
from ml.io import FieldImages
from ml.segmentation import Segmenter
from ml.segmentation.hpa_preprocess import MEAN, PAD_PX, STD, input_channels, prepare_input, restore_prediction
from ml.segmentation.unet import (
    UnetBackend,
    build_unet,
    number_cells_with_nuclei,
    save_unet_checkpoint,
    unet_config,
)
from tests.ml.support import BACKGROUND, FOREGROUND, TINY_ENCODER, constant_network


def random_network(path: Path, *, kind: str, encoder: dict | None = TINY_ENCODER) -> Path:
    torch.manual_seed(0)
    config = unet_config(kind, encoder=encoder)
    save_unet_checkpoint(path, state_dict=build_unet(config).state_dict(), config=config)
    return path


def field(size_px: int = 256, *, red: bool = True, yellow: bool = True) -> FieldImages:
    rng = np.random.default_rng(0)
    planes = {name: rng.random((size_px, size_px), dtype=np.float32) for name in ("green", "blue", "red", "yellow")}
    return FieldImages(green=planes["green"], blue=planes["blue"], red=planes["red"] if red else None, yellow=planes["yellow"] if yellow else None)


@pytest.fixture
def foreground_backend(tmp_path) -> UnetBackend:
    return UnetBackend(
        nuclei_weights=constant_network(tmp_path / "nuclei.pt", kind="nuclei", logits=FOREGROUND),
        cell_weights=constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND),
    )


def test_foreground_everywhere_gives_one_cell_holding_one_nucleus(foreground_backend):
    segmentation = foreground_backend.segment(field())
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
    segmentation = backend.segment(field())
    assert segmentation.cell_count == 0
    assert not segmentation.nuclei_labels.any()


def test_segment_batch_keeps_order_and_size_of_mixed_fields(foreground_backend):
    fields = [field(256), field(128, yellow=False), field(256, red=False, yellow=False)]
    segmentations = foreground_backend.segment_batch(fields)
    assert [s.cell_labels.shape for s in segmentations] == [(256, 256), (128, 128), (256, 256)]
    assert [s.channels_used for s in segmentations] == [("blue", "red", "yellow"), ("blue", "red"), ("blue", "green")]
    assert [s.cell_count for s in segmentations] == [1, 1, 1]


def test_random_weights_give_consistent_labels(tmp_path):
    backend = UnetBackend(
        nuclei_weights=random_network(tmp_path / "nuclei.pt", kind="nuclei"),
        cell_weights=random_network(tmp_path / "cell.pt", kind="cell"),
    )
    segmentation = backend.segment(field(192))
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
    assert segmenter(field(128)).cell_count == 1


def test_number_cells_with_nuclei_drops_cells_without_one():
    cells = np.array([[1, 1, 2, 2, 3, 3, 4]])
    nuclei = np.array([[0, 1, 0, 0, 3, 0, 4]])
    nuclei_labels, cell_labels = number_cells_with_nuclei(nuclei, cells)
    assert cell_labels.tolist() == [[1, 1, 0, 0, 2, 2, 3]]
    assert nuclei_labels.tolist() == [[0, 1, 0, 0, 2, 0, 3]]
    assert cell_labels.dtype == nuclei_labels.dtype == np.uint16


def test_missing_weights_are_a_sentence(tmp_path):
    cell = constant_network(tmp_path / "cell.pt", kind="cell", logits=FOREGROUND)
    with pytest.raises(CheckpointError, match=r"There is no nuclei network weight file at .*absent\.pt; convert the official"):
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
    with pytest.raises(CheckpointError, match="holds a 'cell-classifier' model, not a 'dpn92-unet' segmentation network"):
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
    fields = [field(256), field(256, yellow=False)]
    on_gpu = UnetBackend(**weights, device="cuda", batch_size=2).segment_batch(fields)
    on_cpu = UnetBackend(**weights, device="cpu").segment_batch(fields)
    for gpu, cpu in zip(on_gpu, on_cpu):
        assert gpu.cell_count == cpu.cell_count
        assert np.mean(gpu.cell_labels == cpu.cell_labels) > 0.99


@pytest.mark.slow
def test_full_network_with_random_weights_segments_a_field(tmp_path):
    backend = UnetBackend(
        nuclei_weights=random_network(tmp_path / "nuclei.pt", kind="nuclei", encoder=None),
        cell_weights=random_network(tmp_path / "cell.pt", kind="cell", encoder=None),
    )
    segmentation = backend.segment(field(256))
    assert segmentation.cell_labels.shape == (256, 256)
    assert np.array_equal(np.unique(segmentation.nuclei_labels), np.unique(segmentation.cell_labels))


# Preprocessing (hpa_preprocess), as the backend applies it.


@pytest.mark.parametrize("size_px, network_px", [(1728, 480), (2048, 576), (200, 96)])
def test_input_is_scaled_by_a_quarter_and_padded_to_a_multiple_of_32(size_px, network_px):
    plane = np.full((size_px, size_px), 0.5, dtype=np.float32)
    network_input = prepare_input([plane, plane, plane])
    assert network_input.image.shape == (3, network_px, network_px)
    assert network_input.scaled_shape == (round(size_px / 4), round(size_px / 4))
    expected = [(0.5 - mean) / std for mean, std in zip(MEAN, STD)]
    assert np.allclose(network_input.image[:, 0, 0], expected, atol=1e-6)


def test_padding_mirrors_with_the_edge_pixel_repeated():
    ramp = np.tile(np.arange(256, dtype=np.float32) / 255, (256, 1))  # columns 0..1
    image = prepare_input([ramp, ramp, ramp], mean=(0, 0, 0), std=(1, 1, 1)).image[0]
    inside = image[PAD_PX, PAD_PX : PAD_PX + 64]
    assert np.array_equal(image[PAD_PX, PAD_PX - 3 : PAD_PX][::-1], inside[:3])  # cba|abc
    assert np.array_equal(image[PAD_PX, PAD_PX + 64 : PAD_PX + 67], inside[-3:][::-1])


def test_restored_maps_replicate_each_network_pixel_without_transposing():
    plane = np.zeros((64, 32), dtype=np.float32)
    network_input = prepare_input([plane, plane, plane])
    probabilities = np.random.default_rng(1).dirichlet((1, 1, 1), size=network_input.image.shape[1:]).transpose(2, 0, 1)
    for kind in ("nuclei", "cell"):
        restored = restore_prediction(probabilities.astype(np.float32), network_input=network_input, kind=kind)
        assert restored.shape == (64, 32, 3) and restored.dtype == np.uint8
        assert not restored[..., 0].any()
        expected = np.rint(probabilities[2, PAD_PX, PAD_PX] * 255)
        assert (restored[:4, :4, 2] == expected).all()


def test_cell_network_channels_fall_back_when_red_or_yellow_is_missing():
    assert input_channels(field(32), kind="cell") == (("red", "yellow", "blue"), ("blue", "red", "yellow"))
    assert input_channels(field(32, red=False), kind="cell") == (("yellow", "yellow", "blue"), ("blue", "yellow"))
    assert input_channels(field(32, red=False, yellow=False), kind="cell") == (("green", "green", "blue"), ("blue", "green"))
    assert input_channels(field(32, red=False), kind="nuclei") == (("blue", "blue", "blue"), ("blue",))
