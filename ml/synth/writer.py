"""A synthetic data set on disk, laid out like the Kaggle HPA competition's, with per-cell truth.

`write_dataset` writes `train.csv` (ID, Label: the weak image labels joined by `|`),
`{ID}_{red,green,blue,yellow}.png` (8- or 16-bit), `truth/{ID}_cells.png` and
`truth/{ID}_nuclei.png` (uint16 label images), and `solution.csv` (one `label 1 mask` triple per
true label of every cell), which `python -m ml evaluate` scores a submission against.
"""

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from ml.constants import CHANNELS
from ml.encoding import SubmissionRow, labels_to_rles, rle_to_kaggle, write_submission
from ml.io import write_labels_png
from ml.synth.field import synthesize_field

BIT_DEPTHS = (8, 16)
STYLES = ("v1", "v2")  # v1: the original generator; v2: `ml.synth.v2`, closer to real HPA images


def field_id(seed: int, index: int) -> str:
    """The ID of field `index` of the data set drawn with `seed`."""
    return f"synth-s{seed}-{index:05d}"


def write_dataset(
    out_dir: Path,
    *,
    n_images: int,
    seed: int,
    size_px: int,
    bit_depth: int,
    progress: Callable[[int, int], None] | None = None,
    style: str = "v1",
) -> None:
    """Write `n_images` fields in Kaggle layout plus truth; field i depends only on (seed, i).

    `progress(done, total)` is called after each field. `style` picks the generator (`STYLES`).
    """
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit_depth={bit_depth} is not supported; use 8 or 16.")
    if style not in STYLES:
        raise ValueError(f"style={style!r} is not supported; use one of {', '.join(STYLES)}.")
    synthesize = synthesize_field
    if style == "v2":
        from ml.synth.v2 import synthesize_field_v2 as synthesize
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(exist_ok=True)
    max_value = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    train_rows, solution_rows = [], []
    for index in range(n_images):
        image_id = field_id(seed, index)
        field = synthesize(np.random.default_rng([seed, index]), size_px)
        for channel, plane in zip(CHANNELS, field.image, strict=True):
            pixels = np.round(plane * max_value).astype(dtype)
            Image.fromarray(pixels).save(out_dir / f"{image_id}_{channel}.png", compress_level=1)
        write_labels_png(out_dir / "truth" / f"{image_id}_cells.png", field.cell_labels)
        write_labels_png(out_dir / "truth" / f"{image_id}_nuclei.png", field.nuclei_labels)
        rles = labels_to_rles(field.cell_labels)
        triples = [
            f"{label} 1 {rle_to_kaggle(rles[cell_id])}"
            for cell_id, classes in enumerate(field.cell_classes, start=1)
            for label in classes
        ]
        solution_rows.append(
            SubmissionRow(image_id=image_id, width=size_px, height=size_px, prediction_string=" ".join(triples))
        )
        train_rows.append((image_id, "|".join(str(label) for label in field.image_labels)))
        if progress is not None:
            progress(index + 1, n_images)
    with open(out_dir / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "Label"])
        writer.writerows(train_rows)
    write_submission(out_dir / "solution.csv", solution_rows)
