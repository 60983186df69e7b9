"""Helpers of the segmentation tests: where the shared reference data lies, random fields and
networks, block-constant predictions, random label images, a stand-in segmenter and a small
training set for the U-Nets."""

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

from ml.checkpoints import save_unet_checkpoint
from ml.io import FieldImages, write_labels_png
from ml.segmentation import Segmentation
from ml.segmentation.hpa.config import build_unet, unet_config
from tests.ml.support import TINY_ENCODER, draw_field, write_field_pngs

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DIR = REPO_ROOT.parent / "shared"  # read-only reference data beside the checkout


def random_network(path: Path, *, kind: str, encoder: dict | None = TINY_ENCODER) -> Path:
    torch.manual_seed(0)
    config = unet_config(kind, encoder=encoder)
    save_unet_checkpoint(path, state_dict=build_unet(config).state_dict(), config=config)
    return path


def random_field(size_px: int = 256, *, red: bool = True, yellow: bool = True) -> FieldImages:
    rng = np.random.default_rng(0)
    planes = {name: rng.random((size_px, size_px), dtype=np.float32) for name in ("green", "blue", "red", "yellow")}
    return FieldImages(
        green=planes["green"],
        blue=planes["blue"],
        red=planes["red"] if red else None,
        yellow=planes["yellow"] if yellow else None,
    )


def blocky(image: np.ndarray) -> np.ndarray:
    """Upscale x4 by pixel replication, as predictions restored from the network's scale are."""
    return image.repeat(4, axis=0).repeat(4, axis=1)


def grid_predictions(cells_per_side: int, cell_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(nuclei_pred, cell_pred) of square cells with central nuclei, separated by border lines."""
    side = cells_per_side * cell_px  # at the network's scale
    rows, cols = np.indices((side, side))
    within_row, within_col = rows % cell_px, cols % cell_px
    on_line = (within_row == 0) | (within_col == 0)
    centre = cell_px // 2
    in_nucleus = (np.abs(within_row - centre) < cell_px // 3) & (np.abs(within_col - centre) < cell_px // 3)
    nuclei_pred = np.zeros((side, side, 3), dtype=np.uint8)
    nuclei_pred[..., 2] = np.where(in_nucleus, 230, 0)
    cell_pred = np.zeros((side, side, 3), dtype=np.uint8)
    cell_pred[..., 1] = np.where(on_line, 220, 0)
    cell_pred[..., 2] = np.where(on_line, 20, 235)
    return blocky(nuclei_pred), blocky(cell_pred)


def random_blob_labels() -> np.ndarray:
    """Touching blobs with ids up to 40 on a 256 px field, some touching the edge."""
    rng = np.random.default_rng(7)
    smooth = ndi.gaussian_filter(rng.random((256, 256)), 6)
    blobs, _ = ndi.label(smooth > np.quantile(smooth, 0.45))
    return (blobs % 40 + 1) * (blobs > 0)


def random_watershed_inputs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 landscape with plateaus, markers, mask) on a 256 px field."""
    rng = np.random.default_rng(seed)
    smooth = ndi.gaussian_filter(rng.random((256, 256)), 6)
    mask = smooth > np.quantile(smooth, 0.4)
    markers, _ = ndi.label(smooth > np.quantile(smooth, 0.8))
    landscape = (255 * (1 - smooth / smooth.max())).astype(np.uint8) // 8 * 8
    return landscape, markers, mask


class ThresholdSegmenter:
    """Stands in for a backend: nuclei are bright blue blobs, cells grow from them over green."""

    def __init__(self, backend: str, **options) -> None:
        self.backend = backend

    def __call__(self, field: FieldImages) -> Segmentation:
        nuclei_labels = ndi.label(field.blue > 0.5)[0].astype(np.uint16)
        cell_labels = np.where(field.green > 0.1, expand_labels(nuclei_labels, distance=60), 0).astype(np.uint16)
        return Segmentation(nuclei_labels, cell_labels, backend=self.backend, channels_used=("green", "blue"))


def write_label_dataset(directory: Path) -> tuple[Path, Path]:
    """Two 128 px fields with their nuclei and cell label images, in the layout train-seg reads;
    returns (images folder, labels folder)."""
    images, labels = directory / "images", directory / "labels"
    images.mkdir()
    labels.mkdir()
    for image_id, centres in (("a", ((40, 40), (90, 90))), ("b", ((30, 90), (95, 35)))):
        drawn = draw_field(size_px=128, centres=centres, nucleus_radius_px=10, cell_radius_px=28)
        write_field_pngs(images, image_id, drawn.field)
        write_labels_png(labels / f"{image_id}_nuclei.png", drawn.nuclei_labels)
        write_labels_png(labels / f"{image_id}_cells.png", drawn.cell_labels)
    return images, labels
