"""Importing a package: read it, check that it reproduces its own test, describe it, load it.

These are the functions the web app's model registry and `python -m ml import-model` call;
each raises `ModelImportError` with a sentence a user can act on.
"""

from collections.abc import Mapping
from pathlib import Path

import torch

from ml.bioimageio.classifier import (
    FORMAT,
    BioimageioClassifier,
    architecture_text,
    documentation_text,
    is_classifier,
    summary_line,
)
from ml.bioimageio.package import DEFAULT_LIMITS, ModelImportError, ModelPackage, PackageLimits, open_package
from ml.bioimageio.runtime import Network, axis_ids, check_test_tensors
from ml.bioimageio.segmentation import SegmentationPackage
from ml.classifier.base import ModelDescription


def check_package(
    package: ModelPackage, *, class_mapping: Mapping[int, str] | None = None, device: str = "cpu"
) -> ModelDescription:
    """Run the package's test inputs through its weights, compare with its test outputs, describe it.

    A classifier is described as the product will run it (its classes mapped onto the HPA
    classes); a segmentation package (outputs with y and x axes) as kind "segmentation".
    """
    if is_classifier(package.description):
        classifier = BioimageioClassifier(package, class_mapping=class_mapping, device=device, batch_size=1)
        classifier.check()
        return classifier.description
    check_test_tensors(package, Network(package, device=torch.device(device if device != "auto" else "cpu")))
    return describe_segmentation_package(package)


def check_segmentation_package(package: ModelPackage, *, kind: str, device: str = "cpu") -> ModelDescription:
    """A `kind` ("nuclei" or "cell") package checked as the bioimageio backend runs it (its input,
    its output channels and its own test), described; a classifier is refused."""
    if is_classifier(package.description):
        raise ModelImportError(
            f"The {kind} package {package.name} is a classifier (it outputs class scores, not maps); "
            f"give a {kind} segmentation package."
        )
    SegmentationPackage(package, kind=kind, device=device)
    return describe_segmentation_package(package)


def describe_segmentation_package(package: ModelPackage) -> ModelDescription:
    description = package.description
    sizes = [axis.size for axis in description.inputs[0].axes if str(axis.id) in ("y", "x")]
    size_px = sizes[0] if sizes and isinstance(sizes[0], int) else getattr(sizes[0], "min", 0) if sizes else 0
    return ModelDescription(
        name=package.name,
        version=str(description.version) if description.version is not None else "unversioned",
        format=FORMAT,
        architecture=architecture_text(package),
        input_size_px=int(size_px),
        class_names=(),
        summary=summary_line(description.description) or "This package has no description.",
        kind="segmentation",
        card=documentation_text(package),
        data={"output_axes": list(axis_ids(description.outputs[0]))},
    )


def import_classifier(
    path: str | Path,
    *,
    class_mapping: Mapping[int, str] | None = None,
    device: str = "auto",
    batch_size: int = 256,
    limits: PackageLimits = DEFAULT_LIMITS,
) -> BioimageioClassifier:
    """The classifier package at `path` (zip, folder or rdf.yaml), checked against its own test."""
    with open_package(path, limits=limits) as package:
        classifier = BioimageioClassifier(package, class_mapping=class_mapping, device=device, batch_size=batch_size)
        classifier.check()
    return classifier
