"""Tiny bioimage.io packages with known outputs, built with bioimageio.spec once per test session.

The classifiers' logits are a fixed linear function of the crop's channel means
(`expected_probabilities`); the segmentation pair thresholds the blue (nuclei) and red (cell)
channels. Import `bioimageio_packages` into a test module to use them.
"""

import shutil
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from bioimageio.spec import ValidationContext, save_bioimageio_package
from bioimageio.spec.model import v0_5
from onnx import TensorProto, helper
from torch import nn

from ml.constants import CHANNELS, CLASS_NAMES

SIZE_PX = 32
GAIN = 2.0  # the classifiers' declared scale_linear pre-processing
WEIGHTS = np.random.default_rng(7).normal(size=(4, 19)).astype(np.float32)
BIAS = np.linspace(-1, 1, 19, dtype=np.float32)
# The packages name classes with underscores, as identifiers; the product ignores them.
PACKAGE_CLASS_NAMES = [name.replace(" ", "_") for name in CLASS_NAMES]


def expected_probabilities(crops: np.ndarray) -> np.ndarray:
    """sigmoid(mean over pixels of (GAIN * crop) @ WEIGHTS + BIAS), (N, 19): what every classifier gives."""
    logits = (GAIN * crops).mean(axis=(2, 3)) @ WEIGHTS + BIAS
    return (1 / (1 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


class LinearOfMeans(nn.Module):
    def __init__(self, outputs: int = 19) -> None:
        super().__init__()
        weights = np.zeros((4, outputs), dtype=np.float32)
        weights[:, : min(outputs, 19)] = WEIGHTS[:, : min(outputs, 19)]
        self.register_buffer("weights", torch.from_numpy(weights))
        self.register_buffer("bias", torch.from_numpy(np.resize(BIAS, outputs)))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return crops.mean(dim=(2, 3)) @ self.weights + self.bias


class Threshold(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (background, border, foreground) logits: foreground where channel > 0.25."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        foreground = 40 * (image[:, self.channel : self.channel + 1] - 0.25)
        return torch.cat([torch.zeros_like(foreground), torch.full_like(foreground, -40.0), foreground], dim=1)


@dataclass(frozen=True)
class Packages:
    torchscript_zip: Path  # format 0.5, bcyx, TorchScript
    onnx_folder: Path  # format 0.4, byxc, ONNX, class names in its config
    nuclei_zip: Path
    cell_zip: Path
    bad_rdf: Path
    mismatched_outputs: Path
    unknown_weights: Path
    pickle_only: Path
    too_many_classes: Path
    climbing_zip: Path


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(module.eval())


def _classifier_descr(source: Path, *, class_names: list[str], weights: v0_5.WeightsDescr) -> v0_5.ModelDescr:
    return v0_5.ModelDescr(
        name="tiny linear classifier",
        version=v0_5.Version("1.2"),
        description="A linear function of the channel means. Made for tests.",
        authors=[v0_5.Author(name="hpaweb tests")],
        cite=[v0_5.CiteEntry(text="hpaweb tests", doi=v0_5.Doi("10.1038/s41592-022-01606-z"))],
        license=v0_5.LicenseId("MIT"),
        documentation=v0_5.FileDescr(source=source / "README.md"),
        inputs=[
            v0_5.InputTensorDescr(
                id=v0_5.TensorId("crops"),
                axes=[
                    v0_5.BatchAxis(),
                    v0_5.ChannelAxis(channel_names=list(CHANNELS)),
                    v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=SIZE_PX),
                    v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=SIZE_PX),
                ],
                test_tensor=v0_5.FileDescr(source=source / "test_input.npy"),
                preprocessing=[v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=GAIN))],
            )
        ],
        outputs=[
            v0_5.OutputTensorDescr(
                id=v0_5.TensorId("scores"),
                axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=class_names)],
                test_tensor=v0_5.FileDescr(source=source / "test_output.npy"),
                postprocessing=[v0_5.SigmoidDescr()],
            )
        ],
        weights=weights,
    )


def _torchscript_classifier(root: Path, name: str, *, outputs: int = 19, wrong_output: bool = False) -> Path:
    source = root / f"{name}-source"
    source.mkdir()
    (source / "README.md").write_text("# Tiny classifier\n\n## Validation\n\nNone: it is a test.\n")
    network = _script(LinearOfMeans(outputs))
    network.save(str(source / "weights.pt"))
    test_input = np.random.default_rng(1).random((2, 4, SIZE_PX, SIZE_PX), dtype=np.float32)
    with torch.inference_mode():
        test_output = network(torch.from_numpy(GAIN * test_input)).sigmoid().numpy()
    np.save(source / "test_input.npy", test_input)
    np.save(source / "test_output.npy", 1 - test_output if wrong_output else test_output)
    class_names = PACKAGE_CLASS_NAMES + [f"extra_{index}" for index in range(outputs - 19)]
    weights = v0_5.WeightsDescr(
        torchscript=v0_5.TorchscriptWeightsDescr(source=source / "weights.pt", pytorch_version=v0_5.Version("2.4"))
    )
    with ValidationContext(root=source, perform_io_checks=True, log_warnings=False):
        description = _classifier_descr(source, class_names=class_names[:outputs], weights=weights)
    return save_bioimageio_package(description, output_path=root / f"{name}.zip")


def _pickle_only(root: Path) -> Path:
    source = root / "pickle-source"
    source.mkdir()
    (source / "README.md").write_text("# Pickled\n")
    torch.save(LinearOfMeans().state_dict(), source / "weights.pth")
    test_input = np.random.default_rng(1).random((1, 4, SIZE_PX, SIZE_PX), dtype=np.float32)
    np.save(source / "test_input.npy", test_input)
    np.save(source / "test_output.npy", expected_probabilities(test_input))
    weights = v0_5.WeightsDescr(
        pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
            source=source / "weights.pth",
            architecture=v0_5.ArchitectureFromLibraryDescr(callable="LinearOfMeans", import_from="tiny_models"),
            pytorch_version=v0_5.Version("2.4"),
        )
    )
    with ValidationContext(root=source, perform_io_checks=True, log_warnings=False):
        description = _classifier_descr(source, class_names=PACKAGE_CLASS_NAMES, weights=weights)
    return save_bioimageio_package(description, output_path=root / "pickle-only.zip")


ONNX_RDF_0_4 = """\
format_version: 0.4.10
type: model
name: tiny onnx classifier
description: The same linear function of the channel means, channels last, as ONNX.
authors:
  - name: hpaweb tests
cite:
  - text: hpaweb tests
    doi: 10.1038/s41592-022-01606-z
license: MIT
documentation: README.md
timestamp: "2024-01-01T00:00:00"
inputs:
  - name: crops
    axes: byxc
    data_type: float32
    shape: [1, {size}, {size}, 4]
    preprocessing:
      - name: scale_linear
        kwargs: {{gain: {gain}, offset: 0.0}}
outputs:
  - name: scores
    axes: bc
    data_type: float32
    shape: [1, 19]
    postprocessing:
      - name: sigmoid
test_inputs: [test_input.npy]
test_outputs: [test_output.npy]
weights:
  onnx:
    source: weights.onnx
    sha256: {sha256}
    opset_version: 13
config:
  hpaweb:
    class_names: {classes}
"""


def _onnx_classifier(root: Path) -> Path:
    import hashlib
    import json

    folder = root / "onnx-0.4"
    folder.mkdir()
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["crops"], ["means"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["means", "weights"], ["products"]),
            helper.make_node("Add", ["products", "bias"], ["scores"]),
        ],
        "linear_of_means",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", SIZE_PX, SIZE_PX, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 19])],
        initializer=[
            helper.make_tensor("weights", TensorProto.FLOAT, WEIGHTS.shape, WEIGHTS.ravel()),
            helper.make_tensor("bias", TensorProto.FLOAT, BIAS.shape, BIAS),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "weights.onnx")
    test_input = np.random.default_rng(2).random((1, 4, SIZE_PX, SIZE_PX), dtype=np.float32)
    np.save(folder / "test_input.npy", np.ascontiguousarray(test_input.transpose(0, 2, 3, 1)))
    np.save(folder / "test_output.npy", expected_probabilities(test_input))
    (folder / "README.md").write_text("# Tiny ONNX classifier\n\n## Validation\n\nNone.\n")
    (folder / "rdf.yaml").write_text(
        ONNX_RDF_0_4.format(
            size=SIZE_PX,
            gain=GAIN,
            sha256=hashlib.sha256((folder / "weights.onnx").read_bytes()).hexdigest(),
            classes=json.dumps(list(CLASS_NAMES)),
        )
    )
    return folder


def _segmentation(root: Path, name: str, *, channel: int) -> Path:
    source = root / f"{name}-source"
    source.mkdir()
    (source / "README.md").write_text(f"# Tiny {name} segmentation\n\n## Validation\n\nNone.\n")
    network = _script(Threshold(channel))
    network.save(str(source / "weights.pt"))
    test_input = np.random.default_rng(3).random((1, 3, 64, 64), dtype=np.float32)
    with torch.inference_mode():
        test_output = network(torch.from_numpy(test_input)).softmax(dim=1).numpy()
    np.save(source / "test_input.npy", test_input)
    np.save(source / "test_output.npy", test_output)
    image = v0_5.TensorId("image")
    with ValidationContext(root=source, perform_io_checks=True, log_warnings=False):
        description = v0_5.ModelDescr(
            name=f"tiny {name} segmentation",
            description=f"Foreground where channel {channel} exceeds 0.25. Made for tests.",
            authors=[v0_5.Author(name="hpaweb tests")],
            cite=[v0_5.CiteEntry(text="hpaweb tests", doi=v0_5.Doi("10.1038/s41592-022-01606-z"))],
            license=v0_5.LicenseId("MIT"),
            documentation=v0_5.FileDescr(source=source / "README.md"),
            inputs=[
                v0_5.InputTensorDescr(
                    id=image,
                    axes=[
                        v0_5.BatchAxis(),
                        v0_5.ChannelAxis(channel_names=["c0", "c1", "c2"]),
                        v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=v0_5.ParameterizedSize(min=64, step=32)),
                        v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=v0_5.ParameterizedSize(min=64, step=32)),
                    ],
                    test_tensor=v0_5.FileDescr(source=source / "test_input.npy"),
                )
            ],
            outputs=[
                v0_5.OutputTensorDescr(
                    id=v0_5.TensorId("maps"),
                    axes=[
                        v0_5.BatchAxis(),
                        v0_5.ChannelAxis(channel_names=["background", "border", "foreground"]),
                        v0_5.SpaceOutputAxis(
                            id=v0_5.AxisId("y"), size=v0_5.SizeReference(tensor_id=image, axis_id=v0_5.AxisId("y"))
                        ),
                        v0_5.SpaceOutputAxis(
                            id=v0_5.AxisId("x"), size=v0_5.SizeReference(tensor_id=image, axis_id=v0_5.AxisId("x"))
                        ),
                    ],
                    test_tensor=v0_5.FileDescr(source=source / "test_output.npy"),
                    postprocessing=[v0_5.SoftmaxDescr()],
                )
            ],
            weights=v0_5.WeightsDescr(
                torchscript=v0_5.TorchscriptWeightsDescr(
                    source=source / "weights.pt", pytorch_version=v0_5.Version("2.4")
                )
            ),
        )
    return save_bioimageio_package(description, output_path=root / f"{name}.zip")


def _unpacked(zip_path: Path, folder: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder)
    return folder


def build_packages(root: Path) -> Packages:
    torchscript_zip = _torchscript_classifier(root, "torchscript")
    bad_rdf = _unpacked(torchscript_zip, root / "bad-rdf")
    (bad_rdf / "rdf.yaml").write_text("format_version: 0.5.4\ntype: model\nname: broken model\n")
    unknown_weights = _unpacked(torchscript_zip, root / "unknown-weights")
    rdf = unknown_weights / "rdf.yaml"
    rdf.write_text(rdf.read_text().replace("  torchscript:", "  caffe_model:"))
    climbing_zip = root / "climbing.zip"
    with zipfile.ZipFile(climbing_zip, "w") as archive, zipfile.ZipFile(torchscript_zip) as original:
        for entry in original.namelist():
            archive.writestr(entry, original.read(entry))
        archive.writestr("../outside.txt", "escaped")
    return Packages(
        torchscript_zip=torchscript_zip,
        onnx_folder=_onnx_classifier(root),
        nuclei_zip=_segmentation(root, "nuclei", channel=2),
        cell_zip=_segmentation(root, "cell", channel=0),
        bad_rdf=bad_rdf,
        mismatched_outputs=_torchscript_classifier(root, "mismatched", wrong_output=True),
        unknown_weights=unknown_weights,
        pickle_only=_pickle_only(root),
        too_many_classes=_torchscript_classifier(root, "too-many", outputs=25),
        climbing_zip=climbing_zip,
    )


_BUILT: dict[str, Packages] = {}


def session_packages(tmp_path_factory) -> Packages:
    """Every test package, built once per session whichever test modules ask for it."""
    if "packages" not in _BUILT:
        _BUILT["packages"] = build_packages(tmp_path_factory.mktemp("bioimageio"))
    return _BUILT["packages"]


@pytest.fixture(scope="session")
def bioimageio_packages(tmp_path_factory) -> Packages:
    return session_packages(tmp_path_factory)


def copy_package(path: Path, destination: Path) -> Path:
    """A copy a test may change."""
    if path.is_dir():
        return Path(shutil.copytree(path, destination))
    return Path(shutil.copyfile(path, destination))
