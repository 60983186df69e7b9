"""Running a package's weights: its declared pre- and post-processing, the network, its own test.

The processing steps of the bioimage.io spec are applied in numpy on tensors in the package's
axis order. Reductions (`zero_mean_unit_variance`, `scale_range`, percentile `clip`) never
cross the batch axis, so a cell is normalised on its own whatever else shares its batch (as
bioimageio.core does, one sample at a time). The weights run with `torch.jit.load` (TorchScript)
or onnxruntime (ONNX), nothing else. `check_test_tensors` runs the package's test inputs through
all of it and compares with its test outputs, with the tolerances the package declares (the
spec's defaults otherwise: relative and absolute 1e-3, 100 mismatched values per million).
"""

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ml.bioimageio.package import ModelImportError, ModelPackage, first_line

# What the spec assumes where a package declares no tolerance (ContinuousReproducibilityTolerance).
DEFAULT_RELATIVE_TOLERANCE = 1e-3
DEFAULT_ABSOLUTE_TOLERANCE = 1e-3
DEFAULT_MISMATCHED_PER_MILLION = 100
BATCH_AXIS = "batch"


def axis_ids(tensor) -> tuple[str, ...]:
    """The ids of a tensor description's axes, in order ("batch", "channel", "y", "x", ...)."""
    return tuple(str(axis.id) for axis in tensor.axes)


def apply_processing(data: np.ndarray, axes: Sequence[str], steps: Sequence, *, tensor_name: str) -> np.ndarray:
    """`data` (in the tensor's axis order) after each declared processing step in turn."""
    for step in steps:
        data = _apply_step(step, data, tuple(axes), tensor_name=tensor_name)
    return data


def _apply_step(step, data: np.ndarray, axes: tuple[str, ...], *, tensor_name: str) -> np.ndarray:
    kind = str(step.id)
    kwargs = getattr(step, "kwargs", None)
    if kind == "ensure_dtype":
        return data.astype(str(kwargs.dtype))
    if kind == "scale_linear":
        return (data * _along(kwargs.gain, kwargs, axes, data) + _along(kwargs.offset, kwargs, axes, data)).astype(
            np.float32
        )
    if kind == "fixed_zero_mean_unit_variance":
        mean, std = _along(kwargs.mean, kwargs, axes, data), _along(kwargs.std, kwargs, axes, data)
        return ((data - mean) / std).astype(np.float32)
    if kind == "zero_mean_unit_variance":
        reduced = _reduced_axes(kwargs.axes, axes)
        mean, std = data.mean(axis=reduced, keepdims=True), data.std(axis=reduced, keepdims=True)
        return ((data - mean) / (std + kwargs.eps)).astype(np.float32)
    if kind == "scale_range":
        if kwargs.reference_tensor is not None and str(kwargs.reference_tensor) != tensor_name:
            raise ModelImportError(
                f"The scale_range step of tensor {tensor_name} uses the statistics of tensor "
                f"{kwargs.reference_tensor}, which this product does not support; use a package that "
                "normalises each input by itself."
            )
        reduced = _reduced_axes(kwargs.axes, axes)
        low = np.percentile(data, kwargs.min_percentile, axis=reduced, keepdims=True)
        high = np.percentile(data, kwargs.max_percentile, axis=reduced, keepdims=True)
        return ((data - low) / (high - low + kwargs.eps)).astype(np.float32)
    if kind == "clip":
        reduced = _reduced_axes(kwargs.axes, axes)
        low = kwargs.min
        high = kwargs.max
        if kwargs.min_percentile is not None:
            low = np.percentile(data, kwargs.min_percentile, axis=reduced, keepdims=True)
        if kwargs.max_percentile is not None:
            high = np.percentile(data, kwargs.max_percentile, axis=reduced, keepdims=True)
        return np.clip(data, low, high)
    if kind == "binarize":
        return (data > _along(kwargs.threshold, kwargs, axes, data)).astype(data.dtype)
    if kind == "sigmoid":
        return (1 / (1 + np.exp(-data.astype(np.float64)))).astype(np.float32)
    if kind == "softmax":
        axis = axes.index(str(kwargs.axis))
        shifted = np.exp(data - data.max(axis=axis, keepdims=True))
        return (shifted / shifted.sum(axis=axis, keepdims=True)).astype(np.float32)
    raise ModelImportError(
        f"Tensor {tensor_name} declares the processing step {kind!r}, which this product does not run; "
        "it runs scale_range, zero_mean_unit_variance, fixed_zero_mean_unit_variance, scale_linear, clip, "
        "binarize, sigmoid, softmax and ensure_dtype."
    )


def _along(value, kwargs, axes: tuple[str, ...], data: np.ndarray) -> np.ndarray | float:
    """A scalar parameter as it is, or a per-index list shaped to broadcast along its axis."""
    if not isinstance(value, (list, tuple)):
        return value
    shape = [1] * data.ndim
    shape[axes.index(str(kwargs.axis))] = len(value)
    return np.asarray(value, dtype=np.float32).reshape(shape)


def _reduced_axes(declared, axes: tuple[str, ...]) -> tuple[int, ...]:
    """The axes a statistic is computed over: the declared ones (all by default), never the batch."""
    names = [str(name) for name in declared] if declared is not None else list(axes)
    return tuple(axes.index(name) for name in names if name != BATCH_AXIS and name in axes)


class Network:
    """The package's executable weights, loaded into memory (the package folder may go afterwards)."""

    def __init__(self, package: ModelPackage, *, device: torch.device) -> None:
        self.weights_format = package.weights_format
        self.device = device
        path = package.weights_path()
        try:
            if self.weights_format == "torchscript":
                with warnings.catch_warnings():
                    # TorchScript is what the ecosystem ships, deprecated in PyTorch or not.
                    warnings.simplefilter("ignore", FutureWarning)
                    self._module = torch.jit.load(str(path), map_location=device).eval()
            else:
                self._session = _onnx_session(path, device=device)
        except Exception as error:  # each runtime raises its own kinds for unreadable weights
            raise ModelImportError(
                f"The {self.weights_format} weights of {package.name} cannot be loaded ({first_line(error)}); "
                "the package is damaged or was written by an incompatible exporter."
            ) from None
        self.name = package.name

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The network's outputs for its inputs (already pre-processed, in the package's axis order)."""
        if self.weights_format == "torchscript":
            with torch.inference_mode():
                tensors = [torch.from_numpy(np.ascontiguousarray(array)).to(self.device) for array in inputs]
                outputs = self._module(*tensors)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            return [output.float().cpu().numpy() for output in outputs]
        names = [argument.name for argument in self._session.get_inputs()]
        return [np.asarray(output) for output in self._session.run(None, dict(zip(names, inputs, strict=True)))]


def _onnx_session(path: Path, *, device: torch.device):
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's concern
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)


def run_package(package: ModelPackage, network: Network, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Raw inputs -> declared pre-processing -> network -> declared post-processing, per tensor."""
    description = package.description
    prepared = [
        _as_input_dtype(
            apply_processing(array, axis_ids(tensor), tensor.preprocessing, tensor_name=str(tensor.id)), tensor
        )
        for tensor, array in zip(description.inputs, inputs, strict=True)
    ]
    outputs = network(prepared)
    if len(outputs) != len(description.outputs):
        raise ModelImportError(
            f"The weights of {package.name} give {len(outputs)} output(s) where its rdf.yaml declares "
            f"{len(description.outputs)}; the package is inconsistent."
        )
    return [
        apply_processing(array, axis_ids(tensor), tensor.postprocessing, tensor_name=str(tensor.id))
        for tensor, array in zip(description.outputs, outputs, strict=True)
    ]


def output_is_probability(tensor) -> bool:
    """Whether an output is already a probability: a declared sigmoid or softmax, or a range within [0, 1]."""
    if any(str(step.id) in ("sigmoid", "softmax") for step in tensor.postprocessing):
        return True
    data = tensor.data[0] if isinstance(tensor.data, (list, tuple)) else tensor.data
    low, high = getattr(data, "range", (None, None))
    return low is not None and high is not None and low >= 0 and high <= 1


def _as_input_dtype(array: np.ndarray, tensor) -> np.ndarray:
    data = tensor.data[0] if isinstance(tensor.data, (list, tuple)) else tensor.data
    return array.astype(str(data.type), copy=False)


def check_test_tensors(package: ModelPackage, network: Network) -> None:
    """Refuse the package unless its weights reproduce its test outputs from its test inputs."""
    description = package.description
    inputs = []
    for tensor in description.inputs:
        if tensor.test_tensor is None:
            raise ModelImportError(
                f"{package.name} has no test input for tensor {tensor.id}, so it cannot be checked; "
                "use a package with test inputs and outputs."
            )
        inputs.append(_load_npy(package, tensor.test_tensor.source))
    try:
        outputs = run_package(package, network, inputs)
    except ModelImportError:
        raise
    except Exception as error:  # a network that cannot run its own test input is broken
        raise ModelImportError(
            f"The {package.weights_format} weights of {package.name} fail on the package's own test input "
            f"({first_line(error)}); the package is damaged or its rdf.yaml does not match its weights."
        ) from None
    for tensor, output in zip(description.outputs, outputs, strict=True):
        if tensor.test_tensor is None:
            raise ModelImportError(
                f"{package.name} has no test output for tensor {tensor.id}, so it cannot be checked; "
                "use a package with test inputs and outputs."
            )
        expected = _load_npy(package, tensor.test_tensor.source)
        _compare(package, str(tensor.id), output, expected)


def _compare(package: ModelPackage, output_id: str, output: np.ndarray, expected: np.ndarray) -> None:
    if output.shape != expected.shape:
        raise ModelImportError(
            f"{package.name} does not reproduce its own test output {output_id}: its weights give shape "
            f"{output.shape} where the test output has {expected.shape}; the package is inconsistent."
        )
    relative, absolute, per_million = tolerance(package, output_id, discrete=expected.dtype.kind in "biu")
    difference = np.abs(output.astype(np.float64) - expected.astype(np.float64))
    mismatched = int(np.count_nonzero(difference > absolute + relative * np.abs(expected.astype(np.float64))))
    if mismatched > per_million * expected.size / 1e6:
        raise ModelImportError(
            f"{package.name} does not reproduce its own test output {output_id}: {mismatched} of {expected.size} "
            f"values differ by more than the tolerance (largest difference {difference.max():.3g}); "
            "the weights do not belong to this package or were exported wrongly."
        )


def tolerance(package: ModelPackage, output_id: str, *, discrete: bool) -> tuple[float, float, float]:
    """(relative, absolute, mismatched per million): the package's first entry for this output and weights."""
    for entry in package.description.config.bioimageio.reproducibility_tolerance:
        if entry.weights_formats and package.weights_format not in entry.weights_formats:
            continue
        if isinstance(entry.output_ids, str):
            if (entry.output_ids == "any_discrete_output") != discrete:
                continue
        elif entry.output_ids and output_id not in [str(name) for name in entry.output_ids]:
            continue
        return (
            float(entry.relative_tolerance),
            float(entry.absolute_tolerance),
            float(entry.mismatched_elements_per_million),
        )
    if discrete:
        return 0.0, 0.0, DEFAULT_MISMATCHED_PER_MILLION
    return DEFAULT_RELATIVE_TOLERANCE, DEFAULT_ABSOLUTE_TOLERANCE, DEFAULT_MISMATCHED_PER_MILLION


def _load_npy(package: ModelPackage, source) -> np.ndarray:
    path = package.file(source)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ModelImportError(
            f"The test tensor {path.name} of {package.name} is not a readable .npy array ({first_line(error)})."
        ) from None
