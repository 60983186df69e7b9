"""U-Net with a Dual Path Network encoder: the network of the HPA cell segmenter.

The module and parameter names follow the segmenter's published weights (a pickled
`pytorch_zoo.unet.DPNUnet` with a DPN-92 encoder), so a converted state_dict loads as is:
`encoder_stages` (stem, then four stages of dual path blocks), `decoder_stages` (nearest x2
upsampling + 3x3 conv), `bottlenecks` (3x3 conv over [decoder, skip]), `last_upsample` back to
the input resolution, and a 3x3 `final` classifier. With the defaults it has 139,108,867
parameters; smaller widths give the same topology for tests and experiments.

Input height and width must be multiples of 32 (five stride-2 steps).
"""

from collections.abc import Sequence

import torch
from torch import nn

Features = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # a tensor, or (residual, dense) paths

BATCHNORM_EPS = 1e-3  # DPN's batch norms (its pretrained weights come from MXNet)


class PreActConv(nn.Module):
    """BatchNorm -> ReLU -> bias-free conv, the DPN unit."""

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels, eps=BATCHNORM_EPS)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.bn(x)))


class DualPathBlock(nn.Module):
    """Grouped bottleneck whose output adds to a residual path and extends a dense path.

    The first block of a stage projects its input onto both paths (stride 2 from stage 2 on,
    which halves the resolution); later blocks take the (residual, dense) pair as it is.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        bottleneck_channels: int,
        residual_channels: int,
        dense_increment: int,
        groups: int,
        projection_stride: int | None,
    ) -> None:
        super().__init__()
        self.residual_channels = residual_channels
        stride = projection_stride or 1
        self.projection_name = None
        if projection_stride is not None:
            # Named by stride, as in the published weights.
            self.projection_name = f"c1x1_w_s{projection_stride}"
            self.add_module(
                self.projection_name,
                PreActConv(in_channels, residual_channels + 2 * dense_increment, kernel_size=1, stride=stride),
            )
        self.c1x1_a = PreActConv(in_channels, bottleneck_channels, kernel_size=1)
        self.c3x3_b = PreActConv(bottleneck_channels, bottleneck_channels, kernel_size=3, stride=stride, groups=groups)
        self.c1x1_c = PreActConv(bottleneck_channels, residual_channels + dense_increment, kernel_size=1)

    def forward(self, x: Features) -> tuple[torch.Tensor, torch.Tensor]:
        joined = torch.cat(x, dim=1) if isinstance(x, tuple) else x
        if self.projection_name is None:
            residual, dense = x
        else:
            projected = getattr(self, self.projection_name)(joined)
            residual, dense = projected.split(
                [self.residual_channels, projected.shape[1] - self.residual_channels], dim=1
            )
        out = self.c1x1_c(self.c3x3_b(self.c1x1_a(joined)))
        return residual + out[:, : self.residual_channels], torch.cat([dense, out[:, self.residual_channels :]], dim=1)


class CatBnAct(nn.Module):
    """Joins the two paths after the last stage: concat -> BatchNorm -> ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=BATCHNORM_EPS)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Features) -> torch.Tensor:
        return self.act(self.bn(torch.cat(x, dim=1) if isinstance(x, tuple) else x))


class UpsampleConv(nn.Module):
    """Nearest-neighbour x2 upsampling, 3x3 conv, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class SkipMerge(nn.Module):
    """3x3 conv + ReLU over the decoder features concatenated with the encoder's skip features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, decoded: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.seq(torch.cat([decoded, skip], dim=1))


class DPNUnet(nn.Module):
    """U-Net over a DPN encoder; logits (N, num_classes, H, W) for input (N, in_channels, H, W).

    Defaults are DPN-92: 64 stem channels, stages of 3/4/20/3 blocks, residual widths
    256/512/1024/2048, bottleneck widths 96/192/384/768 in 32 groups, dense increments
    16/32/24/128.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        num_classes: int = 3,
        stem_channels: int = 64,
        blocks: Sequence[int] = (3, 4, 20, 3),
        residual_channels: Sequence[int] = (256, 512, 1024, 2048),
        bottleneck_channels: Sequence[int] = (96, 192, 384, 768),
        dense_increments: Sequence[int] = (16, 32, 24, 128),
        groups: int = 32,
    ) -> None:
        super().__init__()
        if not len(blocks) == len(residual_channels) == len(bottleneck_channels) == len(dense_increments) == 4:
            raise ValueError("blocks, residual_channels, bottleneck_channels and dense_increments need 4 values each.")
        encoder_stages: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(stem_channels, eps=BATCHNORM_EPS),
                nn.ReLU(inplace=True),
            )
        ]
        filters = [stem_channels]  # channels of each encoder stage's output
        channels = stem_channels
        for stage, (count, residual, bottleneck, increment) in enumerate(
            zip(blocks, residual_channels, bottleneck_channels, dense_increments, strict=True)
        ):
            layers: list[nn.Module] = [nn.MaxPool2d(3, stride=2, padding=1)] if stage == 0 else []
            for index in range(count):
                layers.append(
                    DualPathBlock(
                        channels,
                        bottleneck_channels=bottleneck,
                        residual_channels=residual,
                        dense_increment=increment,
                        groups=groups,
                        projection_stride=(1 if stage == 0 else 2) if index == 0 else None,
                    )
                )
                channels = residual + 3 * increment if index == 0 else channels + increment
            if stage == len(blocks) - 1:
                layers.append(CatBnAct(channels))
            encoder_stages.append(nn.Sequential(*layers))
            filters.append(channels)

        # Registered in the published weights' order: decoder first, encoder last.
        self.bottlenecks = nn.ModuleList(SkipMerge(width) for width in reversed(filters[:-1]))
        self.decoder_stages = nn.ModuleList(
            UpsampleConv(filters[index], filters[index - 1]) for index in range(1, len(filters))
        )
        self.last_upsample = UpsampleConv(filters[0], filters[0])
        self.final = nn.Sequential(nn.Conv2d(filters[0], num_classes, 3, padding=1))
        self.encoder_stages = nn.ModuleList(encoder_stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        features: Features = x
        for stage in self.encoder_stages[:-1]:
            features = stage(features)
            skips.append(torch.cat(features, dim=1) if isinstance(features, tuple) else features)
        decoded = self.encoder_stages[-1](features)
        for upsample, merge, skip in zip(reversed(self.decoder_stages), self.bottlenecks, reversed(skips), strict=True):
            decoded = merge(upsample(decoded), skip)
        return self.final(self.last_upsample(decoded))
