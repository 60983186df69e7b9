"""Writing an hpaweb classifier checkpoint as a bioimage.io 0.5 model package other tools can run.

The package holds the classifier as TorchScript (crops in, 19 sigmoid probabilities out), the
checkpoint's per-channel normalisation declared as `fixed_zero_mean_unit_variance`, a test
input of crops and the test output the TorchScript makes of it, the 19 class names as the
output's channel names, the checkpoint's card as documentation, and the product's pooling and
blending under `config.hpaweb`, so that importing it back predicts what the checkpoint does.
The package is validated (bioimageio.spec, offline) and its test re-run before it replaces
`out_path`, atomically.
"""

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from bioimageio.spec import ValidationContext, save_bioimageio_package
from bioimageio.spec.model import v0_5
from torch import nn

from ml.bioimageio.package import ModelImportError, first_line, read_package
from ml.bioimageio.runtime import Network, check_test_tensors
from ml.checkpoints import load_classifier_checkpoint
from ml.classifier.predictor import describe_checkpoint
from ml.constants import CHANNELS, CLASS_NAMES
from ml.crops import normalize_crops

LICENSE = "MIT"
# The analysis of the HPA single-cell challenge whose task and classes the product follows.
CITATION_TEXT = (
    "Le, T. et al. Analysis of the Human Protein Atlas Weakly Supervised Single-Cell Classification "
    "competition. Nature Methods 19, 1221-1229 (2022)."
)
CITATION_DOI = "10.1038/s41592-022-01606-z"
TEST_CROP_COUNT = 2
TEST_SEED = 0


class ProbabilityNetwork(nn.Module):
    """The classifier with its sigmoid: normalised crops (N, 4, S, S) -> (N, 19) probabilities."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.classifier(crops))


def export_checkpoint(checkpoint_path: str | Path, out_path: str | Path) -> Path:
    """Write the classifier checkpoint at `checkpoint_path` as a bioimage.io package zip at `out_path`."""
    out_path = Path(out_path)
    model, info = load_classifier_checkpoint(checkpoint_path)
    description = describe_checkpoint(info)
    config = info["config"]
    size_px = description.input_size_px
    out_path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=".hpaweb-export-", dir=out_path.parent))
    try:
        source = workdir / "source"
        source.mkdir()
        network = ProbabilityNetwork(model).eval()
        example = torch.zeros(1, len(CHANNELS), size_px, size_px)
        with warnings.catch_warnings(), torch.inference_mode():
            # TorchScript is the format the ecosystem's tools run, deprecated in PyTorch or not.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(network, example)
        traced.save(str(source / "weights.pt"))
        test_input = np.random.default_rng(TEST_SEED).random(
            (TEST_CROP_COUNT, len(CHANNELS), size_px, size_px), dtype=np.float32
        )
        with torch.inference_mode():
            normalised = normalize_crops(torch.from_numpy(test_input), mean=config["mean"], std=config["std"])
            test_output = traced(normalised).numpy().astype(np.float32)
        np.save(source / "test_input.npy", test_input)
        np.save(source / "test_output.npy", test_output)
        (source / "README.md").write_text(_documentation(description), encoding="utf-8")
        staged = workdir / "package.zip"
        model_description = _model_description(info, source=source, description=description)
        save_bioimageio_package(model_description, output_path=staged)
        _check_written(staged, workdir=workdir)
        os.replace(staged, out_path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out_path


def _model_description(info: dict, *, source: Path, description) -> v0_5.ModelDescr:
    config = info["config"]
    size_px = description.input_size_px
    channel = v0_5.AxisId("channel")
    with ValidationContext(root=source, perform_io_checks=True, log_warnings=False):
        try:
            return v0_5.ModelDescr(
                name=description.name,
                version=v0_5.Version(description.version),
                description=description.summary,
                authors=[v0_5.Author(name="hpaweb")],
                cite=[v0_5.CiteEntry(text=CITATION_TEXT, doi=v0_5.Doi(CITATION_DOI))],
                license=v0_5.LicenseId(LICENSE),
                tags=["hpa", "single-cell", "classification", "fluorescence-light-microscopy", "2d"],
                documentation=v0_5.FileDescr(source=source / "README.md"),
                inputs=[
                    v0_5.InputTensorDescr(
                        id=v0_5.TensorId("crops"),
                        description="Cell crops: one cell alone on black, centred, channels red, green, blue, yellow.",
                        axes=[
                            v0_5.BatchAxis(),
                            v0_5.ChannelAxis(channel_names=[v0_5.Identifier(name) for name in CHANNELS]),
                            v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=size_px),
                            v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=size_px),
                        ],
                        data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                        test_tensor=v0_5.FileDescr(source=source / "test_input.npy"),
                        preprocessing=[
                            v0_5.FixedZeroMeanUnitVarianceDescr(
                                kwargs=v0_5.FixedZeroMeanUnitVarianceAlongAxisKwargs(
                                    axis=channel,
                                    mean=[float(value) for value in config["mean"]],
                                    std=[float(value) for value in config["std"]],
                                )
                            )
                        ],
                    )
                ],
                outputs=[
                    v0_5.OutputTensorDescr(
                        id=v0_5.TensorId("probabilities"),
                        description="Per cell, the probability of each of the 19 HPA classes (multi-label).",
                        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=list(CLASS_NAMES))],
                        data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                        test_tensor=v0_5.FileDescr(source=source / "test_output.npy"),
                    )
                ],
                weights=v0_5.WeightsDescr(
                    torchscript=v0_5.TorchscriptWeightsDescr(
                        source=source / "weights.pt",
                        pytorch_version=v0_5.Version(torch.__version__.split("+")[0]),
                    )
                ),
                config=v0_5.Config(
                    bioimageio=v0_5.BioimageioConfig(architecture_type=config["architecture"]),
                    hpaweb={
                        "image_pooling": config["image_pooling"],
                        "blend_cell_weight": float(config["blend_cell_weight"]),
                        "checkpoint_version": int(info["version"]),
                    },
                ),
            )
        except ValueError as error:  # pydantic's ValidationError
            raise ModelImportError(
                f"The checkpoint {description.name} cannot be described as a bioimage.io package ({first_line(error)})."
            ) from None


def _check_written(package_path: Path, *, workdir: Path) -> None:
    """Validate the written zip as an import would, and re-run its test."""
    package = read_package(package_path, workdir=workdir / "check")
    check_test_tensors(package, Network(package, device=torch.device("cpu")))


def _documentation(description) -> str:
    """The checkpoint's card, or one made of what the checkpoint says; with a validation section."""
    card = description.card.strip() or "\n".join(
        [
            f"# {description.name}",
            "",
            description.summary,
            "",
            f"An hpaweb cell classifier ({description.architecture}, {description.input_size_px} px crops, "
            "19 HPA classes), exported from its checkpoint.",
        ]
    )
    if "validation" not in card.lower():
        metrics = description.metrics
        lines = ["", "## Validation", ""]
        if "val_map" in metrics:
            lines.append(f"Cell-level mAP on held-out fields: {metrics['val_map']:.3f}.")
        if "val_image_map" in metrics:
            lines.append(f"Image-level mAP on held-out fields: {metrics['val_image_map']:.3f}.")
        if len(lines) == 3:
            lines.append("The checkpoint records no validation metrics.")
        card += "\n" + "\n".join(lines)
    return card + "\n"
