"""Per-cell measurements and quality control: what they cost, and how well the flags find injected defects.

Speed: on synthetic 2048 px fields (`bench.common.synthetic_fields`, the `make bench` fields),
milliseconds per cell of `ml.measure.measure_cells` without scattering plus `ml.qc.qc_flags` (target
at most 10), and of the batched wavelet scattering alone.

Scale and range: nuclei F1 on field-b1 as published and on a copy downscaled 4 times and stored as
16-bit with values up to 235 (`scale_quality`).

Quality control: synthetic 1024 px fields (seed 1001) with known defects injected into their true
labels and pixels (`inject_defects`): cells blurred (Gaussian, sigma 4 px), pairs of touching cells
merged into one (cell and nuclei), outlines broken (a 4 px gap cut across the cytoplasm beyond the nucleus, tearing the cell in two, a hole punched, or the nucleus
moved half out of its cell), small fragments added (with a nucleus); cells on the image border are
cut by it. Per flag: precision and recall of `ml.qc.qc_flags` with the default thresholds against
the injected truth (every cell of the fields counts; a flag on a cell without that defect is a false
positive). Target: both at least 0.9.

    .venv/bin/python -m bench.measure [--fields 4] [--qc-fields 12] [--seed 1001]
"""

import argparse
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bench.common import block_means
from ml.io import FieldImages, read_field
from ml.measure import measure_cells
from ml.measure.texture import scattering_features, texture_crops
from ml.qc import QC_FLAGS, qc_flags
from ml.synth.field import synthesize_field

QC_SEED = 1001
BLUR_SIGMA_PX = 4.0
PER_DEFECT = 3  # cells of each kind of defect per field


@dataclass(frozen=True, eq=False)
class DefectField:
    field: FieldImages
    cell_labels: np.ndarray
    nuclei_labels: np.ndarray
    truth: dict[str, set[int]]  # flag -> ids of the cells that have that defect


def inject_defects(rng: np.random.Generator, size_px: int = 1024) -> DefectField:
    """A synthetic field with `PER_DEFECT` blurred cells, merged pairs, broken outlines and small fragments."""
    synthetic = synthesize_field(rng, size_px)
    image = synthetic.image.copy()
    cells = synthetic.cell_labels.astype(np.int32)
    nuclei = synthetic.nuclei_labels.astype(np.int32)
    height, width = cells.shape
    ids = [cell_id for cell_id in range(1, int(cells.max()) + 1) if (cells == cell_id).any()]
    border = set(np.unique(np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]]))) - {0}
    interior = [cell_id for cell_id in ids if cell_id not in border]
    rng.shuffle(interior)
    truth: dict[str, set[int]] = {flag: set() for flag in QC_FLAGS}
    used: set[int] = set()

    def take() -> int | None:
        for cell_id in interior:
            if cell_id not in used:
                used.add(cell_id)
                return cell_id
        return None

    # Merged pairs: a cell and a touching interior neighbour become one cell with both nuclei.
    for _ in range(PER_DEFECT):
        first = take()
        if first is None:
            break
        ring = ndimage.binary_dilation(cells == first, structure=np.ones((3, 3))) & (cells != first)
        neighbours = [n for n in np.unique(cells[ring]) if n and n not in used and n not in border]
        if not neighbours:
            continue
        second = int(neighbours[0])
        used.add(second)
        cells[cells == second] = first
        nuclei[nuclei == second] = first
        truth["merged"].add(first)
    # Blurred cells: every channel blurred inside the cell (and a few pixels around it).
    for _ in range(PER_DEFECT):
        cell_id = take()
        if cell_id is None:
            break
        region = ndimage.binary_dilation(cells == cell_id, iterations=3)
        rows, cols = np.nonzero(region)
        box = (slice(max(rows.min() - 16, 0), rows.max() + 17), slice(max(cols.min() - 16, 0), cols.max() + 17))
        for channel in image:
            blurred = ndimage.gaussian_filter(channel[box], BLUR_SIGMA_PX)
            channel[box][region[box]] = blurred[region[box]]
        truth["out_of_focus"].add(cell_id)
    # Broken outlines: a wedge cut out, a hole punched, or the nucleus moved half out of the cell.
    for kind in range(PER_DEFECT):
        cell_id = take()
        if cell_id is None:
            break
        mask = cells == cell_id
        rows, cols = np.nonzero(mask)
        centre_row, centre_col = rows.mean(), cols.mean()
        radius = np.sqrt(mask.sum() / np.pi)
        grid_rows, grid_cols = np.ogrid[:height, :width]
        distance = np.hypot(grid_rows - centre_row, grid_cols - centre_col)
        nucleus = nuclei == cell_id
        if kind % 3 == 0:
            # Across the cytoplasm beyond the nucleus: halfway between the nucleus's and the cell's far edge.
            for direction in rng.uniform(-np.pi, np.pi, size=8):
                along = (grid_rows - centre_row) * np.sin(direction) + (grid_cols - centre_col) * np.cos(direction)
                cell_edge, nucleus_edge = along[mask].max(), along[nucleus].max() if nucleus.any() else 0.0
                if cell_edge - nucleus_edge > 12:
                    cells[mask & (np.abs(along - (cell_edge + nucleus_edge) / 2) < 2.0)] = 0
                    break
            else:
                continue
        elif kind % 3 == 1:
            cytoplasm = mask & ~ndimage.binary_dilation(nucleus, iterations=int(0.15 * radius) + 2)
            cytoplasm &= ndimage.binary_erosion(mask, iterations=int(0.3 * radius) + 2)
            points = np.argwhere(cytoplasm)
            if len(points) == 0:
                continue
            row, col = points[rng.integers(len(points))]
            hole = mask & (np.hypot(grid_rows - row, grid_cols - col) <= 0.2 * radius)
            cells[hole] = 0
        else:
            nucleus_rows, nucleus_cols = np.nonzero(nucleus)
            shift = int(round(0.9 * radius))
            nuclei[nucleus] = 0
            moved_rows = np.clip(nucleus_rows + shift, 0, height - 1)
            nuclei[moved_rows, nucleus_cols] = cell_id
        truth["failed_contour"].add(cell_id)
    # Small fragments with a nucleus, in the background.
    free = ndimage.distance_transform_edt(cells == 0)
    typical_radius = np.sqrt(np.median(np.bincount(cells.ravel())[1:][np.bincount(cells.ravel())[1:] > 0]) / np.pi)
    fragment_radius = 0.2 * typical_radius
    next_id = int(cells.max()) + 1
    for _ in range(PER_DEFECT):
        spots = np.argwhere(free > fragment_radius + 3)
        if len(spots) == 0:
            break
        row, col = spots[rng.integers(len(spots))]
        grid_rows, grid_cols = np.ogrid[:height, :width]
        distance = np.hypot(grid_rows - row, grid_cols - col)
        cells[distance <= fragment_radius] = next_id
        nuclei[distance <= 0.5 * fragment_radius] = next_id
        free[distance <= 2 * fragment_radius + 6] = 0
        truth["too_small"].add(next_id)
        next_id += 1
    present = set(np.unique(cells)) - {0}
    truth["cut_by_border"] = set(np.unique(np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]]))) - {0}
    truth = {flag: members & present for flag, members in truth.items()}
    field = FieldImages(red=image[0], green=image[1], blue=image[2], yellow=image[3])
    return DefectField(
        field=field, cell_labels=cells.astype(np.uint16), nuclei_labels=nuclei.astype(np.uint16), truth=truth
    )


def qc_precision_recall(*, fields: int, seed: int = QC_SEED, size_px: int = 1024) -> dict[str, dict[str, float]]:
    """Per flag: true positives, false positives, false negatives, precision and recall over `fields` fields."""
    counts = {flag: {"tp": 0, "fp": 0, "fn": 0} for flag in QC_FLAGS}
    for index in range(fields):
        defects = inject_defects(np.random.default_rng([seed, index]), size_px)
        measurements = measure_cells(defects.field, defects.cell_labels, defects.nuclei_labels, texture=False)
        flags = qc_flags(measurements)
        for flag in QC_FLAGS:
            found = {
                int(cell_id)
                for cell_id, cell_flags in zip(measurements.cell_ids, flags, strict=True)
                if flag in cell_flags
            }
            counts[flag]["tp"] += len(found & defects.truth[flag])
            counts[flag]["fp"] += len(found - defects.truth[flag])
            counts[flag]["fn"] += len(defects.truth[flag] - found)
    for count in counts.values():
        count["precision"] = count["tp"] / max(count["tp"] + count["fp"], 1)
        count["recall"] = count["tp"] / max(count["tp"] + count["fn"], 1)
    return counts


def time_measurements(*, fields: int, size_px: int = 2048) -> dict[str, float]:
    """ms per cell of measurements (shape, intensity, Haralick, LBP) + QC, and of scattering alone (batched)."""
    from bench.common import synthetic_fields
    from ml.segmentation import Segmenter

    segmenter = Segmenter("classical")
    measure_s = scattering_s = measure_cpu_s = scattering_cpu_s = 0.0
    cells = 0
    for index, files in enumerate(synthetic_fields(count=fields, size_px=size_px)):
        field = read_field(files)
        segmentation = segmenter(field)
        if index == 0:  # warm-up: imports, filter banks
            measure_cells(field, segmentation.cell_labels, segmentation.nuclei_labels, scattering=True)
        started, cpu_started = time.perf_counter(), time.process_time()
        measurements = measure_cells(field, segmentation.cell_labels, segmentation.nuclei_labels)
        qc_flags(measurements)
        measure_s += time.perf_counter() - started
        measure_cpu_s += time.process_time() - cpu_started
        greens, _masks = texture_crops(field.green, segmentation.cell_labels)
        started, cpu_started = time.perf_counter(), time.process_time()
        scattering_features(greens)
        scattering_s += time.perf_counter() - started
        scattering_cpu_s += time.process_time() - cpu_started
        cells += len(measurements)
    return {
        "cells": cells,
        "measure_qc_ms": 1000 * measure_s / cells,
        "measure_qc_cpu_ms": 1000 * measure_cpu_s / cells,
        "scattering_ms": 1000 * scattering_s / cells,
        "scattering_cpu_ms": 1000 * scattering_cpu_s / cells,
    }


def scale_quality() -> list[tuple[str, str, float, int, int]]:
    """Nuclei F1 at IoU 0.5 of the classical segmentation on field-b1 (2048 px, 16-bit) and on a copy
    downscaled 4 times (block means, 512 px) and stored as 16-bit with its maximum at 235, against the
    reference downscaled alike (nearest neighbour); reference objects under 1,000 px (62.5 px at 512)
    are ignored. Rows: (variant, nucleus diameter given, F1, found, reference)."""
    import dataclasses

    from PIL import Image

    from bench.common import SHARED_DIR
    from ml.io import read_labels_png
    from ml.segmentation import Segmenter
    from ml.segmentation.matching import match_labels

    folder = SHARED_DIR / "data" / "real" / "field-b1"
    reference = read_labels_png(folder / "nuclei_labels.png")
    segmenter = Segmenter("classical")
    rows = []
    field = read_field({"blue": folder / "blue.png", "green": folder / "green.png"})
    match = match_labels(reference, segmenter(field).nuclei_labels, iou_threshold=0.5, min_true_area_px=1000)
    rows.append(("field-b1, 2048 px, 16-bit as published", "no", match.f1, match.predicted_count, match.true_count))
    raw = {
        channel: np.asarray(Image.open(folder / f"{channel}.png")).astype(np.float64) for channel in ("blue", "green")
    }
    for factor, diameters in ((4, (None, 51.0)), (8, (None,)), (12, (None,))):
        planes = {}
        for channel, pixels in raw.items():
            small = block_means(pixels, factor)
            planes[channel] = (np.round(small / small.max() * 235) / 65535).astype(np.float32)
        dim = FieldImages(blue=planes["blue"], green=planes["green"], bit_depth=16)
        small_reference = reference[factor // 2 :: factor, factor // 2 :: factor][: dim.shape[0], : dim.shape[1]]
        areas = np.bincount(small_reference.ravel())[1:]
        diameter_px = 2 * np.sqrt(np.median(areas[areas > 0]) / np.pi)
        for diameter in diameters:
            labels = segmenter(dataclasses.replace(dim, nucleus_diameter_px=diameter)).nuclei_labels
            match = match_labels(small_reference, labels, iou_threshold=0.5, min_true_area_px=1000 / factor**2)
            given = "no" if diameter is None else f"{diameter:g} px"
            variant = f"field-b1 downscaled {factor}x ({dim.shape[1]} px, nuclei {diameter_px:.0f} px), 16-bit, max 235"
            rows.append((variant, given, match.f1, match.predicted_count, match.true_count))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.measure", description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=4, help="2048 px fields timed (0: no timing, nor QC)")
    parser.add_argument("--qc-fields", type=int, default=12, help="1024 px fields with injected defects (0: none)")
    parser.add_argument("--seed", type=int, default=QC_SEED)
    args = parser.parse_args(argv)
    print("Nuclei F1 at IoU 0.5, classical segmentation:\n")
    print("| field | nucleus diameter given | nuclei F1@0.5 | found / reference |")
    print("| --- | --- | ---: | ---: |")
    for variant, given, f1, found, total in scale_quality():
        print(f"| {variant} | {given} | {f1:.3f} | {found} / {total} |")
    print()
    if args.fields < 1:
        return 0
    speed = time_measurements(fields=args.fields)
    print(f"Speed, {speed['cells']} cells of {args.fields} synthetic 2048 px fields:\n")
    print("| what | wall ms per cell | CPU ms per cell (all threads) |")
    print("| --- | ---: | ---: |")
    print(
        "| measurements without scattering (shape, intensity, Haralick, LBP) + QC | "
        f"{speed['measure_qc_ms']:.1f} | {speed['measure_qc_cpu_ms']:.1f} |"
    )
    print(
        "| wavelet scattering (417 coefficients, batches of 64) | "
        f"{speed['scattering_ms']:.1f} | {speed['scattering_cpu_ms']:.1f} |"
    )
    if args.qc_fields < 1:
        return 0
    scores = qc_precision_recall(fields=args.qc_fields, seed=args.seed)
    print(f"\nQuality control on {args.qc_fields} synthetic 1024 px fields with injected defects (seed {args.seed}):\n")
    print("| flag | defects | flagged | true positives | precision | recall |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for flag, count in scores.items():
        print(
            f"| {flag} | {count['tp'] + count['fn']} | {count['tp'] + count['fp']} | {count['tp']} | "
            f"{count['precision']:.3f} | {count['recall']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
