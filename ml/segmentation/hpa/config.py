"""The config of an HPA-compatible segmentation network, and the network a config describes.

The "config" of a segmentation checkpoint (`ml.checkpoints.save_unet_checkpoint`) is what
`unet_config(kind)` returns: the architecture, which network it is ("nuclei" or "cell"), its
input channels and output classes, the preprocessing serving applies (scale factor, mean, std)
and the encoder widths: DPN-92's for the official weights; smaller ones keep the topology.
"""

from collections.abc import Mapping

from ml.segmentation.hpa.network import DPNUnet
from ml.segmentation.hpa.preprocess import (
    CELL_INPUT_CHANNELS,
    MEAN,
    NUCLEI_INPUT_CHANNELS,
    SCALE_FACTOR,
    STD,
    check_kind,
)

UNET_ARCHITECTURE = "dpn92-unet"
# DPN-92, the encoder of the official weights.
DPN92_ENCODER: dict[str, int | list[int]] = {
    "stem_channels": 64,
    "blocks": [3, 4, 20, 3],
    "residual_channels": [256, 512, 1024, 2048],
    "bottleneck_channels": [96, 192, 384, 768],
    "dense_increments": [16, 32, 24, 128],
    "groups": 32,
}
OUTPUT_CLASSES: tuple[str, ...] = ("unused", "border", "foreground")


def unet_config(kind: str, *, encoder: Mapping | None = None) -> dict:
    """The config of a segmentation network of `kind` ("nuclei" or "cell"); DPN-92 by default."""
    check_kind(kind)
    return {
        "architecture": UNET_ARCHITECTURE,
        "kind": kind,
        "input_channels": list(NUCLEI_INPUT_CHANNELS if kind == "nuclei" else CELL_INPUT_CHANNELS),
        "output_classes": list(OUTPUT_CLASSES),
        "scale_factor": SCALE_FACTOR,
        "mean": list(MEAN),
        "std": list(STD),
        "encoder": dict(encoder or DPN92_ENCODER),
    }


def build_unet(config: Mapping) -> DPNUnet:
    """The untrained network a config describes."""
    encoder = config["encoder"]
    return DPNUnet(
        in_channels=len(config["input_channels"]),
        num_classes=len(config["output_classes"]),
        stem_channels=int(encoder["stem_channels"]),
        blocks=tuple(encoder["blocks"]),
        residual_channels=tuple(encoder["residual_channels"]),
        bottleneck_channels=tuple(encoder["bottleneck_channels"]),
        dense_increments=tuple(encoder["dense_increments"]),
        groups=int(encoder["groups"]),
    )
