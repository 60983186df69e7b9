"""A bioimage.io classifier package as a `CellClassifierModel`.

Input: the product's crops (float32 (N, 4, S, S) in [0, 1], channels red, green, blue, yellow)
are resized to the package's input size where it differs, their channels put in the package's
order (by its channel names; generic names such as `channel0` keep the HPA order red, green,
blue, yellow), laid out in its axis order (`bcyx`, `byxc`, ...), scaled to its declared data
range and passed through its declared pre-processing.

Output: the package's post-processing (`sigmoid` or `softmax` where declared; sigmoid where
nothing is declared and the declared range is not already [0, 1]), then each output channel
onto one of the 19 HPA classes: by a mapping the user gives (output index -> class name), else
by the output's channel names, a class list in its config (`class_names` or `classes`) or a
list in the output's description, matched to `ml.constants.CLASS_NAMES` ignoring case,
spaces, hyphens and underscores. Classes the package does not predict get probability 0.
Pooling and blending are the product's (`pool_cells`, `blend`), with the weight and pooling of
the package's `config.hpaweb` where it has them.
"""

import json
import re
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from bioimageio.spec.model.v0_5 import ChannelAxis, ModelDescr, ParameterizedSize

from ml.bioimageio.package import ModelImportError, ModelPackage, first_line
from ml.bioimageio.runtime import Network, axis_ids, check_test_tensors, output_is_probability, run_package
from ml.classifier.base import CellPredictions, ModelDescription
from ml.classifier.predictor import DEFAULT_BLEND_CELL_WEIGHT, DEFAULT_IMAGE_POOLING, blend, pool_cells
from ml.constants import CHANNELS, CLASS_NAMES, NUM_CLASSES
from ml.crops import CellCrops
from ml.device import resolve_device

FORMAT = "bioimage.io"
PREFERRED_INPUT_SIZE_PX = 128  # the crop side chosen where a package accepts a range of sizes
_GENERIC_CHANNEL_NAME = re.compile(r"^(channel|c|class|output)?_?\d+$", re.IGNORECASE)
# Names a package may give its input channels, for each of the product's channels.
_CHANNEL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("red", "r", "microtubules", "microtubule", "tubulin", "mt"),
    "green": ("green", "g", "protein", "proteinofinterest", "poi", "antibody"),
    "blue": ("blue", "b", "nucleus", "nuclei", "dapi", "hoechst"),
    "yellow": ("yellow", "y", "er", "endoplasmicreticulum"),
}
_PRODUCT_CLASS_INDEX = {re.sub(r"[\s_\-]+", "", name).lower(): index for index, name in enumerate(CLASS_NAMES)}
WEIGHTS_FORMAT_NAMES = {"torchscript": "TorchScript", "onnx": "ONNX"}


def normalise_name(name: str) -> str:
    """A class or channel name as compared: lower case, without spaces, hyphens and underscores."""
    return re.sub(r"[\s_\-]+", "", str(name)).lower()


def parse_class_mapping(text: str) -> dict[int, str]:
    """`{"0": "Nucleoplasm", "3": "Cytosol", ...}` (JSON: output index -> class name) -> {0: ..., 3: ...}."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise ModelImportError(
            'The class mapping is not valid JSON; give an object such as {"0": "Nucleoplasm", "1": "Cytosol"} '
            "that maps each output index of the model to an HPA class name."
        ) from None
    if not isinstance(raw, dict) or not all(isinstance(name, str) for name in raw.values()):
        raise ModelImportError(
            'The class mapping must map output indices to class names, such as {"0": "Nucleoplasm", "1": "Cytosol"}.'
        )
    try:
        return {int(index): name for index, name in raw.items()}
    except ValueError:
        raise ModelImportError(
            f"The class mapping's keys must be output indices (0, 1, 2, ...), got {', '.join(map(str, raw))}."
        ) from None


def is_classifier(description: ModelDescr) -> bool:
    """Whether the package's first output is per image (batch and channel axes only), not a map."""
    return all(axis.type in ("batch", "channel") for axis in description.outputs[0].axes)


class BioimageioClassifier:
    """A checked bioimage.io classifier package, loaded into memory: crops in, `CellPredictions` out."""

    def __init__(
        self,
        package: ModelPackage,
        *,
        class_mapping: Mapping[int, str] | None = None,
        device: str = "auto",
        batch_size: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.package = package
        self.layout = input_layout(package)
        self.class_indices = output_class_indices(package, class_mapping=class_mapping)
        self.device = resolve_device(device)
        self.batch_size = 1 if self.layout.batch_size == 1 else batch_size
        self.network = Network(package, device=self.device)
        hpaweb_config = _hpaweb_config(package.description)
        self.image_pooling = str(hpaweb_config.get("image_pooling", DEFAULT_IMAGE_POOLING))
        self.blend_cell_weight = float(hpaweb_config.get("blend_cell_weight", DEFAULT_BLEND_CELL_WEIGHT))
        self.description = describe_classifier(package, layout=self.layout, class_indices=self.class_indices)

    @property
    def name(self) -> str:
        return self.description.name

    @property
    def input_size_px(self) -> int:
        return self.description.input_size_px

    def check(self) -> None:
        """Refuse the package unless it reproduces its own test outputs."""
        check_test_tensors(self.package, self.network)

    def predict_crops(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, 4, S, S) crops in [0, 1] -> float32 (N, 19) probabilities (0 where not predicted)."""
        if images.ndim != 4 or images.shape[1] != len(CHANNELS):
            raise ValueError(f"Crops must be (N, 4, S, S) for model {self.name}, got {images.shape}.")
        probabilities = np.zeros((len(images), NUM_CLASSES), dtype=np.float32)
        predicted = self.class_indices >= 0
        for start in range(0, len(images), self.batch_size):
            batch = self.layout.to_package(images[start : start + self.batch_size])
            scores = run_package(self.package, self.network, [batch])[0].astype(np.float32)
            if not self.layout.output_has_activation:
                scores = 1 / (1 + np.exp(-scores))
            probabilities[start : start + len(batch), self.class_indices[predicted]] = scores[:, predicted]
        return probabilities

    def predict_cells(self, crops: CellCrops) -> CellPredictions:
        cell_probabilities = self.predict_crops(crops.images)
        image_probabilities = pool_cells(cell_probabilities, pooling=self.image_pooling)
        return CellPredictions(
            cell_probabilities=cell_probabilities,
            image_probabilities=image_probabilities,
            final_probabilities=blend(cell_probabilities, image_probabilities, cell_weight=self.blend_cell_weight),
        )


class InputLayout:
    """How the product's crops become the package's input tensor."""

    def __init__(self, *, axes: tuple[str, ...], size_px: int, channel_order: tuple[int, ...], scale: float,
                 batch_size: int | None, output_has_activation: bool) -> None:  # fmt: skip
        self.axes = axes
        self.size_px = size_px
        self.channel_order = channel_order  # product channel index of each package channel
        self.scale = scale
        self.batch_size = batch_size
        self.output_has_activation = output_has_activation

    def to_package(self, images: np.ndarray) -> np.ndarray:
        """(N, 4, S, S) crops in [0, 1] -> the package's raw input (before its pre-processing)."""
        if images.shape[-1] != self.size_px:
            # The crops were made at another size: antialiased bilinear, as the product's cropping.
            images = F.interpolate(
                torch.from_numpy(np.ascontiguousarray(images)),
                size=(self.size_px, self.size_px),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            ).numpy()
        data = images[:, list(self.channel_order)] * np.float32(self.scale)
        source_axes = ("batch", "channel", "y", "x")
        return np.ascontiguousarray(data.transpose([source_axes.index(axis) for axis in self.axes]))


def input_layout(package: ModelPackage) -> InputLayout:
    """The package's single input as the product fills it; a sentence for inputs crops cannot fill."""
    description, name = package.description, package.name
    if len(description.inputs) != 1:
        raise ModelImportError(
            f"{name} takes {len(description.inputs)} inputs; a cell classifier must take one (the cell crop)."
        )
    tensor = description.inputs[0]
    axes = axis_ids(tensor)
    if sorted(axes) != sorted(("batch", "channel", "y", "x")):
        raise ModelImportError(
            f"{name} takes an input with axes {', '.join(axes)}; a cell classifier must take batch, channel, "
            "y and x (such as bcyx or byxc)."
        )
    by_id = {str(axis.id): axis for axis in tensor.axes}
    sizes = {axis: _space_size(by_id[axis].size, name=name) for axis in ("y", "x")}
    if sizes["y"] != sizes["x"]:
        raise ModelImportError(f"{name} takes {sizes['y']} x {sizes['x']} px inputs; the product's crops are square.")
    channel_axis = by_id["channel"]
    data = tensor.data[0] if isinstance(tensor.data, (list, tuple)) else tensor.data
    return InputLayout(
        axes=axes,
        size_px=sizes["y"],
        channel_order=_channel_order(channel_axis, name=name),
        scale=_input_scale(data),
        batch_size=by_id["batch"].size,
        output_has_activation=output_is_probability(description.outputs[0]),
    )


def _space_size(size, *, name: str) -> int:
    if isinstance(size, int):
        return size
    if isinstance(size, ParameterizedSize):
        steps = max(0, -(-(PREFERRED_INPUT_SIZE_PX - size.min) // size.step))
        return size.min + steps * size.step
    raise ModelImportError(
        f"{name} sizes its input relative to another tensor, which a cell classifier cannot; "
        "its input needs a fixed size or a minimum and step."
    )


def _channel_order(axis, *, name: str) -> tuple[int, ...]:
    if not isinstance(axis, ChannelAxis) or len(axis.channel_names) != len(CHANNELS):
        count = len(axis.channel_names) if isinstance(axis, ChannelAxis) else "an unknown number of"
        raise ModelImportError(
            f"{name} takes {count} input channels; the product's crops have 4 (red microtubules, "
            "green protein, blue nucleus, yellow ER)."
        )
    names = [normalise_name(channel) for channel in axis.channel_names]
    if all(_GENERIC_CHANNEL_NAME.match(channel) for channel in names):
        return tuple(range(len(CHANNELS)))
    order = []
    for channel in names:
        matches = [index for index, product in enumerate(CHANNELS) if channel in _CHANNEL_SYNONYMS[product]]
        if not matches:
            raise ModelImportError(
                f"{name} names its input channels {', '.join(map(str, axis.channel_names))}; the channel "
                f"{channel!r} is none of red (microtubules), green (protein), blue (nucleus), yellow (ER)."
            )
        order.append(matches[0])
    if sorted(order) != list(range(len(CHANNELS))):
        raise ModelImportError(
            f"{name} names its input channels {', '.join(map(str, axis.channel_names))}, which do not name "
            "red, green, blue and yellow once each."
        )
    return tuple(order)


def _input_scale(data) -> float:
    """The factor from the product's [0, 1] to the package's declared input range."""
    high = getattr(data, "range", (None, None))[1]
    if high is not None and high > 1:
        return float(high)
    return {"uint8": 255.0, "uint16": 65535.0}.get(str(data.type), 1.0)


def output_class_indices(package: ModelPackage, *, class_mapping: Mapping[int, str] | None = None) -> np.ndarray:
    """int64 (C,): the HPA class index of each output channel, -1 for channels left out by a mapping."""
    description, name = package.description, package.name
    if not is_classifier(description):
        raise ModelImportError(
            f"{name} outputs a map (axes {', '.join(axis_ids(description.outputs[0]))}), not class scores; "
            "it is not a cell classifier (a segmentation package is used as a segmentation backend)."
        )
    channel_axes = [axis for axis in description.outputs[0].axes if isinstance(axis, ChannelAxis)]
    if len(channel_axes) != 1:
        raise ModelImportError(f"{name} outputs no class axis; a cell classifier outputs one score per class.")
    count = len(channel_axes[0].channel_names)
    if class_mapping:
        return _mapped_indices(class_mapping, count=count, name=name)
    class_names = _declared_class_names(description, channel_axes[0], count=count)
    if class_names is None:
        raise ModelImportError(
            f"{name} outputs {count} classes without names this product can read; give a class mapping "
            'from output index to HPA class name, such as {"0": "Nucleoplasm", "1": "Nuclear membrane"}.'
        )
    if count > NUM_CLASSES:
        raise ModelImportError(
            f"{name} outputs {count} classes, more than the {NUM_CLASSES} HPA classes; give a class mapping "
            'from output index to HPA class name for the ones to use, such as {"0": "Nucleoplasm"}.'
        )
    indices = [_PRODUCT_CLASS_INDEX.get(normalise_name(class_name), -1) for class_name in class_names]
    unmatched = [str(class_name) for class_name, index in zip(class_names, indices, strict=True) if index < 0]
    if unmatched:
        raise ModelImportError(
            f"{name} outputs classes that are not HPA classes: {', '.join(unmatched[:5])}"
            f"{' and more' if len(unmatched) > 5 else ''}; give a class mapping from output index to HPA class name."
        )
    if len(set(indices)) != len(indices):
        raise ModelImportError(f"{name} names one HPA class for several outputs; give a class mapping instead.")
    return np.asarray(indices, dtype=np.int64)


def _mapped_indices(class_mapping: Mapping[int, str], *, count: int, name: str) -> np.ndarray:
    indices = np.full(count, -1, dtype=np.int64)
    for output_index, class_name in class_mapping.items():
        if not 0 <= output_index < count:
            raise ModelImportError(
                f"The class mapping names output {output_index}, but {name} has outputs 0 to {count - 1} only."
            )
        class_index = _PRODUCT_CLASS_INDEX.get(normalise_name(class_name))
        if class_index is None:
            raise ModelImportError(
                f"The class mapping names {class_name!r}, which is not one of the 19 HPA classes "
                f"({', '.join(CLASS_NAMES[:3])}, ...)."
            )
        if class_index in indices:
            raise ModelImportError(f"The class mapping names {class_name!r} for more than one output; name it once.")
        indices[output_index] = class_index
    return indices


def _declared_class_names(description: ModelDescr, channel_axis: ChannelAxis, *, count: int) -> list[str] | None:
    names = [str(channel) for channel in channel_axis.channel_names]
    if not all(_GENERIC_CHANNEL_NAME.match(normalise_name(channel)) for channel in names):
        return names
    config = description.config.model_dump(mode="json")
    for section in (config, *[value for value in config.values() if isinstance(value, dict)]):
        for key in ("class_names", "classes"):
            if isinstance(section.get(key), list) and len(section[key]) == count:
                return [str(class_name) for class_name in section[key]]
    listed = [part.strip() for part in re.split(r"[,;\n]", description.outputs[0].description) if part.strip()]
    return listed if len(listed) == count else None


def _hpaweb_config(description: ModelDescr) -> dict:
    config = description.config.model_dump(mode="json").get("hpaweb")
    return config if isinstance(config, dict) else {}


def summary_line(text: str) -> str:
    """The first sentence (or line) of a description: the one line a user reads."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    sentence = re.match(r"(.+?[.!?])(\s|$)", first)
    return sentence[1] if sentence else first


def documentation_text(package: ModelPackage) -> str:
    """The package's documentation markdown; empty when it has none."""
    documentation = package.description.documentation
    if documentation is None:
        return ""
    try:
        return package.file(documentation.source).read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise ModelImportError(f"The documentation of {package.name} cannot be read ({first_line(error)}).") from None


def architecture_text(package: ModelPackage) -> str:
    architecture = package.description.config.bioimageio.architecture_type
    weights = WEIGHTS_FORMAT_NAMES[package.weights_format]
    return f"{architecture} ({weights})" if architecture else weights


def describe_classifier(package: ModelPackage, *, layout: InputLayout, class_indices: np.ndarray) -> ModelDescription:
    description = package.description
    return ModelDescription(
        name=package.name,
        version=str(description.version) if description.version is not None else "unversioned",
        format=FORMAT,
        architecture=architecture_text(package),
        input_size_px=layout.size_px,
        class_names=tuple(CLASS_NAMES[index] for index in sorted(int(i) for i in class_indices if i >= 0)),
        summary=summary_line(description.description) or "This package has no description.",
        card=documentation_text(package),
    )
