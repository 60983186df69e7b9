"""Unfamiliar cells: how often a classifier flags cells unlike its training cells, and what that costs.

With the shipped model (or --model), prints one markdown table: the share of cells flagged
unfamiliar on held-out synthetic fields (drawn from another seed than the model's training
fields; the target is at most 5 %) and on each real field of ../shared/data/real (the three
four-channel HPA fields; field-b1 and field-c1, blue and green only, copied into Kaggle layout as
`bench.fingerprint` does), the AUROC of the familiarity score at telling the real cells from the
held-out synthetic ones (and, to show which layers see the difference, that of each layer's
distance alone), and the time familiarity adds to classification (with / without, on the same
crops in the same run, best of a few repeats). Nothing here tunes the thresholds: they are the
checkpoint's own (the 99th percentile of its training cells).

    .venv/bin/python -m bench.familiarity [--model PATH] [--heldout-fields 10] [--seed 1001]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from bench.common import SHARED_DIR, synthetic_fields
from bench.fingerprint import copy_real_fields
from ml.checkpoints import load_classifier_checkpoint
from ml.classifier.predictor import Predictor
from ml.constants import DEFAULT_MODEL_PATH
from ml.crops import CellCrops, crop_cells
from ml.io import FieldImages, find_fields, read_field
from ml.segmentation import Segmenter

HELDOUT_SEED = 1001  # the model card's held-out seed; the shipped model trained on seed 0
TIMING_REPEATS = 7


def auroc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """The probability that a positive scores above a negative (ties count half): Mann-Whitney U."""
    ranks = rankdata(np.concatenate([positive_scores, negative_scores]))
    positives, negatives = len(positive_scores), len(negative_scores)
    return float((ranks[:positives].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def field_crops(fields: dict[str, FieldImages], *, segmenter: Segmenter, size_px: int) -> dict[str, CellCrops]:
    """Each field's cell crops, from the classical segmentation as the product makes them."""
    return {
        name: crop_cells(field.stack(), segmenter(field).cell_labels, size_px=size_px) for name, field in fields.items()
    }


def classification_seconds(predictors: list[Predictor], crops: list[CellCrops]) -> list[float]:
    """For each predictor, the time `predict_cells` takes over all fields' crops: per field the
    best of a few repeats, summed. The predictors take turns on each field, after a warm-up, so
    a busy shared machine weighs on both alike."""
    best_s = np.full((len(predictors), len(crops)), np.inf)
    for _ in range(TIMING_REPEATS):
        for index, field in enumerate(crops):
            for row, predictor in enumerate(predictors):
                started = time.perf_counter()
                predictor.predict_cells(field)
                best_s[row, index] = min(best_s[row, index], time.perf_counter() - started)
    return best_s.sum(axis=1).tolist()


def scoring_seconds(predictor: Predictor, crops: list[CellCrops]) -> tuple[float, float]:
    """(the forward passes, the familiarity scoring of their features) over all fields' crops,
    per field the best of a few repeats, summed: what familiarity adds, without the noise of
    two whole runs."""
    forward_s, scoring_s = 0.0, 0.0
    for field in crops:
        best_forward_s, best_scoring_s = np.inf, np.inf
        for _ in range(TIMING_REPEATS):
            started = time.perf_counter()
            _probabilities, features = predictor.predict_crops_and_features(field.images)
            scored = time.perf_counter()
            predictor.familiarity.score(features)
            best_forward_s = min(best_forward_s, scored - started)
            best_scoring_s = min(best_scoring_s, time.perf_counter() - scored)
        forward_s, scoring_s = forward_s + best_forward_s, scoring_s + best_scoring_s
    return forward_s, scoring_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.familiarity", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, help="classifier checkpoint")
    parser.add_argument("--heldout-fields", type=int, default=10, help="held-out synthetic 2048 px fields")
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED, help="seed of the held-out synthetic fields")
    parser.add_argument("--real", type=Path, default=SHARED_DIR / "data" / "real", help="the real fields")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    predictor = Predictor.from_checkpoint(args.model, device="cpu")
    if predictor.familiarity is None:
        print(f"{args.model} has no familiarity block; add one with `python -m ml fit-familiarity`.", file=sys.stderr)
        return 2
    segmenter = Segmenter("classical")
    heldout = {
        f"synthetic {index}": read_field(paths)
        for index, paths in enumerate(synthetic_fields(count=args.heldout_fields, size_px=2048, seed=args.seed))
    }
    with tempfile.TemporaryDirectory() as folder:
        copy_real_fields(args.real, Path(folder) / "real")
        real = {name: read_field(paths) for name, paths in sorted(find_fields(Path(folder) / "real").items())}
    heldout_crops = field_crops(heldout, segmenter=segmenter, size_px=predictor.input_size_px)
    real_crops = field_crops(real, segmenter=segmenter, size_px=predictor.input_size_px)

    def scored(crops: dict[str, CellCrops]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        predictions = {name: predictor.predict_cells(field) for name, field in crops.items()}
        return {name: (p.familiarity, p.unfamiliar) for name, p in predictions.items()}

    heldout_scores, real_scores = scored(heldout_crops), scored(real_crops)
    model, checkpoint = load_classifier_checkpoint(args.model)
    undescribed = Predictor(model, {**checkpoint, "familiarity": None}, device=torch.device("cpu"))
    all_crops = [*heldout_crops.values(), *real_crops.values()]
    for warming in (undescribed, predictor):  # thread pools, allocations
        warming.predict_cells(all_crops[0])
    without_s, with_s = classification_seconds([undescribed, predictor], all_crops)
    forward_s, scoring_s = scoring_seconds(predictor, all_crops)

    familiarity = predictor.familiarity
    thresholds = ", ".join(
        f"{name} {value:.2f}" for name, value in zip(familiarity.layer_names, familiarity.thresholds, strict=True)
    )
    print(
        f"## Unfamiliar cells: {predictor.name}, {familiarity.percentile:g}th percentile of "
        f"{familiarity.training_cells} training cells (distance thresholds: {thresholds})\n"
    )
    print("| fields | cells | flagged unfamiliar | median familiarity |")
    print("| --- | ---: | ---: | ---: |")

    def row(name: str, scores: list[tuple[np.ndarray, np.ndarray]]) -> None:
        values = np.concatenate([s for s, _ in scores])
        flags = np.concatenate([f for _, f in scores])
        share = f"{flags.mean():.1%}" if len(flags) else "-"
        median = f"{np.median(values):.3f}" if len(values) else "-"
        print(f"| {name} | {len(flags)} | {share} | {median} |")

    row(f"held-out synthetic, {len(heldout)} fields (seed {args.seed})", list(heldout_scores.values()))
    for name, scores in real_scores.items():
        channels = "blue, green" if real[name].red is None else "4 channels"
        row(f"real {name} ({channels})", [scores])
    row(f"real, all {len(real)} fields", list(real_scores.values()))

    real_familiarity = np.concatenate([s for s, _ in real_scores.values()])
    heldout_familiarity = np.concatenate([s for s, _ in heldout_scores.values()])
    # Real cells are the positives; the less familiar a cell, the more it looks real.
    separation = auroc(-real_familiarity, -heldout_familiarity)
    cells = sum(len(c) for c in all_crops)
    print(f"\nAUROC of familiarity, real against held-out synthetic cells: {separation:.3f}")

    def distances(crops: dict[str, CellCrops]) -> np.ndarray:
        return np.concatenate(
            [familiarity.distances(predictor.predict_crops_and_features(c.images)[1]) for c in crops.values()]
        )

    real_distances, heldout_distances = distances(real_crops), distances(heldout_crops)
    per_layer = ", ".join(
        f"{name} {auroc(real_distances[:, row], heldout_distances[:, row]):.3f}"
        for row, name in enumerate(familiarity.layer_names)
    )
    print(f"AUROC of each layer's distance alone (for reading only; nothing is chosen by it): {per_layer}")
    print(
        f"Classification of {cells} cells (CPU, {args.threads} thread(s), each field the best of {TIMING_REPEATS}): "
        f"{without_s:.2f} s without familiarity, {with_s:.2f} s with ({with_s / without_s - 1:+.1%}); "
        f"of the forward passes ({forward_s:.2f} s), scoring familiarity took {scoring_s * 1e3:.1f} ms "
        f"({scoring_s / forward_s:.2%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
