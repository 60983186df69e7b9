"""`python -m ml import-model`: checks a package or checkpoint, describes it, stores it only when it passes."""

import json

from ml.cli import main
from tests.ml.bioimageio import support

bioimageio_packages = support.bioimageio_packages  # the session's packages (a fixture)


def test_import_model_describes_and_stores_a_checked_package(bioimageio_packages, tmp_path, capsys):
    store = tmp_path / "models"
    assert main(["import-model", str(bioimageio_packages.torchscript_zip), "--out", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == [
        "name: tiny linear classifier",
        "version: 1.2",
        "format: bioimage.io (TorchScript)",
        "kind: classifier",
        "input: 32 x 32 px",
    ]
    assert lines[5].startswith("classes (19): Nucleoplasm, Nuclear membrane,")
    assert [path.name for path in store.iterdir()] == ["tiny-linear-classifier-1.2.zip"]
    assert main(["import-model", str(store / "tiny-linear-classifier-1.2.zip")]) == 0


def test_import_model_takes_a_mapping_for_a_package_with_too_many_classes(bioimageio_packages, capsys):
    mapping = json.dumps({"0": "Nucleoplasm", "18": "Negative"})
    assert main(["import-model", str(bioimageio_packages.too_many_classes), "--mapping", mapping]) == 0
    assert "classes (2): Nucleoplasm, Negative" in capsys.readouterr().out


def test_import_model_describes_a_segmentation_package(bioimageio_packages, capsys):
    assert main(["import-model", str(bioimageio_packages.nuclei_zip)]) == 0
    assert "kind: segmentation" in capsys.readouterr().out


def test_import_model_describes_an_hpaweb_checkpoint(tiny_checkpoint, capsys):
    assert main(["import-model", str(tiny_checkpoint)]) == 0
    assert "format: hpaweb (cell-classifier)" in capsys.readouterr().out


def test_import_model_refuses_with_exit_2_and_stores_nothing(bioimageio_packages, tmp_path, capsys):
    store = tmp_path / "models"
    for broken in (
        bioimageio_packages.bad_rdf,
        bioimageio_packages.mismatched_outputs,
        bioimageio_packages.unknown_weights,
        bioimageio_packages.pickle_only,
        bioimageio_packages.too_many_classes,
        bioimageio_packages.climbing_zip,
    ):
        assert main(["import-model", str(broken), "--out", str(store)]) == 2
    messages = capsys.readouterr().err.splitlines()
    assert len(messages) == 6
    assert messages[3].startswith("pickle-only.zip holds only pytorch_state_dict weights")
    assert not store.exists()


def test_import_model_refuses_a_mapping_that_is_not_json(bioimageio_packages, capsys):
    assert main(["import-model", str(bioimageio_packages.too_many_classes), "--mapping", "0=Nucleoplasm"]) == 2
    assert capsys.readouterr().err.startswith("The class mapping is not valid JSON;")
