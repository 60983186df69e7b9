"""The per-cell classifier: a compact VGG-style CNN for 4-channel cell crops, 19 multi-label logits."""

from collections.abc import Sequence

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.head(self.dropout(features))
