"""Classifier packages as `CellClassifierModel`s: crops in, the package's known probabilities out."""

import numpy as np
import pytest

from ml.bioimageio import BioimageioClassifier, ModelImportError, import_classifier, open_package
from ml.classifier.base import CellClassifierModel
from ml.classifier.predictor import blend, pool_cells
from ml.constants import CLASS_NAMES
from ml.crops import CellCrops
from tests.ml.bioimageio import support
from tests.ml.bioimageio.support import SIZE_PX, expected_probabilities

bioimageio_packages = support.bioimageio_packages  # the session's packages (a fixture)

CROPS = np.random.default_rng(5).random((3, 4, SIZE_PX, SIZE_PX), dtype=np.float32)


def cell_crops(images: np.ndarray) -> CellCrops:
    count = len(images)
    return CellCrops(
        cell_ids=np.arange(1, count + 1),
        bboxes=np.zeros((count, 4), dtype=np.int64),
        areas_px=np.ones(count, dtype=np.int64),
        images=images,
    )


def test_a_torchscript_package_predicts_its_known_probabilities(bioimageio_packages):
    classifier = import_classifier(bioimageio_packages.torchscript_zip, device="cpu")
    assert isinstance(classifier, CellClassifierModel)
    np.testing.assert_allclose(classifier.predict_crops(CROPS), expected_probabilities(CROPS), atol=1e-6)


def test_an_onnx_package_with_channels_last_predicts_the_same(bioimageio_packages):
    classifier = import_classifier(bioimageio_packages.onnx_folder, device="cpu")
    np.testing.assert_allclose(classifier.predict_crops(CROPS), expected_probabilities(CROPS), atol=1e-6)


def test_crops_of_another_size_are_resized_to_the_package_input(bioimageio_packages):
    classifier = import_classifier(bioimageio_packages.torchscript_zip, device="cpu")
    constant = np.full((2, 4, 2 * SIZE_PX, 2 * SIZE_PX), 0.5, dtype=np.float32)
    np.testing.assert_allclose(
        classifier.predict_crops(constant), expected_probabilities(constant[:, :, :SIZE_PX, :SIZE_PX]), atol=1e-6
    )


def test_cells_are_pooled_by_mean_and_blended_at_0_7(bioimageio_packages):
    classifier = import_classifier(bioimageio_packages.torchscript_zip, device="cpu")
    predictions = classifier.predict_cells(cell_crops(CROPS))
    cells = expected_probabilities(CROPS)
    image = pool_cells(cells, pooling="mean")
    np.testing.assert_allclose(predictions.image_probabilities, image, atol=1e-6)
    np.testing.assert_allclose(predictions.final_probabilities, blend(cells, image, cell_weight=0.7), atol=1e-6)


def test_the_description_names_the_package(bioimageio_packages):
    description = import_classifier(bioimageio_packages.torchscript_zip, device="cpu").description
    assert (description.name, description.version, description.format) == (
        "tiny linear classifier",
        "1.2",
        "bioimage.io",
    )
    assert description.architecture == "TorchScript"
    assert description.input_size_px == SIZE_PX
    assert description.class_names == CLASS_NAMES
    assert description.summary == "A linear function of the channel means."
    assert description.card.startswith("# Tiny classifier")


def test_a_mapping_picks_classes_of_a_package_with_too_many(bioimageio_packages):
    classifier = import_classifier(
        bioimageio_packages.too_many_classes, class_mapping={0: "nucleoplasm", 3: "Nucleoli_fibrillar_center"}
    )
    probabilities = classifier.predict_crops(CROPS)
    expected = expected_probabilities(CROPS)
    np.testing.assert_allclose(probabilities[:, [0, 3]], expected[:, [0, 3]], atol=1e-6)
    assert np.count_nonzero(probabilities[:, [1, 2, *range(4, 19)]]) == 0
    assert classifier.description.class_names == ("Nucleoplasm", "Nucleoli fibrillar center")


def test_a_mapping_to_an_unknown_class_is_refused(bioimageio_packages):
    with pytest.raises(ModelImportError) as raised, open_package(bioimageio_packages.torchscript_zip) as package:
        BioimageioClassifier(package, class_mapping={0: "Ribosomes"})
    assert str(raised.value) == (
        "The class mapping names 'Ribosomes', which is not one of the 19 HPA classes "
        "(Nucleoplasm, Nuclear membrane, Nucleoli, ...)."
    )
