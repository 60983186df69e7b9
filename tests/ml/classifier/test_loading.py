"""`load_classifier`: a `.pt` is an hpaweb checkpoint; a zip, folder or rdf.yaml a bioimage.io package."""

import numpy as np
import pytest

from ml.bioimageio import BioimageioClassifier, ModelImportError
from ml.classifier.loading import load_classifier
from ml.classifier.predictor import Predictor
from tests.ml.bioimageio import support
from tests.ml.bioimageio.support import SIZE_PX, expected_probabilities

bioimageio_packages = support.bioimageio_packages  # the session's packages (a fixture)

CROPS = np.random.default_rng(6).random((2, 4, SIZE_PX, SIZE_PX), dtype=np.float32)


def test_a_checkpoint_loads_as_a_predictor(tiny_checkpoint):
    assert isinstance(load_classifier(tiny_checkpoint, device="cpu"), Predictor)


@pytest.mark.parametrize("which", ["zip", "folder", "rdf"])
def test_a_package_loads_as_a_bioimageio_classifier(bioimageio_packages, which):
    path = {
        "zip": bioimageio_packages.torchscript_zip,
        "folder": bioimageio_packages.onnx_folder,
        "rdf": bioimageio_packages.onnx_folder / "rdf.yaml",
    }[which]
    classifier = load_classifier(path, device="cpu")
    assert isinstance(classifier, BioimageioClassifier)
    np.testing.assert_allclose(classifier.predict_crops(CROPS), expected_probabilities(CROPS), atol=1e-6)


def test_a_class_mapping_reaches_the_package(bioimageio_packages):
    classifier = load_classifier(bioimageio_packages.too_many_classes, device="cpu", class_mapping={2: "Nucleoli"})
    assert classifier.description.class_names == ("Nucleoli",)


def test_a_refused_package_raises_a_value_error_with_its_sentence(bioimageio_packages):
    with pytest.raises(ModelImportError, match="^pickle-only.zip holds only pytorch_state_dict weights"):
        load_classifier(bioimageio_packages.pickle_only, device="cpu")
    assert issubclass(ModelImportError, ValueError)
