import numpy as np
import pytest
import skops.io as sio

from ml.classical.classifier import ClassicalClassifier, ClassicalModelError, load_classical, save_classical
from ml.classical.features import FEATURE_COUNTS, crop_features
from ml.classical.training import LabelledCells, train_classical
from ml.classifier.base import CellClassifierModel
from ml.classifier.loading import load_classifier
from ml.crops import crop_cells
from tests.ml.support import draw_field


def _cells(count: int = 24, seed: int = 0) -> LabelledCells:
    """Crops of two kinds of cell: fine noise (class 0, Nucleoplasm) or coarse blobs (class 16, Cytosol)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    drawn = draw_field()
    crops, labels = [], []
    for index in range(count):
        label = 0 if index % 2 == 0 else 16
        noise = rng.random(drawn.field.green.shape).astype(np.float32)
        texture = noise if label == 0 else ndimage.gaussian_filter(noise, 4) * 4
        stack = drawn.field.stack()
        stack[1] = np.clip(texture, 0, 1) * (drawn.cell_labels > 0)
        crops.append(crop_cells(stack, drawn.cell_labels, size_px=128).images[:1])
        labels.append((label,))
    return LabelledCells(crops=np.concatenate(crops), labels=labels, field_ids=[str(i) for i in range(count)])


def test_crop_features_have_the_documented_widths():
    cells = _cells(count=2)
    for feature_set, width in FEATURE_COUNTS.items():
        assert crop_features(cells.crops, feature_set).shape == (2, width)
    with pytest.raises(ValueError, match="Unknown feature set"):
        crop_features(cells.crops, "colour")


@pytest.mark.parametrize("kind", ["svm", "forest"])
def test_a_trained_classifier_round_trips_through_its_file_and_the_loader(tmp_path, kind):
    model = train_classical(_cells(), kind=kind, feature_set="haralick", name="texture-test")
    assert model.classes == (0, 16) and model.metrics["train_accuracy"] == 1.0
    path = tmp_path / "model.skops"
    save_classical(path, model)
    classifier = load_classifier(path)
    assert isinstance(classifier, ClassicalClassifier) and isinstance(classifier, CellClassifierModel)
    assert classifier.description.format == "hpaweb-classical" and classifier.input_size_px == 128
    held_out = _cells(count=6, seed=1)
    probabilities = classifier.predict_crops(held_out.crops)
    assert probabilities.shape == (6, 19)
    np.testing.assert_allclose(probabilities[:, [0, 16]].sum(axis=1), 1.0, atol=1e-6)
    assert probabilities[:, [c for c in range(19) if c not in (0, 16)]].max() == 0
    assert list(probabilities.argmax(axis=1)) == [label for (label,) in held_out.labels]


def test_predict_cells_pools_and_blends_like_the_cnn(tmp_path):
    path = tmp_path / "model.skops"
    save_classical(path, train_classical(_cells(), kind="svm", feature_set="lbp", name="lbp-test"))
    classifier = ClassicalClassifier.from_file(path)
    drawn = draw_field()
    predictions = classifier.predict_cells(crop_cells(drawn.field.stack(), drawn.cell_labels, size_px=128))
    image = predictions.cell_probabilities.max(axis=0)
    np.testing.assert_allclose(predictions.image_probabilities, image)
    np.testing.assert_allclose(
        predictions.final_probabilities, 0.7 * predictions.cell_probabilities + 0.3 * image, atol=1e-6
    )


def test_loading_refuses_files_with_other_types(tmp_path):
    import os

    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "evil.skops"
    sio.dump({"format": "hpaweb-classical", "estimator": FunctionTransformer(os.system)}, path)
    with pytest.raises(ClassicalModelError, match="holds types a classical classifier never has"):
        load_classical(path)
    (tmp_path / "broken.skops").write_bytes(b"not a zip")
    with pytest.raises(ClassicalModelError, match="not a readable classical classifier"):
        load_classical(tmp_path / "broken.skops")


def test_loading_refuses_a_forest_whose_tree_points_outside_itself(tmp_path):
    model = train_classical(_cells(), kind="forest", feature_set="haralick", name="forest-test")
    tree = model.estimator.steps[-1][1].estimators_[0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    internal = np.flatnonzero(nodes["left_child"] != -1)
    if len(internal):
        nodes["left_child"][internal[0]] = 10_000
    else:
        nodes["feature"][0] = 10_000
        nodes["left_child"][0], nodes["right_child"][0] = 10_000, 10_001
    state["nodes"] = nodes
    tree.__setstate__(state)
    path = tmp_path / "damaged.skops"
    save_classical(path, model)
    with pytest.raises(ClassicalModelError, match="damaged decision tree"):
        load_classical(path)


def test_training_needs_single_label_cells_of_two_classes():
    from ml.io import InputError

    cells = _cells(count=12)
    with pytest.raises(InputError, match="exactly one label"):
        train_classical(
            LabelledCells(crops=cells.crops, labels=[(0, 16)] * 12, field_ids=cells.field_ids),
            kind="svm",
            feature_set="haralick",
            name="x",
        )
    with pytest.raises(InputError, match="at least two classes"):
        train_classical(
            LabelledCells(crops=cells.crops, labels=[(0,)] * 12, field_ids=cells.field_ids),
            kind="svm",
            feature_set="haralick",
            name="x",
        )
