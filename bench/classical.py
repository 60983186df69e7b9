"""The seed's comparison of classical texture features + SVM against a CNN, on this product's synthetic cells.

Draws held-out synthetic fields (seed 1001 by default; the shipped CNN trained on seed 0) and
crops every true cell (true masks, so segmentation errors play no part) at 128 px. Single-label
cells are classified by a cubic-kernel SVM (standardised features, C=10, as `python -m ml
train-classical` builds it, without the probability calibration) on each feature set, scored
by stratified 10-fold cross-validation (mean +- std of the fold accuracies; classes with fewer
than 10 cells are left out). The SVM fitted on all single-label cells then ranks the
multi-label cells (never trained on) per class by its decision values: mAP = the mean over
classes present of sklearn's average precision. The CNN is the shipped model as it is (trained
on other synthetic fields; no cross-validation needed), scored on the same folds' cells.
Times are per cell on this machine's CPU: extraction = the features from the crops; classification
= the SVM's (or the CNN's) prediction from them.

    .venv/bin/python -m bench.classical [--fields 24] [--size 1024] [--seed 1001] [--folds 10]
"""

import argparse
import time

import numpy as np

from ml.classical.features import FEATURE_COUNTS, crop_features
from ml.constants import DEFAULT_MODEL_PATH, NUM_CLASSES
from ml.crops import crop_cells
from ml.measure.texture import TEXTURE_SIZE_PX
from ml.synth.field import synthesize_field

HELDOUT_SEED = 1001
METHODS: tuple[tuple[str, str], ...] = (
    ("LBP (P=16, R=2, uniform)", "lbp"),
    ("GLCM, 14 Haralick coefficients (d=2 px at 128 px)", "haralick"),
    ("wavelet scattering (J=4, L=8)", "scattering"),
    ("all features (LBP + Haralick + scattering)", "all"),
)
SEED_TABLE = (
    ("LBP (P=16, R=2)", "87.5 ± 1.3 %", "243", "0.34", "4.6e-5"),
    ("GLCM, 14 Haralick coefficients (d=16)", "82.6 ± 1.3 %", "14", "0.06", "2.3e-5"),
    ("wavelet scattering", "92.5 ± 1.3 %", "417", "0.9", "6.9e-5"),
    ("CNN (VGG16, GPU)", "95.2 ± 1.4 %", "", "1.6", "1.6e-3"),
)


def draw_cells(*, fields: int, size_px: int, seed: int) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """(crops (N, 4, 128, 128), classes of each cell) of every true cell of `fields` synthetic fields."""
    crops, classes = [], []
    for index in range(fields):
        field = synthesize_field(np.random.default_rng([seed, index]), size_px)
        cropped = crop_cells(field.image, field.cell_labels, size_px=TEXTURE_SIZE_PX)
        crops.append(cropped.images)
        classes += [field.cell_classes[int(cell_id) - 1] for cell_id in cropped.cell_ids]
    return np.concatenate(crops), classes


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    present = [column for column in range(targets.shape[1]) if 0 < targets[:, column].sum() < len(targets)]
    return float(np.mean([average_precision_score(targets[:, column], scores[:, column]) for column in present]))


def svm():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(kernel="poly", degree=3, C=10.0, gamma="scale", coef0=1.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.classical", description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=24)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED)
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument(
        "--model", default=str(DEFAULT_MODEL_PATH), help="the CNN to compare (default: the shipped one)"
    )
    args = parser.parse_args(argv)
    from sklearn.model_selection import StratifiedKFold

    crops, classes = draw_cells(fields=args.fields, size_px=args.size, seed=args.seed)
    single = np.array([len(c) == 1 for c in classes])
    labels = np.array([c[0] if len(c) == 1 else -1 for c in classes])
    counts = np.bincount(labels[single], minlength=NUM_CLASSES)
    kept = single & (counts[np.maximum(labels, 0)] >= args.folds)
    multi = np.array([len(c) > 1 for c in classes])
    multi_targets = np.zeros((int(multi.sum()), NUM_CLASSES))
    for row, cell in enumerate(np.flatnonzero(multi)):
        multi_targets[row, list(classes[cell])] = 1
    folds = list(StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0).split(crops[kept], labels[kept]))
    print(
        f"{len(classes)} cells of {args.fields} synthetic {args.size} px fields (seed {args.seed}): "
        f"{int(kept.sum())} single-label cells of {int((counts >= args.folds).sum())} classes in the "
        f"{args.folds}-fold CV ({int(single.sum() - kept.sum())} of rarer classes left out), {int(multi.sum())} multi-label cells.\n"
    )
    rows = []
    for title, feature_set in METHODS:
        started = time.perf_counter()
        features = crop_features(crops, feature_set)
        extraction_s = (time.perf_counter() - started) / len(crops)
        accuracies, predict_s = [], []
        x, y = features[kept], labels[kept]
        for train, test in folds:
            model = svm().fit(x[train], y[train])
            started = time.perf_counter()
            predicted = model.predict(x[test])
            predict_s.append((time.perf_counter() - started) / len(test))
            accuracies.append(float(np.mean(predicted == y[test])))
        model = svm().fit(x, y)
        decision = model.decision_function(features[multi])
        if decision.ndim == 1:  # two classes: one decision value
            decision = np.stack([-decision, decision], axis=1)
        # Classes the SVM never saw rank below every cell it scored.
        scores = np.full((int(multi.sum()), NUM_CLASSES), float(decision.min()) - 1.0 if decision.size else 0.0)
        scores[:, model.classes_] = decision
        rows.append(
            (
                title,
                f"{100 * np.mean(accuracies):.1f} ± {100 * np.std(accuracies):.1f} %",
                f"{mean_average_precision(multi_targets, scores):.3f}",
                str(FEATURE_COUNTS[feature_set]),
                f"{extraction_s:.2g}",
                f"{np.median(predict_s):.2g}",
            )
        )
        print(f"  {title}: done", flush=True)
    rows.append(_cnn_row(args.model, crops, labels, kept, folds, multi, multi_targets))
    print()
    print(
        f"| method | accuracy ({args.folds}-fold CV, single-label cells) | mAP (multi-label cells) | features | extraction s/cell | classification s/cell |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nThe seed's figures (fluorescence cell images, 10-fold stratified CV, SVM with a cubic kernel):\n")
    print("| method | accuracy | features | extraction s/cell | classification s/cell |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row in SEED_TABLE:
        print("| " + " | ".join(row) + " |")
    return 0


def _cnn_row(model_path, crops, labels, kept, folds, multi, multi_targets) -> tuple[str, ...]:
    from ml.classifier.predictor import Predictor

    predictor = Predictor.from_checkpoint(model_path, device="cpu")
    size = predictor.input_size_px
    if size != crops.shape[-1]:
        import torch

        resized = torch.nn.functional.interpolate(
            torch.from_numpy(crops), size=(size, size), mode="bilinear", antialias=True
        )
        crops = resized.numpy()
    predictor.predict_crops(crops[:8])  # warm-up
    started = time.perf_counter()
    probabilities = predictor.predict_crops(crops)
    classify_s = (time.perf_counter() - started) / len(crops)
    x_labels = labels[kept]
    predicted = probabilities[kept].argmax(axis=1)
    accuracies = [float(np.mean(predicted[test] == x_labels[test])) for _, test in folds]
    return (
        f"CNN: the shipped model ({predictor.name}, {predictor.description.architecture}, CPU)",
        f"{100 * np.mean(accuracies):.1f} ± {100 * np.std(accuracies):.1f} %",
        f"{mean_average_precision(multi_targets, probabilities[multi]):.3f}",
        "",
        "(in the forward pass)",
        f"{classify_s:.2g}",
    )


if __name__ == "__main__":
    raise SystemExit(main())
