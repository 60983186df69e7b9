"""The per-cell classifiers for 4-channel cell crops, 19 multi-label logits: the compact VGG-style
`CellClassifier` ("compact") and `BackboneCellClassifier`, any timm backbone with a 4-channel stem.

Both offer the same surface to serving and to the familiarity description: `features`,
`classify`, `pooled_layers`, `layer_names`, `layer_sizes`, `feature_size`.
"""

from collections.abc import Collection, Sequence

import torch
from torch import nn

from ml.constants import NUM_CLASSES


class ConvBlock(nn.Sequential):
    """3x3 convolution, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class CellClassifier(nn.Module):
    """Multi-label classifier of (N, 4, S, S) cell crops into (N, 19) logits.

    A stride-2 stem, then one stage per width of a stride-2 block and a stride-1 block, then
    global average pooling; any input side of at least 32 px works. Each stage halves the
    resolution, so at 128 px the last stage sees 4 x 4 and the network costs ~67 M
    multiply-adds per crop (widths 32, 64, 128, 256; 1.2 M parameters).

    `forward(x)` is `classify(features(x))`: `features` gives the pooled penultimate layer
    (N, widths[-1]) and `classify` turns it into logits. `pooled_layers` gives, from the same
    pass, the globally average-pooled output of the stem and of every stage (`layer_names`),
    which `ml.classifier.familiarity` compares with the training cells', so one pass serves both.
    """

    def __init__(
        self,
        *,
        in_channels: int = 4,
        num_classes: int = NUM_CLASSES,
        widths: Sequence[int] = (32, 64, 128, 256),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.stem = ConvBlock(in_channels, widths[0], stride=2)
        stages = []
        previous = widths[0]
        for width in widths:
            stages.append(nn.Sequential(ConvBlock(previous, width, stride=2), ConvBlock(width, width)))
            previous = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(previous, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @property
    def feature_size(self) -> int:
        """The length of one crop's features: the last stage's width."""
        return self.head.in_features

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The layers `pooled_layers` can give, from the input on: "stem", "stage1", ...; the last
        one's features are `features`."""
        return ("stem", *(f"stage{index}" for index in range(1, len(self.stages) + 1)))

    @property
    def layer_sizes(self) -> dict[str, int]:
        """The length of one crop's pooled features of each layer (its width), by name."""
        widths = [self.stem[0].out_channels, *(stage[-1][0].out_channels for stage in self.stages)]
        return dict(zip(self.layer_names, widths, strict=True))

    def pooled_layers(self, x: torch.Tensor, *, names: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        """(N, 4, S, S) crops -> {layer name: (N, width) globally average-pooled output}, for the
        layers in `names` (default: all), in `layer_names` order, from one pass."""
        wanted = set(self.layer_names if names is None else names)
        pooled = {}
        for name, layer in zip(self.layer_names, (self.stem, *self.stages), strict=True):
            x = layer(x)
            if name in wanted:
                pooled[name] = self.pool(x).flatten(1)
        return pooled

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 4, S, S) crops -> (N, feature_size) globally pooled features of the last stage."""
        last = self.layer_names[-1]
        return self.pooled_layers(x, names=(last,))[last]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(N, feature_size) features -> (N, num_classes) logits."""
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


COMPACT = "compact"


class BackboneCellClassifier(nn.Module):
    """A timm backbone (`timm.create_model(name, in_chans=4, num_classes=0, global_pool="")`), global
    average pooling, dropout and a linear head to 19 logits.

    `pooled_layers` gives the pooled output of every stage timm reports (`feature_info`, "stage1"
    ...) and of the backbone's last layer ("features", the penultimate features the head reads).
    The weights start random; `ml.training.backbones` loads ImageNet or other weights into them.
    """

    def __init__(
        self, backbone: str, *, in_channels: int = 4, num_classes: int = NUM_CLASSES, dropout: float = 0.2
    ) -> None:
        super().__init__()
        import timm  # only models that need it load timm

        self.backbone_name = backbone
        self.backbone = timm.create_model(
            backbone, pretrained=False, in_chans=in_channels, num_classes=0, global_pool=""
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.num_features, num_classes)
        self._stage_sizes = tuple(int(info["num_chs"]) for info in self.backbone.feature_info)

    @property
    def feature_size(self) -> int:
        return self.head.in_features

    @property
    def layer_names(self) -> tuple[str, ...]:
        return (*(f"stage{index}" for index in range(1, len(self._stage_sizes) + 1)), "features")

    @property
    def layer_sizes(self) -> dict[str, int]:
        return dict(zip(self.layer_names, (*self._stage_sizes, self.feature_size), strict=True))

    def pooled_layers(self, x: torch.Tensor, *, names: Collection[str] | None = None) -> dict[str, torch.Tensor]:
        wanted = set(self.layer_names if names is None else names)
        if wanted <= {"features"}:
            return {"features": self.pool(self.backbone.forward_features(x)).flatten(1)} if wanted else {}
        final, stages = self.backbone.forward_intermediates(x, indices=len(self._stage_sizes))
        outputs = dict(zip(self.layer_names, (*stages, final), strict=True))
        return {name: self.pool(outputs[name]).flatten(1) for name in self.layer_names if name in wanted}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled_layers(x, names=("features",))["features"]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))
