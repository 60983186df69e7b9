"""`python -m ml export-model`: a checkpoint as a valid bioimage.io 0.5 package that imports back."""

import zipfile

import numpy as np
import pytest

from ml import constants
from ml.bioimageio import import_classifier, open_package
from ml.classifier.predictor import Predictor
from ml.cli import main
from ml.constants import CLASS_NAMES


def test_export_model_writes_a_valid_package_that_predicts_what_the_checkpoint_does(tiny_checkpoint, tmp_path):
    out = tmp_path / "exported" / "model.zip"
    assert main(["export-model", str(tiny_checkpoint), "--out", str(out)]) == 0
    with open_package(out) as package:
        description = package.description
        assert package.format_version.startswith("0.5")
        assert package.weights_format == "torchscript"
        assert description.outputs[0].axes[1].channel_names == list(CLASS_NAMES)
        assert str(description.inputs[0].preprocessing[-2].id) == "fixed_zero_mean_unit_variance"
    assert sorted(zipfile.ZipFile(out).namelist()) == [
        "README.md",
        "rdf.yaml",
        "test_input.npy",
        "test_output.npy",
        "weights.pt",
    ]
    assert [path.name for path in out.parent.iterdir()] == ["model.zip"]  # nothing left behind
    native = Predictor.from_checkpoint(tiny_checkpoint, device="cpu")
    imported = import_classifier(out, device="cpu")
    crops = np.random.default_rng(3).random((4, 4, native.input_size_px, native.input_size_px), dtype=np.float32)
    np.testing.assert_allclose(imported.predict_crops(crops), native.predict_crops(crops), atol=1e-5)


@pytest.mark.slow
def test_the_shipped_model_round_trips(tmp_path):
    out = tmp_path / "shipped.zip"
    assert main(["export-model", str(constants.DEFAULT_MODEL_PATH), "--out", str(out)]) == 0
    native = Predictor.from_checkpoint(constants.DEFAULT_MODEL_PATH, device="cpu")
    imported = import_classifier(out, device="cpu")
    crops = np.random.default_rng(4).random((16, 4, 96, 96), dtype=np.float32)
    np.testing.assert_allclose(imported.predict_crops(crops), native.predict_crops(crops), atol=1e-5)
    assert imported.description.input_size_px == 96


def test_export_model_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert main(["export-model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "model.zip")]) == 2
    assert capsys.readouterr().err.strip()
    assert not (tmp_path / "model.zip").exists()
