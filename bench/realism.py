"""How real the synthetic fields look: generic image statistics of v1, v2 and the real fields.

Prints one markdown table, a row per statistic and a column per source:
- synthetic v1 and v2 (`python -m ml synth --style v1|v2`, drawn in memory, quantised to 8 bits
  as the Kaggle PNGs are), with their true cell and nucleus masks;
- the real fields of ../shared/data/real: the three four-channel HPA fields (8-bit) for the
  intensity and texture rows, and for the morphology rows every real field, with the masks the
  data folder has (field-b1's labels, hpa-4ch/masks for cells) and the product's classical
  segmenter for the rest (57_F11_1, field-c1, and the nuclei of the hpa-4ch fields).

Statistics (areas and densities are given at the 2048 px scale of HPA fields):
- per channel: percentiles 50, 90, 99 and 99.9 of all pixels (0-255), the share of saturated
  pixels (255), and the background level (median of pixels outside every cell);
- cell and nucleus area (median over cells, px; and the 90th over the 10th percentile of cell
  areas), cells per megapixel, the share of a field's area under cells, and the touching fraction
  (cells within 6 px of another cell);
- texture: the slope of the radially averaged power spectrum, log power against log frequency
  between 1/64 and 1/4 cycles per px, per channel (steeper = smoother; white noise is 0).

Only generic statistics are compared; the real fields' labels play no part.

    .venv/bin/python -m bench.realism [--fields 6] [--size 2048] [--seed 4242] [--real DIR]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage.segmentation import expand_labels

from bench.common import SHARED_DIR
from ml.constants import CHANNELS
from ml.io import find_fields, read_field, read_labels_png
from ml.segmentation import Segmenter
from ml.synth import synthesize_field
from ml.synth.v2 import synthesize_field_v2

DEFAULT_REAL_DIR = SHARED_DIR / "data" / "real"
REFERENCE_SIZE_PX = 2048
MIN_CELL_AREA_PX = 1000  # at the field's own scale; smaller reference objects are specks
PERCENTILES = (50, 90, 99, 99.9)
SPECTRUM_BAND = (1 / 64, 1 / 4)  # cycles per px
TOUCH_GAP_PX = 6  # at 2048 px: cells this close count as touching


class Sample:
    """One field as the statistics see it: 8-bit channels (some may be None), cell and nucleus labels."""

    def __init__(self, channels: dict[str, np.ndarray | None], cells: np.ndarray, nuclei: np.ndarray | None) -> None:
        self.channels = channels
        self.cells = cells
        self.nuclei = nuclei


def to_8bit(plane: np.ndarray) -> np.ndarray:
    return np.round(np.clip(plane, 0.0, 1.0) * 255).astype(np.uint8)


def synthetic_samples(style: str, *, count: int, size_px: int, seed: int) -> list[Sample]:
    synthesize = synthesize_field_v2 if style == "v2" else synthesize_field
    samples = []
    for index in range(count):
        field = synthesize(np.random.default_rng([seed, index]), size_px)
        channels = {name: to_8bit(plane) for name, plane in zip(CHANNELS, field.image, strict=True)}
        samples.append(Sample(channels, field.cell_labels, field.nuclei_labels))
    return samples


def real_samples(real_dir: Path, segmenter: Segmenter) -> tuple[list[Sample], list[Sample]]:
    """(four-channel HPA fields, every real field); masks from the folder where it has them."""
    four_channel, everything = [], []
    hpa = real_dir / "hpa-4ch"
    for image_id, paths in sorted(find_fields(hpa).items()):
        field = read_field(paths)
        segmentation = segmenter(field)
        mask_path = hpa / "masks" / f"{image_id}_hpa_cells.png"
        cells = read_labels_png(mask_path) if mask_path.is_file() else segmentation.cell_labels
        channels = {name: to_8bit(getattr(field, name)) for name in CHANNELS}
        sample = Sample(channels, cells, segmentation.nuclei_labels)
        four_channel.append(sample)
        everything.append(sample)
    for name in ("field-b1", "field-c1"):
        folder = real_dir / name
        if not (folder / "blue.png").is_file():
            continue
        field = read_field({"blue": folder / "blue.png", "green": folder / "green.png"})
        if (folder / "cell_labels.png").is_file():
            cells, nuclei = read_labels_png(folder / "cell_labels.png"), read_labels_png(folder / "nuclei_labels.png")
        else:
            segmentation = segmenter(field)
            cells, nuclei = segmentation.cell_labels, segmentation.nuclei_labels
        everything.append(Sample({"blue": None, "green": None}, cells, nuclei))
    return four_channel, everything


def cell_ids(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels.ravel())
    scale = (labels.shape[0] / REFERENCE_SIZE_PX) ** 2
    ids = np.flatnonzero(counts >= MIN_CELL_AREA_PX * scale)
    return ids[ids > 0]


def touching_fraction(labels: np.ndarray) -> float:
    """Share of cells that touch another: 4-adjacent after growing every cell by `TOUCH_GAP_PX` / 2
    into the background (masks drawn by segmenters often leave a thin gap between touching cells)."""
    ids = cell_ids(labels).tolist()
    if not ids:
        return float("nan")
    labels = expand_labels(labels, TOUCH_GAP_PX / 2 * labels.shape[0] / REFERENCE_SIZE_PX)
    touching = set()
    for a, b in ((labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:])):
        border = (a != b) & (a > 0) & (b > 0)
        touching.update(np.unique(a[border]).tolist())
        touching.update(np.unique(b[border]).tolist())
    return len(touching & set(ids)) / len(ids)


def spectrum_slope(plane: np.ndarray) -> float:
    """Slope of log radially averaged power against log frequency within `SPECTRUM_BAND`."""
    image = plane.astype(np.float64)
    image = image - image.mean()
    window = np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(image * window))) ** 2
    ys, xs = np.indices(power.shape)
    radius = np.hypot(ys - power.shape[0] // 2, xs - power.shape[1] // 2).astype(np.int64)
    radial = np.bincount(radius.ravel(), power.ravel()) / np.maximum(np.bincount(radius.ravel()), 1)
    frequency = np.arange(len(radial)) / power.shape[0]
    band = (frequency >= SPECTRUM_BAND[0]) & (frequency <= SPECTRUM_BAND[1]) & (radial > 0)
    if band.sum() < 3:
        return float("nan")
    slope, _intercept = np.polyfit(np.log(frequency[band]), np.log(radial[band]), 1)
    return float(slope)


def morphology_rows(samples: list[Sample]) -> dict[str, float]:
    cell_areas, nucleus_areas, densities, coverage, touching = [], [], [], [], []
    for sample in samples:
        scale = (REFERENCE_SIZE_PX / sample.cells.shape[0]) ** 2  # to the 2048 px scale
        ids = cell_ids(sample.cells)
        counts = np.bincount(sample.cells.ravel(), minlength=int(sample.cells.max()) + 1)
        cell_areas.extend((counts[ids] * scale).tolist())
        if sample.nuclei is not None:
            nucleus_counts = np.bincount(sample.nuclei.ravel())[1:]
            nucleus_areas.extend((nucleus_counts[nucleus_counts >= 200 / scale] * scale).tolist())
        megapixels = sample.cells.size * scale / 1e6
        densities.append(len(ids) / megapixels)
        coverage.append(float(np.isin(sample.cells, ids).mean()))
        touching.append(touching_fraction(sample.cells))
    return {
        "cell area, median (px)": float(np.median(cell_areas)) if cell_areas else float("nan"),
        "cell area, 10th-90th ratio": float(np.percentile(cell_areas, 90) / np.percentile(cell_areas, 10))
        if cell_areas
        else float("nan"),
        "nucleus area, median (px)": float(np.median(nucleus_areas)) if nucleus_areas else float("nan"),
        "cells per megapixel": float(np.mean(densities)),
        "area under cells": float(np.mean(coverage)),
        "touching fraction": float(np.nanmean(touching)),
    }


def intensity_rows(samples: list[Sample]) -> dict[str, float]:
    rows: dict[str, float] = {}
    for channel in CHANNELS:
        planes = [s.channels[channel] for s in samples if s.channels.get(channel) is not None]
        values = np.concatenate([p.ravel() for p in planes])
        for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True):
            rows[f"{channel} p{q:g}"] = float(v)
        rows[f"{channel} saturated share"] = float((values == 255).mean())
        rows[f"{channel} background median"] = float(
            np.median(np.concatenate([p[s.cells == 0] for s, p in zip(samples, planes, strict=True)]))
        )
        rows[f"{channel} spectrum slope"] = float(np.mean([spectrum_slope(p) for p in planes]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.realism", description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=6, help="synthetic fields per style")
    parser.add_argument("--size", type=int, default=REFERENCE_SIZE_PX, help="side of the synthetic fields in px")
    parser.add_argument("--seed", type=int, default=4242, help="seed of the synthetic fields")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL_DIR, help="the real fields")
    args = parser.parse_args(argv)
    if not (args.real / "hpa-4ch").is_dir():
        print(f"No real fields under {args.real} (expected hpa-4ch/); pass --real.", file=sys.stderr)
        return 1
    segmenter = Segmenter("classical")
    four_channel, every_real = real_samples(args.real, segmenter)
    columns = {
        "synthetic v1": synthetic_samples("v1", count=args.fields, size_px=args.size, seed=args.seed),
        "synthetic v2": synthetic_samples("v2", count=args.fields, size_px=args.size, seed=args.seed),
    }
    table: dict[str, dict[str, float]] = {}
    for name, samples in columns.items():
        table[name] = {**intensity_rows(samples), **morphology_rows(samples)}
    table["real"] = {**intensity_rows(four_channel), **morphology_rows(every_real)}
    print(
        f"Synthetic: {args.fields} fields per style, {args.size} px, seed {args.seed}, 8-bit, true masks. "
        f"Real: {len(four_channel)} four-channel HPA fields (intensity, texture); "
        f"{len(every_real)} fields (morphology), masks where the data has them, classical segmenter otherwise."
    )
    names = list(table)
    print("| statistic | " + " | ".join(names) + " |")
    print("| --- | " + " | ".join("---:" for _ in names) + " |")
    for row in table["real"]:
        print(f"| {row} | " + " | ".join(_format(table[name][row]) for name in names) + " |")
    return 0


def _format(value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}" if value else "0"


if __name__ == "__main__":
    sys.exit(main())
