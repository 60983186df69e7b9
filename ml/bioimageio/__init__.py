"""bioimage.io model packages: the community's format, read, checked, run and written.

- `package`: reading a package safely (zip hygiene, size limits) and validating it offline with
  bioimageio.spec; `ModelImportError`, the one error every refusal raises;
- `runtime`: the declared pre- and post-processing, TorchScript and ONNX execution, the
  package's own test;
- `classifier`: `BioimageioClassifier`, a package as a `CellClassifierModel`;
- `segmentation`: `BioimageioBackend`, a nucleus and a cell package as a segmentation backend;
- `importing`: what callers use: `check_package`, `check_segmentation_package`, `import_classifier`;
- `export`: `export_checkpoint`, an hpaweb checkpoint as a bioimage.io 0.5 package.
"""

from ml.bioimageio.classifier import BioimageioClassifier, parse_class_mapping
from ml.bioimageio.importing import check_package, check_segmentation_package, import_classifier
from ml.bioimageio.package import (
    DEFAULT_LIMITS,
    ModelImportError,
    ModelPackage,
    PackageLimits,
    open_package,
    read_package,
    store_package,
)

__all__ = [
    "DEFAULT_LIMITS",
    "BioimageioClassifier",
    "ModelImportError",
    "ModelPackage",
    "PackageLimits",
    "check_package",
    "check_segmentation_package",
    "import_classifier",
    "open_package",
    "parse_class_mapping",
    "read_package",
    "store_package",
]
