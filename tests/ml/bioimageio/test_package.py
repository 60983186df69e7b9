"""Reading and checking packages: each broken package is refused with a sentence."""

import pytest

from ml.bioimageio import ModelImportError, PackageLimits, check_package, open_package, read_package
from tests.ml.bioimageio import support

bioimageio_packages = support.bioimageio_packages  # the session's packages (a fixture)


def refusal(path, **kwargs) -> str:
    with pytest.raises(ModelImportError) as raised, open_package(path, **kwargs) as package:
        check_package(package)
    return str(raised.value)


def test_a_valid_package_reads_in_its_written_format_and_chooses_torchscript(bioimageio_packages, tmp_path):
    package = read_package(bioimageio_packages.torchscript_zip, workdir=tmp_path)
    assert package.weights_format == "torchscript"
    assert package.format_version.startswith("0.5")
    assert package.name == "tiny linear classifier"


def test_a_format_0_4_package_is_converted_and_runs_its_onnx_weights(bioimageio_packages, tmp_path):
    package = read_package(bioimageio_packages.onnx_folder / "rdf.yaml", workdir=tmp_path)
    assert package.format_version.startswith("0.4")
    assert package.weights_format == "onnx"


def test_a_bad_rdf_is_refused(bioimageio_packages):
    assert refusal(bioimageio_packages.bad_rdf).startswith(
        "The rdf.yaml of bad-rdf is not a valid bioimage.io model description: inputs: Field required;"
    )


def test_test_outputs_that_do_not_match_are_refused(bioimageio_packages):
    assert refusal(bioimageio_packages.mismatched_outputs) == (
        "tiny linear classifier does not reproduce its own test output scores: 38 of 38 values differ by more "
        "than the tolerance (largest difference 0.947); the weights do not belong to this package or were "
        "exported wrongly."
    )


def test_an_unknown_weight_format_is_refused(bioimageio_packages):
    message = refusal(bioimageio_packages.unknown_weights)
    assert "weights.caffe_model: Extra inputs are not permitted." in message
    assert "this product runs torchscript and onnx weights only" in message


def test_a_pickle_only_package_is_refused_naming_the_accepted_formats(bioimageio_packages):
    assert refusal(bioimageio_packages.pickle_only) == (
        "pickle-only.zip holds only pytorch_state_dict weights, which this product never runs (they can execute "
        "arbitrary code); it accepts TorchScript (torchscript) and ONNX (onnx) weights only. Ask the model's "
        "authors for a package with one of these, or convert the weights yourself."
    )


def test_too_many_classes_without_a_mapping_are_refused(bioimageio_packages):
    assert refusal(bioimageio_packages.too_many_classes) == (
        "tiny linear classifier outputs 25 classes, more than the 19 HPA classes; give a class mapping from "
        'output index to HPA class name for the ones to use, such as {"0": "Nucleoplasm"}.'
    )


def test_a_zip_that_climbs_out_is_refused_before_anything_is_unpacked(bioimageio_packages, tmp_path):
    with pytest.raises(ModelImportError) as raised:
        read_package(bioimageio_packages.climbing_zip, workdir=tmp_path)
    assert str(raised.value) == (
        "climbing.zip was refused: the entry '../outside.txt' points outside the package ('..'); "
        "a package must not climb out of its folder."
    )
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "outside.txt").exists()


def test_a_package_over_the_size_limit_is_refused(bioimageio_packages, tmp_path):
    with pytest.raises(ModelImportError) as raised:
        read_package(
            bioimageio_packages.torchscript_zip, workdir=tmp_path, limits=PackageLimits(max_package_bytes=1000)
        )
    assert str(raised.value) == "torchscript.zip was refused: it is larger than the 1000 bytes a model package may be."
