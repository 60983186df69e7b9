"""`ClassicalClassifier`: texture features + a scikit-learn estimator, as a `CellClassifierModel`.

Saved as a skops file (`.skops`): a zip of plain data that `skops.io.load` rebuilds without running
code from the file, unlike pickle or joblib. Loading accepts only the types scikit-learn's SVM and
random forest pipelines need; scikit-learn's tree storage is among them, and since it indexes its
node arrays unchecked, every tree's arrays are checked against its own sizes before it is used,
so a crafted file is refused instead of reading out of bounds.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.classical.features import FEATURE_COUNTS, FEATURE_SETS, crop_features
from ml.classifier.base import CellPredictions, ModelDescription
from ml.constants import CLASS_NAMES, NUM_CLASSES
from ml.crops import CellCrops
from ml.measure.texture import TEXTURE_SIZE_PX

SUFFIX = ".skops"
FORMAT = "hpaweb-classical"
FORMAT_VERSION = 1
ESTIMATORS: tuple[str, ...] = ("svm", "forest")
# Types beyond skops' default trusted set that these pipelines hold: Platt calibration of the SVM,
# and the forest's trees (checked by `_check_trees`).
_TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.tree._tree.Tree",
)
# Image-level probabilities pool the cells by their maximum, and a cell's final score blends its own with them.
BLEND_CELL_WEIGHT = 0.7


class ClassicalModelError(ValueError):
    """A classical classifier file cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class ClassicalModel:
    """What a `.skops` file holds: the fitted estimator and what it was trained on."""

    estimator: object  # a fitted scikit-learn pipeline with predict_proba
    estimator_kind: str  # one of ESTIMATORS
    feature_set: str  # one of FEATURE_SETS
    classes: tuple[int, ...]  # HPA label of each predict_proba column
    name: str
    version: str
    summary: str
    metrics: dict
    data: dict


def save_classical(path: str | Path, model: ClassicalModel) -> None:
    import skops.io as sio

    sio.dump(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "estimator": model.estimator,
            "estimator_kind": model.estimator_kind,
            "feature_set": model.feature_set,
            "classes": [int(label) for label in model.classes],
            "name": model.name,
            "version": model.version,
            "summary": model.summary,
            "metrics": model.metrics,
            "data": model.data,
        },
        Path(path),
    )


def load_classical(path: str | Path) -> ClassicalModel:
    """The model of a `.skops` file; refuses anything but a classical classifier written by `save_classical`."""
    import skops.io as sio

    path = Path(path)
    try:
        untrusted = set(sio.get_untrusted_types(file=path)) - set(_TRUSTED_TYPES)
        if untrusted:
            raise ClassicalModelError(
                f"{path.name} holds types a classical classifier never has ({sorted(untrusted)[0]}); "
                "train it with `python -m ml train-classical`."
            )
        content = sio.load(path, trusted=list(_TRUSTED_TYPES))
    except ClassicalModelError:
        raise
    except Exception as error:  # skops raises many kinds on a damaged file
        raise ClassicalModelError(f"{path.name} is not a readable classical classifier file ({error}).") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ClassicalModelError(
            f"{path.name} is not a classical classifier; write one with `python -m ml train-classical`."
        )
    if content.get("format_version") != FORMAT_VERSION:
        raise ClassicalModelError(
            f"{path.name} is a classical classifier of format version {content.get('format_version')}; this "
            f"version reads {FORMAT_VERSION}. Train it again with `python -m ml train-classical`."
        )
    estimator, feature_set = content["estimator"], content["feature_set"]
    classes = tuple(int(label) for label in content["classes"])
    if feature_set not in FEATURE_SETS or not classes or any(not 0 <= label < NUM_CLASSES for label in classes):
        raise ClassicalModelError(f"{path.name} names an unknown feature set or classes outside the 19 HPA classes.")
    if (
        not hasattr(estimator, "predict_proba")
        or getattr(estimator, "n_features_in_", None) != FEATURE_COUNTS[feature_set]
    ):
        raise ClassicalModelError(f"{path.name} does not hold an estimator for the {feature_set} features.")
    _check_trees(estimator, path)
    return ClassicalModel(
        estimator=estimator,
        estimator_kind=str(content.get("estimator_kind", "")),
        feature_set=feature_set,
        classes=classes,
        name=str(content.get("name", path.stem)),
        version=str(content.get("version", "1")),
        summary=str(content.get("summary", "")),
        metrics=dict(content.get("metrics") or {}),
        data=dict(content.get("data") or {}),
    )


def _check_trees(estimator, path: Path) -> None:
    """Refuse trees whose node arrays point outside themselves (scikit-learn does not check them)."""
    steps = getattr(estimator, "steps", [(None, estimator)])
    for _, step in steps:
        for tree_estimator in getattr(step, "estimators_", []) or []:
            tree = getattr(tree_estimator, "tree_", None)
            if tree is None:
                continue
            nodes = tree.node_count
            left, right, feature = tree.children_left, tree.children_right, tree.feature
            leaves = left == -1
            valid = (
                len(left) == len(right) == len(feature) == nodes
                and tree.value.shape[0] == nodes
                and np.all((left == -1) == (right == -1))
                and np.all(left[~leaves] > np.arange(nodes)[~leaves])
                and np.all(right[~leaves] > np.arange(nodes)[~leaves])
                and np.all(left < nodes)
                and np.all(right < nodes)
                and np.all(feature[~leaves] >= 0)
                and np.all(feature[~leaves] < tree.n_features)
                and tree.n_features == getattr(estimator, "n_features_in_", tree.n_features)
            )
            if not valid:
                raise ClassicalModelError(f"{path.name} holds a damaged decision tree; train the model again.")


class ClassicalClassifier:
    """Texture features of each crop through the estimator; probabilities for the 19 classes (a class the
    model never saw gets 0), pooled per field by their maximum and blended like the CNN's."""

    def __init__(self, model: ClassicalModel, *, path: str | Path = "") -> None:
        self.model = model
        self.description = ModelDescription(
            name=model.name,
            version=model.version,
            format=FORMAT,
            architecture=f"{model.estimator_kind} on {model.feature_set} features ({FEATURE_COUNTS[model.feature_set]})",
            input_size_px=TEXTURE_SIZE_PX,
            class_names=CLASS_NAMES,
            summary=model.summary,
            card=_card(model),
            metrics=model.metrics,
            data=model.data,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "ClassicalClassifier":
        return cls(load_classical(path), path=path)

    @property
    def name(self) -> str:
        return self.description.name

    @property
    def input_size_px(self) -> int:
        return TEXTURE_SIZE_PX

    def predict_crops(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, 19) probabilities of crops (N, 4, S, S)."""
        probabilities = np.zeros((len(images), NUM_CLASSES), dtype=np.float32)
        if len(images):
            columns = self.model.estimator.predict_proba(crop_features(images, self.model.feature_set))
            probabilities[:, list(self.model.classes)] = columns
        return probabilities

    def predict_cells(self, crops: CellCrops) -> CellPredictions:
        cell_probabilities = self.predict_crops(crops.images)
        image = cell_probabilities.max(axis=0) if len(cell_probabilities) else np.zeros(NUM_CLASSES, np.float32)
        final = BLEND_CELL_WEIGHT * cell_probabilities + (1 - BLEND_CELL_WEIGHT) * image[None]
        return CellPredictions(
            cell_probabilities=cell_probabilities,
            image_probabilities=image.astype(np.float32),
            final_probabilities=final.astype(np.float32),
        )


def _card(model: ClassicalModel) -> str:
    lines = [
        f"# {model.name}",
        "",
        model.summary,
        "",
        f"A {'support vector machine with a cubic polynomial kernel' if model.estimator_kind == 'svm' else 'random forest'} "
        f"on the {model.feature_set} texture features of the protein channel (`ml.measure.texture`), "
        f"trained by `python -m ml train-classical` on {model.data.get('cells', '?')} single-label cells.",
    ]
    if model.metrics:
        lines += [
            "",
            "Metrics: "
            + ", ".join(f"{key} {value}" for key, value in model.metrics.items() if not isinstance(value, list)),
        ]
    return "\n".join(lines)
